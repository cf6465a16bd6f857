"""Push monitoring drives hosts and VMs: agents -> collector -> PushMonitor -> lifecycle.

The agents run for real (drivers/monitor_agent.py over fake hypervisors) and their datagrams go
through the real collector into the database (SQLite and MariaDB); only the SSH probe is a
callable here (tests/lab runs it over real SSH). The wall clock is real time plus an offset the
test moves, so a host can fall silent without the test sleeping.
"""
from __future__ import annotations

import time

from appliance.core import monitor_wire as wire
from appliance.core.authz import SYSTEM
from appliance.core.collector import Collector
from appliance.core.controller import Settings
from appliance.core.entities import HostState, VmState as S
from appliance.core.monitoring import PushMonitor, PushSettings
from appliance.core.protocols import DriverError
from appliance.drivers.monitor_agent import Agent
from tests.manager.conftest import World
from tests.manager.test_lifecycle import spec

SECRET = b"push-monitoring-test-secret-0123"
INTERVAL = 30.0


class Push:
    def __init__(self, database, tmp_path):
        self.world = World(database, tmp_path, Settings(monitor_interval=10.0, error_after=2, confirm_boot=True))
        self.offset = 0.0
        self.collector = Collector(database, SECRET, wall=self.wall)
        self.agents: dict[int, Agent] = {}
        self.unreachable: set[str] = set()
        self.probes: list[str] = []
        self.world.controller.push = PushMonitor(self.world.controller, self.probe,
                                                 PushSettings(interval=INTERVAL, silent_cycles=3,
                                                                              probe_workers=0), wall=self.wall)

    def wall(self) -> float:
        return time.time() + self.offset

    def probe(self, host) -> None:
        """What the service's probe does over SSH: reach the host, (re)start its agent."""
        self.probes.append(host.name)
        if host.name in self.unreachable:
            raise DriverError(f"ssh {host.name}: connect timed out")
        self.collector.refresh_hosts()
        self.agents[host.id] = Agent(self.world.hypervisor_for(host), host.id, wire.host_key(SECRET, host.id),
                                     ("127.0.0.1", 9), self.world.tmp / f"epoch-{host.id}", send=self.collector.handle)
        self.agents[host.id].cycle()
        self.collector.flush()

    def tick(self, seconds: float = INTERVAL) -> None:
        """Time passes; every live agent reports one cycle; the manager makes its passes."""
        self.offset += seconds
        for agent in self.agents.values():
            agent.cycle()
        self.collector.flush()
        self.world.settle()

    def hosts(self) -> list:
        with self.world.store.read() as tx:
            return self.world.store.hosts.where(tx)

    def host(self, name: str):
        return next(h for h in self.hosts() if h.name == name)


def _running_vm(push: Push):
    _, _, _, image = push.world.basic(hosts=2)
    vm = push.world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    push.world.settle()
    return push.world.vm(vm.id)


def test_hosts_become_monitored_from_their_agents_and_boot_waits_for_the_report(database, tmp_path):
    push = Push(database, tmp_path)
    push.world.basic(hosts=2)  # the first pass probes both INIT hosts: the probe starts their agents
    assert sorted(push.probes) == ["host1", "host2"]
    push.world.settle()
    for name in ("host1", "host2"):
        host = push.host(name)
        assert host.state == HostState.MONITORED and host.cpu_total == 800 and host.hypervisor == "fake"
    image = push.world.manager.images.get(SYSTEM, 1)
    vm = push.world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    push.world.settle()
    current = push.world.vm(vm.id)
    host = push.world.manager.hosts.get(SYSTEM, current.host_id)
    # started on the hypervisor, but nobody has seen it run yet
    assert current.state == S.BOOT and push.world.hypervisors[host.name].domain_state(current.domain_name) == "running"
    push.tick(1.0)
    assert push.world.vm(vm.id).state == S.RUNNING


def test_a_vm_killed_behind_the_managers_back_becomes_unknown_and_returns(database, tmp_path):
    push = Push(database, tmp_path)
    vm = _running_vm(push)
    push.tick()
    assert push.world.vm(vm.id).state == S.RUNNING
    host = push.world.manager.hosts.get(SYSTEM, vm.host_id)
    hypervisor = push.world.hypervisors[host.name]
    hypervisor.ensure_absent(vm.domain_name)  # kill -9 of its qemu, or an operator's virsh destroy
    push.tick()
    assert push.world.vm(vm.id).state == S.UNKNOWN
    hypervisor.ensure_running(push.world.controller.domain_spec(push.world.vm(vm.id), for_host=host.name))
    push.tick()
    assert push.world.vm(vm.id).state == S.RUNNING


def test_a_silent_agent_is_restarted_by_the_probe_within_the_configured_cycles(database, tmp_path):
    push = Push(database, tmp_path)
    vm = _running_vm(push)
    push.tick()
    host = push.world.manager.hosts.get(SYSTEM, vm.host_id)
    stopped = push.agents.pop(host.id)  # the agent process died
    probes = len(push.probes)
    push.tick()
    push.tick()
    assert len(push.probes) == probes  # two silent cycles: within the allowance
    push.tick(INTERVAL + 1)
    assert push.probes[probes:] == [host.name]  # past three cycles: probed, and the agent restarted
    restarted = push.agents[host.id]
    assert restarted.epoch == stopped.epoch + 1
    push.tick()
    assert push.host(host.name).state == HostState.MONITORED and push.world.vm(vm.id).state == S.RUNNING


def test_an_unreachable_host_goes_to_error_and_its_vms_run_elsewhere(database, tmp_path):
    push = Push(database, tmp_path)
    vm = _running_vm(push)
    push.tick()
    host = push.world.manager.hosts.get(SYSTEM, vm.host_id)
    push.agents.pop(host.id)
    push.unreachable.add(host.name)  # powered off, cable pulled
    for _ in range(8):
        push.tick()
    assert push.host(host.name).state == HostState.ERROR
    moved = push.world.vm(vm.id)
    assert moved.host_id != host.id and moved.state == S.RUNNING, moved


def test_a_host_cannot_report_another_hosts_vm(database, tmp_path):
    push = Push(database, tmp_path)
    vm = _running_vm(push)
    push.tick()
    owner = push.world.manager.hosts.get(SYSTEM, vm.host_id)
    other = next(h for h in push.hosts() if h.id != owner.id)
    # the other host's agent claims the VM's domain, paused: its list is about itself only
    push.world.hypervisors[other.name].ensure_running(push.world.controller.domain_spec(vm, for_host=other.name))
    push.world.hypervisors[other.name].ensure_paused(vm.domain_name)
    push.tick()
    assert push.world.vm(vm.id).state == S.RUNNING and push.world.vm(vm.id).host_id == owner.id
