"""Disk images: owned by the user who made them, usable by its group when shared.

An import copies data synchronously between a LOCKED row and a READY one; the process tracks its
running imports, so a LOCKED row without one is a crashed import, removed at start-up.
"""
from __future__ import annotations

import logging

from .. import authz
from ..authz import Actor
from ..entities import Image
from ..errors import CoreError
from ..protocols import VERB_WORDS, DriverError
from . import Env, values

log = logging.getLogger("appliance.images")
LOCKED, READY = "LOCKED", "READY"


class Images:
    def __init__(self, env: Env):
        self.env = env

    def create(self, actor: Actor, name: str, datastore_id: int, source: str | None = None,
               size_mb: int | None = None, persistent: bool = False, shared: bool = False,
               public: bool = False) -> Image:
        """Import `source` (a regular file under an import root, whose backing chain stays under the
        roots too) or make a blank image of `size_mb`. `public`: every user may use it (admins only)."""
        if public and not actor.admin:
            raise CoreError("FORBIDDEN", "only an administrator makes an image public; share it with your group "
                            "instead (shared)", field="public")
        if (source is None) == (size_mb is None):
            raise CoreError("VALUE_INVALID", "give either source (a file to import) or size_mb (a blank image)",
                            field="source")
        if source is not None:
            source = self.env.import_paths.check(values.path(source, "source"), "source")
        with self.env.store.read() as tx:
            stores = [self.env.datastore_paths.resolve(d.path) for d in self.env.store.datastores.where(tx)]

        def importable(path: str) -> bool:
            """Under an import root, and in no datastore: there it is some user's image or VM disk."""
            real = self.env.import_paths.resolve(path)
            return self.env.import_paths.allows(path) and not any(
                real == root or real.startswith(root.rstrip("/") + "/") for root in stores)
        if source is not None and not importable(source):
            raise CoreError("VALUE_INVALID", f"source {source} lies in a datastore; images are imported only from "
                            "the import directories", field="source", value=source)
        with self.env.store.transaction() as tx:
            ds = self.env.store.datastores.require(tx, datastore_id)
            if ds.kind != "image":
                raise CoreError("VALUE_INVALID", f"datastore {ds.name} is a {ds.kind} datastore, not an image one",
                                field="datastore_id", value=datastore_id)
            verb = "import" if source is not None else "mkimage"
            if verb not in self.env.backend_for(ds).verbs:  # refused before the LOCKED row exists
                raise CoreError("NOT_SUPPORTED", f"datastore {ds.name}'s {ds.backend} backend cannot "
                                f"{VERB_WORDS[verb]}", field="datastore_id", value=datastore_id, verb=verb)
            image = self.env.store.images.insert(tx, Image(
                name=values.name(name), datastore_id=ds.id, persistent=persistent, state=LOCKED,
                owner_id=actor.user_id, group_id=actor.group_id, shared=shared, public=public))
            self.env.importing.add(image.id)
        backend = self.env.backend_for(ds)
        image.path = backend.image_path(ds.path, image.id)
        try:
            if source is not None:
                image.size_mb = backend.import_image(source, image.path, importable)
            else:
                backend.create_image(image.path, int(size_mb or 0))
                image.size_mb = int(size_mb or 0)
            image.state = READY
            with self.env.store.transaction() as tx:
                self.env.store.images.update(tx, image)
        except (DriverError, OSError) as exc:
            with self.env.store.transaction() as tx:
                self.env.store.images.delete(tx, image.id)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "failed"
            if "`" in reason:  # a command line and its output: the log has them, the user gets no probe
                log.warning("image %d (%s): %s", image.id, name, exc)
                reason = "the source cannot be read as a disk image"
            raise CoreError("VALUE_INVALID", f"cannot create image {name}: {reason}", field="source",
                            value=source) from None
        finally:
            self.env.importing.discard(image.id)
        return image

    def get(self, actor: Actor, ident: int) -> Image:
        with self.env.store.read() as tx:
            return authz.require_read(actor, "image", self.env.store.images.get(tx, ident), ident)

    def page(self, actor: Actor, after: int, limit: int) -> tuple[list[str], int | None]:
        condition, params = authz.visible_condition(actor, public=True)
        with self.env.store.read() as tx:
            return self.env.store.images.page(tx, after, limit, condition, params)

    def delete(self, actor: Actor, ident: int) -> None:
        """LOCKED while its file goes, then the row: a crash in between leaves a LOCKED row that the
        next start removes with its file, never a row without a file or a file without a row."""
        with self.env.store.transaction() as tx:
            image = authz.require_change(actor, "image", self.env.store.images.get(tx, ident), ident)
            if image.state == LOCKED:
                raise CoreError("STATE_INVALID", f"image {image.name} is being imported or deleted", image_id=ident)
            users = self.env.store.vms.users_of_image(tx, ident)
            if users:  # a user learns how many, not which: they may be other users' private VMs
                raise CoreError("IN_USE", f"image {image.name} is used by {len(users)} VM(s)",
                                **({"vms": users} if actor.sees_all else {"count": len(users)}))
            ds = self.env.store.datastores.require(tx, image.datastore_id)
            image.state = LOCKED
            self.env.store.images.update(tx, image)
            self.env.importing.add(ident)
        try:
            self.env.backend_for(ds).delete_image(image.path)
            with self.env.store.transaction() as tx:
                self.env.store.images.delete(tx, ident)
        except (DriverError, OSError) as exc:
            with self.env.store.transaction() as tx:
                image.state = READY
                self.env.store.images.update(tx, image)
            raise CoreError("BACKEND_FAILED", f"cannot delete image {image.name}: {exc}", image_id=ident) from None
        finally:
            self.env.importing.discard(ident)

    def settle_crashed_imports(self) -> list[str]:
        """At start-up: LOCKED images with no import running here were cut off by a crash. Their rows
        and partial files go; the source is still where it was, so the user imports again."""
        decisions = []
        with self.env.store.read() as tx:
            stuck = [i for i in self.env.store.images.where(tx, "state = ?", (LOCKED,))
                     if i.id not in self.env.importing]
            stores = {d.id: d for d in self.env.store.datastores.where(tx, "kind = ?", ("image",))}
        for image in stuck:
            ds = stores.get(image.datastore_id)
            try:
                if ds is not None:  # the import may have renamed its file into place before the crash
                    self.env.backend_for(ds).delete_image(self.env.backend_for(ds).image_path(ds.path, image.id))
            except (DriverError, OSError) as exc:
                decisions.append(f"image {image.id} ({image.name}): cannot remove its file ({exc}); left LOCKED")
                continue
            with self.env.store.transaction() as tx:
                self.env.store.images.delete(tx, image.id)
            decisions.append(f"image {image.id} ({image.name}) was LOCKED by an import or delete a crash cut off: "
                             "removed; import it again if it was an import")
        for ds in stores.values():
            try:
                for path in self.env.backend_for(ds).remove_partial_images(ds.path):
                    decisions.append(f"removed the partial import {path}")
            except (DriverError, OSError) as exc:
                decisions.append(f"datastore {ds.name}: cannot look for partial imports ({exc}); left alone")
        return decisions
