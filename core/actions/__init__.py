"""The manager's user actions, one module per entity, each with its authorization beside it.

Every action takes the acting user (`authz.Actor`) first, validates everything, then writes in one
transaction; VM actions only persist intent and the controller performs it. `Manager` holds one
object per entity; the HTTP API, the CLI's server side and tests call them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..entities import Datastore
from ..errors import CoreError
from ..pools import Store
from ..protocols import VERBS, Backend, BackendType


class PathPolicy:
    """Which directories the manager may use for a purpose (datastores, image imports).

    Set by the operator, so an API user cannot point the manager at /etc or import /etc/shadow.
    `resolve` follows symlinks (the service); without it paths are compared as written (tests).
    """

    def __init__(self, roots: list[str], resolve: bool = True):
        self.resolve_links = resolve
        self.roots = list(roots)
        self.real_roots = [self.resolve(r) for r in roots]

    def resolve(self, path: str) -> str:
        return os.path.realpath(path) if self.resolve_links else os.path.normpath(path)

    def allows(self, path: str) -> bool:
        real = self.resolve(path)
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.real_roots)

    def check(self, path: str, what: str) -> str:
        """The path, resolved; VALUE_INVALID when it lies outside every root."""
        if not self.allows(path):
            raise CoreError("VALUE_INVALID", f"{what} {path} is not under an allowed directory "
                            f"({', '.join(self.roots)})", field=what, value=path, allowed=self.roots)
        return self.resolve(path)


@dataclass
class Env:
    """What every action needs: the pools, the storage backends, the operator's path policies."""

    store: Store
    backend_for: Callable[[Datastore], Backend]
    wake: Callable[[], None] = lambda: None
    datastore_paths: PathPolicy = field(default_factory=lambda: PathPolicy(["/"], resolve=False))
    import_paths: PathPolicy = field(default_factory=lambda: PathPolicy(["/"], resolve=False))
    wall: Callable[[], float] = time.time  # UTC epoch: persisted times are compared across nodes
    importing: set[int] = field(default_factory=set)  # image ids whose import runs in this process
    # The storage registry (storage/registry.TYPES), handed in by the composition root; without it,
    # only qcow2 with no parameters (what backend_for alone can promise).
    backend_types: Mapping[str, BackendType] = field(default_factory=lambda: {
        "qcow2": BackendType("qcow2", "qcow2 overlays on a directory", (), frozenset(VERBS), lambda *a: None)})


class Manager:
    """One object per entity; `env` is shared. Built by the composition root (appliance/serve.py)."""

    def __init__(self, store: Store, backend_for: Callable[[Datastore], Backend], wake: Callable[[], None] = lambda: None,
                 datastore_paths: PathPolicy | None = None, import_paths: PathPolicy | None = None,
                 wall: Callable[[], float] = time.time, backend_types: Mapping[str, BackendType] | None = None):
        from .audit import Audit
        from .clusters import Clusters
        from .datastores import Datastores
        from .hosts import Hosts
        from .images import Images
        from .users import Users
        from .vms import Vms
        from .vnets import Vnets

        self.env = Env(store, backend_for, wake, datastore_paths or PathPolicy(["/"], resolve=False),
                       import_paths or PathPolicy(["/"], resolve=False), wall)
        if backend_types is not None:
            self.env.backend_types = backend_types
        self.store = store
        self.users = Users(self.env)
        self.clusters = Clusters(self.env)
        self.hosts = Hosts(self.env)
        self.datastores = Datastores(self.env)
        self.images = Images(self.env)
        self.vnets = Vnets(self.env)
        self.vms = Vms(self.env)
        self.audit = Audit(self.env)
