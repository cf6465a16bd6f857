"""Ceph RBD datastores: images and VM disks are RBD images in one pool, named by the datastore's
prefix; a VM disk is a copy-on-write clone of a protected snapshot of its image, so a clone takes
the same time for 1 GiB as for 10 GiB. Each datastore uses its own cephx user (`--id`), whose key
sits in a keyring file readable by the manager alone; qemu opens the disks itself (rbd: source).

Names in the pool (PREFIX is the datastore's `prefix` parameter, "one-" by default):
    PREFIXimg-<image id>                       an image; its clones come from @appliance-base
    PREFIXvm-<vm id>-disk-<n>                  a VM disk (a clone of an image)
    PREFIXq-<vm id>-<UTC stamp>-disk-<n>       a quarantined VM disk (orphan sweep)
    <any of those>.tmp                         half made: a crash before the rename; swept at start-up

Every image is made under its .tmp name and renamed into place, so a crash leaves a complete image
or none. Deleting an image that still has clones is refused (Ceph would refuse to unprotect the
snapshot anyway, after we had already changed things).
"""
from __future__ import annotations

import json
import os
import re
import stat
from typing import Any, Callable

from appliance.core.protocols import VERBS, DiskSource, DriverError, ParamError
from appliance.core.runner import CommandFailed, Runner
from appliance.storage.base import BackendBase
from appliance.storage.layout import TIMED_OUT, check_stamp
from appliance.storage.qcow2 import CONVERT_TIMEOUT, INFO_TIMEOUT, SNAPSHOT, Qcow2Backend, convert_cmd

BASE = "appliance-base"  # the protected snapshot clones come from; not a user's snapshot
MIB = 1024 * 1024
OWNER_KEY = "appliance.owner"  # image metadata: which datastore made it (pool/prefix)
MISSING = "(2) No such file or directory"  # rbd's ENOENT; its exit code 2 also means "no cluster"


def check_params(params: dict[str, Any]) -> None:
    """Across parameters: the keyring, when named, is an absolute path; the user is not admin."""
    keyring = params.get("keyring", "")
    if keyring and not keyring.startswith("/"):
        raise ParamError("params.keyring", keyring, "give the keyring's absolute path")
    if params.get("user") == "admin":
        raise ParamError("params.user", "admin", "give the datastore a cephx user of its own, allowed "
                         "`profile rbd pool=POOL` only: client.admin can delete every pool")


class RbdBackend(BackendBase):
    name = "rbd"
    verbs = frozenset(VERBS)
    disk_format = "raw"

    def __init__(self, runner: Runner, pool: str, user: str, monitors: tuple[str, ...], conf: str = "/etc/ceph/ceph.conf",
                 keyring: str = "", prefix: str = "one-", secret_uuid: str = "", timeout: float = INFO_TIMEOUT):
        self.runner, self.pool, self.user, self.monitors = runner, pool, user, tuple(monitors)
        self.conf, self.keyring, self.prefix, self.secret_uuid = conf, keyring, prefix, secret_uuid
        self.timeout = timeout
        self._vm_disk = re.compile(re.escape(prefix) + r"vm-(0|[1-9][0-9]*)-disk-(0|[1-9][0-9]*)")
        self._quarantined = re.compile(re.escape(prefix) + r"q-(0|[1-9][0-9]*)-([0-9]{8}T[0-9]{6}Z)-disk-([0-9]+)")
        self._image = re.compile(re.escape(prefix) + r"img-(0|[1-9][0-9]*)")
        self.owner = f"{pool}/{prefix}"

    # -- commands ----------------------------------------------------------------------------------
    def _auth(self) -> list[str]:
        return ["-c", self.conf, "--id", self.user, *(["--keyring", self.keyring] if self.keyring else [])]

    def rbd_cmd(self, *args: str) -> list[str]:
        return ["rbd", *self._auth(), *args]

    def _run(self, argv: list[str], timeout: float | None = None) -> str:
        self._keyring_is_private()
        try:
            return self.runner.run(argv, timeout=timeout or self.timeout).stdout
        except CommandFailed as exc:
            if exc.result.returncode == TIMED_OUT:
                raise DriverError(f"`{' '.join(argv[:2])} ... {' '.join(argv[-2:])}` timed out") from None
            raise DriverError(str(exc)) from None

    def _rbd(self, *args: str, timeout: float | None = None) -> str:
        return self._run(self.rbd_cmd(*args), timeout=timeout)

    def _json(self, *args: str) -> Any:
        out = self._rbd(*args, "--format", "json")
        try:
            return json.loads(out or "null")
        except ValueError:
            raise DriverError(f"rbd {' '.join(args)} gave no JSON") from None

    def _keyring_is_private(self) -> None:
        """A keyring others can read gives them the datastore: refuse to use it (secrets stay secret)."""
        if not self.keyring:
            return
        try:
            mode = os.stat(self.keyring).st_mode
        except OSError as exc:
            raise DriverError(f"keyring {self.keyring}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DriverError(f"keyring {self.keyring} is readable by others (mode {stat.S_IMODE(mode):o}); "
                              f"chmod 600 {self.keyring}")

    def qemu_target(self, name: str) -> str:
        """The rbd: filename qemu-img writes an import to (the same options the domain uses)."""
        options = [f"id={self.user}", f"conf={self.conf}", *([f"keyring={self.keyring}"] if self.keyring else [])]
        return ":".join([f"rbd:{name}", *options])

    # -- names -------------------------------------------------------------------------------------
    def image_path(self, datastore_path: str, image_id: int) -> str:
        return f"{self.pool}/{self.prefix}img-{int(image_id)}"

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str:
        return f"{self.pool}/{self.prefix}vm-{int(vm_id)}-disk-{int(index)}"

    def _ours(self, name: str) -> str:
        """`name` if it has the shape of this datastore's images (pool, prefix and one of its name
        patterns, maybe .tmp); DriverError otherwise, so a verb never acts on another datastore's
        (or an operator's) image. Its owner mark is checked before anything is removed (_owned)."""
        pool, _, image = name.partition("/")
        base = image[:-4] if image.endswith(".tmp") else image
        if pool != self.pool or not any(p.fullmatch(base) for p in (self._image, self._vm_disk, self._quarantined)):
            raise DriverError(f"{name} is not an image of this datastore ({self.pool}/{self.prefix}img-N, "
                              f"{self.prefix}vm-N-disk-N)")
        return name

    def _mark(self, name: str) -> None:
        """Record that this datastore made `name` (before it is renamed into place): the only proof
        a sweep or a delete accepts, so a disk someone else named like ours is never removed."""
        self._rbd("image-meta", "set", name, OWNER_KEY, self.owner)

    def _owned(self, name: str) -> bool:
        result = self.runner.run(self.rbd_cmd("image-meta", "get", name, OWNER_KEY), check=False,
                                 timeout=self.timeout)
        return result.ok and result.stdout.strip() == self.owner

    def _names(self) -> list[str]:
        listed = self._json("ls", self.pool)
        return [n for n in listed or [] if isinstance(n, str) and n.startswith(self.prefix)]

    def _owned_names(self) -> list[str]:
        """This datastore's images by name and by mark: what a sweep may act on."""
        return [n for n in self._names() if self._owned(f"{self.pool}/{n}")]

    def _info(self, name: str) -> dict | None:
        """The image's `rbd info`, None when it does not exist; DriverError when Ceph could not say
        (no cluster, a cephx refusal, a timeout): "gone" is never assumed."""
        self._keyring_is_private()
        result = self.runner.run(self.rbd_cmd("info", name, "--format", "json"), check=False, timeout=self.timeout)
        if not result.ok:
            if MISSING in result.stderr:
                return None
            raise DriverError(f"rbd info {name} failed ({result.returncode}): {result.stderr.strip()[-300:]}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise DriverError(f"rbd info {name} gave no JSON") from None

    def _into_place(self, tmp: str, name: str) -> None:
        self._rbd("rename", tmp, name)

    def _remove(self, name: str) -> None:
        """Remove an image this datastore made (its mark proves it) and its snapshots; never one
        with clones (rbd refuses). An image without our mark is refused, never removed."""
        info = self._info(name)
        if info is None:
            return
        # A .tmp name is a half-made image by definition (nothing finished ever has one); any
        # other name must carry our mark.
        if not name.endswith(".tmp") and not self._owned(name):
            raise DriverError(f"{name} exists but this datastore did not make it (no {OWNER_KEY} = {self.owner}): "
                              "it is left alone; remove it by hand if it is garbage")
        for snap in self._json("snap", "ls", name) or []:
            if snap.get("protected") == "true" or snap.get("protected") is True:
                self._rbd("snap", "unprotect", f"{name}@{snap['name']}")
        if info.get("snapshot_count"):
            self._rbd("snap", "purge", name)
        self._rbd("rm", "--no-progress", name)

    # -- verbs -------------------------------------------------------------------------------------
    def create_image(self, target: str, size_mb: int) -> None:
        self.refuse("mkimage")
        self._ours(target)
        if not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        _, free = self.capacity("")
        if size_mb > free:
            raise DriverError(f"the datastore is full: a {size_mb} MiB image asked, {free} MiB free")
        tmp = f"{target}.tmp"
        self._remove(tmp)
        self._rbd("create", "--size", f"{size_mb}M", tmp)
        self._mark(tmp)
        self._base(tmp)
        self._into_place(tmp, target)

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        """Convert `source` (checked as a qcow2 import is: a regular file whose whole chain `allowed`
        accepts) into a raw RBD image, through qemu's rbd driver as this datastore's user."""
        self.refuse("import")
        self._ours(target)
        chain = Qcow2Backend(self.runner).checked_chain(source, allowed)
        tmp = f"{target}.tmp"
        self._remove(tmp)
        argv = convert_cmd(source, self.qemu_target(tmp), chain[0].get("format"))
        argv[argv.index("-O") + 1] = "raw"
        try:
            self._run(argv, timeout=CONVERT_TIMEOUT)
        except DriverError:
            self._remove(tmp)
            raise
        self._mark(tmp)
        self._base(tmp)
        self._into_place(tmp, target)
        return self._size_mb(target)

    def _size_mb(self, name: str) -> int:
        info = self._info(name)
        if info is None:
            raise DriverError(f"{name} is not an RBD image")
        return int(info["size"]) // MIB

    def _base(self, image: str) -> str:
        """image@appliance-base, made and protected when the image is made (by the image's own
        datastore, as its own user); idempotent."""
        snaps = {s.get("name"): s for s in self._json("snap", "ls", image) or []}
        if BASE not in snaps:
            self._rbd("snap", "create", f"{image}@{BASE}")
            snaps[BASE] = {"protected": "false"}
        if str(snaps[BASE].get("protected")).lower() != "true":
            self._rbd("snap", "protect", f"{image}@{BASE}")
        return f"{image}@{BASE}"

    def clone(self, image: str, disk: str, host: str = "") -> None:
        self.refuse("clone")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}/[A-Za-z0-9._-]{1,256}", image):
            raise DriverError(f"{image!r} is not an RBD image name (pool/image)")
        self._ours(disk)
        if self._info(image) is None:
            raise DriverError(f"image {image} does not exist")
        # The image's datastore made and protected the snapshot; this user only reads it.
        snaps = {s.get("name"): s for s in self._json("snap", "ls", image) or []}
        if str(snaps.get(BASE, {}).get("protected")).lower() != "true":
            raise DriverError(f"image {image} has no protected snapshot @{BASE}: it was not made by an rbd "
                              "datastore of this product")
        tmp = f"{disk}.tmp"
        self._remove(tmp)
        self._rbd("clone", f"{image}@{BASE}", tmp)
        self._mark(tmp)
        self._into_place(tmp, disk)

    def verify(self, disk: str, image: str) -> bool:
        info = self._info(disk)
        parent = (info or {}).get("parent") or {}
        return f"{parent.get('pool')}/{parent.get('image')}" == image and parent.get("snapshot") == BASE

    def flatten(self, disk: str) -> None:
        """Copy the parent's blocks into the clone, so it no longer depends on its image."""
        self._rbd("flatten", "--no-progress", self._ours(disk), timeout=CONVERT_TIMEOUT)

    def delete_image(self, path: str) -> None:
        self.refuse("delete")
        self._ours(path)
        if self._info(path) is None:
            return
        snaps = {s.get("name") for s in self._json("snap", "ls", path) or []}
        if BASE in snaps:
            children = self._json("children", f"{path}@{BASE}") or []
            if children:
                names = ", ".join(f"{c.get('pool')}/{c.get('image')}" for c in children[:5])
                raise DriverError(f"image {path} has {len(children)} clone(s) ({names}): delete the VMs, or "
                                  "flatten their disks, first")
        self._remove(path)

    def vm_ids_with_disks(self, datastore_path: str) -> list[int]:
        return sorted({int(m[1]) for m in map(self._vm_disk.fullmatch, self._owned_names()) if m})

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None:
        for name in self._names():
            m = self._vm_disk.fullmatch(name)
            if m and int(m[1]) == int(vm_id):
                self._remove(f"{self.pool}/{name}")  # refuses a disk without our mark

    def resize(self, disk: str, size_mb: int) -> None:
        self.refuse("resize")
        current = self._size_mb(self._ours(disk))
        if size_mb < current:
            raise DriverError(f"{disk} is {current} MiB; shrinking it to {size_mb} MiB would lose data")
        self._rbd("resize", "--no-progress", "--size", f"{size_mb}M", disk)

    def _snap(self, verb: str, disk: str, name: str) -> str:
        self.refuse(verb)
        self._ours(disk)
        if not SNAPSHOT.fullmatch(name) or name == BASE:
            raise DriverError(f"snapshot name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                              f"(and not {BASE})")
        return f"{disk}@{name}"

    def snapshot_create(self, disk: str, name: str) -> None:
        self._rbd("snap", "create", self._snap("snap_create", disk, name))

    def snapshot_revert(self, disk: str, name: str) -> None:
        self._rbd("snap", "rollback", "--no-progress", self._snap("snap_revert", disk, name))

    def snapshot_delete(self, disk: str, name: str) -> None:
        self._rbd("snap", "rm", "--no-progress", self._snap("snap_delete", disk, name))

    def snapshots(self, disk: str) -> list[str]:
        if self._info(self._ours(disk)) is None:
            raise DriverError(f"{disk} is not an RBD image")
        return [s["name"] for s in self._json("snap", "ls", disk) or [] if s.get("name") != BASE]

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        """(total, free) MiB of the pool: what it stores plus what it may still store (max_avail,
        which accounts for replication)."""
        self.refuse("capacity")
        df = json.loads(self._run(["ceph", *self._auth(), "df", "--format", "json"]) or "{}")
        for pool in df.get("pools", []):
            if pool.get("name") == self.pool:
                stats = pool.get("stats", {})
                free = int(stats.get("max_avail", 0)) // MIB
                return free + int(stats.get("stored", stats.get("bytes_used", 0))) // MIB, free
        raise DriverError(f"pool {self.pool} does not exist (or user {self.user} may not see it)")

    def disk_source(self, disk: str, host: str) -> DiskSource:
        return DiskSource("rbd", name=self._ours(disk), hosts=self.monitors, auth_user=self.user,
                          secret_uuid=self.secret_uuid, format="raw")

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        pass  # every host reaches the cluster: nothing to move

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        pass

    # -- crash leftovers and quarantine --------------------------------------------------------------
    def _remove_partial(self, pattern: "re.Pattern[str]") -> list[str]:
        """.tmp images of this datastore's name patterns: a crash before the rename. One the dead
        client still watches (Ceph drops the watch after 30 s) is left for the next sweep."""
        removed = []
        for name in self._names():
            if name.endswith(".tmp") and pattern.fullmatch(name[:-4]):
                try:
                    self._remove(f"{self.pool}/{name}")
                except DriverError as exc:
                    if "has watchers" not in str(exc):
                        raise
                    continue
                removed.append(f"{self.pool}/{name}")
        return removed

    def remove_partial_images(self, datastore_path: str) -> list[str]:
        return self._remove_partial(self._image)

    def remove_partial_disks(self, datastore_path: str) -> list[str]:
        return self._remove_partial(self._vm_disk)

    def quarantine_vm_disks(self, datastore_path: str, vm_id: int, stamp: str) -> str:
        check_stamp(stamp)
        if not isinstance(vm_id, int) or isinstance(vm_id, bool) or vm_id < 0:
            raise DriverError(f"{vm_id!r} is not a VM id")
        moved = []
        for name in self._owned_names():
            m = self._vm_disk.fullmatch(name)
            if m and int(m[1]) == vm_id:
                target = f"{self.prefix}q-{vm_id}-{stamp}-disk-{m[2]}"
                self._rbd("rename", f"{self.pool}/{name}", f"{self.pool}/{target}")
                moved.append(target)
        return f"{self.pool}/{self.prefix}q-{vm_id}-{stamp}" if moved else ""

    def quarantined(self, datastore_path: str) -> list[tuple[int, str, str]]:
        found = {(int(m[1]), m[2]) for m in map(self._quarantined.fullmatch, self._owned_names()) if m}
        return sorted((vm, stamp, f"{self.pool}/{self.prefix}q-{vm}-{stamp}") for vm, stamp in found)

    def purge_quarantine(self, datastore_path: str, older_than: str) -> list[str]:
        check_stamp(older_than)
        removed = []
        for name in self._owned_names():
            m = self._quarantined.fullmatch(name)
            if m and m[2] < older_than:
                self._remove(f"{self.pool}/{name}")
                removed.append(f"{self.pool}/{name}")
        return removed
