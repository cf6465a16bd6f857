"""What the manager needs from a hypervisor and from a storage backend. Implementations live in
drivers/ and storage/; the composition root hands them in. Every method is idempotent ("ensure"),
because after a crash the manager re-runs whatever step it was in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class HostInfo:
    cpu_units: int  # 100 per core
    memory_mb: int
    hypervisor: str


@dataclass(frozen=True)
class DiskSpec:
    path: str
    target: str  # vda, vdb, ...
    format: str = "qcow2"


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
    """A datastore technology, answering OpenNebula's transfer-manager verbs."""

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str: ...

    def image_path(self, datastore_path: str, image_id: int) -> str: ...

    def clone(self, image: str, disk: str) -> None:
        """Make `disk` a copy-on-write child of `image` (atomically: complete or absent)."""

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
