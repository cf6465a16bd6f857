"""Pools: typed access to each table. Callers open the transaction; pools never commit by themselves."""
from __future__ import annotations

import time
from typing import Any, Callable, Generic, Sequence, TypeVar

from .db import Database, Tx
from .entities import VM, Cluster, Datastore, Entity, Host, Image, User, VNet
from .errors import CoreError, not_found

T = TypeVar("T", bound=Entity)


class Pool(Generic[T]):
    def __init__(self, table: str, cls: type[T], kind: str, columns: dict[str, Callable[[T], Any]]):
        self.table, self.cls, self.kind = table, cls, kind
        self.columns = columns  # column -> value taken from the entity (besides id, name, body)

    def _values(self, entity: T) -> list[Any]:
        return [entity.name] + [get(entity) for get in self.columns.values()] + [entity.body()]

    def insert(self, tx: Tx, entity: T) -> T:
        names = ["name", *self.columns, "body"]
        # VM names need not be unique (web-0 may run twice); every other name is, and is indexed.
        if self.kind != "vm" and tx.execute(f"SELECT id FROM {self.table} WHERE name = ?", (entity.name,)).one():
            raise CoreError("NAME_TAKEN", f"a {self.kind} named {entity.name!r} exists", name=entity.name)
        tx.execute(f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                   self._values(entity))
        entity.id = tx.lastrowid
        tx.execute(f"UPDATE {self.table} SET body = ? WHERE id = ?", (entity.body(), entity.id))
        return entity

    def get(self, tx: Tx, ident: int) -> T | None:
        row = tx.execute(f"SELECT body FROM {self.table} WHERE id = ?", (ident,)).one()
        return self.cls.from_body(row[0]) if row else None

    def require(self, tx: Tx, ident: int) -> T:
        entity = self.get(tx, ident)
        if entity is None:
            raise not_found(self.kind, ident)
        return entity

    def update(self, tx: Tx, entity: T) -> None:
        sets = ", ".join(f"{c} = ?" for c in ["name", *self.columns, "body"])
        tx.execute(f"UPDATE {self.table} SET {sets} WHERE id = ?", self._values(entity) + [entity.id])

    def delete(self, tx: Tx, ident: int) -> None:
        tx.execute(f"DELETE FROM {self.table} WHERE id = ?", (ident,))

    def where(self, tx: Tx, condition: str = "1 = 1", params: Sequence[Any] = ()) -> list[T]:
        rows = tx.execute(f"SELECT body FROM {self.table} WHERE {condition} ORDER BY id", params).all()
        return [self.cls.from_body(r[0]) for r in rows]

    def page(self, tx: Tx, after: int, limit: int, condition: str = "1 = 1",
             params: Sequence[Any] = ()) -> tuple[list[str], int | None]:
        """Raw JSON bodies after id `after` (keyset pagination) and the cursor of the next page."""
        rows = tx.execute(f"SELECT id, body FROM {self.table} WHERE id > ? AND {condition} ORDER BY id LIMIT ?",
                          (after, *params, limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [r[1] for r in rows], (rows[-1][0] if more else None)


class VmPool(Pool[VM]):
    def insert(self, tx: Tx, vm: VM) -> VM:
        vm.created = vm.updated = time.time()
        return super().insert(tx, vm)

    def save(self, tx: Tx, vm: VM, reason: str = "") -> bool:
        """Compare-and-set: write only if nobody changed the VM since it was read. Records the transition."""
        row = tx.execute("SELECT version, state FROM vms WHERE id = ?", (vm.id,)).one()
        if row is None or row[0] != vm.version:
            return False
        previous_state = row[1]
        vm.version += 1
        vm.updated = time.time()
        sets = ", ".join(f"{c} = ?" for c in ["name", *self.columns, "body"])
        tx.execute(f"UPDATE vms SET {sets} WHERE id = ? AND version = ?", self._values(vm) + [vm.id, vm.version - 1])
        if previous_state != vm.state:
            tx.execute("INSERT INTO vm_history (vm_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                       (vm.id, vm.updated, previous_state, vm.state, reason))
        return True

    def history(self, tx: Tx, vm_id: int) -> list[dict[str, Any]]:
        rows = tx.execute("SELECT at, from_state, to_state, reason FROM vm_history WHERE vm_id = ? ORDER BY id",
                          (vm_id,)).all()
        return [{"at": r[0], "from": r[1], "to": r[2], "reason": r[3]} for r in rows]


class Store:
    """Every pool over one database."""

    def __init__(self, db: Database):
        self.db = db
        self.clusters = Pool("clusters", Cluster, "cluster", {})
        self.hosts = Pool("hosts", Host, "host", {"state": lambda h: h.state, "cluster_id": lambda h: h.cluster_id})
        self.datastores = Pool("datastores", Datastore, "datastore", {"kind": lambda d: d.kind})
        self.images = Pool("images", Image, "image", {"datastore_id": lambda i: i.datastore_id,
                                                      "state": lambda i: i.state})
        self.vnets = Pool("vnets", VNet, "vnet", {})
        self.users = Pool("users", User, "user", {})
        self.vms = VmPool("vms", VM, "vm", {"owner_id": lambda v: v.owner_id, "state": lambda v: v.state,
                                            "host_id": lambda v: v.host_id, "datastore_id": lambda v: v.datastore_id,
                                            "version": lambda v: v.version, "cpu": lambda v: v.cpu_units,
                                            "memory": lambda v: v.memory,
                                            "disk_mb": lambda v: sum(int(d.get("size_mb", 0)) for d in v.disks)})

    def transaction(self):
        return self.db.transaction()

    def read(self):
        """A read-only snapshot: use it for everything that writes nothing."""
        return self.db.transaction(readonly=True)
