"""What the manager knows: hosts, datastores, images, networks, clusters, VMs, users.

Plain dataclasses. Each is stored as a JSON body plus the columns the pools query by; the body is
also exactly what the API returns, so a listing is the stored bodies joined, never re-encoded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


class HostState:
    INIT = "INIT"  # registered, never monitored
    MONITORED = "MONITORED"
    ERROR = "ERROR"  # monitoring failed repeatedly: its VMs go elsewhere
    DISABLED = "DISABLED"  # monitored, takes no new VMs
    OFFLINE = "OFFLINE"  # not monitored, takes no VMs


class VmState:
    PENDING = "PENDING"
    HOLD = "HOLD"
    PROLOG = "PROLOG"  # disks being prepared
    BOOT = "BOOT"  # domain being started
    RUNNING = "RUNNING"
    SHUTDOWN = "SHUTDOWN"  # domain being stopped (intent says what follows)
    EPILOG = "EPILOG"  # disks being cleaned up (intent says what follows)
    MIGRATE = "MIGRATE"
    POWEROFF = "POWEROFF"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    DONE = "DONE"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


TRANSIENT = frozenset({VmState.PROLOG, VmState.BOOT, VmState.SHUTDOWN, VmState.EPILOG, VmState.MIGRATE})
# States in which a VM holds capacity on its host.
ON_HOST = frozenset({VmState.PROLOG, VmState.BOOT, VmState.RUNNING, VmState.SHUTDOWN, VmState.EPILOG,
                     VmState.MIGRATE, VmState.POWEROFF, VmState.SUSPENDED, VmState.UNKNOWN, VmState.FAILED})


@dataclass
class Entity:
    id: int = 0
    name: str = ""

    def body(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_body(cls: type[T], body: str | bytes) -> T:
        data = json.loads(body)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Owned(Entity):
    """Every entity but a user has an owner and a group (authorization, core/authz.py).

    `shared`: members of the group may read and use it (images, VMs); only the owner or an
    administrator changes or deletes it. Owner 0 is the system (rows made before users existed).
    """

    owner_id: int = 0
    group_id: int = 0
    shared: bool = False


@dataclass
class Cluster(Owned):
    pass


@dataclass
class Host(Owned):
    driver: str = "libvirt"
    uri: str = ""
    cluster_id: int | None = None
    state: str = HostState.INIT
    hypervisor: str = ""
    cpu_total: int = 0  # CPU units, 100 per core
    mem_total: int = 0  # MiB
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    failures: int = 0
    monitored_at: float = 0.0  # wall clock (UTC epoch): compared on whichever node runs the manager


@dataclass
class Datastore(Owned):
    backend: str = "qcow2"
    params: dict[str, Any] = field(default_factory=dict)  # the backend's typed parameters (storage/registry.py)
    kind: str = "system"  # system (running VM disks) or image
    path: str = ""
    cluster_ids: list[int] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)  # SPEED = "fast", ...
    total_mb: int = 0
    free_mb: int = 0
    monitored_at: float = 0.0


@dataclass
class Image(Owned):
    datastore_id: int = 0
    path: str = ""
    format: str = "qcow2"
    size_mb: int = 0  # virtual size
    persistent: bool = False
    state: str = "READY"
    public: bool = False  # every user may read and use it (an administrator's base images)


@dataclass
class AddressRange:
    first: str = ""
    size: int = 0


@dataclass
class VNet(Owned):
    bridge: str = ""
    mac_prefix: str = "02:00"
    ranges: list[dict[str, Any]] = field(default_factory=list)  # AddressRange as dicts
    cluster_ids: list[int] = field(default_factory=list)


@dataclass
class VM(Owned):
    state: str = VmState.PENDING
    cpu: float = 1.0  # share of physical cores the scheduler reserves
    vcpu: int = 1
    memory: int = 512  # MiB
    disks: list[dict[str, Any]] = field(default_factory=list)  # image_id, target, path, size_mb
    nics: list[dict[str, Any]] = field(default_factory=list)  # vnet_id, ip, mac, bridge
    requirements: str = ""
    rank: str = ""
    ds_requirements: str = ""
    context: dict[str, str] = field(default_factory=dict)
    host_id: int | None = None
    datastore_id: int | None = None
    intent: str = ""  # what a SHUTDOWN/EPILOG leads to: done, poweroff, suspend, stop, resubmit
    target_host_id: int | None = None  # MIGRATE
    failed_in: str = ""  # the transient state a FAILED VM failed in
    error: str = ""
    created: float = 0.0
    updated: float = 0.0
    version: int = 0  # compare-and-set: every write checks it

    @property
    def domain_name(self) -> str:
        return f"appliance-{self.id}"

    @property
    def cpu_units(self) -> int:
        return int(round(self.cpu * 100))


@dataclass
class Group(Entity):
    pass


@dataclass
class User(Entity):
    role: str = "user"  # admin, user or auditor (core/authz.py)
    group_id: int = 0

    @property
    def admin(self) -> bool:
        return self.role == "admin"
