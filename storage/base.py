"""What every backend shares: the NOT_SUPPORTED answer for verbs it lacks, and the defaults of a
shared-storage backend (every host opens the same file, so migration moves nothing)."""
from __future__ import annotations

from appliance.core.protocols import VERBS, DiskSource, NotSupported, file_source


class BackendBase:
    name = "base"
    verbs: frozenset[str] = frozenset()
    disk_format = "qcow2"

    def refuse(self, verb: str) -> None:
        """NotSupported unless this backend declares `verb`; call it first in every verb."""
        if verb not in VERBS:
            raise ValueError(verb)
        if verb not in self.verbs:
            raise NotSupported(self.name, verb)

    def disk_source(self, disk: str, host: str) -> DiskSource:
        return file_source(disk, self.disk_format)

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        self.refuse("premigrate")

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        self.refuse("postmigrate")

    # Verbs a subclass overrides when it can do them; here they refuse.
    def import_image(self, source, target, allowed=lambda path: True) -> int:
        self.refuse("import")
        raise AssertionError("unreachable")

    def create_image(self, target: str, size_mb: int) -> None:
        self.refuse("mkimage")

    def resize(self, disk: str, size_mb: int) -> None:
        self.refuse("resize")

    def snapshot_create(self, disk: str, name: str) -> None:
        self.refuse("snap_create")

    def snapshot_revert(self, disk: str, name: str) -> None:
        self.refuse("snap_revert")

    def snapshot_delete(self, disk: str, name: str) -> None:
        self.refuse("snap_delete")
