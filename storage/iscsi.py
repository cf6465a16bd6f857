"""iSCSI datastores: raw images and VM disks in a directory on the frontend, each exported by tgtd as
its own target (one LUN), whose ACL admits only the initiator of the host that runs the VM.

qemu logs in itself through libiscsi with that initiator name (rendered in the domain's
<initiator>), so a host needs no iscsiadm session and no per-host set-up; another host, or
anyone else on the SAN, is refused at login. A migration binds the target's host first
(premigrate) and unbinds the source after (postmigrate).

A clone is a copy (`cp --reflink=auto`: instant on a filesystem with reflinks such as XFS or btrfs,
a full copy elsewhere), written as .tmp and renamed like every file of the directory layout.
tgtd keeps targets in memory only: after a tgtd restart, disk_source exports again (idempotent),
which the manager calls for every disk it deploys or migrates.
"""
from __future__ import annotations

import re
import threading
from typing import Callable

from appliance.core.protocols import DiskSource, DriverError
from appliance.core.runner import Runner
from appliance.storage.base import BackendBase
from appliance.storage.qcow2 import CONVERT_TIMEOUT, Qcow2Backend, convert_cmd

IQN = re.compile(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.-]{1,200}")
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_IMAGE = re.compile(r"/images/(0|[1-9][0-9]*)\.raw")  # canonical numbers: 01 would alias 1
_DISK = re.compile(r"/vms/(0|[1-9][0-9]*)/disk\.(0|[1-9][0-9]*)\.raw")
_EXPORT_LOCK = threading.Lock()  # tid allocation: show, then new with the next free tid


# -- pure command builders (tests/golden/storage/iscsi-commands.txt) -------------------------------
def tgtadm(control_port: int, *args: str) -> list[str]:
    return ["tgtadm", *(["-C", str(control_port)] if control_port else []), "--lld", "iscsi", *args]


def show_cmd(control_port: int) -> list[str]:
    return tgtadm(control_port, "--mode", "target", "--op", "show")


def new_target_cmd(control_port: int, tid: int, name: str) -> list[str]:
    return tgtadm(control_port, "--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", name)


def new_lun_cmd(control_port: int, tid: int, path: str) -> list[str]:
    return tgtadm(control_port, "--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1",
                  "--backing-store", path)


def bind_cmd(control_port: int, tid: int, initiator: str, bind: bool = True) -> list[str]:
    return tgtadm(control_port, "--mode", "target", "--op", "bind" if bind else "unbind", "--tid", str(tid),
                  "--initiator-name", initiator)


def delete_target_cmd(control_port: int, tid: int) -> list[str]:
    # --force: a target with a logged-in initiator is deleted too; callers unexport only disks whose
    # VM is gone (delete) or moved (quarantine).
    return tgtadm(control_port, "--mode", "target", "--op", "delete", "--force", "--tid", str(tid))


def parse_show(text: str) -> dict[str, dict]:
    """tgtadm's `show` as {target name: {"tid", "backing" (LUN 1's path), "acl": [initiators]}}. Pure."""
    targets: dict[str, dict] = {}
    current: dict | None = None
    in_acl = False
    for line in text.splitlines():
        m = re.fullmatch(r"Target ([0-9]+): (\S+)", line)
        if m:
            current = targets.setdefault(m[2], {"tid": int(m[1]), "backing": "", "acl": []})
            in_acl = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Backing store path:") and stripped != "Backing store path: None":
            current["backing"] = stripped.split(":", 1)[1].strip()
        elif stripped == "ACL information:":
            in_acl = True
        elif in_acl and line.startswith("        ") and stripped:
            current["acl"].append(stripped)
        elif not line.startswith("        "):
            in_acl = False
    return targets


class IscsiBackend(Qcow2Backend):
    name = "iscsi"
    suffix = "raw"
    disk_format = "raw"
    verbs = frozenset({"clone", "ln", "delete", "mkimage", "import", "resize", "capacity", "premigrate",
                       "postmigrate"})

    def __init__(self, runner: Runner, iqn: str, portal: str, control_port: int = 0, prefix: str = "one-",
                 convert_timeout: float = CONVERT_TIMEOUT):
        super().__init__(runner, convert_timeout=convert_timeout)
        if not IQN.fullmatch(iqn):
            raise DriverError(f"iqn {iqn!r} must look like iqn.2026-12.org.example.cloud")
        self.iqn, self.portal, self.control_port, self.prefix = iqn, portal, control_port, prefix

    # -- names -------------------------------------------------------------------------------------
    def target_name(self, path: str) -> str:
        """The target of an image or a VM disk of this datastore; DriverError for any other path."""
        for pattern, form in ((_IMAGE, "img-{0}"), (_DISK, "vm-{0}-disk-{1}")):
            m = pattern.search(path) if isinstance(path, str) else None
            if m and path.endswith(m[0]) and ".." not in path.split("/"):
                return f"{self.iqn}:{self.prefix}{form.format(*m.groups())}"
        raise DriverError(f"{path!r} is not an image or a VM disk of this datastore")

    def initiator(self, host: str) -> str:
        """The initiator name qemu on `host` logs in with: derived, so hosts need no set-up."""
        if not isinstance(host, str) or not HOST.fullmatch(host):
            raise DriverError(f"host {host!r} is not a plain host name")
        return f"{self.iqn}:host.{host.lower()}"

    # -- tgtd --------------------------------------------------------------------------------------
    def targets(self) -> dict[str, dict]:
        return parse_show(self._run(show_cmd(self.control_port), timeout=60))

    def export(self, path: str, host: str, exclusive: bool = False) -> str:
        """Export `path` as its target with `host` in its ACL (idempotent); returns the target name.
        exclusive: `host` alone (a boot: the VM runs nowhere else, so no other host keeps access)."""
        name, initiator = self.target_name(path), self.initiator(host)
        with _EXPORT_LOCK:
            targets = self.targets()
            target = targets.get(name)
            if target and target["backing"] and target["backing"] != path:
                raise DriverError(f"target {name} exports {target['backing']}, not {path}: unexport it by hand")
            if target is None:
                if not self.runner.run(["test", "-f", path], check=False).ok:
                    raise DriverError(f"{path} does not exist: nothing to export")
                tid = max((t["tid"] for t in targets.values()), default=0) + 1
                self._run(new_target_cmd(self.control_port, tid, name))
                target = {"tid": tid, "backing": "", "acl": []}
            if not target["backing"]:
                self._run(new_lun_cmd(self.control_port, target["tid"], path))
            if initiator not in target["acl"]:
                self._run(bind_cmd(self.control_port, target["tid"], initiator))
            for other in target["acl"] if exclusive else ():
                if other != initiator:
                    self._run(bind_cmd(self.control_port, target["tid"], other, bind=False))
        return name

    def attach(self, disk: str, host: str) -> None:
        """The VM boots on `host`: its disk's target admits that host alone (a host it ran on before,
        or the target of a migration that failed, loses its access)."""
        self.export(disk, host, exclusive=True)

    def _unexport(self, names: Callable[[str], bool], files: Callable[[str], bool]) -> None:
        """Delete the targets with a matching name that export one of this datastore's files: a
        target named like ours but exporting something else (another datastore with the same IQN
        and prefix, an operator's) is left alone."""
        with _EXPORT_LOCK:
            for name, target in sorted(self.targets().items()):
                if names(name) and files(target["backing"]):
                    self._run(delete_target_cmd(self.control_port, target["tid"]))

    def _vm_targets(self, vm_id: int) -> Callable[[str], bool]:
        pattern = re.compile(re.escape(f"{self.iqn}:{self.prefix}vm-{int(vm_id)}-disk-") + r"(0|[1-9][0-9]*)")
        return lambda name: bool(pattern.fullmatch(name))

    @staticmethod
    def _vm_files(datastore_path: str, vm_id: int) -> Callable[[str], bool]:
        pattern = re.compile(re.escape(f"{datastore_path}/vms/{int(vm_id)}/") + r"disk\.(0|[1-9][0-9]*)\.raw")
        return lambda backing: bool(pattern.fullmatch(backing))

    # -- verbs -------------------------------------------------------------------------------------
    def clone(self, image: str, disk: str, host: str = "") -> None:
        """A copy written as .tmp and renamed into place; an existing disk is never replaced (it may
        be a VM's data: a copy keeps no link to its image, so verify cannot prove it is a clone)."""
        self.refuse("clone")
        self.target_name(disk)
        if not self.runner.run(["test", "-f", image], check=False).ok:
            raise DriverError(f"image {image} does not exist")
        if self.runner.run(["test", "-e", disk], check=False).ok:
            raise DriverError(f"{disk} exists already: it is left as it is (move it away if it is not a VM's data)")
        tmp = f"{disk}.tmp"
        self._run(["mkdir", "-p", "--", disk.rsplit("/", 1)[0]])
        try:
            self._run(["cp", "--reflink=auto", "--sparse=always", "--", image, tmp], timeout=self.convert_timeout)
            self._run(["mv", "--no-clobber", "--no-target-directory", "--", tmp, disk])
        finally:
            self.runner.run(["rm", "-f", "--", tmp], check=False)  # mv -n leaves it when the disk appeared

    def verify(self, disk: str, image: str) -> bool:
        """A copy keeps no link to its image: the disk exists and is at least the image's size (a
        disk only grows: resize refuses to shrink)."""
        sizes = [self.runner.run(["stat", "-L", "--format=%s", "--", p], check=False) for p in (disk, image)]
        if not all(r.ok and r.stdout.strip().isdigit() for r in sizes):
            return False
        return int(sizes[0].stdout) >= int(sizes[1].stdout)

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        self.refuse("import")
        self.target_name(target)
        chain = self.checked_chain(source, allowed)
        size_mb = -(-int(chain[0].get("virtual-size", 0)) // (1024 * 1024))
        _, free = self.capacity(target.rsplit("/", 2)[0])
        if size_mb > free:  # raw is written in full (sparse where the source is zero)
            raise DriverError(f"the datastore is full: {source} needs up to {size_mb} MiB, {free} MiB free")
        argv = convert_cmd(source, f"{target}.tmp", chain[0].get("format"))
        argv[argv.index("-O") + 1] = "raw"
        self._into_place(argv, f"{target}.tmp", target, timeout=self.convert_timeout)
        return self.virtual_size_mb(target, timeout=self.info_timeout)

    def create_image(self, target: str, size_mb: int) -> None:
        self.refuse("mkimage")
        self.target_name(target)
        if not isinstance(size_mb, int) or not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        _, free = self.capacity(target.rsplit("/", 2)[0])
        if size_mb > free:
            raise DriverError(f"the datastore is full: a {size_mb} MiB image asked, {free} MiB free")
        tmp = f"{target}.tmp"
        self._into_place(["qemu-img", "create", "-q", "-f", "raw", tmp, f"{size_mb}M"], tmp, target)

    def resize(self, disk: str, size_mb: int) -> None:
        """Grow only; a logged-in initiator sees the new size after tgtd re-reads it (next export)."""
        self.refuse("resize")
        self.target_name(disk)
        current = self.virtual_size_mb(disk, timeout=self.info_timeout)
        if size_mb < current:
            raise DriverError(f"{disk} is {current} MiB; shrinking it to {size_mb} MiB would lose data")
        self._run(["qemu-img", "resize", "-q", "-f", "raw", disk, f"{size_mb}M"])

    def delete_image(self, path: str) -> None:
        self.refuse("delete")
        name = self.target_name(path)
        self._unexport(lambda n: n == name, lambda backing: backing == path)
        self._run(["rm", "-f", "--", path])

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None:
        self._unexport(self._vm_targets(vm_id), self._vm_files(datastore_path, vm_id))
        super().delete_vm_disks(datastore_path, vm_id)

    def quarantine_vm_disks(self, datastore_path: str, vm_id: int, stamp: str) -> str:
        # A target keeps its file open: unexport first, or it would go on serving the moved file.
        if isinstance(vm_id, int) and not isinstance(vm_id, bool) and vm_id >= 0:
            self._unexport(self._vm_targets(vm_id), self._vm_files(datastore_path, vm_id))
        return super().quarantine_vm_disks(datastore_path, vm_id, stamp)

    def snapshots(self, disk: str) -> list[str]:
        return []

    # A raw file has no snapshots: the base's refusals, not qcow2's qemu-img snapshot.
    snapshot_create = BackendBase.snapshot_create
    snapshot_revert = BackendBase.snapshot_revert
    snapshot_delete = BackendBase.snapshot_delete

    def disk_source(self, disk: str, host: str) -> DiskSource:
        """Export `disk` to `host` (idempotent) and say how qemu there opens it."""
        name = self.export(disk, host)
        return DiskSource("iscsi", name=f"{name}/1", hosts=(self.portal,), initiator=self.initiator(host),
                          format="raw")

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        self.export(disk, target_host)  # both hosts may log in while the memory moves

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        name, initiator = self.target_name(disk), self.initiator(source_host)
        with _EXPORT_LOCK:
            target = self.targets().get(name)
            if target and initiator in target["acl"]:
                self._run(bind_cmd(self.control_port, target["tid"], initiator, bind=False))
