"""`appliance drill`: inject a fault in the lab while a client writes through the API, and measure.

The client creates a VM (on hold) through the TLS proxy on the LAN floating address every 50 ms
and records every write the API acknowledged. The fault hits the node holding the group. The
drill reports the seconds from the fault until a write succeeds again through the floating
address, and how many acknowledged writes the survivor does not have.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.inventory.load import Site
from appliance.lab import fence, lab
from appliance.core.reports import Report, ReportError
from appliance.verify import cluster_state

FAULTS = ("kill-node", "cut-link", "kill-manager", "kill-db", "reboot-both")
VM_ONLY = ("reboot-both",)  # the namespace lab shares one kernel: no cold start to give it
COLD_START_TIMEOUT = 150.0  # seconds (times timeout_scale) from a power cut of both until the API writes again
VM_TIMEOUT = 120.0  # seconds (times timeout_scale): a failover on the VM lab, where the manager alone took 74 s to start
FENCE_TIMEOUT = 180.0  # seconds for the survivor's fence of the victim to finish before the restore gives up
SSH_ATTEMPTS = 3  # starts of the restored node, each waiting for its sshd
_now, _pause = time.monotonic, time.sleep  # the restore's clock, replaced by tests


@dataclass
class Writer:
    """Writes through the floating address until stopped; remembers what was acknowledged."""

    host: str
    port: int
    token: str
    cafile: str
    acknowledged: list[str] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        context = ssl.create_default_context(cafile=self.cafile)
        connection = None
        n = 0
        while not self.stop.is_set():
            name = f"drill-{os.getpid()}-{n}"
            n += 1
            try:
                if connection is None:
                    # A short connect timeout: while the address is down nothing answers ARP, and a
                    # long one would notice the recovery seconds late. Replies get 5 s.
                    connection = http.client.HTTPSConnection(self.host, self.port, timeout=0.3, context=context)
                    connection.connect()
                    connection.sock.settimeout(5)
                body = json.dumps({"name": name, "memory": 16, "cpu": 0.01, "hold": True})
                connection.request("POST", "/api/v1/vms", body=body, headers={
                    "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status == 201:
                    self.acknowledged.append(name)
                    self.successes.append(time.monotonic())
                else:
                    self.failures.append(time.monotonic())
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self.failures.append(time.monotonic())
                if connection is not None:
                    connection.close()
                connection = None
            self.stop.wait(0.05)


def _node_of(site: Site, name: str):
    """The lab's handle on a node: a namespace node, or a VM lab machine."""
    if site.inventory.lab.vm:
        from appliance.lab import vm

        return vm.machine(name)
    return next(n for n in lab.NODES if n.name == name)


def active_node(runners: dict) -> str:
    holder = _holder(runners, "p_ip_lan")
    if holder is None:
        raise ReportError([Report("COMMAND_FAILED", "no node holds the LAN floating address: is the pair installed?")])
    return holder


def inject(fault: str, node, lab_dir: Path, runner) -> None:
    """The fault itself. kill-node is a power cut: every process dies and the links go dark."""
    from appliance.lab import vm

    if isinstance(node, vm.Machine) and fault == "reboot-both":
        # A power cut of the whole rack, then power back: both frontends die between two
        # instructions with nothing written since, and must come up together from their disks.
        frontends = vm.FRONTENDS
        for machine in frontends:
            vm.power_off(lab_dir, machine)
        for machine in frontends:
            vm.power_on(lab_dir, machine)
    elif isinstance(node, vm.Machine) and fault == "kill-node":
        vm.power_off(lab_dir, node)  # QEMU SIGKILLed: the machine stops between two instructions
    elif isinstance(node, vm.Machine) and fault == "cut-link":
        for net in ("lan", "san"):
            vm.set_link(lab_dir, node, net, up=False)  # both cables pulled: the guest sees no carrier
    elif fault == "kill-node":
        # Until none is left: a daemon that is still alive between the listing and its kill can
        # fork (pacemakerd respawns, execd runs a monitor), and a power cut leaves nothing behind.
        for _ in range(50):
            pids = lab.node_pids(node)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for net in ("lan", "san"):
            subprocess.run(["ip", "link", "set", node.veth(net), "down"], check=True)
    elif fault == "cut-link":
        for net in ("lan", "san"):
            subprocess.run(["ip", "link", "set", node.veth(net), "down"], check=True)
    elif fault == "kill-manager":
        runner.run(["sh", "-c", 'kill -9 "$(cat /run/appliance/manager.pid)"'])
    elif fault == "kill-db":
        runner.run(["sh", "-c", 'kill -9 "$(cat /run/mysqld/mysqld.pid)"'])
    else:
        raise ValueError(fault)


def restore(site: Site, node: lab.LabNode, lab_dir: Path, vips: tuple[str, str], *,
            fence_timeout: float = FENCE_TIMEOUT, progress=lambda m: None) -> None:
    """Bring a killed, cut-off or fenced lab node back: links up, stale floating addresses gone, sshd back.

    Not before the survivor's fence of the node is over: a node started while fence_lab is still
    switching it off (or before the fence even began: after kill-node the survivor fences the lost
    node seconds later) is switched off again under the restore (a drill saw HOST_UNREACHABLE so)."""
    wait_for_fence(lab_dir, node, fence_timeout, progress)
    for address in vips:
        for interface in ("lan0", "san0"):
            subprocess.run(["ip", "-n", node.netns, "addr", "del", f"{address}/24", "dev", interface],
                           capture_output=True)
    for attempt in range(1, SSH_ATTEMPTS + 1):
        lab.network_up()  # both ends of its links: fence_lab switched the node's own side off too
        lab.start_node(lab_dir, node)
        try:
            lab.wait_for_ssh(node)
            return
        except ReportError:
            if attempt == SSH_ATTEMPTS:
                raise
            progress(f"{node.name} did not answer on SSH; starting it again ({attempt + 1}/{SSH_ATTEMPTS})")
            _wait_while_fencing(lab_dir / node.name, fence_timeout, node)


def restore_plan(vm_lab: bool, fault: str) -> tuple[bool, bool]:
    """How a drill's restore goes: (wait for the pair to heal with no operator first, then run the
    installer even when it did).

    A VM-lab machine boots after its fence and starts corosync and pacemaker from its units; a
    killed daemon is restarted in place: the pair must come back whole by itself, and is only
    reinstalled when it has not. After a cold start (reboot-both) the installer runs anyway, once
    the wait has recorded whether the pair healed: that install is one proof that no step is
    destructive on disks that hold data. A namespace-lab node has no boot: its restore is the
    installer."""
    return vm_lab, (not vm_lab) or fault == "reboot-both"


def restore_machine(node, lab_dir: Path, *, faulted_at: float | None = None, fence_timeout: float = FENCE_TIMEOUT,
                    progress=lambda m: None) -> None:
    """VM lab: once the survivor's fence of the machine is over, power it on and wait for its sshd.

    The fence is the power switch's own record (appliance.lab.pdu writes fence.json like fence_lab):
    "off", finished after the fault (`faulted_at`, wall clock; by default the start of the machine's
    current QEMU, the mtime of qemu.pid). A fence by "reboot" has already powered it on again."""
    from appliance.lab import vm

    directory = lab_dir / node.name
    since = faulted_at if faulted_at is not None else _started_at(directory)
    deadline = _now() + fence_timeout
    said = False
    while True:
        last = fence.last_switch(directory)
        # Over when the switch recorded the machine off after the fault. Pacemaker fences with
        # "reboot" by default, and the switch then powers the machine on again by itself: seen on
        # the VM lab, where waiting for it to stay off never ended.
        done = (last is not None and last.get("state") == "off" and isinstance(last.get("finished"), (int, float))
                and last["finished"] >= since)
        if done:
            break
        if _now() > deadline:
            seen = "never switched it off" if last is None else f"last recorded {last.get('state')!r}"
            raise ReportError([Report(
                "WAIT_TIMEOUT", f"the fence of {node.name} did not finish within {fence_timeout:g} s: the power "
                f"switch {seen}", host=node.name, value=node.name,
                fix=f"read the survivor's `stonith_admin --history {node.name}` and {directory / 'fence.json'}; "
                    f"`appliance lab power {node.name} on` starts it")])
        if not said:
            progress(f"waiting for the fence of {node.name} to finish before powering it on")
            said = True
        _pause(0.5)  # poll interval inside the deadline loop
    if vm.qemu_pid(directory) is None:
        progress(f"powering {node.name} on")
        vm.power_on(lab_dir, node)
    else:
        progress(f"the fence rebooted {node.name}; waiting for it")
    vm.wait_for_ssh(node, progress=progress)


def _started_at(directory: Path) -> float:
    try:
        return (directory / "qemu.pid").stat().st_mtime
    except OSError:
        return 0.0


def wait_for_fence(lab_dir: Path, node: lab.LabNode, timeout: float = FENCE_TIMEOUT,
                   progress=lambda m: None) -> dict:
    """Wait until fence_lab has switched off the node's current incarnation and is done.

    The fact is fence_lab's own record in the node's directory (appliance.lab.fence.record): the
    agent writes "running" before it touches the node and "off" when nothing of the node is left.
    Done means: the last record is "off", it finished after the node was last started (the mtime
    of anchor.pid, which the node's anchor writes at each start), no agent is still running, and
    the node's namespace holds no process."""
    directory = lab_dir / node.name
    try:
        since = (directory / "anchor.pid").stat().st_mtime
    except OSError:
        since = 0.0  # never started: any switch-off is the last one
    deadline = _now() + timeout
    said = False
    while True:
        last = fence.last_switch(directory)
        state = last.get("state") if last else None
        finished = last.get("finished") if last else None
        current = state == "off" and isinstance(finished, (int, float)) and finished >= since
        left = lab.node_pids(node) if current else []
        if current and not left:
            return last
        if _now() > deadline:
            if last is None:
                seen = "fence_lab never switched it off"
            elif current:
                seen = f"fence_lab reported it off, yet {len(left)} processes are still in its namespace"
            elif state == "off":
                seen = "its last switch-off is from before the node last started"
            else:
                seen = f"fence_lab's last switch-off is {state!r}"
            raise ReportError([Report(
                "WAIT_TIMEOUT", f"the fence of {node.name} did not finish within {timeout:g} s: {seen}",
                host=node.name, value=node.name,
                fix=f"read the survivor's fence history (`stonith_admin --history {node.name}`) and "
                    f"{directory / fence.RECORD}; once the node is off, `appliance lab up` starts it again")])
        if not said:
            progress(f"waiting for the fence of {node.name} to finish before restoring it")
            said = True
        _pause(0.2)  # poll interval inside the deadline loop


def _wait_while_fencing(directory: Path, timeout: float, node: lab.LabNode) -> None:
    """Before starting the node again: a switch-off still in progress must end first."""
    deadline = _now() + timeout
    while True:
        last = fence.last_switch(directory)
        if not (last and last.get("state") == "running" and fence.agent_running(last.get("pid"))):
            return
        if _now() > deadline:
            raise ReportError([Report("WAIT_TIMEOUT", f"fence_lab (pid {last.get('pid')}) is still switching "
                                      f"{node.name} off after {timeout:g} s", host=node.name, value=node.name)])
        _pause(0.2)  # poll interval inside the deadline loop


def drill(site: Site, runners: dict, fault: str, lab_dir: Path, *, node: str | None = None,
          settle: float = 3.0, timeout: float = 60.0, progress=lambda m: None) -> dict:
    if fault not in FAULTS:
        raise ReportError([Report("API_REFUSED", f"unknown fault {fault!r}", value=fault)])
    inv = site.inventory
    if fault in VM_ONLY and not inv.lab.vm:
        raise ReportError([Report("API_REFUSED", f"the {fault} drill needs the VM lab: the namespace lab's nodes "
                                  "share this machine's kernel and cannot be cold-started", value=fault,
                                  fix="appliance lab up --kind vm, then drill with its lab.toml")])
    if fault == "reboot-both":
        timeout = max(timeout, COLD_START_TIMEOUT)  # a boot, corosync's wait_for_all, DRBD, MariaDB
    elif inv.lab.vm:
        # Measured on TCG: kill-node answered again after about 235 s, past 60 x 4, and the drill
        # then reported no recovery time at all while the pair did recover.
        timeout = max(timeout, VM_TIMEOUT)
    timeout *= inv.cluster.timeout_scale  # a slow lab (TCG) takes as many times longer to fail over
    _require_healthy(runners)
    target = node or active_node(runners)
    token = runners[target].read(f"{inv.manager.state_dir}/admin.token") or \
        next(r.read(f"{inv.manager.state_dir}/admin.token") for r in runners.values())
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as cafile:
        cafile.write(site.secrets.tls_certificate or "")
    writer = Writer(inv.network.lan_vip, inv.proxy.port, token.decode().strip(), cafile.name)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(writer.successes) < 10:  # the client must be writing before the fault
        if time.monotonic() > deadline:
            writer.stop.set()
            raise ReportError([Report("COMMAND_FAILED", "the API does not answer through the floating address")])
        time.sleep(0.05)
    progress(f"writing through https://{inv.network.lan_vip}; injecting {fault} on {target}")
    fault_at, faulted_wall = time.monotonic(), time.time()
    inject(fault, _node_of(site, target), lab_dir, runners[target])
    if fault == "reboot-both":
        for runner in runners.values():
            runner.close()  # connections to machines that lost power: the next command reconnects
    # Recovered means a steady run of successful writes `settle` seconds long, not one lucky answer:
    # a service that answers once and falls over again has not recovered (a drill saw exactly that).
    while time.monotonic() - fault_at < timeout:
        streak, now = _steady_since(writer, fault_at), time.monotonic()
        if streak is not None and now - streak > settle and now - writer.successes[-1] < 1.0:
            break
        if not any(f > fault_at for f in writer.failures) and time.monotonic() - fault_at > settle * 2:
            break  # the client never noticed: no interruption
        time.sleep(0.1)
    writer.stop.set()
    thread.join(timeout=10)
    failed_after = [f for f in writer.failures if f > fault_at]
    streak = _steady_since(writer, fault_at)
    if not failed_after:
        seconds = 0.0  # the client never saw an error
    else:
        seconds = round(streak - fault_at, 2) if streak is not None else None
    first = [t for t in writer.successes if failed_after and t > failed_after[0]]
    relapses = [f for f in failed_after if first and f > first[0]]
    # Lost means missing from the database the service now writes to: the node that holds the group.
    candidates = {n: r for n, r in runners.items() if fault not in ("kill-node", "cut-link") or n != target}
    survivor = _holder(candidates) or next(iter(candidates))
    listed = _names_on(runners[survivor], site)
    lost = [name for name in writer.acknowledged if name not in listed]
    os.unlink(cafile.name)
    return {"fault": fault, "node": target, "survivor": survivor, "faulted_at": faulted_wall,
            "seconds_until_api_answers": seconds,
            "seconds_until_first_answer": round(first[0] - fault_at, 2) if first else None,
            "failures_after_first_answer": len(relapses),
            "acknowledged_writes": len(writer.acknowledged), "acknowledged_writes_lost": len(lost),
            "lost": lost[:10]}


def _require_healthy(runners: dict) -> None:
    """A drill on a pair that is already degraded measures nothing; and the restore cleans up the
    failures the drill causes, which must not hide older ones."""
    state = cluster_state(next(iter(runners.values())))
    stopped = sorted(rid for rid, r in state["resources"].items() if not r["nodes"])
    failures = [f"{f['action']} on {f['node']}" for f in state.get("failures", [])]
    if len(state["online"]) < len(runners) or stopped or failures or not state["resources"]:
        raise ReportError([Report(
            "PAIR_DEGRADED", f"the pair is not healthy before the drill: online {state['online']}, "
            f"stopped {stopped}, failed actions {failures}", value=", ".join(stopped + failures) or None,
            fix="run `appliance status`, follow docs/runbooks/failover.md, and drill a healthy pair")])


def _holder(runners: dict, resource: str = "p_manager") -> str | None:
    """The node running `resource`, asked of the first node that answers."""
    for runner in runners.values():
        try:
            nodes = cluster_state(runner)["resources"].get(resource, {}).get("nodes", [])
        except Exception:  # noqa: BLE001 (a node that cannot answer holds nothing we can read)
            continue
        if nodes:
            return nodes[0]
    return None


def _steady_since(writer: Writer, fault_at: float) -> float | None:
    """Start of the run of successes, after the fault and after the last failure, that is still going."""
    failures = [f for f in writer.failures if f > fault_at]
    if not failures:
        return None
    after = [t for t in writer.successes if t > failures[-1]]
    return after[0] if after else None


def _names_on(runner, site: Site) -> set[str]:
    """Every VM name in the survivor's database, read straight from MariaDB."""
    db = site.inventory.database.name
    deadline = time.monotonic() + 60
    while True:  # after kill-db the server may still be in crash recovery
        result = runner.run(["mariadb", "--batch", "--skip-column-names", "-e",
                             f"SELECT name FROM `{db}`.vms"], timeout=60, check=time.monotonic() > deadline)
        if result.ok:
            return set(result.stdout.split())
        time.sleep(0.5)  # poll interval inside the deadline loop
