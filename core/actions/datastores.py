"""Datastores: directories (or pools) holding images and VM disks. Infrastructure: administrators only.

Two datastores never share a directory, and none lies inside another, after resolving symlinks,
`.` and `//`: the orphan sweep of one would otherwise take the other's disks for orphans.
"""
from __future__ import annotations

from typing import Any

from ..authz import Actor
from ..entities import Datastore
from ..errors import CoreError
from ..protocols import DriverError, NotSupported, ParamError, check_params
from . import Env, values


def overlap(one: str, other: str) -> bool:
    """True when two resolved directories are the same or one contains the other. Pure."""
    a, b = one.rstrip("/") + "/", other.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


class Datastores:
    def __init__(self, env: Env):
        self.env = env

    def create(self, actor: Actor, name: str, path: str, kind: str = "system", backend: str = "qcow2",
               cluster_ids: list[int] | None = None, attributes: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None) -> Datastore:
        if kind not in ("system", "image"):
            raise CoreError("VALUE_INVALID", "kind must be system or image", field="kind", value=kind)
        known = self.env.backend_types
        if backend not in known:
            raise CoreError("VALUE_INVALID", f"backend {backend!r} is not one of {', '.join(sorted(known))}",
                            field="backend", value=backend)
        try:
            checked = check_params(known[backend], dict(params or {}))
        except ParamError as exc:
            raise CoreError("VALUE_INVALID", exc.fix, field=exc.field, value=exc.value) from None
        resolved = self.env.datastore_paths.check(values.path(path, "path"), "path")
        ds = Datastore(name=values.name(name), backend=backend, params=checked, kind=kind, path=resolved,
                       cluster_ids=sorted(set(cluster_ids or [])), attributes=dict(attributes or {}),
                       owner_id=actor.user_id, group_id=actor.group_id)
        try:
            ds.total_mb, ds.free_mb = self.env.backend_for(ds).capacity(ds.path)
        except NotSupported as exc:  # the scheduler places by free space: a datastore must report it
            raise CoreError("NOT_SUPPORTED", str(exc), field="backend", value=backend, verb=exc.verb) from None
        except (DriverError, OSError) as exc:
            raise CoreError("VALUE_INVALID", f"datastore path {path} is not usable: {exc}", field="path",
                            value=path) from None
        with self.env.store.transaction() as tx:
            claim = known[backend].claim(checked) if known[backend].claim else None
            writer = known[backend].writer(checked) if known[backend].writer else None
            for other in self.env.store.datastores.where(tx):
                theirs = known.get(other.backend)
                if writer and theirs is not None and theirs.writer and other.params:
                    resource, machine = theirs.writer(other.params)
                    if resource == writer[0] and machine != writer[1]:
                        raise CoreError("IN_USE", f"datastore {other.name} writes {resource}'s metadata from {machine}; "
                                        f"this one would from {writer[1]}: two writers corrupt it. Use the same "
                                        "host, or another volume group", field="params", value=checked,
                                        datastore_id=other.id)
                if claim and other.kind == kind and theirs is not None and theirs.claim and other.params and \
                        theirs.claim(other.params) == claim:
                    raise CoreError("IN_USE", f"datastore {other.name} already uses {claim}: give this one another "
                                    "pool or prefix", field="params.prefix", value=checked.get("prefix"),
                                    datastore_id=other.id)
                if overlap(resolved, self.env.datastore_paths.resolve(other.path)):
                    raise CoreError("IN_USE", f"path {path} ({resolved}) overlaps datastore {other.name} at "
                                    f"{other.path}: two datastores may not share a directory or nest",
                                    field="path", value=path, datastore_id=other.id)
            for cluster_id in ds.cluster_ids:
                self.env.store.clusters.require(tx, cluster_id)
            return self.env.store.datastores.insert(tx, ds)

    def backends(self) -> list[dict[str, Any]]:
        """The registry as data: name, summary, verbs, and each parameter's type, default and help."""
        return [{"name": t.name, "summary": t.summary, "verbs": sorted(t.verbs), "source": t.source_kind,
                 "params": [{"name": p.name, "type": p.kind, "required": p.required, "default": p.default,
                             **({"choices": list(p.choices)} if p.choices else {}), "help": p.help}
                            for p in t.params]}
                for t in sorted(self.env.backend_types.values(), key=lambda t: t.name)]

    def get(self, actor: Actor, ident: int) -> Datastore:
        with self.env.store.read() as tx:
            return self.env.store.datastores.require(tx, ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        with self.env.store.read() as tx:
            return self.env.store.datastores.page(tx, after, limit)

    def delete(self, actor: Actor, ident: int) -> None:
        with self.env.store.transaction() as tx:
            ds = self.env.store.datastores.require(tx, ident)
            used = tx.execute("SELECT COUNT(*) FROM images WHERE datastore_id = ?", (ident,)).one()[0] + \
                self.env.store.vms.live_count_on_datastore(tx, ident)
            if used:
                raise CoreError("IN_USE", f"datastore {ds.name} holds images or VM disks", count=used)
            self.env.store.datastores.delete(tx, ident)
