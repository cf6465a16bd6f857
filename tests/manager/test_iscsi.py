"""The iSCSI backend against a real tgtd (appliance.lab.tgt), read and written through libiscsi
(qemu-img / qemu-io opening the rendered source, initiator name included). The contract suite
(test_backend_contract.py) covers the verbs every backend shares; here: the ACL per host, its move
in a migration, idempotent exports, removal on delete, and a tgtd restart."""
from __future__ import annotations

import subprocess

import pytest

from appliance.core.protocols import DriverError
from appliance.drivers.libvirt import qemu_filename
from appliance.runner.local import LocalRunner
from appliance.storage import iscsi
from appliance.storage.iscsi import IscsiBackend
from tests.conftest import GOLDEN, require_tool

IQN = "iqn.2026-12.org.example.test"


@pytest.fixture
def tgt(tmp_path):
    from appliance.lab import tgt as lab

    require_tool("tgtd", "tgtadm", "qemu-img", "qemu-io")
    directory = tmp_path / "tgt"
    target = lab.up(directory)
    yield target
    lab.down(directory)


def _backend(tgt, tmp_path) -> tuple[IscsiBackend, str]:
    ds = tmp_path / "ds"
    ds.mkdir(exist_ok=True)
    return IscsiBackend(LocalRunner(), IQN, tgt.portal, control_port=tgt.control_port), str(ds)


def _io(source, *commands: str) -> subprocess.CompletedProcess:
    argv = ["qemu-io"]
    for c in commands:
        argv += ["-c", c]
    return subprocess.run([*argv, qemu_filename(source)], capture_output=True, text=True, timeout=60)


def _as(source, host: str):
    """The same source as another host's qemu would present it (its own initiator name)."""
    from dataclasses import replace
    return replace(source, initiator=f"{IQN}:host.{host}")


def test_only_the_vms_host_logs_in_and_a_migration_moves_the_acl(tgt, tmp_path):
    b, ds = _backend(tgt, tmp_path)
    image, disk = b.image_path(ds, 1), b.disk_path(ds, 3, 0)
    b.create_image(image, 8)
    b.clone(image, disk, host="hv01")
    source = b.disk_source(disk, "hv01")
    assert source.kind == "iscsi" and source.initiator == f"{IQN}:host.hv01"
    written = _io(source, "write -P 0x5a 0 64k")
    assert written.returncode == 0, written.stderr
    with open(disk, "rb") as f:
        assert f.read(65536) == b"\x5a" * 65536  # through tgtd into the disk's file
    refused = _io(_as(source, "hv02"), "read 0 4k")
    assert refused.returncode != 0 and "log in" in refused.stderr.lower()

    b.premigrate(disk, "hv01", "hv02")  # both may log in while the memory moves
    assert _io(_as(source, "hv02"), "read -P 0x5a 0 4k").returncode == 0
    assert _io(source, "read -P 0x5a 0 4k").returncode == 0
    b.postmigrate(disk, "hv01", "hv02")
    assert _io(_as(source, "hv02"), "read -P 0x5a 0 4k").returncode == 0
    assert _io(source, "read 0 4k").returncode != 0  # the old host is out
    assert b.targets()[b.target_name(disk)]["acl"] == [f"{IQN}:host.hv02"]


def test_exports_are_idempotent_and_removed_with_the_disks(tgt, tmp_path):
    b, ds = _backend(tgt, tmp_path)
    image = b.image_path(ds, 1)
    b.create_image(image, 8)
    for vm in (4, 5):
        b.clone(image, b.disk_path(ds, vm, 0), host="hv01")
        b.disk_source(b.disk_path(ds, vm, 0), "hv01")
        b.disk_source(b.disk_path(ds, vm, 0), "hv01")  # again: no second target, no second ACL entry
    targets = b.targets()
    assert sorted(targets) == [f"{IQN}:one-vm-4-disk-0", f"{IQN}:one-vm-5-disk-0"]
    assert all(t["acl"] == [f"{IQN}:host.hv01"] for t in targets.values())
    assert targets[f"{IQN}:one-vm-4-disk-0"]["backing"] == b.disk_path(ds, 4, 0)
    b.delete_vm_disks(ds, 4)
    assert sorted(b.targets()) == [f"{IQN}:one-vm-5-disk-0"]  # VM 5's export is untouched
    assert b.vm_ids_with_disks(ds) == [5]
    moved = b.quarantine_vm_disks(ds, 5, "20261207T160000Z")
    assert moved and b.targets() == {}  # a quarantined disk is no longer served


def test_a_tgtd_restart_loses_targets_and_the_next_deploy_exports_again(tgt, tmp_path):
    from appliance.lab import tgt as lab

    b, ds = _backend(tgt, tmp_path)
    image, disk = b.image_path(ds, 1), b.disk_path(ds, 2, 0)
    b.create_image(image, 8)
    b.clone(image, disk, host="hv01")
    b.disk_source(disk, "hv01")
    lab.down(tgt.directory)
    restarted = lab.up(tgt.directory)
    b = IscsiBackend(LocalRunner(), IQN, restarted.portal, control_port=restarted.control_port)
    assert b.targets() == {}
    source = b.disk_source(disk, "hv01")
    assert _io(source, "read 0 4k").returncode == 0


def test_paths_outside_the_layout_and_missing_files_are_never_exported(tgt, tmp_path):
    b, ds = _backend(tgt, tmp_path)
    for bad in ("/etc/shadow", f"{ds}/vms/1/../../../etc/disk.0.raw", f"{ds}/images/1.qcow2"):
        with pytest.raises(DriverError):
            b.disk_source(bad, "hv01")
    with pytest.raises(DriverError, match="does not exist"):
        b.disk_source(b.disk_path(ds, 1, 0), "hv01")
    with pytest.raises(DriverError, match="not a plain host name"):
        b.disk_source(b.disk_path(ds, 1, 0), "hv01; reboot")
    assert b.targets() == {}


def test_parse_show_reads_targets_luns_and_acls():
    text = ("Target 1: iqn.2026-12.x:one-vm-1-disk-0\n    System information:\n        Driver: iscsi\n"
            "    LUN information:\n        LUN: 0\n            Backing store path: None\n        LUN: 1\n"
            "            Backing store path: /srv/ds/vms/1/disk.0.raw\n    Account information:\n"
            "    ACL information:\n        iqn.2026-12.x:host.hv01\n        iqn.2026-12.x:host.hv02\n"
            "Target 2: iqn.2026-12.x:one-img-3\n    ACL information:\n")
    assert iscsi.parse_show(text) == {
        "iqn.2026-12.x:one-vm-1-disk-0": {"tid": 1, "backing": "/srv/ds/vms/1/disk.0.raw",
                                          "acl": ["iqn.2026-12.x:host.hv01", "iqn.2026-12.x:host.hv02"]},
        "iqn.2026-12.x:one-img-3": {"tid": 2, "backing": "", "acl": []}}


def test_command_lists_match_golden(update_golden):
    commands = {
        "show": iscsi.show_cmd(0),
        "show on a lab tgtd": iscsi.show_cmd(107),
        "new target": iscsi.new_target_cmd(0, 3, f"{IQN}:one-vm-7-disk-0"),
        "new lun": iscsi.new_lun_cmd(0, 3, "/srv/ds/vms/7/disk.0.raw"),
        "bind": iscsi.bind_cmd(0, 3, f"{IQN}:host.hv01"),
        "unbind": iscsi.bind_cmd(0, 3, f"{IQN}:host.hv01", bind=False),
        "delete": iscsi.delete_target_cmd(0, 3),
    }
    text = "".join(f"{what}: {' '.join(argv)}\n" for what, argv in commands.items())
    golden = GOLDEN / "storage" / "iscsi-commands.txt"
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text()


def test_a_vm_resumed_after_a_tgtd_restart_gets_its_target_back(tgt, tmp_path):
    """The runbook's case (docs/runbooks/storage.md): tgtd restarted and forgot every target; the
    VM's next boot (resume, recover --retry) exports its disk again, through the manager."""
    from appliance.core.actions import Manager, PathPolicy
    from appliance.core.actions.vms import VmSpec
    from appliance.core.authz import SYSTEM
    from appliance.core.clock import SystemClock
    from appliance.core.controller import Controller, Settings
    from appliance.core.db import DatabaseUrl, migrate, open_database
    from appliance.core.hooks import Hooks
    from appliance.core.pools import Store
    from appliance.drivers.fake import FakeHypervisor
    from appliance.lab import tgt as lab
    from appliance.storage import registry
    from tests.conftest import ROOT

    assert "recover <id> --retry" in (ROOT / "docs" / "runbooks" / "storage.md").read_text()
    db = open_database(DatabaseUrl("sqlite", path=str(tmp_path / "m.db")))
    migrate(db)
    store = Store(db)
    params = {"iqn": IQN, "portal": tgt.portal, "control_port": tgt.control_port}
    backends: dict = {}

    def backend_for(ds):
        return backends.setdefault(ds.id, registry.build(ds.backend, LocalRunner(), ds.path, ds.params))
    fake = FakeHypervisor(cpu_units=800, memory_mb=8192)
    controller = Controller(store, lambda host: fake, backend_for, Hooks([], None), SystemClock(),
                            Settings(monitor_interval=3600))
    manager = Manager(store, backend_for, datastore_paths=PathPolicy([str(tmp_path)]),
                      import_paths=PathPolicy([str(tmp_path)]), backend_types=registry.TYPES)
    for name in ("images", "system"):
        (tmp_path / name).mkdir()
    manager.hosts.create(SYSTEM, "hv01", driver="fake")
    images = manager.datastores.create(SYSTEM, "images", str(tmp_path / "images"), kind="image", backend="iscsi",
                                       params=params)
    manager.datastores.create(SYSTEM, "system", str(tmp_path / "system"), backend="iscsi", params=params)
    image = manager.images.create(SYSTEM, "blank", images.id, size_mb=8, public=True)
    controller.monitor_hosts(force=True)
    vm = manager.vms.create(SYSTEM, VmSpec("db", cpu=0.1, memory=64, disks=[image.id]))[0]

    def settle(state):
        for _ in range(50):
            if manager.vms.get(SYSTEM, vm.id).state == state:
                return
            controller.run_once()
        raise AssertionError(f"VM {vm.id} is {manager.vms.get(SYSTEM, vm.id).state}, not {state}")
    settle("RUNNING")
    disk = manager.vms.get(SYSTEM, vm.id).disks[0]["path"]
    name = IscsiBackend(LocalRunner(), IQN, tgt.portal, control_port=tgt.control_port).target_name(disk)
    manager.vms.action(SYSTEM, vm.id, "poweroff")
    settle("POWEROFF")
    lab.down(tgt.directory)
    restarted = lab.up(tgt.directory)  # a tgtd without targets, on the same channel and portal
    fresh = IscsiBackend(LocalRunner(), IQN, restarted.portal, control_port=restarted.control_port)
    assert name not in fresh.targets()
    manager.vms.action(SYSTEM, vm.id, "resume")
    settle("RUNNING")
    assert fresh.targets()[name]["acl"] == [f"{IQN}:host.hv01"]
    # A host that kept access (it ran the VM before, or a migration to it failed) loses it at the next boot.
    fresh._run(iscsi.bind_cmd(restarted.control_port, fresh.targets()[name]["tid"], f"{IQN}:host.hv09"))
    manager.vms.action(SYSTEM, vm.id, "poweroff")
    settle("POWEROFF")
    manager.vms.action(SYSTEM, vm.id, "resume")
    settle("RUNNING")
    assert fresh.targets()[name]["acl"] == [f"{IQN}:host.hv01"]


def test_a_target_named_like_ours_exporting_another_file_is_left_alone(tgt, tmp_path):
    """Another datastore with the same IQN and prefix, or an operator, may export a file under one
    of our target names: deleting our VM's disks deletes only targets that export our files."""
    b, ds = _backend(tgt, tmp_path)
    other = tmp_path / "other" / "vms" / "1"
    other.mkdir(parents=True)
    (other / "disk.0.raw").write_bytes(bytes(1024 * 1024))
    foreign = IscsiBackend(LocalRunner(), IQN, tgt.portal, control_port=tgt.control_port)
    foreign.disk_source(str(other / "disk.0.raw"), "hv01")
    b.delete_vm_disks(ds, 1)
    assert f"{IQN}:one-vm-1-disk-0" in b.targets()
    assert (other / "disk.0.raw").exists()


def test_a_clone_never_replaces_an_existing_disk_and_a_grown_disk_still_verifies(tgt, tmp_path):
    b, ds = _backend(tgt, tmp_path)
    image, disk = b.image_path(ds, 1), b.disk_path(ds, 2, 0)
    b.create_image(image, 8)
    b.clone(image, disk, host="hv01")
    with open(disk, "r+b") as f:
        f.write(b"USERDATA")
    b.resize(disk, 16)
    assert b.verify(disk, image)  # a grown disk is still this image's clone: no new PROLOG copy
    with pytest.raises(DriverError, match="exists already"):
        b.clone(image, disk, host="hv01")
    with open(disk, "rb") as f:
        assert f.read(8) == b"USERDATA"


def test_host_names_that_differ_only_in_case_are_refused(world):
    """They would share one iSCSI initiator name (IQN:host.<name>, lower case) and log in as each other."""
    from appliance.core.authz import SYSTEM
    from appliance.core.errors import CoreError

    world.manager.hosts.create(SYSTEM, "node1", driver="fake")
    with pytest.raises(CoreError) as taken:
        world.manager.hosts.create(SYSTEM, "Node1", driver="fake")
    assert taken.value.code == "NAME_TAKEN"
