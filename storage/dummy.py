"""A backend that stores no data: each image or disk is a small JSON descriptor (size, parent,
snapshots) in the directory layout qcow2 uses. It answers every verb the way a real backend must
(atomic writes, refusals, capacity), so the contract suite and the manager's tests run it beside the
real ones; its `verbs` parameter drops verbs, to show how the manager refuses what a backend lacks."""
from __future__ import annotations

import json
import os
from pathlib import Path

from appliance.core.protocols import VERBS, DriverError, ParamError
from appliance.core.runner import Runner
from appliance.storage.layout import DirectoryLayout
from appliance.storage.qcow2 import SNAPSHOT

MAX_MB = 64 * 1024 * 1024


def check_verbs(params: dict) -> None:
    unknown = sorted(set(params.get("verbs", "").split(",")) - set(VERBS) - {""})
    if unknown:
        raise ParamError("params.verbs", params["verbs"], f"{unknown[0]!r} is not a verb; verbs: {', '.join(VERBS)}")


class DummyBackend(DirectoryLayout):
    name = "dummy"
    suffix = "dummy"
    disk_format = "raw"

    def __init__(self, runner: Runner, size_mb: int = 1024 * 1024, verbs: frozenset[str] = frozenset(VERBS)):
        super().__init__(runner)
        self.size_mb = size_mb
        self.verbs = frozenset(verbs)

    # -- descriptors -----------------------------------------------------------------------------------
    def _read(self, path: str) -> dict | None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("dummy") == 1 else None

    def _require(self, path: str) -> dict:
        data = self._read(path)
        if data is None:
            raise DriverError(f"{path} is not a dummy disk")
        return data

    def _write(self, path: str, data: dict) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps({"dummy": 1, **data}, sort_keys=True))
        os.replace(tmp, target)

    def _used_mb(self, datastore_path: str) -> int:
        used = 0
        for sub in ("images", "vms"):
            for found in Path(datastore_path, sub).rglob(f"*.{self.suffix}"):
                data = self._read(str(found))
                used += int(data.get("allocated_mb", 0)) if data else 0
        return used

    def _room(self, path: str, size_mb: int) -> None:
        datastore = str(Path(path).parents[1] if "/vms/" not in path else Path(path).parents[2])
        free = self.size_mb - self._used_mb(datastore)
        if size_mb > free:
            raise DriverError(f"datastore {datastore} is full: {size_mb} MiB asked, {free} MiB free")

    # -- verbs ---------------------------------------------------------------------------------------
    def clone(self, image: str, disk: str, host: str = "") -> None:
        self.refuse("clone")
        base = self._require(image)
        self._write(disk, {"size_mb": base["size_mb"], "allocated_mb": 0, "parent": image, "snapshots": []})

    def verify(self, disk: str, image: str) -> bool:
        data = self._read(disk)
        return data is not None and data.get("parent") == image

    def import_image(self, source, target, allowed=lambda path: True) -> int:
        self.refuse("import")
        real = os.path.realpath(source)
        if not allowed(real) or not os.path.isfile(real):
            raise DriverError(f"refusing to import {source}: not a regular file in the allowed directories")
        size_mb = max(1, -(-os.path.getsize(real) // (1024 * 1024)))
        self._room(target, size_mb)
        self._write(target, {"size_mb": size_mb, "allocated_mb": size_mb, "parent": "", "snapshots": []})
        return size_mb

    def create_image(self, target: str, size_mb: int) -> None:
        self.refuse("mkimage")
        if not 1 <= size_mb <= MAX_MB:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        self._room(target, size_mb)
        self._write(target, {"size_mb": size_mb, "allocated_mb": size_mb, "parent": "", "snapshots": []})

    def delete_image(self, path: str) -> None:
        self.refuse("delete")
        Path(path).unlink(missing_ok=True)

    def resize(self, disk: str, size_mb: int) -> None:
        self.refuse("resize")
        data = self._require(disk)
        if size_mb < data["size_mb"]:
            raise DriverError(f"{disk} is {data['size_mb']} MiB; shrinking it to {size_mb} MiB would lose data")
        self._write(disk, {**data, "size_mb": size_mb})

    def _snapshot(self, verb: str, disk: str, name: str) -> tuple[dict, list]:
        self.refuse(verb)
        if not SNAPSHOT.fullmatch(name):
            raise DriverError(f"snapshot name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        data = self._require(disk)
        return data, list(data.get("snapshots", []))

    def snapshot_create(self, disk: str, name: str) -> None:
        data, names = self._snapshot("snap_create", disk, name)
        if name in names:
            raise DriverError(f"{disk} already has a snapshot {name!r}")
        self._write(disk, {**data, "snapshots": names + [name]})

    def snapshot_revert(self, disk: str, name: str) -> None:
        _, names = self._snapshot("snap_revert", disk, name)
        if name not in names:
            raise DriverError(f"{disk} has no snapshot {name!r}")

    def snapshot_delete(self, disk: str, name: str) -> None:
        data, names = self._snapshot("snap_delete", disk, name)
        if name not in names:
            raise DriverError(f"{disk} has no snapshot {name!r}")
        self._write(disk, {**data, "snapshots": [n for n in names if n != name]})

    def snapshots(self, disk: str) -> list[str]:
        return list(self._require(disk).get("snapshots", []))

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        self.refuse("capacity")
        if not Path(datastore_path).is_dir():
            raise DriverError(f"{datastore_path} is not a directory")
        return self.size_mb, self.size_mb - self._used_mb(datastore_path)

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        self.refuse("premigrate")

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        self.refuse("postmigrate")
