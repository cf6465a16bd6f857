"""The directory layout a file-based backend shares (qcow2, dummy): <datastore>/images/<id>.<suffix>
and <datastore>/vms/<vm id>/disk.<n>.<suffix>; writes land under <name>.tmp and are renamed into
place, so a crash leaves a complete file or none, and the start-up sweep removes the .tmp files.
Orphan sweeps quarantine a VM's directory (<datastore>/quarantine/<vm id>-<UTC stamp>) instead of
deleting it, so a wrong sweep can be undone until purge_quarantine runs."""
from __future__ import annotations

import re
import subprocess
from datetime import datetime

from appliance.core.protocols import DriverError
from appliance.core.runner import CommandFailed, Runner
from appliance.storage.base import BackendBase

# Canonical decimal only: "007" or a Unicode digit would alias vms/7 and make a sweep act on VM 7.
VM_DIR = re.compile(r"0|[1-9][0-9]*")
STAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # UTC, fixed width: string order is time order
QUARANTINED = re.compile(r"(0|[1-9][0-9]*)-([0-9]{8}T[0-9]{6}Z)")
TIMED_OUT = 124  # the returncode LocalRunner and SshRunner give a command that hit its timeout


def check_stamp(stamp: str) -> str:
    """A UTC stamp like 20261129T041500Z, or DriverError: it becomes part of a path."""
    if not isinstance(stamp, str) or not STAMP.fullmatch(stamp):
        raise DriverError(f"stamp {stamp!r} must look like 20261129T041500Z (UTC)")
    try:
        datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise DriverError(f"stamp {stamp!r} is not a valid date and time") from None
    return stamp


class DirectoryLayout(BackendBase):
    suffix = "img"

    def __init__(self, runner: Runner):
        self.runner = runner
        self._partial_image = re.compile(r"[0-9]+\." + re.escape(self.suffix) + r"\.tmp")
        self._partial_disk = re.compile(r"[0-9]+/disk\.[0-9]+\." + re.escape(self.suffix) + r"\.tmp")

    def _run(self, argv: list[str], timeout: float | None = None) -> str:
        try:
            return self.runner.run(argv, timeout=timeout).stdout
        except CommandFailed as exc:
            if timeout is not None and exc.result.returncode == TIMED_OUT:
                raise DriverError(f"`{exc.result.argv}` timed out after {timeout:g} s") from None
            raise DriverError(str(exc)) from None
        except (subprocess.TimeoutExpired, TimeoutError):  # a runner that raises instead of returning 124
            raise DriverError(f"`{' '.join(argv)}` timed out after {timeout} s") from None

    def _names(self, argv: list[str]) -> list[str]:
        """The NUL-separated names a find -printf '...\\0' prints; none when the directory is missing."""
        return [n for n in self.runner.run(argv, check=False).stdout.split("\0") if n]

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str:
        return f"{datastore_path}/vms/{int(vm_id)}/disk.{int(index)}.{self.suffix}"

    def image_path(self, datastore_path: str, image_id: int) -> str:
        return f"{datastore_path}/images/{int(image_id)}.{self.suffix}"

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None:
        self._run(["rm", "-rf", "--", f"{datastore_path}/vms/{int(vm_id)}"])

    def vm_ids_with_disks(self, datastore_path: str) -> list[int]:
        # Only vms/<id>/ directly: quarantine/ is a sibling of vms/, never searched. NUL-separated, so
        # a name with a space or newline cannot read as two ids.
        names = self._names(["find", f"{datastore_path}/vms", "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                             "-printf", "%f\\0"])
        return sorted(int(name) for name in names if VM_DIR.fullmatch(name))

    def remove_partial_images(self, datastore_path: str) -> list[str]:
        """Delete <ds>/images/<digits>.<suffix>.tmp (an import or create that crashed before its rename);
        returns the paths removed. Only when nothing is importing into this datastore (start-up)."""
        return self._remove_matching(f"{datastore_path}/images", 1, self._partial_image)

    def remove_partial_disks(self, datastore_path: str) -> list[str]:
        """Delete <ds>/vms/<digits>/disk.<digits>.<suffix>.tmp (a clone that crashed before its rename);
        returns the paths removed. Only when nothing is cloning into this datastore (start-up)."""
        return self._remove_matching(f"{datastore_path}/vms", 2, self._partial_disk)

    def _remove_matching(self, directory: str, depth: int, pattern: "re.Pattern[str]") -> list[str]:
        """Delete the regular files exactly `depth` levels below `directory` whose relative path
        matches `pattern` in full; nothing else is touched."""
        names = self._names(["find", directory, "-mindepth", str(depth), "-maxdepth", str(depth), "-type", "f",
                             "-printf", "%P\\0"])
        paths = sorted(f"{directory}/{n}" for n in names if pattern.fullmatch(n))
        if paths:
            self._run(["rm", "-f", "--", *paths])
        return paths

    # -- quarantine ------------------------------------------------------------------------------------
    def quarantine_vm_disks(self, datastore_path: str, vm_id: int, stamp: str) -> str:
        """Move <ds>/vms/<vm_id> to <ds>/quarantine/<vm_id>-<stamp> (stamp: UTC, 20261129T041500Z) and
        return the new path; "" when the VM has no directory. Never moves into an existing entry."""
        check_stamp(stamp)
        if not isinstance(vm_id, int) or isinstance(vm_id, bool) or vm_id < 0:
            raise DriverError(f"{vm_id!r} is not a VM id")
        source = f"{datastore_path}/vms/{vm_id}"
        if not self.runner.run(["test", "-d", source], check=False).ok:
            return ""
        quarantine = f"{datastore_path}/quarantine"
        target = f"{quarantine}/{vm_id}-{stamp}"
        self._run(["mkdir", "-p", "--", quarantine])
        if self.runner.run(["test", "-e", target], check=False).ok or \
                self.runner.run(["test", "-L", target], check=False).ok:
            raise DriverError(f"cannot quarantine {source}: {target} exists")
        # -T: rename onto `target` itself, never into it; -n: a target made since the test above is kept.
        self._run(["mv", "--no-target-directory", "--no-clobber", "--", source, target])
        if self.runner.run(["test", "-e", source], check=False).ok:  # mv -n skips silently
            raise DriverError(f"cannot quarantine {source}: {target} appeared meanwhile")
        return target

    def quarantined(self, datastore_path: str) -> list[tuple[int, str, str]]:
        """(vm id, stamp, path) of each entry in <ds>/quarantine named exactly <vm id>-<stamp>."""
        quarantine = f"{datastore_path}/quarantine"
        names = self._names(["find", quarantine, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f\\0"])
        found = [(int(m[1]), m[2], f"{quarantine}/{m[0]}") for m in map(QUARANTINED.fullmatch, names) if m]
        return sorted(found)

    def purge_quarantine(self, datastore_path: str, older_than: str) -> list[str]:
        """Remove quarantined entries whose stamp is before `older_than` (same format); returns them."""
        check_stamp(older_than)
        removed = []
        for _vm_id, stamp, path in self.quarantined(datastore_path):
            if stamp < older_than:
                self._run(["rm", "-rf", "--", path])
                removed.append(path)
        return removed
