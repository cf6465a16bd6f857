"""Pools: typed access to each table. Callers open the transaction; pools never commit by themselves."""
from __future__ import annotations

import time
from typing import Any, Callable, Generic, Sequence, TypeVar

from .db import Database, Tx
from .entities import VM, Cluster, Datastore, Entity, Group, Host, Image, User, VNet, VmState
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

    def save(self, tx: Tx, vm: VM, reason: str = "", record: bool = False) -> bool:
        """Compare-and-set: write only if nobody changed the VM since it was read. Records the
        transition when the state changes, and always with `record` (a user's action: a resubmit
        during EPILOG changes only the intent, and the history must still say who did it)."""
        row = tx.execute("SELECT version, state FROM vms WHERE id = ?", (vm.id,)).one()
        if row is None or row[0] != vm.version:
            return False
        previous_state = row[1]
        vm.version += 1
        vm.updated = time.time()
        sets = ", ".join(f"{c} = ?" for c in ["name", *self.columns, "body"])
        tx.execute(f"UPDATE vms SET {sets} WHERE id = ? AND version = ?", self._values(vm) + [vm.id, vm.version - 1])
        if previous_state != vm.state or record:
            tx.execute("INSERT INTO vm_history (vm_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                       (vm.id, vm.updated, previous_state, vm.state, reason))
        return True

    def history(self, tx: Tx, vm_id: int) -> list[dict[str, Any]]:
        rows = tx.execute("SELECT at, from_state, to_state, reason FROM vm_history WHERE vm_id = ? ORDER BY id",
                          (vm_id,)).all()
        return [{"at": r[0], "from": r[1], "to": r[2], "reason": r[3]} for r in rows]

    def live_ids_on_host(self, tx: Tx, host_id: int) -> list[int]:
        return [r[0] for r in tx.execute("SELECT id FROM vms WHERE host_id = ? AND state <> ?",
                                         (host_id, VmState.DONE)).all()]

    def live_count_on_datastore(self, tx: Tx, ds_id: int) -> int:
        return tx.execute("SELECT COUNT(*) FROM vms WHERE datastore_id = ? AND state <> ?",
                          (ds_id, VmState.DONE)).one()[0]

    def users_of_image(self, tx: Tx, image_id: int) -> list[int]:
        return [vm.id for vm in self.where(tx, "state <> ?", (VmState.DONE,))
                # A flattened disk holds all its blocks itself: its image may go.
                if any(d.get("image_id") == image_id and not d.get("flattened") for d in vm.disks)]

    def live_count_of_owner(self, tx: Tx, owner_id: int) -> int:
        return tx.execute("SELECT COUNT(*) FROM vms WHERE owner_id = ? AND state <> ?",
                          (owner_id, VmState.DONE)).one()[0]


class LeasePool:
    """Addresses handed out on virtual networks: (vnet, ip) -> VM."""

    def lock_vnet(self, tx: Tx, vnet_id: int) -> None:
        """Serialize address allocation on one network. SQLite's writers already are (BEGIN
        IMMEDIATE); on MySQL two creates read the same first free address and one got a 500."""
        if tx.db.dialect == "mysql":
            tx.execute("SELECT id FROM vnets WHERE id = ? FOR UPDATE", (vnet_id,))

    def taken(self, tx: Tx, vnet_id: int) -> set[str]:
        # A locking read on MySQL: a plain one reads the transaction's snapshot, taken before the
        # lock was granted, and misses the addresses the previous holder just leased.
        lock = " FOR UPDATE" if tx.db.dialect == "mysql" else ""
        return {r[0] for r in tx.execute(f"SELECT ip FROM leases WHERE vnet_id = ?{lock}", (vnet_id,)).all()}

    def add(self, tx: Tx, vnet_id: int, ip: str, vm_id: int) -> None:
        tx.execute("INSERT INTO leases (vnet_id, ip, vm_id) VALUES (?, ?, ?)", (vnet_id, ip, vm_id))

    def of_vnet(self, tx: Tx, vnet_id: int) -> list[dict[str, Any]]:
        rows = tx.execute("SELECT ip, vm_id FROM leases WHERE vnet_id = ? ORDER BY ip", (vnet_id,)).all()
        return [{"ip": r[0], "vm_id": r[1]} for r in rows]

    def count(self, tx: Tx, vnet_id: int) -> int:
        return tx.execute("SELECT COUNT(*) FROM leases WHERE vnet_id = ?", (vnet_id,)).one()[0]

    def release_vm(self, tx: Tx, vm_id: int) -> None:
        tx.execute("DELETE FROM leases WHERE vm_id = ?", (vm_id,))

    def orphans(self, tx: Tx) -> list[tuple[int, str, int]]:
        """Leases whose VM is DONE or gone (an invariant says there are none)."""
        return [tuple(r) for r in tx.execute(
            "SELECT l.vnet_id, l.ip, l.vm_id FROM leases l LEFT JOIN vms v ON v.id = l.vm_id "
            "WHERE v.id IS NULL OR v.state = ?", (VmState.DONE,)).all()]


TOKEN_COLUMNS = ("id", "user_id", "name", "created_at", "expires_at", "revoked_at", "last_used_at")


class TokenPool:
    """API tokens: only a SHA-256 of each is stored; the secret is shown once, at creation."""

    def insert(self, tx: Tx, user_id: int, name: str, token_hash: str, created_at: float,
               expires_at: float | None) -> int:
        tx.execute("INSERT INTO tokens (user_id, name, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                   (user_id, name, token_hash, created_at, expires_at))
        return tx.lastrowid

    def by_hash(self, tx: Tx, token_hash: str) -> dict[str, Any] | None:
        row = tx.execute(f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens WHERE token_hash = ?", (token_hash,)).one()
        return dict(zip(TOKEN_COLUMNS, row)) if row else None

    def get(self, tx: Tx, ident: int) -> dict[str, Any] | None:
        row = tx.execute(f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens WHERE id = ?", (ident,)).one()
        return dict(zip(TOKEN_COLUMNS, row)) if row else None

    def page(self, tx: Tx, after: int, limit: int, user_id: int | None) -> tuple[list[dict[str, Any]], int | None]:
        condition, params = ("user_id = ?", (user_id,)) if user_id is not None else ("1 = 1", ())
        rows = tx.execute(f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens WHERE id > ? AND {condition} "
                          "ORDER BY id LIMIT ?", (after, *params, limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [dict(zip(TOKEN_COLUMNS, r)) for r in rows], (rows[-1][0] if more else None)

    def revoke(self, tx: Tx, ident: int, at: float) -> None:
        tx.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, ident))

    def revoke_user(self, tx: Tx, user_id: int, at: float) -> None:
        tx.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (at, user_id))

    def used(self, tx: Tx, ident: int, at: float) -> None:
        tx.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (at, ident))


AUDIT_COLUMNS = ("id", "at", "user_id", "user_name", "method", "path", "operation", "entity", "entity_id", "status",
                 "code")


class AuditPool:
    """Who did what, when, with what result: one row per state-changing request. Never a secret."""

    def insert(self, tx: Tx, record: dict[str, Any]) -> None:
        names = AUDIT_COLUMNS[1:]
        tx.execute(f"INSERT INTO audit ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                   [record.get(n) for n in names])

    def page(self, tx: Tx, since: float, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        rows = tx.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit WHERE id > ? AND at >= ? ORDER BY id "
                          "LIMIT ?", (after, since, limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [dict(zip(AUDIT_COLUMNS, r)) for r in rows], (rows[-1][0] if more else None)


class Store:
    """Every pool over one database."""

    def __init__(self, db: Database):
        self.db = db
        self.clusters = Pool("clusters", Cluster, "cluster", {})
        self.hosts = Pool("hosts", Host, "host", {"state": lambda h: h.state, "cluster_id": lambda h: h.cluster_id})
        self.datastores = Pool("datastores", Datastore, "datastore", {"kind": lambda d: d.kind})
        self.images = Pool("images", Image, "image", {"datastore_id": lambda i: i.datastore_id,
                                                      "state": lambda i: i.state, "owner_id": lambda i: i.owner_id,
                                                      "group_id": lambda i: i.group_id,
                                                      "shared": lambda i: int(i.shared),
                                                      "public": lambda i: int(i.public)})
        self.vnets = Pool("vnets", VNet, "vnet", {})
        self.users = Pool("users", User, "user", {"role": lambda u: u.role, "group_id": lambda u: u.group_id})
        self.groups = Pool("user_groups", Group, "group", {})
        self.tokens = TokenPool()
        self.audit = AuditPool()
        self.leases = LeasePool()
        self.vms = VmPool("vms", VM, "vm", {"owner_id": lambda v: v.owner_id, "group_id": lambda v: v.group_id,
                                            "shared": lambda v: int(v.shared), "state": lambda v: v.state,
                                            "host_id": lambda v: v.host_id, "datastore_id": lambda v: v.datastore_id,
                                            "version": lambda v: v.version, "cpu": lambda v: v.cpu_units,
                                            "memory": lambda v: v.memory,
                                            "disk_mb": lambda v: sum(int(d.get("size_mb", 0)) for d in v.disks)})

    def transaction(self):
        return self.db.transaction()

    def read(self):
        """A read-only snapshot: use it for everything that writes nothing."""
        return self.db.transaction(readonly=True)
