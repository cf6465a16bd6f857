"""LVM datastores (the seed's design): image LVs in the volume group on the AoE-exported DRBD disk,
a VM disk is a snapshot LV of its image: thin (in the datastore's thin pool) or thick (a COW area
of snapshot_pct % of the image).

Metadata changes (create, rename, resize, remove, tag) run on the frontend only, each under one
`flock` there: the VG is shared over AoE without lvmlockd, so two writers of its metadata would
corrupt it. Hypervisor hosts only activate an LV (disk_source) and deactivate it.

Ownership: every LV this datastore makes carries the tag appliance.<prefix>, set by the same
lvcreate that makes it; nothing without the tag is ever removed, renamed or swept. A snapshot LV
is made by one lvcreate (complete or absent); an import writes <name>.tmp and renames it.

No live migration: neither a dm-snapshot's exception table nor a thin pool's metadata may be
active on two hosts at once, and a live migration needs exactly that; premigrate refuses
(NOT_SUPPORTED) and the manager refuses before it starts. No disk snapshots either (a snapshot of
a snapshot LV is not possible with thick LVM).

Activation is explicit only: a thick image LV is made with --setautoactivation n (its snapshots
are activated with it), a thin image with the activation skip flag, which its thin snapshots keep
(lvcreate takes --setautoactivation for a plain LV only); so a host that sees the
VG (over AoE, or a frontend whose DRBD turns primary) never activates the datastore's LVs at boot
or on a udev event; otherwise every hypervisor would hold every snapshot open at once.

A thin pool is the kernel's own metadata, written by whichever machine has the pool active: two
machines with it active corrupt every thin LV in it (why Proxmox calls LVM-thin local storage).
A thin datastore therefore names its pool_host: the one machine that runs its metadata changes
(creating a thin LV needs the pool active) and the only host its VM disks are activated on; a
clone or an activation for any other host is refused before anything changes.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from appliance.core.protocols import DiskSource, DriverError
from appliance.core.runner import CommandFailed, Runner
from appliance.storage.base import BackendBase
from appliance.storage.layout import TIMED_OUT, check_stamp
from appliance.storage.qcow2 import CONVERT_TIMEOUT, Qcow2Backend, convert_cmd

VG = re.compile(r"(?!\.\.?$)[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")  # lvm's own rule: no leading '-', not . or ..
LOCK_WAIT = 120  # s: a metadata command waits this long for another one on the frontend
METADATA_TIMEOUT = 180.0  # s: one lvm command, including the lock wait


# -- pure command builders (tests/golden/storage/lvm-*.txt) ----------------------------------------
def _common(driver_loaded: bool) -> list[str]:
    # --driverloaded n: metadata only, for a host without device-mapper (the tests' loop device).
    return [] if driver_loaded else ["--driverloaded", "n"]


def locked(lock: str, argv: list[str]) -> list[str]:
    """`argv` under the frontend's metadata lock (flock(1) exits 1 when the wait runs out)."""
    return ["flock", "--wait", str(LOCK_WAIT), lock, *argv]


def lvs_cmd(vg: str, driver_loaded: bool = True) -> list[str]:
    return ["lvs", *_common(driver_loaded), "--reportformat", "json", "--units", "m", "--nosuffix",
            "-o", "lv_name,lv_size,origin,lv_tags,pool_lv,lv_attr,data_percent", vg]


def vgs_cmd(vg: str, driver_loaded: bool = True) -> list[str]:
    return ["vgs", *_common(driver_loaded), "--reportformat", "json", "--units", "m", "--nosuffix",
            "-o", "vg_name,vg_size,vg_free", vg]


def create_cmd(vg: str, name: str, size_mb: int, tag: str, thin_pool: str = "",
               driver_loaded: bool = True) -> list[str]:
    size = ["--virtualsize", f"{size_mb}m", "--thinpool", f"{vg}/{thin_pool}"] if thin_pool \
        else ["--size", f"{size_mb}m"]
    # -an -Zn without device-mapper: nothing to activate or zero.
    extra = [] if driver_loaded else ["--activate", "n", "--zero", "n"]
    # A thin LV names its VG in --thinpool; a second, positional VG would be an error.
    # Never auto-activated: lvcreate takes --setautoactivation for a plain LV only; a thin LV gets
    # the activation skip flag instead (autoactivation honours it; activate_cmd overrides it).
    never = ["--setactivationskip", "y"] if thin_pool else ["--setautoactivation", "n"]
    return ["lvcreate", *_common(driver_loaded), "--yes", "--name", name, *size, "--addtag", tag,
            *never, *extra, *([] if thin_pool else [vg])]


def snapshot_cmd(vg: str, origin: str, name: str, tag: str, cow_mb: int = 0) -> list[str]:
    """A thin snapshot (cow_mb 0: the origin is a thin LV, the snapshot shares its pool) or a thick
    one with a COW area of cow_mb. lvcreate refuses --setautoactivation for a snapshot: a thick one
    is activated with its origin (made with autoactivation off), a thin one keeps LVM's activation
    skip flag, which every autoactivation honours; activate_cmd passes --ignoreactivationskip."""
    size = ["--size", f"{cow_mb}m"] if cow_mb else []
    return ["lvcreate", "--yes", "--snapshot", "--name", name, *size, "--addtag", tag, f"{vg}/{origin}"]


def rename_cmd(vg: str, old: str, new: str, driver_loaded: bool = True) -> list[str]:
    return ["lvrename", *_common(driver_loaded), vg, old, new]


def resize_cmd(vg: str, name: str, size_mb: int, driver_loaded: bool = True) -> list[str]:
    return ["lvresize", *_common(driver_loaded), "--yes", "--size", f"{size_mb}m", f"{vg}/{name}"]


def remove_cmd(vg: str, name: str, driver_loaded: bool = True) -> list[str]:
    return ["lvremove", *_common(driver_loaded), "--yes", f"{vg}/{name}"]


def activate_cmd(vg: str, name: str, on: bool) -> list[str]:
    # --yes: a thick snapshot is (de)activated together with its origin, and lvchange asks first.
    # --ignoreactivationskip: a thin snapshot has the skip flag (so nothing activates it by itself).
    return ["lvchange", "--yes", "--activate", "y" if on else "n", *(["--ignoreactivationskip"] if on else []),
            f"{vg}/{name}"]


def _mb(value: Any) -> int:
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        raise DriverError(f"lvm reported a size that is not a number: {value!r}") from None


class LvmBackend(BackendBase):
    name = "lvm"
    verbs = frozenset({"clone", "ln", "delete", "mkimage", "import", "resize", "capacity"})
    disk_format = "raw"

    def __init__(self, runner: Runner, vg: str, thin_pool: str = "", snapshot_pct: int = 100,
                 prefix: str = "one-", lock: str = "", host_runner: Callable[[str], Runner] | None = None,
                 driver_loaded: bool = True, timeout: float = METADATA_TIMEOUT, pool_host: str = ""):
        if not VG.fullmatch(vg) or (thin_pool and not VG.fullmatch(thin_pool)):
            raise DriverError(f"volume group {vg!r} / thin pool {thin_pool!r} is not a plain LVM name")
        if bool(thin_pool) != bool(pool_host):
            raise DriverError("a thin pool needs its pool_host (the one machine it may be active on), and "
                              "pool_host means nothing without a thin_pool")
        self.runner, self.vg, self.thin_pool, self.snapshot_pct = runner, vg, thin_pool, snapshot_pct
        self.prefix, self.tag = prefix, f"appliance.{prefix}"
        self.lock = lock or f"/run/lock/appliance-lvm-{vg}.lock"
        # The runner of a hypervisor host by name; by default the frontend itself (all-in-one).
        self.host_runner = host_runner or (lambda host: runner)
        self.pool_host = pool_host.lower()
        if thin_pool:  # every metadata change, and the lock, on the pool's one machine
            self.runner = self.host_runner(pool_host)
        self.driver_loaded, self.timeout = driver_loaded, timeout
        p = re.escape(prefix)
        n = r"(0|[1-9][0-9]*)"  # canonical numbers only: vm-01 would alias VM 1
        self._image = re.compile(p + rf"img-{n}")
        self._vm_disk = re.compile(p + rf"vm-{n}-disk-{n}")
        self._quarantined = re.compile(p + rf"q-{n}-([0-9]{{8}}T[0-9]{{6}}Z)-disk-{n}")

    # -- running -------------------------------------------------------------------------------------
    def _run(self, argv: list[str], runner: Runner | None = None, timeout: float | None = None) -> str:
        try:
            return (runner or self.runner).run(argv, timeout=timeout or self.timeout).stdout
        except CommandFailed as exc:
            if exc.result.returncode == TIMED_OUT:
                raise DriverError(f"`{exc.result.argv}` timed out") from None
            if argv[0] == "flock" and exc.result.returncode == 1 and not exc.result.stderr.strip():
                raise DriverError(f"another LVM change held {self.lock} for {LOCK_WAIT} s: try again") from None
            raise DriverError(str(exc)) from None

    def _change(self, argv: list[str]) -> str:
        return self._run(locked(self.lock, argv))

    def _lvs(self) -> dict[str, dict]:
        """Every LV of the VG by name; DriverError when LVM cannot say (a missing VG is an error,
        never an empty list: a sweep must not read "nothing is there" from a failure)."""
        out = self._run(lvs_cmd(self.vg, self.driver_loaded))
        try:
            rows = json.loads(out)["report"][0]["lv"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise DriverError(f"lvs {self.vg} gave no report") from None
        return {r["lv_name"]: r for r in rows if isinstance(r, dict) and "lv_name" in r}

    def _owned(self, row: dict | None) -> bool:
        return bool(row) and self.tag in str(row.get("lv_tags", "")).split(",")

    # -- names -------------------------------------------------------------------------------------
    def image_path(self, datastore_path: str, image_id: int) -> str:
        return f"/dev/{self.vg}/{self.prefix}img-{int(image_id)}"

    def disk_path(self, datastore_path: str, vm_id: int, index: int) -> str:
        return f"/dev/{self.vg}/{self.prefix}vm-{int(vm_id)}-disk-{int(index)}"

    def _ours(self, path: str) -> str:
        """The LV name of `path` when it names one of this datastore's LVs (/dev/<vg>/<prefix>...),
        DriverError otherwise: a verb never acts on another datastore's or an operator's LV."""
        vg_dir = f"/dev/{self.vg}/"
        name = path[len(vg_dir):] if isinstance(path, str) and path.startswith(vg_dir) else ""
        base = name[:-4] if name.endswith(".tmp") else name
        if not any(p.fullmatch(base) for p in (self._image, self._vm_disk, self._quarantined)):
            raise DriverError(f"{path!r} is not an LV of this datastore ({vg_dir}{self.prefix}img-N, "
                              f"{vg_dir}{self.prefix}vm-N-disk-N)")
        return name

    def _remove(self, name: str, lvs: dict[str, dict]) -> None:
        """Remove an LV this datastore made (its tag proves it); never one with snapshots."""
        row = lvs.get(name)
        if row is None:
            return
        if not self._owned(row):
            raise DriverError(f"/dev/{self.vg}/{name} exists but this datastore did not make it (no tag "
                              f"{self.tag}): it is left alone; remove it by hand if it is garbage")
        children = sorted(n for n, r in lvs.items() if r.get("origin") == name)
        if children:
            raise DriverError(f"/dev/{self.vg}/{name} has {len(children)} snapshot(s) "
                              f"({', '.join(children[:5])}): delete the VMs first")
        self._change(remove_cmd(self.vg, name, self.driver_loaded))

    def _free_mb(self) -> int:
        return self.capacity("")[1]

    # -- verbs -------------------------------------------------------------------------------------
    def create_image(self, target: str, size_mb: int) -> None:
        self.refuse("mkimage")
        name = self._ours(target)
        if not isinstance(size_mb, int) or not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        lvs = self._lvs()
        if name in lvs:
            if self._owned(lvs[name]) and _mb(lvs[name]["lv_size"]) >= size_mb:
                return  # made by an earlier try of this same request
            raise DriverError(f"{target} already exists")
        free = self._free_mb()
        if size_mb > free:
            raise DriverError(f"the datastore is full: a {size_mb} MiB image asked, {free} MiB free")
        # One lvcreate: the LV exists complete (tagged) or not at all.
        self._change(create_cmd(self.vg, name, size_mb, self.tag, self.thin_pool, self.driver_loaded))
        self._deactivate_here(name)

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        """Copy `source` (checked as a qcow2 import is) into a raw LV: written as <name>.tmp on the
        frontend, then renamed; a crash leaves a .tmp the start-up sweep removes."""
        self.refuse("import")
        name = self._ours(target)
        chain = Qcow2Backend(self.runner).checked_chain(source, allowed)
        size_mb = -(-int(chain[0].get("virtual-size", 0)) // (1024 * 1024))
        if size_mb < 1:
            raise DriverError(f"{source} has no virtual size")
        lvs = self._lvs()
        if name in lvs:
            raise DriverError(f"{target} already exists")
        tmp = f"{name}.tmp"
        if tmp in lvs:
            self._remove(tmp, lvs)
        free = self._free_mb()
        if size_mb > free:
            raise DriverError(f"the datastore is full: {source} needs {size_mb} MiB, {free} MiB free")
        self._change(create_cmd(self.vg, tmp, size_mb, self.tag, self.thin_pool, self.driver_loaded))
        argv = convert_cmd(source, f"/dev/{self.vg}/{tmp}", chain[0].get("format"))
        argv[argv.index("-O") + 1] = "raw"
        argv.insert(argv.index("convert") + 1, "-n")  # the LV exists: write into it, never create a file
        try:
            self._run(argv, timeout=CONVERT_TIMEOUT)
        except DriverError:
            self._deactivate_here(tmp)
            self._remove(tmp, self._lvs())
            raise
        self._deactivate_here(tmp)
        self._change(rename_cmd(self.vg, tmp, name, self.driver_loaded))
        return size_mb

    def _deactivate_here(self, name: str) -> None:
        """Leave nothing active on the frontend: an LV is active only on the host of its VM."""
        if self.driver_loaded:
            self._run(activate_cmd(self.vg, name, False))

    def _refuse_other_host(self, host: str) -> None:
        if self.thin_pool and host and host.lower() != self.pool_host:
            raise DriverError(f"thin pool {self.vg}/{self.thin_pool} may be active on {self.pool_host} only (a pool "
                              f"active on two machines corrupts its metadata), not on {host}: run the VM on "
                              f"{self.pool_host}, or use a datastore with thick snapshots")

    def clone(self, image: str, disk: str, host: str = "") -> None:
        self.refuse("clone")
        origin, name = self._ours(image), self._ours(disk)
        self._refuse_other_host(host)
        lvs = self._lvs()
        row = lvs.get(origin)
        if row is None or not self._image.fullmatch(origin):
            raise DriverError(f"image {image} does not exist")
        if not self._owned(row):
            raise DriverError(f"image {image} was not made by this datastore (no tag {self.tag})")
        if name in lvs:
            if lvs[name].get("origin") == origin and self._owned(lvs[name]):
                return  # an earlier try finished
            raise DriverError(f"{disk} already exists and is not a snapshot of {image}")
        thin = bool(self.thin_pool) and row.get("pool_lv") == self.thin_pool
        cow_mb = 0 if thin else max(4, _mb(row["lv_size"]) * self.snapshot_pct // 100)
        if cow_mb and cow_mb > self._free_mb():
            raise DriverError(f"the datastore is full: a snapshot of {image} needs {cow_mb} MiB")
        # One lvcreate: a snapshot LV exists complete (tagged) or not at all.
        self._change(snapshot_cmd(self.vg, origin, name, self.tag, cow_mb))
        self._deactivate_here(name)

    def verify(self, disk: str, image: str) -> bool:
        try:
            name, origin = self._ours(disk), self._ours(image)
        except DriverError:
            return False
        row = self._lvs().get(name)
        return bool(row) and row.get("origin") == origin and self._owned(row)

    def disk_source(self, disk: str, host: str) -> DiskSource:
        """The LV, activated on `host` (idempotent): its block device is what the domain opens."""
        name = self._ours(disk)
        self._refuse_other_host(host)
        if self.driver_loaded and host:
            self._run(activate_cmd(self.vg, name, True), runner=self.host_runner(host))
        return DiskSource("block", path=f"/dev/{self.vg}/{name}", format="raw")

    def release(self, disk: str, host: str) -> None:
        """Deactivate `disk` on `host` (after its VM stopped there)."""
        if self.driver_loaded:
            self._run(activate_cmd(self.vg, self._ours(disk), False), runner=self.host_runner(host))

    def delete_image(self, path: str) -> None:
        self.refuse("delete")
        self._remove(self._ours(path), self._lvs())

    def _vm_disks(self, lvs: dict[str, dict], vm_id: int | None = None) -> list[str]:
        found = []
        for name, row in lvs.items():
            m = self._vm_disk.fullmatch(name)
            if m and self._owned(row) and (vm_id is None or int(m[1]) == vm_id):
                found.append(name)
        return sorted(found)

    def vm_ids_with_disks(self, datastore_path: str) -> list[int]:
        return sorted({int(self._vm_disk.fullmatch(n)[1]) for n in self._vm_disks(self._lvs())})

    def delete_vm_disks(self, datastore_path: str, vm_id: int) -> None:
        lvs = self._lvs()
        for name in self._vm_disks(lvs, int(vm_id)):
            self._remove(name, lvs)

    def resize(self, disk: str, size_mb: int) -> None:
        self.refuse("resize")
        name = self._ours(disk)
        row = self._lvs().get(name)
        if row is None:
            raise DriverError(f"{disk} does not exist")
        current = _mb(row["lv_size"])
        if size_mb < current:
            raise DriverError(f"{disk} is {current} MiB; shrinking it to {size_mb} MiB would lose data")
        if size_mb == current:
            return
        if not self.thin_pool and size_mb - current > self._free_mb():
            raise DriverError(f"the datastore is full: growing {disk} by {size_mb - current} MiB does not fit")
        self._change(resize_cmd(self.vg, name, size_mb, self.driver_loaded))

    def snapshots(self, disk: str) -> list[str]:
        return []

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        """(total, free) MiB: the thin pool's data when there is one, the VG's extents otherwise."""
        self.refuse("capacity")
        if self.thin_pool:
            row = self._lvs().get(self.thin_pool)
            if row is None:
                raise DriverError(f"thin pool {self.vg}/{self.thin_pool} does not exist")
            total = _mb(row["lv_size"])
            used = float(row.get("data_percent") or 0)
            return total, int(total * (100 - used) / 100)
        out = self._run(vgs_cmd(self.vg, self.driver_loaded))
        try:
            row = json.loads(out)["report"][0]["vg"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise DriverError(f"volume group {self.vg} does not exist") from None
        return _mb(row["vg_size"]), _mb(row["vg_free"])

    # -- crash leftovers and quarantine --------------------------------------------------------------
    def _remove_partial(self, pattern: "re.Pattern[str]") -> list[str]:
        lvs = self._lvs()
        removed = []
        for name, row in sorted(lvs.items()):
            if name.endswith(".tmp") and pattern.fullmatch(name[:-4]) and self._owned(row):
                self._remove(name, lvs)
                removed.append(f"/dev/{self.vg}/{name}")
        return removed

    def remove_partial_images(self, datastore_path: str) -> list[str]:
        return self._remove_partial(self._image)

    def remove_partial_disks(self, datastore_path: str) -> list[str]:
        return self._remove_partial(self._vm_disk)

    def quarantine_vm_disks(self, datastore_path: str, vm_id: int, stamp: str) -> str:
        check_stamp(stamp)
        if not isinstance(vm_id, int) or isinstance(vm_id, bool) or vm_id < 0:
            raise DriverError(f"{vm_id!r} is not a VM id")
        lvs = self._lvs()
        moved = []
        for name in self._vm_disks(lvs, vm_id):
            target = f"{self.prefix}q-{vm_id}-{stamp}-disk-{self._vm_disk.fullmatch(name)[2]}"
            if target in lvs:
                raise DriverError(f"cannot quarantine {name}: {target} exists")
            self._change(rename_cmd(self.vg, name, target, self.driver_loaded))
            moved.append(target)
        return f"/dev/{self.vg}/{self.prefix}q-{vm_id}-{stamp}" if moved else ""

    def quarantined(self, datastore_path: str) -> list[tuple[int, str, str]]:
        found = {(int(m[1]), m[2]) for name, row in self._lvs().items()
                 if (m := self._quarantined.fullmatch(name)) and self._owned(row)}
        return sorted((vm, stamp, f"/dev/{self.vg}/{self.prefix}q-{vm}-{stamp}") for vm, stamp in found)

    def purge_quarantine(self, datastore_path: str, older_than: str) -> list[str]:
        check_stamp(older_than)
        lvs = self._lvs()
        removed = []
        for name, row in sorted(lvs.items()):
            m = self._quarantined.fullmatch(name)
            if m and m[2] < older_than and self._owned(row):
                self._remove(name, lvs)
                removed.append(f"/dev/{self.vg}/{name}")
        return removed


