"""qcow2 datastores on a directory: images are base files, VM disks are copy-on-write overlays.

Layout: <datastore>/images/<image id>.qcow2 and <datastore>/vms/<vm id>/disk.<n>.qcow2.
Every write goes to a temporary name first and is renamed into place, so a crash leaves a
complete file or no file, never a half-made overlay that looks valid.
"""
from __future__ import annotations

import json
import re

from appliance.core.protocols import DriverError
from appliance.core.runner import CommandFailed, Runner

SNAPSHOT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# -- pure command builders -------------------------------------------------------------------------
def overlay_cmd(backing: str, target: str) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, target]


def blank_cmd(target: str, size_mb: int) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", target, f"{size_mb}M"]


def convert_cmd(source: str, target: str) -> list[str]:
    return ["qemu-img", "convert", "-O", "qcow2", source, target]


def info_cmd(path: str) -> list[str]:
    return ["qemu-img", "info", "--output=json", "--force-share", path]


def resize_cmd(path: str, size_mb: int) -> list[str]:
    return ["qemu-img", "resize", "-q", path, f"{size_mb}M"]


def snapshot_cmd(flag: str, name: str, path: str) -> list[str]:
    if flag not in ("-c", "-a", "-d"):
        raise ValueError(flag)
    if not SNAPSHOT.fullmatch(name):
        raise DriverError(f"snapshot name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return ["qemu-img", "snapshot", flag, name, path]


def capacity_cmd(path: str) -> list[str]:
    return ["df", "--block-size=1M", "--output=size,avail", path]


class Qcow2Backend:
    def __init__(self, runner: Runner):
        self.runner = runner

    def _run(self, argv: list[str]) -> str:
        try:
            return self.runner.run(argv).stdout
        except CommandFailed as exc:
            raise DriverError(str(exc)) from None

    def _into_place(self, build: list[str], tmp: str, target: str) -> None:
        self._run(["mkdir", "-p", target.rsplit("/", 1)[0]])
        try:
            self._run(build)
            self._run(["mv", "-f", "--", tmp, target])
        except DriverError:
            self.runner.run(["rm", "-f", "--", tmp], check=False)
            raise

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str:
        return f"{datastore_path}/vms/{int(vm_id)}/disk.{int(index)}.qcow2"

    def image_path(self, datastore_path: str, image_id: int) -> str:
        return f"{datastore_path}/images/{int(image_id)}.qcow2"

    def info(self, path: str) -> dict | None:
        result = self.runner.run(info_cmd(path), check=False)
        if not result.ok:
            return None
        return json.loads(result.stdout)

    def clone(self, image: str, disk: str) -> None:
        tmp = f"{disk}.tmp"
        self._into_place(overlay_cmd(image, tmp), tmp, disk)

    def verify(self, disk: str, image: str) -> bool:
        info = self.info(disk)
        return info is not None and info.get("backing-filename") == image

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None:
        self._run(["rm", "-rf", "--", f"{datastore_path}/vms/{int(vm_id)}"])

    def vm_ids_with_disks(self, datastore_path: str) -> list[int]:
        result = self.runner.run(["find", f"{datastore_path}/vms", "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                                  "-printf", "%f\\n"], check=False)
        return sorted(int(name) for name in result.stdout.split() if name.isdigit())

    def import_image(self, source: str, target: str) -> int:
        if self.info(source) is None:
            raise DriverError(f"{source} is not a readable disk image")
        tmp = f"{target}.tmp"
        self._into_place(convert_cmd(source, tmp), tmp, target)
        return self.virtual_size_mb(target)

    def virtual_size_mb(self, path: str) -> int:
        info = self.info(path)
        if info is None:
            raise DriverError(f"{path} is not a readable disk image")
        return int(info["virtual-size"]) // (1024 * 1024)

    def create_image(self, target: str, size_mb: int) -> None:
        if not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        tmp = f"{target}.tmp"
        self._into_place(blank_cmd(tmp, size_mb), tmp, target)

    def delete_image(self, path: str) -> None:
        self._run(["rm", "-f", "--", path])

    def resize(self, disk: str, size_mb: int) -> None:
        self._run(resize_cmd(disk, size_mb))

    def snapshot_create(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-c", name, disk))

    def snapshot_revert(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-a", name, disk))

    def snapshot_delete(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-d", name, disk))

    def snapshots(self, disk: str) -> list[str]:
        info = self.info(disk)
        if info is None:
            raise DriverError(f"{disk} is not a readable disk image")
        return [s["name"] for s in info.get("snapshots", [])]

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        lines = self._run(capacity_cmd(datastore_path)).split("\n")
        size, avail = lines[1].split()
        return int(size), int(avail)
