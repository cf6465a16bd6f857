"""The qcow2 backend against real qemu-img, and the libvirt domain XML (golden) and driver."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from appliance.core.protocols import SOURCE_KINDS, DiskSource, DiskSpec, DomainSpec, DriverError, NicSpec
from appliance.drivers.libvirt import LibvirtHypervisor, domain_type, domain_xml, qemu_filename
from appliance.runner.local import LocalRunner
from appliance.storage import qcow2
from tests.conftest import GOLDEN, require_module, require_tool

SPEC = DomainSpec("appliance-7", 2, 1024, (DiskSpec("/srv/ds/vms/7/disk.0.qcow2", "vda"),),
                  (NicSpec("br0", "02:00:0a:00:00:05"),), {"vm_id": "7", "name": "web"})


@pytest.fixture
def backend():
    require_tool("qemu-img")
    return qcow2.Qcow2Backend(LocalRunner())


def info(path: str) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True, text=True,
                                     check=True).stdout)


def test_clone_is_an_overlay_of_the_image_and_verify_checks_it(backend, tmp_path):
    image = str(tmp_path / "base.qcow2")
    backend.create_image(image, 64)
    disk = backend.disk_path(str(tmp_path), 3, 0)
    backend.clone(image, disk)
    assert info(disk)["backing-filename"] == image and info(disk)["virtual-size"] == 64 * 1024 * 1024
    assert backend.verify(disk, image) and not backend.verify(disk, str(tmp_path / "other.qcow2"))
    Path(disk).write_bytes(b"garbage")  # a torn file is not a valid overlay
    assert not backend.verify(disk, image)
    assert backend.vm_ids_with_disks(str(tmp_path)) == [3]
    backend.delete_vm_disks(str(tmp_path), 3)
    assert backend.vm_ids_with_disks(str(tmp_path)) == []


def test_failed_clone_leaves_no_file(backend, tmp_path):
    disk = backend.disk_path(str(tmp_path), 4, 0)
    with pytest.raises(DriverError):
        backend.clone(str(tmp_path / "missing.qcow2"), disk)
    assert not Path(disk).exists() and not Path(disk + ".tmp").exists()


def test_resize_import_and_capacity(backend, tmp_path):
    raw = tmp_path / "source.raw"
    raw.write_bytes(b"\0" * (2 * 1024 * 1024))
    target = str(tmp_path / "imported.qcow2")
    assert backend.import_image(str(raw), target) == 2
    assert info(target)["format"] == "qcow2"
    backend.resize(target, 10)
    assert backend.virtual_size_mb(target) == 10
    total, free = backend.capacity(str(tmp_path))
    assert 0 < free <= total


def test_command_builders_are_argv_lists():
    assert qcow2.overlay_cmd("/a.qcow2", "/b.qcow2") == ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                                                        "-b", "/a.qcow2", "/b.qcow2"]
    assert qcow2.capacity_cmd("/srv") == ["df", "--block-size=1M", "--output=size,avail", "/srv"]


def test_domain_xml_matches_golden(update_golden):
    xml = domain_xml(SPEC, "kvm")
    golden = GOLDEN / "drivers" / "domain-kvm.xml"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(xml)
    assert xml == golden.read_text()
    assert domain_type("test:///default") == "test" and domain_type("qemu+ssh://h/system") == "kvm"


SOURCES = {
    "file": DiskSource("file", path="/srv/ds/vms/7/disk.0.qcow2", format="qcow2"),
    "block": DiskSource("block", path="/dev/vg-one/one-7-0"),
    "rbd": DiskSource("rbd", name="one/one-7-0", hosts=("10.0.0.11:6789", "10.0.0.12:6789"), auth_user="ds-100",
                      secret_uuid="9ab3c7e2-2d4b-4a0c-8f5e-2c1d0e7f6a51"),
    "iscsi": DiskSource("iscsi", name="iqn.2026-12.appliance:ds100.vm7.disk0/1", hosts=("10.1.0.10:3260",),
                        initiator="iqn.2026-12.appliance:host.hv01"),
    "nbd": DiskSource("nbd", name="vm7-disk0", hosts=("127.0.0.1:10809",)),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_domain_xml_renders_every_disk_source_kind(kind, update_golden):
    """One golden file per source kind: what libvirt receives for a file, an activated LV, an RBD
    clone with its cephx secret, an iSCSI LUN and an NBD export (the SSD cache)."""
    spec = DomainSpec("appliance-7", 1, 512, (DiskSpec("", "vda", source=SOURCES[kind]),))
    xml = domain_xml(spec, "kvm")
    golden = GOLDEN / "drivers" / f"domain-disk-{kind}.xml"
    if update_golden:
        golden.write_text(xml)
    assert xml == golden.read_text()
    assert SOURCES[kind].kind == kind and kind in SOURCE_KINDS


def test_qemu_filenames_name_the_same_disk_as_the_domain():
    assert qemu_filename(SOURCES["rbd"], "/etc/ceph/ceph.conf") == "rbd:one/one-7-0:id=ds-100:conf=/etc/ceph/ceph.conf"
    bare = DiskSource("iscsi", name="iqn.2026-12.appliance:ds100.vm7.disk0/1", hosts=("10.1.0.10:3260",))
    assert qemu_filename(bare) == "iscsi://10.1.0.10:3260/iqn.2026-12.appliance:ds100.vm7.disk0/1"
    assert json.loads(qemu_filename(SOURCES["iscsi"])[5:])["file"] == {
        "driver": "iscsi", "transport": "tcp", "portal": "10.1.0.10:3260", "lun": 1,
        "target": "iqn.2026-12.appliance:ds100.vm7.disk0", "initiator-name": "iqn.2026-12.appliance:host.hv01"}
    assert qemu_filename(SOURCES["nbd"]) == "nbd://127.0.0.1:10809/vm7-disk0"
    assert qemu_filename(SOURCES["block"]) == "/dev/vg-one/one-7-0"


@pytest.mark.parametrize("bad", [
    {"kind": "http", "path": "/x"}, {"kind": "file", "path": "relative.qcow2"}, {"kind": "file"},
    {"kind": "rbd", "name": "one/img:conf=/tmp/evil.conf"}, {"kind": "rbd", "name": "one/img,x"},
    {"kind": "iscsi", "name": "iqn.x/1"}, {"kind": "nbd", "hosts": ("h:1\n",)},
    {"kind": "iscsi", "name": "iqn.2026-12.a:b/1", "hosts": ("h:1",), "initiator": "iqn.2026-12.a:b\"/><x"},
    {"kind": "file", "path": "/x", "format": "vmdk"}, {"kind": "block", "path": "/dev/sda\"/><x y=\""},
    {"kind": "file", "path": "/srv/ds/../../etc/shadow"}, {"kind": "block", "path": "/dev/./sda"},
    {"kind": "rbd", "name": "../.."}, {"kind": "rbd", "name": ".x/y"},
])
def test_a_disk_source_that_could_smuggle_an_option_is_refused(bad):
    with pytest.raises(DriverError):
        DiskSource(**bad)


def test_libvirt_test_driver_lifecycle():
    require_module("libvirt")
    hypervisor = LibvirtHypervisor("test:///default")
    spec = DomainSpec("appliance-test-lifecycle", 1, 64, (DiskSpec("/tmp/x.qcow2", "vda"),))
    hypervisor.ensure_absent(spec.name)
    hypervisor.ensure_running(spec)
    hypervisor.ensure_running(spec)  # idempotent
    assert hypervisor.domain_state(spec.name) == "running"
    hypervisor.ensure_paused(spec.name)
    assert hypervisor.domains()[spec.name] == "paused"
    hypervisor.ensure_running(spec)
    hypervisor.ensure_stopped(spec.name)
    assert hypervisor.domain_state(spec.name) == "shutoff"
    hypervisor.ensure_absent(spec.name)
    hypervisor.ensure_absent(spec.name)
    assert hypervisor.domain_state(spec.name) is None
    assert hypervisor.host_info().cpu_units > 0
