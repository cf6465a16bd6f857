"""The LVM datastore backend (storage/lvmds.py).

Here, without device-mapper: its metadata commands run for real on a volume group on a loop device
(`--driverloaded n`: create, resize, rename, remove, capacity, sweeps), and the command lists of
what needs device-mapper (snapshots, activation on a host) are golden files and scripted runs.
Snapshots, thin pools and activation over AoE run for real in the VM lab
(tests/vmlab/test_vmlab.py::test_lvm_datastore_clones_an_image_and_the_host_reads_it_over_aoe)."""
from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from appliance.core.protocols import DriverError, NotSupported
from appliance.runner.local import LocalRunner
from appliance.runner.recording import Expected, RecordingRunner
from appliance.storage import lvmds
from appliance.storage.lvmds import LvmBackend
from tests.conftest import GOLDEN, in_ci, require_tool

LVM = ("losetup", "pvcreate", "vgcreate", "lvcreate", "lvs", "vgs", "lvremove", "lvrename", "lvresize", "flock")


def _sh(*argv: str) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{argv}: {out.stderr}"
    return out.stdout


@pytest.fixture
def vg(tmp_path, request):
    """A fresh volume group on a 256 MiB sparse loop device, removed afterwards."""
    require_tool(*LVM)
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the LVM tests need root (loop devices)")
        pytest.skip("the LVM tests need root (loop devices)")
    name = f"apl-t{zlib.crc32(request.node.nodeid.encode()):08x}"
    image = tmp_path / "pv.img"
    with image.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
    loop = _sh("losetup", "--find", "--show", str(image)).strip()
    try:
        _sh("pvcreate", "-q", loop)
        _sh("vgcreate", "-q", name, loop)
        yield name
    finally:
        subprocess.run(["vgremove", "--driverloaded", "n", "-q", "-f", name], capture_output=True)
        subprocess.run(["pvremove", "-q", "-f", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def backend(vg: str, tmp_path: Path, **kw) -> LvmBackend:
    return LvmBackend(LocalRunner(), vg, lock=str(tmp_path / "lvm.lock"), driver_loaded=False, **kw)


def lvs(vg: str) -> dict[str, dict]:
    out = _sh("lvs", "--driverloaded", "n", "--reportformat", "json", "--units", "m", "--nosuffix",
              "-o", "lv_name,lv_size,lv_tags", vg)
    return {r["lv_name"]: r for r in json.loads(out)["report"][0]["lv"]}


def test_create_resize_capacity_and_delete_for_real(vg, tmp_path):
    b = backend(vg, tmp_path)
    total, free = b.capacity("")
    assert 240 <= total <= 256 and free == total
    image = b.image_path("", 7)
    assert image == f"/dev/{vg}/one-img-7"
    b.create_image(image, 32)
    assert lvs(vg)["one-img-7"]["lv_tags"] == "appliance.one-"
    # Never auto-activated: a host that sees the VG at boot does not open the datastore's LVs.
    assert _sh("lvs", "--driverloaded", "n", "--noheadings", "-o", "lv_autoactivation", f"{vg}/one-img-7").strip() == ""

    assert float(lvs(vg)["one-img-7"]["lv_size"]) == 32
    assert b.capacity("")[1] == free - 32
    b.create_image(image, 32)  # a retry of the same request changes nothing
    b.resize(image, 48)
    assert float(lvs(vg)["one-img-7"]["lv_size"]) == 48
    with pytest.raises(DriverError, match="shrinking it to 16 MiB would lose data"):
        b.resize(image, 16)
    assert float(lvs(vg)["one-img-7"]["lv_size"]) == 48
    b.delete_image(image)
    assert "one-img-7" not in lvs(vg) and b.capacity("")[1] == free
    _sh("lvcreate", "--driverloaded", "n", "-q", "--yes", "-an", "-Zn", "-L", "8m", "-n", "operator", vg)
    assert _sh("lvs", "--driverloaded", "n", "--noheadings", "-o", "lv_autoactivation", f"{vg}/operator").strip() \
        == "enabled"  # the field tells them apart: an LV made without the flag would be auto-activated


def test_a_full_datastore_refuses_before_anything_changes(vg, tmp_path):
    b = backend(vg, tmp_path)
    b.create_image(b.image_path("", 1), 16)
    before = lvs(vg)
    with pytest.raises(DriverError, match="the datastore is full"):
        b.create_image(b.image_path("", 2), 1024)
    with pytest.raises(DriverError, match="the datastore is full"):
        b.resize(b.image_path("", 1), 4096)
    assert lvs(vg) == before


def test_a_missing_volume_group_is_an_error_never_an_empty_datastore(tmp_path):
    require_tool(*LVM)
    b = LvmBackend(LocalRunner(), "apl-no-such-vg", lock=str(tmp_path / "l"), driver_loaded=False)
    with pytest.raises(DriverError):
        b.capacity("")
    with pytest.raises(DriverError):  # a sweep must not read "no disks" from a failure
        b.vm_ids_with_disks("")


def test_an_lv_named_like_ours_without_our_tag_is_never_touched(vg, tmp_path):
    """An operator's LVs (no tag, or another prefix) survive every delete, sweep and quarantine."""
    _sh("lvcreate", "--driverloaded", "n", "-an", "-Zn", "-q", "--yes", "-L", "8m", "-n", "one-vm-3-disk-0", vg)
    _sh("lvcreate", "--driverloaded", "n", "-an", "-Zn", "-q", "--yes", "-L", "8m", "-n", "one-img-4", vg)
    _sh("lvcreate", "--driverloaded", "n", "-an", "-Zn", "-q", "--yes", "-L", "8m", "-n", "one-img-5.tmp", vg)
    _sh("lvcreate", "--driverloaded", "n", "-an", "-Zn", "-q", "--yes", "-L", "8m", "-n", "root", vg)
    b = backend(vg, tmp_path)
    before = lvs(vg)
    assert b.vm_ids_with_disks("") == []
    b.delete_vm_disks("", 3)
    assert b.remove_partial_images("") == [] and b.remove_partial_disks("") == []
    assert b.quarantine_vm_disks("", 3, "20261207T150000Z") == ""
    with pytest.raises(DriverError, match="did not make it"):
        b.delete_image(b.image_path("", 4))
    with pytest.raises(DriverError, match="not an LV of this datastore"):
        b.delete_image(f"/dev/{vg}/root")
    with pytest.raises(DriverError, match="not an LV of this datastore"):
        b.create_image(f"/dev/{vg}/../{vg}/one-img-9", 8)
    with pytest.raises(DriverError, match="already exists"):
        b.create_image(b.image_path("", 4), 8)
    assert lvs(vg) == before


def test_sweeps_quarantine_and_purge_act_only_on_their_own_tagged_lvs(vg, tmp_path):
    b = backend(vg, tmp_path)
    other = backend(vg, tmp_path, prefix="two-")
    tag = "appliance.one-"
    for name in ("one-vm-5-disk-0", "one-vm-5-disk-1", "one-vm-6-disk-0", "one-img-8.tmp", "one-vm-6-disk-1.tmp"):
        _sh(*lvmds.create_cmd(vg, name, 8, tag, driver_loaded=False))
    other.create_image(other.image_path("", 8), 8)
    assert b.vm_ids_with_disks("") == [5, 6]
    assert b.remove_partial_images("") == [f"/dev/{vg}/one-img-8.tmp"]
    assert b.remove_partial_disks("") == [f"/dev/{vg}/one-vm-6-disk-1.tmp"]
    moved = b.quarantine_vm_disks("", 5, "20261207T150000Z")
    assert moved == f"/dev/{vg}/one-q-5-20261207T150000Z"
    assert {"one-q-5-20261207T150000Z-disk-0", "one-q-5-20261207T150000Z-disk-1"} <= set(lvs(vg))
    assert b.vm_ids_with_disks("") == [6]
    assert b.quarantined("") == [(5, "20261207T150000Z", moved)]
    assert b.purge_quarantine("", "20261207T140000Z") == []  # not older
    assert len(b.purge_quarantine("", "20261208T000000Z")) == 2
    b.delete_vm_disks("", 6)
    assert set(lvs(vg)) == {"two-img-8"}  # the other datastore's image is untouched


def test_metadata_changes_wait_for_the_frontends_lock(vg, tmp_path):
    """Two writers of the shared VG's metadata would corrupt it: every change takes one flock."""
    lock = tmp_path / "lvm.lock"
    b = backend(vg, tmp_path)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        import time
        for _ in range(100):  # until the holder has it
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
            time.sleep(0.05)
        original, lvmds.LOCK_WAIT = lvmds.LOCK_WAIT, 1
        try:
            with pytest.raises(DriverError, match="another LVM change held"):
                b.create_image(b.image_path("", 1), 8)
        finally:
            lvmds.LOCK_WAIT = original
        assert "one-img-1" not in lvs(vg)
    finally:
        holder.kill()
        holder.wait()
    b.create_image(b.image_path("", 1), 8)
    assert "one-img-1" in lvs(vg)


# -- what needs device-mapper: scripted runs and golden command lists -------------------------------------
def _report(*rows: dict) -> str:
    return json.dumps({"report": [{"lv": [{"lv_size": "1024.00", "origin": "", "lv_tags": "", "pool_lv": "",
                                           "lv_attr": "-wi-a-----", "data_percent": "", **r} for r in rows]}]})


VGS = json.dumps({"report": [{"vg": [{"vg_name": "one-data", "vg_size": "4096.00", "vg_free": "2048.00"}]}]})
LVS = "lvs --reportformat json --units m --nosuffix -o lv_name,lv_size,origin,lv_tags,pool_lv,lv_attr,data_percent one-data"
LOCK = "flock --wait 120 /run/lock/appliance-lvm-one-data.lock"


def test_a_clone_is_one_tagged_snapshot_under_the_lock_activated_only_on_the_vms_host():
    image = _report({"lv_name": "one-img-1", "lv_tags": "appliance.one-"})
    frontend = RecordingRunner("cc01", [
        Expected(LVS, stdout=image),
        Expected("vgs --reportformat json --units m --nosuffix -o vg_name,vg_size,vg_free one-data", stdout=VGS),
        Expected(f"{LOCK} lvcreate --yes --snapshot --name one-vm-4-disk-0 --size 1024m --addtag appliance.one- "
                 "one-data/one-img-1"),
        Expected("lvchange --yes --activate n one-data/one-vm-4-disk-0"),
    ])
    host = RecordingRunner("hv01", [Expected("lvchange --yes --activate y --ignoreactivationskip "
                                             "one-data/one-vm-4-disk-0")])
    b = LvmBackend(frontend, "one-data", host_runner=lambda name: {"hv01": host}[name])
    b.clone("/dev/one-data/one-img-1", "/dev/one-data/one-vm-4-disk-0", host="hv01")
    source = b.disk_source("/dev/one-data/one-vm-4-disk-0", "hv01")
    assert (source.kind, source.path, source.format) == ("block", "/dev/one-data/one-vm-4-disk-0", "raw")
    assert not frontend._expected and not host._expected


THIN_ROWS = _report({"lv_name": "one-img-1", "lv_tags": "appliance.one-", "pool_lv": "pool"},
                    {"lv_name": "pool", "lv_size": "1000.00", "lv_attr": "twi-a-tz--", "data_percent": "25.00"})


def test_a_thin_datastore_clones_without_a_cow_area_and_counts_the_pools_free_space():
    pool_host = RecordingRunner("hv01", [
        Expected(LVS, stdout=THIN_ROWS),
        Expected(f"{LOCK} lvcreate --yes --snapshot --name one-vm-4-disk-0 --addtag appliance.one- "
                 "one-data/one-img-1"),
        Expected("lvchange --yes --activate n one-data/one-vm-4-disk-0"),
        Expected(LVS, stdout=THIN_ROWS),
    ])
    frontend = RecordingRunner("cc01")  # nothing: the pool is never active on a second machine
    b = LvmBackend(frontend, "one-data", thin_pool="pool", pool_host="hv01",
                   host_runner=lambda name: {"hv01": pool_host}[name])
    b.clone("/dev/one-data/one-img-1", "/dev/one-data/one-vm-4-disk-0", host="hv01")
    assert b.capacity("") == (1000, 750)
    assert not pool_host._expected and not frontend.calls


def test_a_thin_pool_is_never_activated_on_a_second_machine():
    """A thin pool active on two machines corrupts its metadata: a clone or an activation for
    any host but the pool's own is refused before a command runs."""
    pool_host, other = RecordingRunner("hv01"), RecordingRunner("hv02")
    b = LvmBackend(RecordingRunner("cc01"), "one-data", thin_pool="pool", pool_host="HV01",
                   host_runner=lambda name: {"hv01": pool_host, "HV01": pool_host, "hv02": other}[name])
    for call in (lambda: b.clone("/dev/one-data/one-img-1", "/dev/one-data/one-vm-4-disk-0", host="hv02"),
                 lambda: b.disk_source("/dev/one-data/one-vm-4-disk-0", "hv02")):
        with pytest.raises(DriverError, match="may be active on hv01 only.*not on hv02"):
            call()
    assert not pool_host.calls and not other.calls
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "storage.md").read_text()
    assert "may be active on HOST only" in runbook and "lvs -o+autoactivation" in runbook
    with pytest.raises(DriverError, match="needs its pool_host"):
        LvmBackend(RecordingRunner("cc01"), "one-data", thin_pool="pool")
    with pytest.raises(DriverError, match="without a thin_pool"):
        LvmBackend(RecordingRunner("cc01"), "one-data", pool_host="hv01")


@pytest.mark.parametrize("params,message", [
    ({"vg": "one-data", "thin_pool": "pool"}, "a thin_pool needs pool_host"),
    ({"vg": "one-data", "pool_host": "hv01"}, "pool_host is for a thin_pool only"),
    ({"vg": "one-data", "thin_pool": "pool", "pool_host": "-hv01"}, "pool_host must match"),
])
def test_datastore_create_refuses_a_thin_pool_without_its_one_host(params, message):
    from appliance.core.protocols import ParamError
    from appliance.storage.registry import params_for

    with pytest.raises(ParamError, match=message) as caught:
        params_for("lvm", params)
    assert caught.value.field == "params.pool_host"


def test_an_image_with_snapshots_is_never_removed():
    rows = _report({"lv_name": "one-img-1", "lv_tags": "appliance.one-"},
                   {"lv_name": "one-vm-4-disk-0", "origin": "one-img-1", "lv_tags": "appliance.one-"})
    b = LvmBackend(RecordingRunner("cc01", [Expected(LVS, stdout=rows)]), "one-data")
    with pytest.raises(DriverError, match="has 1 snapshot"):
        b.delete_image("/dev/one-data/one-img-1")


def test_live_migration_and_disk_snapshots_are_not_supported():
    b = LvmBackend(RecordingRunner("cc01"), "one-data")
    for call in (lambda: b.premigrate("/dev/one-data/one-vm-1-disk-0", "a", "b"),
                 lambda: b.snapshot_create("/dev/one-data/one-vm-1-disk-0", "s")):
        with pytest.raises(NotSupported):
            call()


def test_command_lists_match_golden(update_golden):
    commands = {
        "create thick": lvmds.create_cmd("one-data", "one-img-1", 1024, "appliance.one-"),
        "create thin": lvmds.create_cmd("one-data", "one-img-1", 1024, "appliance.one-", thin_pool="pool"),
        "create metadata only": lvmds.create_cmd("one-data", "one-img-1", 8, "appliance.one-", driver_loaded=False),
        "snapshot thick": lvmds.snapshot_cmd("one-data", "one-img-1", "one-vm-4-disk-0", "appliance.one-", 512),
        "snapshot thin": lvmds.snapshot_cmd("one-data", "one-img-1", "one-vm-4-disk-0", "appliance.one-"),
        "locked": lvmds.locked("/run/lock/appliance-lvm-one-data.lock", ["lvremove", "--yes", "one-data/x"]),
        "rename": lvmds.rename_cmd("one-data", "one-img-1.tmp", "one-img-1"),
        "resize": lvmds.resize_cmd("one-data", "one-vm-4-disk-0", 2048),
        "remove": lvmds.remove_cmd("one-data", "one-vm-4-disk-0"),
        "activate": lvmds.activate_cmd("one-data", "one-vm-4-disk-0", True),
        "deactivate": lvmds.activate_cmd("one-data", "one-vm-4-disk-0", False),
        "lvs": lvmds.lvs_cmd("one-data"),
        "vgs": lvmds.vgs_cmd("one-data"),
    }
    text = "".join(f"{what}: {' '.join(argv)}\n" for what, argv in commands.items())
    golden = GOLDEN / "storage" / "lvm-commands.txt"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("backend,params", [
    ("lvm", {"vg": ".."}), ("lvm", {"vg": "."}), ("lvm", {"vg": "-one"}), ("lvm", {"vg": "one", "thin_pool": ".."}),
    ("iscsi", {"iqn": "iqn.2026-12.org.example", "portal": "-h:1"}),
    ("iscsi", {"iqn": "iqn.2026-12.org.example", "portal": "h:99999"}),
    ("iscsi", {"iqn": "iqn.2026-12.org.example", "portal": "h:0"}),
])
def test_names_lvm_or_tgtd_would_refuse_later_are_refused_at_datastore_create(backend, params):
    """The probe's cases: `..` as a VG made datastore create fail deep in lvm; a portal with a
    leading '-' or port 99999 reached the hosts."""
    from appliance.core.protocols import ParamError
    from appliance.storage import registry

    with pytest.raises(ParamError):
        registry.params_for(backend, params)
    assert registry.params_for("lvm", {"vg": "one-data", "thin_pool": "..pool", "pool_host": "hv01"})["vg"] == "one-data"
    assert registry.params_for("iscsi", {"iqn": "iqn.2026-12.org.example", "portal": "10.0.0.1:65535"})


def test_two_datastores_on_one_vg_must_write_its_metadata_from_one_machine(world):
    """A VG without lvmlockd has one metadata writer: a thick datastore's is the frontend, a thin
    one's its pool host. A second datastore on the same VG naming another machine is refused
    (IN_USE) before it exists; the same machine, or another VG, is accepted."""
    from appliance.core.actions import Manager
    from appliance.core.authz import SYSTEM
    from appliance.core.errors import CoreError
    from appliance.storage import registry
    from appliance.storage.dummy import DummyBackend

    manager = Manager(world.store, lambda ds: DummyBackend(LocalRunner()), backend_types=registry.TYPES)
    paths = [world.tmp / f"ds{i}" for i in range(5)]
    for p in paths:
        p.mkdir()
    manager.datastores.create(SYSTEM, "thick", str(paths[0]), backend="lvm", params={"vg": "one-data"})
    with pytest.raises(CoreError) as refused:
        manager.datastores.create(SYSTEM, "thin", str(paths[1]), backend="lvm", kind="system",
                                  params={"vg": "one-data", "thin_pool": "pool", "pool_host": "hv01", "prefix": "t-"})
    assert refused.value.code == "IN_USE" and "two writers" in str(refused.value)
    with world.store.transaction() as tx:
        assert [d.name for d in world.store.datastores.where(tx)] == ["thick"]
    manager.datastores.create(SYSTEM, "thin", str(paths[1]), backend="lvm", kind="image",
                              params={"vg": "hv01-data", "thin_pool": "pool", "pool_host": "hv01"})
    manager.datastores.create(SYSTEM, "thin-system", str(paths[2]), backend="lvm", kind="system",
                              params={"vg": "hv01-data", "thin_pool": "pool", "pool_host": "HV01"})
    with pytest.raises(CoreError) as refused:
        manager.datastores.create(SYSTEM, "thick-2", str(paths[3]), backend="lvm", kind="system",
                                  params={"vg": "hv01-data", "prefix": "x-"})
    assert refused.value.code == "IN_USE"
