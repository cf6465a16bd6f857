"""VM lifecycle scenarios, on SQLite and on MariaDB, with real qcow2 overlays and fake hypervisors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance.core.controller import Settings
from appliance.core.entities import HostState, VmState as S
from appliance.core.errors import CoreError
from appliance.core.hooks import Hook, Hooks
from appliance.core.actions.vms import VmSpec
from appliance.core.authz import SYSTEM
from appliance.runner.local import LocalRunner
from tests.manager.conftest import World


def spec(name: str = "vm", **kwargs) -> VmSpec:
    return VmSpec(name, cpu=kwargs.pop("cpu", 1.0), memory=kwargs.pop("memory", 256), **kwargs)


def test_ten_vms_reach_running_on_real_overlays_of_the_image(world):
    _, _, system, image = world.basic()
    vms = [world.manager.vms.create(SYSTEM, spec(f"vm{i}", disks=[image.id]))[0] for i in range(10)]
    world.settle()
    for vm in vms:
        current = world.vm(vm.id)
        assert current.state == S.RUNNING, current.error
        path = current.disks[0]["path"]
        assert path.startswith(system.path) and world.backend.verify(path, image.path)
        host = world.manager.hosts.get(SYSTEM, current.host_id)
        assert world.hypervisors[host.name].domain_state(current.domain_name) == "running"


def test_every_transition_is_recorded_in_order(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    world.manager.vms.action(SYSTEM, vm.id, "shutdown")
    world.settle()
    steps = [(h["from"], h["to"]) for h in world.manager.vms.history(SYSTEM, vm.id)]
    assert steps == [(S.PENDING, S.PROLOG), (S.PROLOG, S.BOOT), (S.BOOT, S.RUNNING), (S.RUNNING, S.SHUTDOWN),
                     (S.SHUTDOWN, S.EPILOG), (S.EPILOG, S.DONE)]


def test_shutdown_deletes_disks_domain_and_lease(world):
    _, _, system, image = world.basic()
    net = world.manager.vnets.create(SYSTEM, "lan", "br0", [{"first": "10.0.0.10", "size": 2}])
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], nics=[net.id]))[0]
    world.settle()
    running = world.vm(vm.id)
    assert running.nics[0]["ip"] == "10.0.0.10" and running.nics[0]["mac"] == "02:00:0a:00:00:0a"
    world.manager.vms.action(SYSTEM, vm.id, "shutdown")
    world.settle()
    done = world.vm(vm.id)
    assert done.state == S.DONE and done.host_id is None
    assert not Path(system.path, "vms", str(vm.id)).exists()
    assert all(running.domain_name not in h.domains() for h in world.hypervisors.values())
    assert world.manager.vnets.leases(SYSTEM, net.id) == []


def test_poweroff_keeps_disks_and_resume_boots_again(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    path = world.vm(vm.id).disks[0]["path"]
    world.manager.vms.action(SYSTEM, vm.id, "poweroff")
    world.settle()
    assert world.vm(vm.id).state == S.POWEROFF and os.path.exists(path)
    world.manager.vms.action(SYSTEM, vm.id, "resume")
    world.settle()
    assert world.vm(vm.id).state == S.RUNNING


def test_suspend_pauses_and_resume_continues(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    world.manager.vms.action(SYSTEM, vm.id, "suspend")
    world.settle()
    current = world.vm(vm.id)
    host = world.manager.hosts.get(SYSTEM, current.host_id)
    assert current.state == S.SUSPENDED and world.hypervisors[host.name].domain_state(current.domain_name) == "paused"
    world.manager.vms.action(SYSTEM, vm.id, "resume")
    world.settle()
    assert world.vm(vm.id).state == S.RUNNING


def test_stop_releases_the_host_keeps_the_disk_and_resume_reuses_it(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    path = world.vm(vm.id).disks[0]["path"]
    with open(path, "ab") as disk:
        disk.write(b"")  # the file is the guest's: it must survive stop/resume
    inode = os.stat(path).st_ino
    world.manager.vms.action(SYSTEM, vm.id, "stop")
    world.settle()
    stopped = world.vm(vm.id)
    assert stopped.state == S.STOPPED and stopped.host_id is None and os.path.exists(path)
    world.manager.vms.action(SYSTEM, vm.id, "resume")
    world.settle()
    resumed = world.vm(vm.id)
    assert resumed.state == S.RUNNING and resumed.disks[0]["path"] == path and os.stat(path).st_ino == inode


def test_migrate_moves_the_domain(world):
    (h1, h2), _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    source = world.vm(vm.id).host_id
    target = h2.id if source == h1.id else h1.id
    world.manager.vms.action(SYSTEM, vm.id, "migrate", host_id=target)
    world.settle()
    moved = world.vm(vm.id)
    assert moved.state == S.RUNNING and moved.host_id == target
    names = {h.id: h.name for h in (h1, h2)}
    assert world.hypervisors[names[target]].domain_state(moved.domain_name) == "running"
    assert world.hypervisors[names[source]].domain_state(moved.domain_name) is None


def test_hold_and_release(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], hold=True))[0]
    world.settle()
    assert world.vm(vm.id).state == S.HOLD
    world.manager.vms.action(SYSTEM, vm.id, "release")
    world.settle()
    assert world.vm(vm.id).state == S.RUNNING


def test_manual_deploy_places_on_the_host_named(world):
    (h1, h2), _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], hold=True))[0]
    world.manager.vms.action(SYSTEM, vm.id, "deploy", host_id=h2.id)
    world.settle()
    assert (world.vm(vm.id).state, world.vm(vm.id).host_id) == (S.RUNNING, h2.id)


def test_resubmit_starts_over_with_fresh_disks(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    world.manager.vms.action(SYSTEM, vm.id, "resubmit")
    world.settle()
    again = world.vm(vm.id)
    assert again.state == S.RUNNING
    transitions = [h["to"] for h in world.manager.vms.history(SYSTEM, vm.id)]
    assert transitions.count(S.PENDING) == 1 and transitions.count(S.RUNNING) == 2


def test_actions_from_the_wrong_state_are_refused_and_change_nothing(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], hold=True))[0]
    with pytest.raises(CoreError) as error:
        world.manager.vms.action(SYSTEM, vm.id, "suspend")
    assert error.value.code == "STATE_INVALID" and error.value.details["allowed_from"] == [S.RUNNING]
    assert world.vm(vm.id).state == S.HOLD and world.vm(vm.id).version == vm.version


@pytest.mark.parametrize("how,expected", [("retry", S.RUNNING), ("failure", S.POWEROFF), ("success", S.RUNNING)])
def test_a_failed_boot_is_recovered_as_told(world, how, expected):
    (h1, h2), _, _, image = world.basic()
    for hypervisor in (world.hypervisor_for(h1), world.hypervisor_for(h2)):
        hypervisor.fail["ensure_running"] = "libvirt: no memory"
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    failed = world.vm(vm.id)
    assert (failed.state, failed.failed_in, failed.error) == (S.FAILED, S.BOOT, "libvirt: no memory")
    for hypervisor in world.hypervisors.values():
        hypervisor.fail.clear()
    world.manager.vms.action(SYSTEM, vm.id, "recover", how=how)
    world.settle()
    assert world.vm(vm.id).state == expected


def test_host_in_error_has_its_vms_resubmitted_elsewhere(world):
    (h1, h2), _, _, image = world.basic()
    world.manager.hosts.action(SYSTEM, h2.id, "disable")
    vms = [world.manager.vms.create(SYSTEM, spec(f"vm{i}", disks=[image.id]))[0] for i in range(3)]
    world.settle()
    assert {world.vm(v.id).host_id for v in vms} == {h1.id}
    world.manager.hosts.action(SYSTEM, h2.id, "enable")
    world.hypervisor_for(h1).fail["host_info"] = "connection refused"
    for _ in range(3):  # three failed monitors in a row put the host in ERROR
        world.clock.sleep(11)
        world.controller.run_once()
    world.settle()
    assert world.manager.hosts.get(SYSTEM, h1.id).state == HostState.ERROR
    assert {(world.vm(v.id).state, world.vm(v.id).host_id) for v in vms} == {(S.RUNNING, h2.id)}


def test_a_domain_that_disappears_is_reported_powered_off(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    current = world.vm(vm.id)
    world.hypervisors[world.manager.hosts.get(SYSTEM, current.host_id).name].ensure_absent(current.domain_name)
    world.clock.sleep(11)
    world.controller.run_once()
    assert world.vm(vm.id).state == S.POWEROFF


def test_a_full_cloud_keeps_vms_pending_with_the_reason(world):
    world.basic(hosts=1)
    vm = world.manager.vms.create(SYSTEM, spec(cpu=64))[0]  # the fake host has 8 cores
    world.settle()
    pending = world.vm(vm.id)
    assert pending.state == S.PENDING and "free CPU" in pending.error


def test_requirements_steer_placement(world):
    (h1, h2), _, _, image = world.basic()
    tagged = world.manager.hosts.create(SYSTEM, "gpu1", driver="fake", attributes={"GPU": 1})
    world.controller.monitor_hosts(force=True)
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], requirements="GPU = 1"))[0]
    world.settle()
    assert world.vm(vm.id).host_id == tagged.id


def test_bad_expressions_and_missing_images_persist_nothing(world):
    world.basic()
    for bad in (spec(requirements="FREE_CPU >"), spec(disks=[999]), spec(rank="1 +")):
        with pytest.raises(CoreError):
            world.manager.vms.create(SYSTEM, bad)[0]
    assert world.manager.vms.page(SYSTEM, 0, 10) == ([], None)


def test_exhausted_network_refuses_the_vm_and_keeps_nothing(world):
    world.basic()
    net = world.manager.vnets.create(SYSTEM, "tiny", "br0", [{"first": "10.1.0.1", "size": 1}])
    world.manager.vms.create(SYSTEM, spec("a", nics=[net.id]))[0]
    with pytest.raises(CoreError) as error:
        world.manager.vms.create(SYSTEM, spec("b", nics=[net.id]))[0]
    assert error.value.code == "NO_ADDRESS"
    assert [json.loads(v)["name"] for v in world.manager.vms.page(SYSTEM, 0, 10)[0]] == ["a"]


def test_hooks_run_commands_with_the_vm_id(database, tmp_path):
    marker = tmp_path / "hooks.log"
    w = World(database, tmp_path)
    w.hooks = Hooks([Hook("VM:RUNNING", ("sh", "-c", f'echo "running $1" >> {marker}', "sh", "$VMID"))],
                    LocalRunner())
    w.controller.hooks = w.hooks
    _, _, _, image = w.basic()
    vm = w.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    w.settle()
    w.hooks.wait()
    assert marker.read_text() == f"running {vm.id}\n"


# -- recovery after a crash ------------------------------------------------------------------------
def test_reconcile_finishes_a_vm_left_in_prolog_with_a_partial_disk(world):
    (h1, _), _, system, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id], hold=True))[0]
    world.manager.vms.action(SYSTEM, vm.id, "deploy", host_id=h1.id, datastore_id=system.id)  # PROLOG persisted
    partial = Path(world.backend.disk_path(system.path, vm.id, 0))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a qcow2 header")  # the crash hit in the middle of the clone
    decisions = world.controller.reconcile()
    assert any(d.startswith(f"VM {vm.id} found in PROLOG") and d.endswith("now RUNNING") for d in decisions)
    assert world.backend.verify(str(partial), image.path)


def test_reconcile_sweeps_orphan_disks_and_domains_and_nothing_else(world):
    (h1, _), _, system, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.settle()
    orphan_dir = Path(system.path, "vms", "4242")
    orphan_dir.mkdir()
    (orphan_dir / "disk.0.qcow2").write_bytes(b"x")
    from appliance.core.protocols import DomainSpec
    stray = world.hypervisor_for(h1)
    stray.ensure_running(DomainSpec("appliance-4242", 1, 64))
    stray.ensure_running(DomainSpec("someone-elses-vm", 1, 64))
    decisions = world.controller.reconcile()
    assert not orphan_dir.exists() and stray.domain_state("appliance-4242") is None
    assert stray.domain_state("someone-elses-vm") == "running"
    assert world.vm(vm.id).state == S.RUNNING and os.path.exists(world.vm(vm.id).disks[0]["path"])
    assert len(decisions) == 2


def test_an_api_change_during_a_step_wins_over_the_step(world):
    _, _, _, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    world.controller.schedule_pending()
    in_prolog = world.vm(vm.id)
    world.manager.vms.action(SYSTEM, vm.id, "delete")  # while the controller holds the PROLOG copy
    world.controller._save(in_prolog, "stale step")  # the compare-and-set refuses the stale write
    world.settle()
    assert world.vm(vm.id).state == S.DONE
