"""Push monitoring's decisions: what the agents' reports (stored by core/collector.py) mean for hosts
and VMs. The collector only stores; this module, run from the controller's pass, decides.

Hosts: an agent heard from within `silent_cycles` intervals keeps its host MONITORED (an INIT or
ERROR host becomes MONITORED, its capacity from the agent's system info). A host silent longer is
probed (over SSH in the service: the probe restarts its agent); a failed probe counts as a failed
monitor, so after `error_after` of them the host goes to ERROR and the HOST:ERROR hook resubmits
its VMs (Controller._host_failed, the same path pull monitoring takes).

VMs: a host's complete domain list (never a partial one: a VM in a lost part is not missing) is
applied once, and only to VMs whose last change is older than the list:
BOOT -> RUNNING when the domain is seen running (the only way out of BOOT when boot is confirmed by
monitoring); RUNNING -> UNKNOWN when it is missing; UNKNOWN -> RUNNING when seen again; paused ->
SUSPENDED; a domain shut off inside (the guest powered itself off) -> POWEROFF. A host reports only
the VMs the manager placed on it: a list naming another host's VM changes nothing of that VM.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .entities import Host, HostState, VmState as S
from .lifecycle import enter
from .protocols import DriverError

log = logging.getLogger("appliance.monitoring")


@dataclass(frozen=True)
class Agent:
    host_id: int
    epoch: int
    seen_at: float
    snapshot: int
    states_at: float
    cpu_units: int
    memory_mb: int
    hypervisor: str


@dataclass
class PushSettings:
    interval: float = 30.0  # the agents' usage interval
    silent_cycles: int = 3  # a host silent this many intervals is probed
    compact_every: float = 300.0  # seconds between two retention passes over the samples (core/history.py)
    # Probes run in threads (an unreachable host costs its SSH timeout there, not in the controller's
    # pass); 0 runs them inline, for deterministic tests.
    probe_workers: int = 8


class PushMonitor:
    def __init__(self, controller, probe: Callable[[Host], None], settings: PushSettings | None = None,
                 wall: Callable[[], float] = time.time):
        self.controller = controller
        self.store = controller.store
        self.probe = probe
        self.settings = settings or PushSettings()
        self.wall = wall
        self._applied: dict[int, float] = {}  # host id -> states_at of the last domain list applied
        self._probed: dict[int, float] = {}  # host id -> when it was last probed
        self._compacted = float("-inf")
        self._pool = ThreadPoolExecutor(self.settings.probe_workers, thread_name_prefix="probe") \
            if self.settings.probe_workers else None
        self._probing: dict[int, tuple[Host, Future]] = {}

    def agents(self) -> dict[int, Agent]:
        with self.store.read() as tx:
            rows = tx.execute("SELECT host_id, epoch, seen_at, snapshot, states_at, cpu_units, memory_mb, hypervisor "
                              "FROM mon_agents").all()
        return {r[0]: Agent(*r) for r in rows}

    def run_once(self) -> int:
        """Apply what arrived since the last pass; probe the silent hosts. Returns hosts acted on."""
        now = self.wall()
        silent_after = self.settings.interval * self.settings.silent_cycles
        with self.store.read() as tx:
            hosts = self.store.hosts.where(tx, "state <> ?", (HostState.OFFLINE,))
        agents = self.agents()
        acted = self._probes_done(now)
        for host in hosts:
            agent = agents.get(host.id)
            # A report "from the future" (the collector's clock was ahead before a failover) counts
            # as fresh only within the same bound: otherwise it would hide a dead host forever.
            if agent is not None and abs(now - agent.seen_at) <= silent_after:
                acted += self._heard(host, agent, now)
            elif host.id not in self._probing and \
                    now - self._probed.get(host.id, float("-inf")) >= self.settings.interval:
                self._probed[host.id] = now
                if self._pool is None:
                    self._probe(host, now)
                    acted += 1
                else:
                    self._probing[host.id] = (host, self._pool.submit(self.probe, host))
        if abs(now - self._compacted) >= self.settings.compact_every:
            self._compacted = now
            from .history import compact

            folded = compact(self.store.db, now)
            if any(folded.values()):
                log.info("monitoring history: %s", ", ".join(f"{k} {v}" for k, v in folded.items() if v))
        return acted

    def _heard(self, host: Host, agent: Agent, now: float) -> int:
        stale = agent.seen_at - host.monitored_at >= self.settings.interval or agent.seen_at < host.monitored_at
        changed = host.state in (HostState.INIT, HostState.ERROR) or host.failures or host.error or (
            agent.cpu_units and (host.cpu_total, host.mem_total, host.hypervisor) !=
            (agent.cpu_units, agent.memory_mb, agent.hypervisor or host.hypervisor))
        if stale or changed:  # a pass runs every second or so: write the host only when it says something new
            self._record(host, agent)
        self._probed.pop(host.id, None)
        if agent.snapshot and agent.states_at > self._applied.get(host.id, 0.0):
            self._applied[host.id] = agent.states_at
            return self._apply_states(host, agent)  # VMs changed: work that may lead to more
        return 0

    def _record(self, host: Host, agent: Agent) -> None:
        with self.store.transaction() as tx:
            current = self.store.hosts.require(tx, host.id)
            previous = current.state
            if agent.cpu_units:
                current.cpu_total, current.mem_total = agent.cpu_units, agent.memory_mb
                current.hypervisor = agent.hypervisor or current.hypervisor
            current.failures, current.error, current.monitored_at = 0, "", agent.seen_at
            if current.state in (HostState.INIT, HostState.ERROR):
                current.state = HostState.MONITORED
            self.store.hosts.update(tx, current)
        if previous != current.state:
            log.warning("host %s: its agent reports: %s -> %s", host.name, previous, current.state)
            self.controller.hooks.fire("HOST", host.id, current.state)

    def _probe(self, host: Host, now: float) -> None:
        try:
            self.probe(host)
        except (DriverError, OSError) as exc:
            self._probe_failed(host, exc, now)
            return
        log.warning("host %s: its agent was silent; the probe restarted it", host.name)

    def _probe_failed(self, host: Host, exc: BaseException, now: float) -> None:
        self.controller._host_failed(host, f"agent silent and the probe failed: {exc}", now)

    def _probes_done(self, now: float) -> int:
        """The outcome of each probe that finished since the last pass."""
        done = 0
        for host_id, (host, future) in list(self._probing.items()):
            if not future.done():
                continue
            del self._probing[host_id]
            done += 1
            error = future.exception()
            if error is None:
                log.warning("host %s: its agent was silent; the probe restarted it", host.name)
            else:
                if not isinstance(error, (DriverError, OSError)):
                    log.error("host %s: the probe raised %r", host.name, error)
                self._probe_failed(host, error, now)
        return done

    def _apply_states(self, host: Host, agent: Agent) -> int:
        with self.store.read() as tx:
            seen = dict(tx.execute("SELECT vm_id, state FROM mon_vm_state WHERE host_id = ? AND snapshot = ?",
                                   (host.id, agent.snapshot)).all())
            vms = self.store.vms.where(tx, "host_id = ? AND state IN (?, ?, ?, ?)",
                                       (host.id, S.BOOT, S.RUNNING, S.UNKNOWN, S.SUSPENDED))
        changed = 0
        for vm in vms:
            if vm.updated >= agent.states_at:
                continue  # the list predates the VM's last change (a boot, a migration here): not evidence
            state = seen.get(vm.id)
            target, why = None, ""
            if state == "running" and vm.state in (S.BOOT, S.UNKNOWN, S.SUSPENDED):
                target, why = S.RUNNING, "the domain runs"
            elif state is None and vm.state == S.RUNNING:
                target, why = S.UNKNOWN, f"the domain is missing on host {host.name}"
            elif state == "paused" and vm.state in (S.RUNNING, S.UNKNOWN):
                target, why = S.SUSPENDED, "the domain is paused"
            elif state == "shutoff" and vm.state in (S.RUNNING, S.UNKNOWN):
                target, why = S.POWEROFF, "the domain shut off"
            if target is not None:
                enter(vm, target)
                changed += self.controller._save(vm, f"monitoring (agent): {why}") is not None
        return changed
