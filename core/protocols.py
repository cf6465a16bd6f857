"""What the manager needs from a hypervisor and from a storage backend. Implementations live in
drivers/ and storage/; the composition root hands them in. Every method is idempotent ("ensure"),
because after a crash the manager re-runs whatever step it was in."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


@dataclass(frozen=True)
class HostInfo:
    cpu_units: int  # 100 per core
    memory_mb: int
    hypervisor: str


SOURCE_KINDS = ("file", "block", "rbd", "iscsi", "nbd")
# What each kind of disk source must name; the libvirt domain builder renders each differently.
_SOURCE_NEEDS = {"file": ("path",), "block": ("path",), "rbd": ("name",), "iscsi": ("name", "hosts"),
                 "nbd": ("hosts",)}
# Everything in a source lands in an XML attribute or a qemu filename, so each field has its own
# plain shape: qemu splits an rbd: filename on ':' and would take "pool/img:conf=/x" as an option.
_SHAPES = {
    "path": re.compile(r"(?!.*/\.\.?(/|$))/[A-Za-z0-9._/+-]{1,1023}"),  # no . or .. segment
    "rbd": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[A-Za-z0-9][A-Za-z0-9._-]{0,255}"),
    "iscsi": re.compile(r"(iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]+(:[A-Za-z0-9._-]+)?|eui\.[0-9A-F]{16})/[0-9]{1,5}"),
    "iqn": re.compile(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]+(:[A-Za-z0-9._-]+)?"),
    "nbd": re.compile(r"[A-Za-z0-9._-]{1,256}"),
    "host": re.compile(r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}"),
    "word": re.compile(r"[A-Za-z0-9._-]{1,128}"),
}


@dataclass(frozen=True)
class DiskSource:
    """Where the hypervisor finds a VM disk, typed: a file, a block device (an activated LV, an
    iSCSI LUN logged in by the host), or a network disk qemu opens itself (rbd, iscsi, nbd).

    name: rbd "pool/image", iscsi "iqn.../lun", nbd the export; hosts: ("host:port", ...);
    auth_user and secret_uuid: the libvirt secret holding the cephx key (never the key itself);
    initiator: the iSCSI initiator name qemu logs in with (the target's ACL admits only it)."""

    kind: str
    path: str = ""
    name: str = ""
    hosts: tuple[str, ...] = ()
    format: str = "raw"
    auth_user: str = ""
    secret_uuid: str = ""
    initiator: str = ""

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise DriverError(f"disk source kind {self.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        missing = [f for f in _SOURCE_NEEDS[self.kind] if not getattr(self, f)]
        if missing:
            raise DriverError(f"a {self.kind} disk source needs {', '.join(missing)}")
        if self.format not in ("raw", "qcow2"):
            raise DriverError(f"disk format {self.format!r} is not raw or qcow2")
        checks = [("path", self.path, "path"), ("name", self.name, self.kind), ("auth_user", self.auth_user, "word"),
                  ("secret_uuid", self.secret_uuid, "word"), ("initiator", self.initiator, "iqn"), *(("hosts", h, "host") for h in self.hosts)]
        for what, value, shape in checks:
            if value and (shape not in _SHAPES or not _SHAPES[shape].fullmatch(value)):
                raise DriverError(f"{what} {value!r} is not a plain {shape if shape in _SHAPES else self.kind} "
                                  f"{what} for a {self.kind} disk source")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v}

    @classmethod
    def from_dict(cls, data: dict) -> "DiskSource":
        return cls(**{**data, "hosts": tuple(data.get("hosts", ()))})


def file_source(path: str, fmt: str = "qcow2") -> DiskSource:
    return DiskSource("file", path=path, format=fmt)


@dataclass(frozen=True)
class DiskSpec:
    path: str
    target: str  # vda, vdb, ...
    format: str = "qcow2"
    source: DiskSource | None = None  # None: the file at `path`

    @property
    def where(self) -> DiskSource:
        return self.source or file_source(self.path, self.format)


@dataclass(frozen=True)
class NicSpec:
    bridge: str
    mac: str


@dataclass(frozen=True)
class DomainSpec:
    name: str
    vcpu: int
    memory_mb: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


class Hypervisor(Protocol):
    def host_info(self) -> HostInfo: ...

    def domains(self) -> dict[str, str]:
        """Every domain on the host and its state: running, paused or shutoff."""

    def domain_state(self, name: str) -> str | None:
        """running, paused, shutoff, or None when there is no such domain."""

    def ensure_running(self, spec: DomainSpec) -> None:
        """Define if missing, start if stopped, resume if paused."""

    def ensure_stopped(self, name: str, graceful: bool = True) -> None: ...

    def ensure_paused(self, name: str) -> None: ...

    def ensure_absent(self, name: str) -> None:
        """Stop and undefine; nothing to do when there is no such domain."""

    def migrate(self, spec: DomainSpec, target: "Hypervisor") -> None:
        """Leave the domain running on target and absent here."""


class Backend(Protocol):
    """A datastore technology bound to one datastore, answering OpenNebula's transfer-manager verbs
    (VERBS). A verb it cannot do raises NotSupported, and `verbs` lists the ones it can, so the
    manager refuses a request before it changes any state. Verbs that act for a VM are told the host
    that runs it (`host`: the hypervisor's name): a backend that must log the host in, activate a
    volume there or copy to its local cache does it then."""

    name: str
    verbs: frozenset[str]

    def disk_source(self, disk: str, host: str) -> DiskSource:
        """How `host`'s hypervisor opens `disk` (rendered into the domain by the driver)."""

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        """Make `disk` usable on target_host before the live migration (activate, log in)."""

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        """Release `disk` on source_host after the migration succeeded."""

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str: ...

    def image_path(self, datastore_path: str, image_id: int) -> str: ...

    def clone(self, image: str, disk: str, host: str = "") -> None:
        """Make `disk` a copy-on-write child of `image` for a VM on `host` (atomically: complete or
        absent, also when the process dies at any point)."""

    def verify(self, disk: str, image: str) -> bool:
        """True when `disk` exists, is readable and is a child of `image`."""

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None: ...

    def vm_ids_with_disks(self, datastore_path: str) -> list[int]: ...

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        """Copy an image into the datastore; returns its virtual size in MiB. The source and every
        file it reads from (backing chain, data files) must be regular files that `allowed` accepts."""

    def create_image(self, target: str, size_mb: int) -> None: ...

    def delete_image(self, path: str) -> None: ...

    def resize(self, disk: str, size_mb: int) -> None: ...

    def snapshot_create(self, disk: str, name: str) -> None: ...

    def snapshot_revert(self, disk: str, name: str) -> None: ...

    def snapshot_delete(self, disk: str, name: str) -> None: ...

    def snapshots(self, disk: str) -> list[str]: ...

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        """(total MiB, free MiB) of the datastore."""

    def remove_partial_images(self, datastore_path: str) -> list[str]:
        """Delete images left half-written by a crash (qcow2: images/<id>.qcow2.tmp); returns the paths
        removed. Call only while nothing imports into the datastore (start-up)."""

    def remove_partial_disks(self, datastore_path: str) -> list[str]:
        """Delete VM disks left half-written by a crash (qcow2: vms/<id>/disk.<n>.qcow2.tmp); returns
        the paths removed. Call only while nothing clones into the datastore (start-up)."""

    def quarantine_vm_disks(self, datastore_path: str, vm_id: int, stamp: str) -> str:
        """Move a VM's disks aside instead of deleting them (stamp: UTC, like 20261129T041500Z); returns
        where they went, or "" when the VM has no disks here."""

    def quarantined(self, datastore_path: str) -> list[tuple[int, str, str]]:
        """(vm id, stamp, path) of each quarantined entry."""

    def purge_quarantine(self, datastore_path: str, older_than: str) -> list[str]:
        """Delete quarantined entries stamped before `older_than`; returns their paths."""


class DriverError(Exception):
    """A hypervisor or backend refused or failed; the message says why."""


class NotSupported(DriverError):
    """The backend cannot do this verb at all (not a failure): the manager refuses the request with
    NOT_SUPPORTED before it changes anything."""

    def __init__(self, backend: str, verb: str):
        super().__init__(f"the {backend} backend cannot {VERB_WORDS.get(verb, verb)} ({verb})")
        self.backend, self.verb = backend, verb


# OpenNebula's transfer-manager verbs this product needs, and what each does, for messages.
VERB_WORDS = {
    "clone": "make a copy-on-write disk of an image for a VM", "ln": "give a VM a persistent image itself",
    "delete": "delete a VM's disks", "mkimage": "create a blank image", "import": "import an image",
    "resize": "resize a disk", "snap_create": "snapshot a disk", "snap_revert": "revert a disk to a snapshot",
    "snap_delete": "delete a disk snapshot", "capacity": "report capacity", "premigrate": "prepare a migration",
    "postmigrate": "finish a migration",
}
VERBS = tuple(VERB_WORDS)


@dataclass(frozen=True)
class Param:
    """One typed datastore parameter a backend declares; checked at `datastore create`."""

    name: str
    kind: str = "str"  # str, int, bool, choice
    required: bool = False
    default: Any = None
    pattern: str = r"[A-Za-z0-9._-]{1,128}"  # str: the whole value must match
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = 2 ** 62
    help: str = ""
    example: Any = None  # a valid value, shown in help and used by the tests


@dataclass(frozen=True)
class BackendType:
    """A storage technology as the registry knows it: its parameters, the verbs it can do, and how to
    build one bound to a datastore (factory(runner, datastore_path, params))."""

    name: str
    summary: str
    params: tuple[Param, ...]
    verbs: frozenset[str]
    factory: Callable[..., Any]
    source_kind: str = "file"
    check: Callable[[dict[str, Any]], None] | None = None  # rules across parameters; raises ParamError
    # What a datastore of this backend owns outside its directory (an RBD pool and name prefix):
    # two datastores of one kind may not claim the same, or one's orphan sweep would take the
    # other's disks. (An image and a system datastore may: images and VM disks are named apart.)
    claim: Callable[[dict[str, Any]], str] | None = None
    # (resource, machine): the one machine that writes a shared resource's metadata (an LVM VG
    # without lvmlockd: the frontend, or a thin pool's host). Datastores of any kind on one resource
    # must name the same machine, or two machines would write the VG's metadata at once.
    writer: Callable[[dict[str, Any]], tuple[str, str]] | None = None


def check_params(backend: BackendType, given: dict[str, Any]) -> dict[str, Any]:
    """The datastore parameters with defaults filled in, or ParamError naming the field, the value
    and the fix. Pure: the registry's declarations are the only rule."""
    known = {p.name: p for p in backend.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ParamError(f"params.{unknown[0]}", given[unknown[0]],
                         f"the {backend.name} backend has no parameter {unknown[0]!r}; it takes: "
                         f"{', '.join(known) or 'none'}")
    out: dict[str, Any] = {}
    for p in backend.params:
        if p.name not in given:
            if p.required:
                raise ParamError(f"params.{p.name}", None, f"the {backend.name} backend needs {p.name}: {p.help}")
            if p.default is not None:
                out[p.name] = p.default
            continue
        value = given[p.name]
        if p.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not p.minimum <= value <= p.maximum:
                raise ParamError(f"params.{p.name}", value, f"{p.name} must be a whole number from {p.minimum} "
                                 f"to {p.maximum}")
        elif p.kind == "bool":
            if not isinstance(value, bool):
                raise ParamError(f"params.{p.name}", value, f"{p.name} must be true or false")
        elif p.kind == "choice":
            if value not in p.choices:
                raise ParamError(f"params.{p.name}", value, f"{p.name} must be one of {', '.join(p.choices)}")
        elif not isinstance(value, str) or not re.fullmatch(p.pattern, value):
            raise ParamError(f"params.{p.name}", value, f"{p.name} must match {p.pattern}: {p.help}")
        out[p.name] = value
    if backend.check:
        backend.check(out)
    return out


class ParamError(ValueError):
    def __init__(self, field_name: str, value: Any, fix: str):
        super().__init__(fix)
        self.field, self.value, self.fix = field_name, value, fix
