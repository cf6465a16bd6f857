"""The manager's user actions: one method each. Validate everything, then write in one transaction.

The HTTP API and tests call these; side effects on hypervisors happen later in the controller
(VM actions only persist intent). Image creation is the exception: it copies data synchronously,
between a LOCKED row and a READY (or ERROR) one.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from .entities import VM, Cluster, Datastore, Host, HostState, Image, User, VNet, VmState as S
from .errors import CoreError, not_found
from .expr import ExpressionError, compile_rank, compile_requirement
from .lifecycle import action_target, enter, recover_target
from .pools import Pool, Store
from .protocols import Backend, DriverError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PATH = re.compile(r"/[A-Za-z0-9._+/-]{0,1000}")
BRIDGE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
MAC_PREFIX = re.compile(r"[0-9a-f]{2}:[0-9a-f]{2}")
DRIVERS = ("libvirt", "fake")
BACKENDS = ("qcow2",)


def _name(value: str, what: str = "name") -> str:
    if not NAME.fullmatch(value):
        raise CoreError("VALUE_INVALID", f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-'",
                        field=what, value=value)
    return value


def _path(value: str, what: str) -> str:
    if not PATH.fullmatch(value) or ".." in value.split("/"):
        raise CoreError("VALUE_INVALID", f"{what} {value!r} must be an absolute path without '..'", field=what,
                        value=value)
    return value.rstrip("/") or "/"


def _expression(value: str, what: str, rank: bool = False) -> str:
    try:
        (compile_rank if rank else compile_requirement)(value)
    except ExpressionError as exc:
        raise CoreError("EXPRESSION_INVALID", f"{what}: {exc}", field=what, value=value,
                        position=exc.position) from None
    return value


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class VmSpec:
    name: str
    cpu: float = 1.0
    vcpu: int = 1
    memory: int = 512
    disks: list[int] = field(default_factory=list)  # image ids
    nics: list[int] = field(default_factory=list)  # vnet ids
    requirements: str = ""
    rank: str = ""
    ds_requirements: str = ""
    context: dict[str, str] = field(default_factory=dict)
    hold: bool = False


def lexical_paths(roots: list[str]) -> Callable[[str, str], str]:
    """A path policy: the path must lie under one of `roots` (no symlink resolution; tests and simple setups)."""
    def check(path: str, what: str) -> str:
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            raise CoreError("VALUE_INVALID", f"{what} {path} is not under an allowed directory", field=what,
                            allowed=roots)
        return path
    return check


class Manager:
    def __init__(self, store: Store, backend_for: Callable[[Datastore], Backend], wake: Callable[[], None] = lambda: None,
                 datastore_paths: Callable[[str, str], str] | None = None,
                 import_paths: Callable[[str, str], str] | None = None):
        self.store = store
        self.backend_for = backend_for
        self.wake = wake
        # Which directories may become datastores and which files may be imported: set by the operator,
        # so an API user cannot point the manager at /etc or read /etc/shadow as a disk image.
        self.datastore_paths = datastore_paths or lexical_paths(["/"])
        self.import_paths = import_paths or lexical_paths(["/"])
        self.pools: dict[str, Pool] = {"host": store.hosts, "datastore": store.datastores, "image": store.images,
                                       "vnet": store.vnets, "vm": store.vms, "cluster": store.clusters}

    # -- users -----------------------------------------------------------------------------------
    def create_user(self, name: str, admin: bool = False) -> tuple[User, str]:
        """Returns the user and its token; only the token's hash is stored."""
        _name(name)
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as tx:
            if tx.execute("SELECT id FROM users WHERE name = ?", (name,)).one():
                raise CoreError("NAME_TAKEN", f"a user named {name!r} exists", name=name)
            user = User(name=name, admin=admin)
            tx.execute("INSERT INTO users (name, token_hash, admin, body) VALUES (?, ?, ?, ?)",
                       (name, token_hash(token), int(admin), user.body()))
            user.id = tx.lastrowid
            tx.execute("UPDATE users SET body = ? WHERE id = ?", (user.body(), user.id))
        return user, token

    def user_for_token(self, token: str) -> User | None:
        with self.store.read() as tx:
            row = tx.execute("SELECT body FROM users WHERE token_hash = ?", (token_hash(token),)).one()
        return User.from_body(row[0]) if row else None

    def has_users(self) -> bool:
        with self.store.read() as tx:
            return tx.execute("SELECT COUNT(*) FROM users").one()[0] > 0

    # -- reading ---------------------------------------------------------------------------------
    def get(self, kind: str, ident: int) -> Any:
        with self.store.read() as tx:
            return self.pools[kind].require(tx, ident)

    def page(self, kind: str, after: int, limit: int, state: str | None = None) -> tuple[list[str], int | None]:
        with self.store.read() as tx:
            if kind == "vm":
                if state:
                    return self.store.vms.page(tx, after, limit, "state = ?", (state,))
                return self.store.vms.page(tx, after, limit, "state <> ?", (S.DONE,))
            return self.pools[kind].page(tx, after, limit)

    def history(self, vm_id: int) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            self.store.vms.require(tx, vm_id)
            return self.store.vms.history(tx, vm_id)

    # -- clusters and hosts ----------------------------------------------------------------------
    def create_cluster(self, name: str) -> Cluster:
        with self.store.transaction() as tx:
            return self.store.clusters.insert(tx, Cluster(name=_name(name)))

    def create_host(self, name: str, driver: str = "libvirt", uri: str = "test:///default",
                    cluster_id: int | None = None, attributes: dict[str, Any] | None = None) -> Host:
        if driver not in DRIVERS:
            raise CoreError("VALUE_INVALID", f"driver {driver!r} is not one of {DRIVERS}", field="driver")
        with self.store.transaction() as tx:
            if cluster_id is not None:
                self.store.clusters.require(tx, cluster_id)
            host = self.store.hosts.insert(tx, Host(name=_name(name), driver=driver, uri=uri, cluster_id=cluster_id,
                                                    attributes=dict(attributes or {})))
        self.wake()  # monitor it now, not at the next interval
        return host

    def host_action(self, host_id: int, action: str) -> Host:
        states = {"enable": HostState.INIT, "disable": HostState.DISABLED, "offline": HostState.OFFLINE}
        if action not in states:
            raise CoreError("VALUE_INVALID", f"host action {action!r} is not one of {sorted(states)}", field="action")
        with self.store.transaction() as tx:
            host = self.store.hosts.require(tx, host_id)
            if action == "offline" and self._vms_on(tx, host_id):
                raise CoreError("IN_USE", f"host {host.name} still runs VMs; migrate or stop them first",
                                vms=self._vms_on(tx, host_id))
            host.state = states[action]
            self.store.hosts.update(tx, host)
        self.wake()
        return host

    def delete_host(self, host_id: int) -> None:
        with self.store.transaction() as tx:
            host = self.store.hosts.require(tx, host_id)
            if self._vms_on(tx, host_id):
                raise CoreError("IN_USE", f"host {host.name} has VMs", vms=self._vms_on(tx, host_id))
            self.store.hosts.delete(tx, host_id)

    @staticmethod
    def _vms_on(tx: Any, host_id: int) -> list[int]:
        return [r[0] for r in tx.execute("SELECT id FROM vms WHERE (host_id = ?) AND state <> ?",
                                         (host_id, S.DONE)).all()]

    # -- datastores and images -------------------------------------------------------------------
    def create_datastore(self, name: str, path: str, kind: str = "system", backend: str = "qcow2",
                         cluster_ids: list[int] | None = None, attributes: dict[str, Any] | None = None) -> Datastore:
        if kind not in ("system", "image"):
            raise CoreError("VALUE_INVALID", "kind must be system or image", field="kind", value=kind)
        if backend not in BACKENDS:
            raise CoreError("VALUE_INVALID", f"backend {backend!r} is not one of {BACKENDS}", field="backend")
        ds = Datastore(name=_name(name), backend=backend, kind=kind,
                       path=self.datastore_paths(_path(path, "path"), "path"),
                       cluster_ids=sorted(set(cluster_ids or [])), attributes=dict(attributes or {}))
        try:
            ds.total_mb, ds.free_mb = self.backend_for(ds).capacity(ds.path)
        except (DriverError, OSError) as exc:
            raise CoreError("VALUE_INVALID", f"datastore path {ds.path} is not usable: {exc}", field="path") from None
        with self.store.transaction() as tx:
            for cluster_id in ds.cluster_ids:
                self.store.clusters.require(tx, cluster_id)
            return self.store.datastores.insert(tx, ds)

    def delete_datastore(self, ds_id: int) -> None:
        with self.store.transaction() as tx:
            ds = self.store.datastores.require(tx, ds_id)
            used = tx.execute("SELECT COUNT(*) FROM images WHERE datastore_id = ?", (ds_id,)).one()[0] + \
                tx.execute("SELECT COUNT(*) FROM vms WHERE datastore_id = ? AND state <> ?", (ds_id, S.DONE)).one()[0]
            if used:
                raise CoreError("IN_USE", f"datastore {ds.name} holds images or VM disks", count=used)
            self.store.datastores.delete(tx, ds_id)

    def create_image(self, name: str, datastore_id: int, source: str | None = None, size_mb: int | None = None,
                     persistent: bool = False) -> Image:
        if (source is None) == (size_mb is None):
            raise CoreError("VALUE_INVALID", "give either source (a file to import) or size_mb (a blank image)",
                            field="source")
        if source is not None:
            source = self.import_paths(_path(source, "source"), "source")
        with self.store.transaction() as tx:
            ds = self.store.datastores.require(tx, datastore_id)
            if ds.kind != "image":
                raise CoreError("VALUE_INVALID", f"datastore {ds.name} is a {ds.kind} datastore, not an image one",
                                field="datastore_id")
            image = self.store.images.insert(tx, Image(name=_name(name), datastore_id=ds.id, persistent=persistent,
                                                       state="LOCKED"))
        backend = self.backend_for(ds)
        image.path = backend.image_path(ds.path, image.id)
        try:
            if source is not None:
                image.size_mb = backend.import_image(source, image.path)
            else:
                backend.create_image(image.path, int(size_mb or 0))
                image.size_mb = int(size_mb or 0)
            image.state = "READY"
        except (DriverError, OSError) as exc:
            with self.store.transaction() as tx:
                self.store.images.delete(tx, image.id)
            raise CoreError("VALUE_INVALID", f"cannot create image {name}: {exc}", field="source") from None
        with self.store.transaction() as tx:
            self.store.images.update(tx, image)
        return image

    def delete_image(self, image_id: int) -> None:
        with self.store.transaction() as tx:
            image = self.store.images.require(tx, image_id)
            users = [vm.id for vm in self.store.vms.where(tx, "state <> ?", (S.DONE,))
                     if any(d.get("image_id") == image_id for d in vm.disks)]
            if users:
                raise CoreError("IN_USE", f"image {image.name} is used by VMs", vms=users)
            ds = self.store.datastores.require(tx, image.datastore_id)
            self.store.images.delete(tx, image_id)
        self.backend_for(ds).delete_image(image.path)

    # -- virtual networks ------------------------------------------------------------------------
    def create_vnet(self, name: str, bridge: str, ranges: list[dict[str, Any]], mac_prefix: str = "02:00") -> VNet:
        if not BRIDGE.fullmatch(bridge):
            raise CoreError("VALUE_INVALID", f"bridge {bridge!r} is not an interface name", field="bridge")
        if not MAC_PREFIX.fullmatch(mac_prefix):
            raise CoreError("VALUE_INVALID", "mac_prefix is two lower-case hex bytes such as 02:00", field="mac_prefix")
        checked = []
        for index, r in enumerate(ranges):
            try:
                first = ipaddress.IPv4Address(r["first"])
                size = int(r["size"])
            except (KeyError, ValueError, TypeError):
                raise CoreError("VALUE_INVALID", f"ranges[{index}] needs first (IPv4) and size", field="ranges") from None
            if not 1 <= size <= 65536 or int(first) + size > 2 ** 32:
                raise CoreError("VALUE_INVALID", f"ranges[{index}].size must be 1-65536 inside IPv4", field="ranges")
            checked.append({"first": str(first), "size": size})
        if not checked:
            raise CoreError("VALUE_INVALID", "a network needs at least one address range", field="ranges")
        with self.store.transaction() as tx:
            return self.store.vnets.insert(tx, VNet(name=_name(name), bridge=bridge, mac_prefix=mac_prefix,
                                                    ranges=checked))

    def delete_vnet(self, vnet_id: int) -> None:
        with self.store.transaction() as tx:
            vnet = self.store.vnets.require(tx, vnet_id)
            if tx.execute("SELECT COUNT(*) FROM leases WHERE vnet_id = ?", (vnet_id,)).one()[0]:
                raise CoreError("IN_USE", f"network {vnet.name} has leases")
            self.store.vnets.delete(tx, vnet_id)

    def leases(self, vnet_id: int) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            self.store.vnets.require(tx, vnet_id)
            rows = tx.execute("SELECT ip, vm_id FROM leases WHERE vnet_id = ? ORDER BY ip", (vnet_id,)).all()
        return [{"ip": r[0], "vm_id": r[1]} for r in rows]

    @staticmethod
    def _lease(tx: Any, vnet: VNet, vm_id: int) -> dict[str, Any]:
        taken = {r[0] for r in tx.execute("SELECT ip FROM leases WHERE vnet_id = ?", (vnet.id,)).all()}
        for r in vnet.ranges:
            first = int(ipaddress.IPv4Address(r["first"]))
            for offset in range(int(r["size"])):
                ip = str(ipaddress.IPv4Address(first + offset))
                if ip not in taken:
                    tx.execute("INSERT INTO leases (vnet_id, ip, vm_id) VALUES (?, ?, ?)", (vnet.id, ip, vm_id))
                    octets = ":".join(f"{int(o):02x}" for o in ip.split("."))
                    return {"vnet_id": vnet.id, "ip": ip, "mac": f"{vnet.mac_prefix}:{octets}", "bridge": vnet.bridge}
        raise CoreError("NO_ADDRESS", f"network {vnet.name} has no free address", vnet_id=vnet.id)

    # -- VMs -------------------------------------------------------------------------------------
    def create_vm(self, spec: VmSpec, owner_id: int = 0) -> VM:
        _name(spec.name)
        _expression(spec.requirements, "requirements")
        _expression(spec.rank, "rank", rank=True)
        _expression(spec.ds_requirements, "ds_requirements")
        if not 0 < spec.cpu <= 1024 or not 1 <= spec.vcpu <= 1024 or not 1 <= spec.memory <= 16 * 1024 * 1024:
            raise CoreError("VALUE_INVALID", "cpu 0-1024, vcpu 1-1024 and memory 1-16777216 MiB", field="cpu")
        with self.store.transaction() as tx:
            disks = []
            for index, image_id in enumerate(spec.disks):
                image = self.store.images.require(tx, image_id)
                if image.state != "READY":
                    raise CoreError("STATE_INVALID", f"image {image.name} is {image.state}", image_id=image_id)
                if image.persistent and self._image_users(tx, image_id):
                    raise CoreError("IN_USE", f"persistent image {image.name} is already used", image_id=image_id)
                disks.append({"image_id": image.id, "target": f"vd{chr(97 + index)}", "size_mb": image.size_mb})
            vnets = [self.store.vnets.require(tx, vnet_id) for vnet_id in spec.nics]
            vm = VM(name=spec.name, owner_id=owner_id, state=S.HOLD if spec.hold else S.PENDING, cpu=spec.cpu,
                    vcpu=spec.vcpu, memory=spec.memory, disks=disks, requirements=spec.requirements, rank=spec.rank,
                    ds_requirements=spec.ds_requirements, context=dict(spec.context))
            self.store.vms.insert(tx, vm)
            vm.nics = [self._lease(tx, vnet, vm.id) for vnet in vnets]
            tx.execute("UPDATE vms SET body = ? WHERE id = ?", (vm.body(), vm.id))
        self.wake()
        return vm

    def _image_users(self, tx: Any, image_id: int) -> list[int]:
        return [vm.id for vm in self.store.vms.where(tx, "state <> ?", (S.DONE,))
                if any(d.get("image_id") == image_id for d in vm.disks)]

    def vm_action(self, vm_id: int, action: str, host_id: int | None = None, datastore_id: int | None = None,
                  how: str | None = None) -> VM:
        """Persist the action's intent (compare-and-set); the controller performs it."""
        with self.store.transaction() as tx:
            vm = self.store.vms.require(tx, vm_id)
            if action == "recover":
                state, intent = recover_target(vm, how or "")
            else:
                state, intent = action_target(vm, action)
            if action in ("deploy", "migrate"):
                if host_id is None:
                    raise CoreError("VALUE_INVALID", f"{action} needs host_id", field="host_id")
                host = self.store.hosts.require(tx, host_id)
                if host.state not in (HostState.MONITORED, HostState.DISABLED):
                    raise CoreError("STATE_INVALID", f"host {host.name} is {host.state}", host_id=host_id)
                if action == "migrate" and host_id == vm.host_id:
                    raise CoreError("VALUE_INVALID", "the VM already runs on that host", field="host_id")
            if action == "deploy":
                ds_id = datastore_id if datastore_id is not None else self._default_system_datastore(tx)
                self.store.datastores.require(tx, ds_id)
            previous_state = vm.state
            enter(vm, state, intent)
            if action == "deploy":
                vm.host_id, vm.datastore_id = host_id, ds_id
            elif action == "migrate":
                vm.target_host_id = host_id
            elif action == "recover" and previous_state == S.MIGRATE and how == "success":
                vm.host_id, vm.target_host_id = vm.target_host_id, None
            if not self.store.vms.save(tx, vm, f"user: {action}" + (f" --{how}" if how else "")):
                raise CoreError("STATE_INVALID", f"VM {vm_id} changed meanwhile; read it again", vm_id=vm_id)
        self.wake()
        return vm

    def _default_system_datastore(self, tx: Any) -> int:
        row = tx.execute("SELECT id FROM datastores WHERE kind = ? ORDER BY id LIMIT 1", ("system",)).one()
        if row is None:
            raise CoreError("NOT_FOUND", "there is no system datastore", kind="datastore")
        return row[0]

    def require(self, kind: str, ident: int) -> Any:
        entity = self.get(kind, ident)
        if entity is None:
            raise not_found(kind, ident)
        return entity
