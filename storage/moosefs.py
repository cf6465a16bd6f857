"""MooseFS datastores: a directory inside an mfsmount (every host mounts the same MooseFS), in the
qcow2 layout (storage/layout.py): <datastore>/images/<id>.qcow2, <datastore>/vms/<vm>/disk.<n>.qcow2.

A VM disk is `mfsmakesnapshot` of its image: the master makes a lazy copy that shares the image's
chunks until either file writes one (copy-on-write per 64 MiB chunk), so a clone takes the same time
for 1 GiB as for 1 TiB. The copy is a standalone qcow2 file, not an overlay: no backing file, and
deleting the image later leaves it whole. Each datastore keeps its own replication goal (copies of
every chunk), set on its directory the first time this backend writes there.
"""
from __future__ import annotations

import json
import re
import stat
from typing import Callable

from appliance.core.protocols import VERBS, DriverError
from appliance.core.runner import Runner
from appliance.storage.qcow2 import CONVERT_TIMEOUT, INFO_TIMEOUT, Qcow2Backend, info_cmd

DEFAULT_GOAL = 2
# Absolute, plain characters, no . or .. segment: it reaches argv and the master as it is.
PATH = re.compile(r"(?!.*/\.\.?(/|$))/[A-Za-z0-9._/+-]{1,1023}")
TOOL_TIMEOUT = 60.0  # s, one MooseFS tool call: metadata only; bounds a master that does not answer


# -- pure command builders -------------------------------------------------------------------------
def check_goal(goal: object) -> int:
    if isinstance(goal, bool) or not isinstance(goal, int) or not 1 <= goal <= 9:
        raise DriverError(f"goal {goal!r} must be a whole number of copies from 1 to 9")
    return goal


def check_path(path: object, what: str) -> str:
    if not isinstance(path, str) or not PATH.fullmatch(path) or "//" in path:
        raise DriverError(f"{what} {path!r} must be an absolute path of letters, digits and ._/+- without . or .. "
                          "segments")
    return path


def get_goal_cmd(path: str) -> list[str]:
    return ["mfsgetgoal", check_path(path, "path")]


def set_goal_cmd(path: str, goal: int) -> list[str]:
    # -r: what the directory already holds changes too; new files inherit the directory's goal.
    return ["mfssetgoal", "-r", str(check_goal(goal)), check_path(path, "path")]


def lazy_copy_cmd(source: str, target: str) -> list[str]:
    # No -o: an existing target (even a directory, which it would copy into) is an error, never replaced.
    return ["mfsmakesnapshot", check_path(source, "image"), check_path(target, "disk")]


def lstat_mode_cmd(path: str) -> list[str]:
    # No -L: a symbolic link is itself what mfsmakesnapshot would copy.
    return ["stat", "--format=%f", "--", path]


def parse_goal(output: str, path: str) -> int:
    """The goal in `mfsgetgoal PATH` output ("PATH: 2"); DriverError when it is not a plain goal
    (a storage class name, say)."""
    lines = [line for line in output.splitlines() if line.strip()]
    value = lines[-1].rsplit(":", 1)[-1].strip() if lines else ""
    if not lines or not lines[-1].startswith(f"{path}:") or not re.fullmatch(r"[1-9]", value):
        raise DriverError(f"mfsgetgoal {path} gave {output.strip()!r}, not a goal from 1 to 9; give the datastore a "
                          "plain goal (mfssetgoal) or ask for its storage class here")
    return int(value)


class MoosefsBackend(Qcow2Backend):
    """Every verb, as qcow2 (import, blank images, resize and snapshots are qemu-img on the file;
    migration moves nothing on shared storage), except clone and verify, and a goal per datastore."""

    name = "moosefs"
    verbs = frozenset(VERBS)

    def __init__(self, runner: Runner, datastore_path: str, goal: int = DEFAULT_GOAL,
                 info_timeout: float = INFO_TIMEOUT, convert_timeout: float = CONVERT_TIMEOUT):
        super().__init__(runner, info_timeout=info_timeout, convert_timeout=convert_timeout)
        self.datastore_path = check_path(datastore_path, "datastore path").rstrip("/") or "/"
        self.goal = check_goal(goal)
        self._goal_checked = False

    # -- the datastore's goal -----------------------------------------------------------------------
    def ensure_goal(self) -> None:
        """Give the datastore directory (and only it) this backend's goal: read it first, set it only
        when different. Once per backend object; the manager keeps one per datastore."""
        if self._goal_checked:
            return
        ds = self.datastore_path
        result = self.runner.run(get_goal_cmd(ds), check=False, timeout=TOOL_TIMEOUT)
        if not result.ok:
            said = (result.stderr or result.stdout).strip()[-300:]
            raise DriverError(f"datastore {ds} is not a directory on a MooseFS mount (mfsgetgoal: {said}): mount "
                              "MooseFS with mfsmount on every host and make the datastore a directory inside it")
        if parse_goal(result.stdout, ds) != self.goal:
            self._run(set_goal_cmd(ds, self.goal), timeout=TOOL_TIMEOUT)
        self._goal_checked = True

    def _inside(self, path: str, what: str) -> str:
        check_path(path, what)
        if not path.startswith(self.datastore_path.rstrip("/") + "/"):
            raise DriverError(f"{what} {path} is outside the datastore {self.datastore_path}")
        return path

    # -- verbs ---------------------------------------------------------------------------------------
    def clone(self, image: str, disk: str, host: str = "") -> None:
        """`disk` becomes a lazy copy of `image` under disk.tmp, then renamed into place: killed at any
        point it leaves a complete disk or none after the start-up sweep (remove_partial_disks). An
        existing disk is never replaced: it may be a VM's data."""
        check_path(image, "image")
        self._inside(disk, "disk")
        self.ensure_goal()
        # mfsmakesnapshot copies a symbolic link or a whole directory as it is: only a file will do.
        out = self._run(lstat_mode_cmd(image), timeout=self.info_timeout).strip()
        try:
            mode = int(out, 16)
        except ValueError:
            raise DriverError(f"cannot tell what image {image} is (stat said {out!r})") from None
        if not stat.S_ISREG(mode):
            raise DriverError(f"image {image} is not a regular file; refusing to clone it")
        tmp = f"{disk}.tmp"
        self._run(["mkdir", "-p", "--", disk.rsplit("/", 1)[0]])
        self._run(["rm", "-f", "--", tmp])  # a crashed clone's leftover: the sweep may not have run yet
        try:
            self._run(lazy_copy_cmd(image, tmp), timeout=TOOL_TIMEOUT)
        except DriverError as exc:
            self.runner.run(["rm", "-f", "--", tmp], check=False)
            raise DriverError(f"cannot clone {image} to {disk}: {exc}\n(a clone needs the image and the disk in "
                              "one MooseFS whose master answers)") from None
        # -n: never over an existing disk; -T: never into a directory of that name.
        moved = self.runner.run(["mv", "--no-clobber", "--no-target-directory", "--", tmp, disk], check=False)
        kept = moved.ok and self.runner.run(["test", "-e", tmp], check=False).ok  # mv -n skips silently
        if not moved.ok or kept:
            self.runner.run(["rm", "-f", "--", tmp], check=False)
            why = "it exists already; move it away if it is not a VM's data" if kept else moved.stderr.strip()
            raise DriverError(f"cannot put the clone of {image} in place at {disk}: {why}")

    def verify(self, disk: str, image: str) -> bool:
        """True when `disk` is a readable qcow2 file without a backing file, at least as large as the
        image (a disk only grows: resize refuses to shrink). A MooseFS snapshot is a standalone copy,
        not a qcow2 child, so the size is what can be checked; once the image is deleted nothing ties
        the disk to it and this is False."""
        disk_info, image_info = self._qcow2_info(disk), self._qcow2_info(image)
        if disk_info is None or image_info is None or disk_info.get("backing-filename"):
            return False
        size, base = disk_info.get("virtual-size"), image_info.get("virtual-size")
        return isinstance(size, int) and isinstance(base, int) and size >= base

    def _qcow2_info(self, path: str) -> dict | None:
        result = self.runner.run(info_cmd(path, "qcow2"), check=False, timeout=self.info_timeout)
        if not result.ok:
            return None
        try:
            info = json.loads(result.stdout)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        self._inside(target, "image")
        self.ensure_goal()
        return super().import_image(source, target, allowed)  # qcow2's checks of the source's whole chain

    def create_image(self, target: str, size_mb: int) -> None:
        self._inside(target, "image")
        self.ensure_goal()
        super().create_image(target, size_mb)

    def delete_image(self, path: str) -> None:
        # Safe with clones: each is a file of its own whose chunks MooseFS keeps while any file refers
        # to them, so nothing is refused here (qcow2 overlays would lose their backing file).
        self._inside(path, "image")
        super().delete_image(path)

    def resize(self, disk: str, size_mb: int) -> None:
        if isinstance(size_mb, bool) or not isinstance(size_mb, int) or not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError(f"size_mb {size_mb!r} must be a whole number of MiB from 1 to 64 TiB")
        super().resize(check_path(disk, "disk"), size_mb)

    def snapshot_create(self, disk: str, name: str) -> None:
        super().snapshot_create(check_path(disk, "disk"), name)  # qcow2 checks the name

    def snapshot_revert(self, disk: str, name: str) -> None:
        super().snapshot_revert(check_path(disk, "disk"), name)

    def snapshot_delete(self, disk: str, name: str) -> None:
        super().snapshot_delete(check_path(disk, "disk"), name)

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        """(total, free) MiB as df shows the mount, divided by the goal: MooseFS reports raw chunkserver
        space, and every byte written here is stored `goal` times."""
        total, free = super().capacity(check_path(datastore_path, "datastore path"))
        return total // self.goal, free // self.goal
