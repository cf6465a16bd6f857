"""The manager over the storage seam: datastores carry a backend from the registry and its typed
parameters; a verb the backend lacks is refused (NOT_SUPPORTED) before any state changes; the
scheduler never places a VM where its disks cannot be prepared; each disk's typed source reaches the
hypervisor; a migration asks the backend to prepare the target and release the source."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from appliance.core.actions.vms import VmSpec
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM
from appliance.core.entities import VmState as S
from appliance.core.errors import CoreError
from appliance.core.protocols import DiskSource
from appliance.core.scheduler import DatastoreSlot, HostSlot, Policy, Request, schedule
from appliance.runner.local import LocalRunner
from appliance.storage import registry


class Recorder:
    """A registry-built backend whose premigrate/postmigrate calls are recorded, and whose disks a
    host opens as block devices (as an activated LV would be)."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def disk_source(self, disk, host):
        return DiskSource("block", path=f"/dev/appliance/{host}{disk.replace('/', '-')}"[:200])

    def premigrate(self, disk, source_host, target_host):
        self.inner.premigrate(disk, source_host, target_host)
        self.calls.append(("premigrate", disk, source_host, target_host))

    def postmigrate(self, disk, source_host, target_host):
        self.inner.postmigrate(disk, source_host, target_host)
        self.calls.append(("postmigrate", disk, source_host, target_host))


@pytest.fixture
def seam(world):
    """The World, its backends built by the registry from each datastore's backend and params."""
    built, calls = {}, []

    def backend_for(ds):
        key = (ds.id, ds.backend, repr(sorted(ds.params.items())))
        if key not in built:
            backend = world.manager.env.backend_types[ds.backend].factory(LocalRunner(), ds.path, ds.params)
            built[key] = Recorder(backend, calls) if ds.attributes.get("RECORD") else backend
        return built[key]
    world.controller.backend_for = backend_for
    world.manager.env.backend_for = backend_for
    world.manager.env.backend_types = registry.TYPES
    world.calls = calls
    return world


def _dir(world, name):
    path = world.tmp / name
    path.mkdir(exist_ok=True)
    return str(path)


def test_datastore_create_checks_the_backend_and_its_parameters_and_stores_nothing_when_wrong(seam):
    for backend, params, field in (("nosuch", {}, "backend"), ("dummy", {"size_mb": "big"}, "params.size_mb"),
                                   ("dummy", {"colour": "red"}, "params.colour"),
                                   ("dummy", {"verbs": "clone,teleport"}, "params.verbs"),
                                   ("qcow2", {"size_mb": 1}, "params.size_mb")):
        with pytest.raises(CoreError) as caught:
            seam.manager.datastores.create(SYSTEM, "d", _dir(seam, "d"), backend=backend, params=params)
        assert caught.value.code == "VALUE_INVALID" and caught.value.details["field"] == field, caught.value.details
    assert seam.manager.datastores.page(SYSTEM, 0, 10)[0] == []
    ds = seam.manager.datastores.create(SYSTEM, "d", _dir(seam, "d"), backend="dummy", params={"size_mb": 2048})
    assert (ds.backend, ds.params, ds.total_mb) == ("dummy", {"size_mb": 2048}, 2048)


def test_an_image_verb_the_backend_lacks_is_refused_before_the_image_exists(seam):
    ds = seam.manager.datastores.create(SYSTEM, "imgs", _dir(seam, "imgs"), kind="image", backend="dummy",
                                        params={"verbs": "capacity,clone,delete"})
    with pytest.raises(CoreError) as caught:
        seam.manager.images.create(SYSTEM, "blank", ds.id, size_mb=16)
    assert caught.value.code == "NOT_SUPPORTED" and caught.value.details["verb"] == "mkimage"
    assert seam.manager.images.page(SYSTEM, 0, 10)[0] == []


def test_the_scheduler_skips_a_datastore_that_cannot_clone():
    hosts = [HostSlot(1, 800, 8192)]
    stores = [DatastoreSlot(1, 10 ** 6, verbs=frozenset({"capacity"})), DatastoreSlot(2, 10, verbs=None)]
    clone = Request(1, 100, 128, disk_mb=5, needs=frozenset({"clone"}))
    plain = Request(2, 100, 128, disk_mb=5)
    placed = {p.vm_id: p.datastore_id for p in schedule(hosts, stores, [clone, plain], Policy(datastore="striping"))}
    assert placed == {1: 2, 2: 1}  # the big datastore would win on free space, but cannot clone
    alone = schedule(hosts, stores[:1], [clone], Policy())
    assert not alone[0].placed and "datastore" in alone[0].reason


def test_a_vm_whose_only_system_datastore_cannot_clone_stays_pending_and_deploy_there_is_refused(seam):
    images = seam.manager.datastores.create(SYSTEM, "images", _dir(seam, "images"), kind="image")
    image = seam.manager.images.create(SYSTEM, "base", images.id, size_mb=16, public=True)
    system = seam.manager.datastores.create(SYSTEM, "sys", _dir(seam, "sys"), backend="dummy",
                                            params={"verbs": "capacity,delete"})
    host = seam.manager.hosts.create(SYSTEM, "host1", driver="fake")
    seam.controller.monitor_hosts(force=True)
    vm = seam.manager.vms.create(SYSTEM, VmSpec("web", memory=64, cpu=0.1, disks=[image.id]))[0]
    seam.settle()
    assert seam.vm(vm.id).state == S.PENDING and "datastore" in seam.vm(vm.id).error
    with pytest.raises(CoreError) as caught:
        seam.manager.vms.action(SYSTEM, vm.id, "deploy", host_id=host.id, datastore_id=system.id)
    assert caught.value.code == "NOT_SUPPORTED" and caught.value.details["verb"] == "clone"
    assert seam.vm(vm.id).state == S.PENDING and seam.vm(vm.id).host_id is None


def test_disk_sources_reach_the_domain_and_a_migration_prepares_the_target_and_releases_the_source(seam):
    images = seam.manager.datastores.create(SYSTEM, "images", _dir(seam, "images"), kind="image", backend="dummy")
    image = seam.manager.images.create(SYSTEM, "base", images.id, size_mb=16, public=True)
    seam.manager.datastores.create(SYSTEM, "qcow2", _dir(seam, "qcow2"))  # cannot clone a dummy image
    seam.manager.datastores.create(SYSTEM, "sys", _dir(seam, "sys"), backend="dummy", attributes={"RECORD": True})
    one, two = (seam.manager.hosts.create(SYSTEM, f"host{i}", driver="fake") for i in (1, 2))
    seam.controller.monitor_hosts(force=True)
    vm = seam.manager.vms.create(SYSTEM, VmSpec("web", memory=64, cpu=0.1, disks=[image.id], requirements="ID = 1"))[0]
    seam.settle()
    vm = seam.vm(vm.id)
    assert vm.state == S.RUNNING, vm.error
    spec = seam.controller.domain_spec(vm)
    assert spec.disks[0].source.kind == "block" and spec.disks[0].source.path.startswith("/dev/appliance/host1")
    seam.manager.vms.action(SYSTEM, vm.id, "migrate", host_id=two.id)
    seam.settle()
    vm = seam.vm(vm.id)
    assert vm.state == S.RUNNING and vm.host_id == two.id, vm.error
    disk = vm.disks[0]["path"]
    assert seam.calls == [("premigrate", disk, "host1", "host2"), ("postmigrate", disk, "host1", "host2")]
    assert seam.controller.domain_spec(vm).disks[0].source.path.startswith("/dev/appliance/host2")


def test_a_migration_the_backend_cannot_prepare_is_refused_before_the_vm_moves(seam):
    images = seam.manager.datastores.create(SYSTEM, "images", _dir(seam, "images"), kind="image", backend="dummy")
    image = seam.manager.images.create(SYSTEM, "base", images.id, size_mb=16, public=True)
    seam.manager.datastores.create(SYSTEM, "sys", _dir(seam, "sys"), backend="dummy",
                                   params={"verbs": "capacity,clone,delete"})
    seam.manager.hosts.create(SYSTEM, "host1", driver="fake")
    two = seam.manager.hosts.create(SYSTEM, "host2", driver="fake")
    seam.controller.monitor_hosts(force=True)
    vm = seam.manager.vms.create(SYSTEM, VmSpec("web", memory=64, cpu=0.1, disks=[image.id], requirements="ID = 1"))[0]
    seam.settle()
    assert seam.vm(vm.id).state == S.RUNNING
    with pytest.raises(CoreError) as caught:
        seam.manager.vms.action(SYSTEM, vm.id, "migrate", host_id=two.id)
    assert caught.value.code == "NOT_SUPPORTED" and caught.value.details["verb"] == "premigrate"
    assert seam.vm(vm.id).state == S.RUNNING and seam.vm(vm.id).host_id != two.id


def test_the_api_lists_the_backends_and_refuses_a_bad_parameter_by_name(seam):
    _, token = seam.manager.users.create(SYSTEM, "admin", role="admin")[:2]
    client = TestClient(create_app(seam.manager), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    listed = client.get("/api/v1/datastore-backends").json()["items"]
    assert {b["name"] for b in listed} == set(registry.TYPES)
    dummy = next(b for b in listed if b["name"] == "dummy")
    assert "clone" in dummy["verbs"] and {"name": "size_mb", "type": "int"}.items() <= dummy["params"][0].items()
    refused = client.post("/api/v1/datastores", json={"name": "d", "path": _dir(seam, "d"), "backend": "dummy",
                                                      "params": {"size_mb": -1}})
    assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == "params.size_mb"
    made = client.post("/api/v1/datastores", json={"name": "d", "path": _dir(seam, "d"), "backend": "dummy",
                                                   "params": {"size_mb": 64}})
    assert made.status_code == 201 and made.json()["params"] == {"size_mb": 64}


def test_two_datastores_may_not_claim_the_same_pool_and_prefix(seam):
    """An RBD datastore owns pool/prefix*: a second one there would take the first one's VM disks
    for orphans. Checked on the registry's own claim rule (the backend itself is a dummy here)."""
    import dataclasses

    fake = dict(registry.TYPES)
    fake["rbd"] = dataclasses.replace(registry.TYPES["rbd"], factory=registry.TYPES["dummy"].factory)
    seam.manager.env.backend_types = fake
    params = {"pool": "one", "user": "ds-a", "monitors": "10.0.0.1:6789",
              "secret_uuid": "9ab3c7e2-2d4b-4a0c-8f5e-2c1d0e7f6a51"}
    made = seam.manager.datastores.create(SYSTEM, "a", _dir(seam, "a"), backend="rbd", params=params)
    assert made.params["prefix"] == "one-"
    with pytest.raises(CoreError) as caught:
        seam.manager.datastores.create(SYSTEM, "b", _dir(seam, "b"), backend="rbd", params={**params, "user": "ds-b"})
    assert caught.value.code == "IN_USE" and caught.value.details["field"] == "params.prefix"
    seam.manager.datastores.create(SYSTEM, "c", _dir(seam, "c"), backend="rbd", params={**params, "prefix": "c-"})
    # An image datastore may share them: images and VM disks have names of their own.
    seam.manager.datastores.create(SYSTEM, "i", _dir(seam, "i"), kind="image", backend="rbd", params=params)


def test_a_vm_whose_images_need_two_technologies_is_refused_at_create(seam):
    one = seam.manager.datastores.create(SYSTEM, "q", _dir(seam, "q"), kind="image")
    two = seam.manager.datastores.create(SYSTEM, "d", _dir(seam, "d"), kind="image", backend="dummy")
    images = [seam.manager.images.create(SYSTEM, f"i{ds.id}", ds.id, size_mb=8, public=True) for ds in (one, two)]
    with pytest.raises(CoreError) as caught:
        seam.manager.vms.create(SYSTEM, VmSpec("web", memory=64, cpu=0.1, disks=[i.id for i in images]))
    assert caught.value.code == "NOT_SUPPORTED" and "dummy and qcow2" in caught.value.message
    assert seam.manager.vms.page(SYSTEM, 0, 10)[0] == []


def test_a_migration_of_a_persistent_disk_its_datastore_cannot_prepare_is_refused_before_the_vm_moves(seam):
    images = seam.manager.datastores.create(SYSTEM, "images", _dir(seam, "images"), kind="image", backend="dummy",
                                            params={"verbs": "capacity,mkimage,delete"})
    image = seam.manager.images.create(SYSTEM, "data", images.id, size_mb=16, persistent=True)
    seam.manager.datastores.create(SYSTEM, "sys", _dir(seam, "sys"), backend="dummy")
    seam.manager.hosts.create(SYSTEM, "host1", driver="fake")
    two = seam.manager.hosts.create(SYSTEM, "host2", driver="fake")
    seam.controller.monitor_hosts(force=True)
    vm = seam.manager.vms.create(SYSTEM, VmSpec("db", memory=64, cpu=0.1, disks=[image.id], requirements="ID = 1"))[0]
    seam.settle()
    assert seam.vm(vm.id).state == S.RUNNING, seam.vm(vm.id).error
    with pytest.raises(CoreError) as caught:
        seam.manager.vms.action(SYSTEM, vm.id, "migrate", host_id=two.id)
    assert caught.value.code == "NOT_SUPPORTED" and caught.value.details["verb"] == "premigrate"
    assert seam.vm(vm.id).state == S.RUNNING and seam.vm(vm.id).host_id != two.id


def test_the_same_pool_and_prefix_named_by_other_monitors_is_still_one_claim(seam):
    import dataclasses

    fake = dict(registry.TYPES)
    fake["rbd"] = dataclasses.replace(registry.TYPES["rbd"], factory=registry.TYPES["dummy"].factory)
    seam.manager.env.backend_types = fake
    params = {"pool": "one", "user": "ds-a", "monitors": "10.0.0.11:6789",
              "secret_uuid": "9ab3c7e2-2d4b-4a0c-8f5e-2c1d0e7f6a51"}
    seam.manager.datastores.create(SYSTEM, "a", _dir(seam, "a"), backend="rbd", params=params)
    with pytest.raises(CoreError) as caught:
        seam.manager.datastores.create(SYSTEM, "b", _dir(seam, "b"), backend="rbd",
                                       params={**params, "monitors": "10.0.0.11:6789,10.0.0.12:6789"})
    assert caught.value.code == "IN_USE"
