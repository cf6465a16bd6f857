"""Flatten on request: `appliance vm flatten ID --disk N` (POST /vms/{id}/disks/{n}/flatten) copies an
RBD clone's blocks from its image, so the image may be deleted; refused, before anything changes, on
a backend whose disks cannot be flattened, for a disk that does not exist, and for another user."""
from __future__ import annotations

import json
import subprocess

import pytest

from appliance.core.actions import Manager, PathPolicy
from appliance.core.actions.vms import VmSpec
from appliance.core.authz import SYSTEM
from appliance.core.clock import SystemClock
from appliance.core.controller import Controller, Settings
from appliance.core.db import DatabaseUrl, migrate, open_database
from appliance.core.errors import CoreError
from appliance.core.hooks import Hooks
from appliance.core.pools import Store
from appliance.drivers.fake import FakeHypervisor
from appliance.drivers.libvirt import qemu_filename
from appliance.runner.local import LocalRunner
from appliance.storage import registry
from tests.manager.test_backend_contract import CEPH, backend_params, ceph_cluster  # noqa: F401 (the fixture)


def test_a_backend_without_flatten_refuses_and_nothing_changes(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, VmSpec("web", cpu=0.5, memory=256, disks=[image.id]))[0]
    world.settle()
    before = world.vm(vm.id)
    with pytest.raises(CoreError) as refused:
        world.manager.vms.flatten(SYSTEM, vm.id, 0)
    assert refused.value.code == "NOT_SUPPORTED"
    with pytest.raises(CoreError) as wrong:
        world.manager.vms.flatten(SYSTEM, vm.id, 3)
    assert wrong.value.code == "VALUE_INVALID"
    after = world.vm(vm.id)
    assert after.version == before.version and "flattened" not in after.disks[0]


def test_an_rbd_disk_flattened_lets_its_image_be_deleted(ceph_cluster, tmp_path, request):  # noqa: F811
    db = open_database(DatabaseUrl("sqlite", path=str(tmp_path / "m.db")))
    migrate(db)
    store = Store(db)
    built: dict = {}

    def backend_for(ds):
        return built.setdefault(ds.id, registry.build(ds.backend, LocalRunner(), ds.path, ds.params))
    fake = FakeHypervisor(cpu_units=800, memory_mb=8192)
    controller = Controller(store, lambda host: fake, backend_for, Hooks([], None), SystemClock(),
                            Settings(monitor_interval=3600))
    manager = Manager(store, backend_for, datastore_paths=PathPolicy([str(tmp_path)]),
                      import_paths=PathPolicy([str(tmp_path)]), backend_types=registry.TYPES)
    params = backend_params(request, "rbd")
    for name in ("images", "system"):
        (tmp_path / name).mkdir()
    manager.hosts.create(SYSTEM, "hv01", driver="fake")
    images = manager.datastores.create(SYSTEM, "images", str(tmp_path / "images"), kind="image", backend="rbd",
                                       params=params)
    manager.datastores.create(SYSTEM, "system", str(tmp_path / "system"), backend="rbd", params=params)
    source = tmp_path / "base.raw"
    source.write_bytes(b"\x5e" * (1024 * 1024) + bytes(15 * 1024 * 1024))
    image = manager.images.create(SYSTEM, "base", images.id, source=str(source), public=True)
    backend = backend_for(images)
    conf = str(CEPH["cluster"].conf)
    controller.monitor_hosts(force=True)
    vm = manager.vms.create(SYSTEM, VmSpec("db", cpu=0.1, memory=64, disks=[image.id]))[0]
    for _ in range(20):
        controller.run_once()
    disk = manager.vms.get(SYSTEM, vm.id).disks[0]["path"]
    with pytest.raises(CoreError) as in_use:
        manager.images.delete(SYSTEM, image.id)
    assert in_use.value.code == "IN_USE"

    manager.vms.flatten(SYSTEM, vm.id, 0)
    assert manager.vms.get(SYSTEM, vm.id).disks[0]["flattened"] is True
    assert not backend.verify(disk, image.path)  # no parent any more
    manager.images.delete(SYSTEM, image.id)
    assert backend._info(image.path) is None
    source = qemu_filename(backend.disk_source(disk, "hv01"), conf)
    read = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x5e 0 1M", source], capture_output=True, text=True)
    assert read.returncode == 0 and "fail" not in read.stdout.lower(), read.stdout  # the image's data, kept
    history = json.dumps(manager.vms.history(SYSTEM, vm.id))
    assert "flatten disk 0" in history
