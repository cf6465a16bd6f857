"""`appliance serve` in push mode, all real processes: the manager, its collector on a UDP port,
and each fake host's agent, which the manager's probe starts as a process of its own.

What an operator would check: a new host becomes MONITORED from its agent's reports; a VM boots and
is RUNNING only once reported; a domain killed behind the manager's back is UNKNOWN, and RUNNING
when it is back; a kill -9 of the agent is noticed and the probe restarts it (a new epoch);
/metrics parses and counts it all.
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool
from tests.manager.test_serve_real import Serve, free_port


def _wait(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)  # poll interval inside the deadline loop
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def push(tmp_path):
    require_tool("qemu-img")
    server = Serve(tmp_path, {"backend": "sqlite"})
    udp = free_port()
    with open(server.config, "a") as config:
        config.write(f'\n[monitoring]\nmode = "push"\nbind = "127.0.0.1"\nport = {udp}\n'
                     f'collector = "127.0.0.1:{udp}"\ninterval = 1\nsilent_cycles = 3\n')
    server.start()
    yield server
    server.stop()
    for pid_file in (server.home / "agents").glob("agent-*/pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _get(serve: Serve, path: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{serve.port}{path}", headers={
        "Authorization": f"Bearer {(serve.home / 'admin.token').read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_push_mode_end_to_end_with_real_agent_processes(push, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "system").mkdir()
    host = push.cli("host", "create", "hv1", "--driver", "fake")
    _wait("the host to be MONITORED by its agent",
          lambda: push.cli("host", "show", str(host["id"]))["state"] == "MONITORED")
    assert (push.home / "monitoring.secret").stat().st_mode & 0o777 == 0o600
    images = push.cli("datastore", "create", "images", "--path", str(tmp_path / "images"), "--kind", "image")
    push.cli("datastore", "create", "system", "--path", str(tmp_path / "system"))
    image = push.cli("image", "create", "base", "--datastore", str(images["id"]), "--size", "16")
    vm = push.cli("vm", "create", "web", "--disk", str(image["id"]), "--memory", "64", "--cpu", "0.1")
    vm_id = (vm["items"][0] if "items" in vm else vm)["id"]
    _wait("the VM to be RUNNING", lambda: push.cli("vm", "show", str(vm_id))["state"] == "RUNNING")
    transitions = json.loads(_get(push, f"/api/v1/vms/{vm_id}/history"))
    assert [t["to"] for t in transitions][-2:] == ["BOOT", "RUNNING"]
    assert "agent" in transitions[-1]["reason"]  # the agent's report, not the start call, made it RUNNING

    fake = push.home / "fake-hv1.json"
    domains = json.loads(fake.read_text())
    gone = {k: v for k, v in domains.items() if k != f"appliance-{vm_id}"}
    fake.write_text(json.dumps(gone))  # the domain is killed behind the manager's back
    _wait("the VM to be UNKNOWN", lambda: push.cli("vm", "show", str(vm_id))["state"] == "UNKNOWN")
    fake.write_text(json.dumps(domains))
    _wait("the VM to be RUNNING again", lambda: push.cli("vm", "show", str(vm_id))["state"] == "RUNNING")

    pid_file = push.home / "agents" / f"agent-{host['id']}" / "pid"
    first = int(pid_file.read_text())
    os.kill(first, signal.SIGKILL)
    _wait("the probe to restart the agent", lambda: pid_file.exists() and int(pid_file.read_text()) != first)
    shown = push.cli("host", "show", str(host["id"]), "--history", "--since", "600")
    assert shown["host"]["state"] == "MONITORED" and len(shown["history"]) >= 2
    assert int((push.home / "agents" / f"agent-{host['id']}" / "epoch").read_text()) >= 2

    families = {f.name: f for f in text_string_to_metric_families(_get(push, "/metrics"))}
    accepted = [s.value for s in families["appliance_collector_datagrams"].samples
                if s.labels.get("outcome") == "accepted" and s.name.endswith("_total")]
    assert accepted and accepted[0] > 5
    assert any(s.labels == {"host": "hv1"} and s.value == 1 for s in families["appliance_host_up"].samples)


def test_runbook_monitoring_rotating_the_secret_and_a_reinstalled_hosts_agent(push, tmp_path):
    """docs/runbooks/monitoring.md, "rotating the monitoring secret" and the `replayed` row of
    "dropped datagrams", done as the runbook says."""
    host = push.cli("host", "create", "hv1", "--driver", "fake")
    _wait("MONITORED", lambda: push.cli("host", "show", str(host["id"]))["state"] == "MONITORED")
    agent_dir = push.home / "agents" / f"agent-{host['id']}"
    old_key = (agent_dir / "key").read_text()
    push.stop()  # a new secret on the frontend (0600), then the manager restarted
    secret = push.home / "monitoring.secret"
    secret.write_text("ab" * 32 + "\n")
    secret.chmod(0o600)
    (agent_dir / "epoch").unlink()  # and, at the same time, the host lost its agent's epoch file
    push.start()
    # within silent_cycles intervals the probe writes the host's new key and restarts its agent,
    # above the epoch the collector stored (the lost epoch file would otherwise read as replays)
    _wait("the agent's new key", lambda: (agent_dir / "key").read_text() != old_key)
    _wait("the host to report again", lambda: float(push.cli("host", "show", str(host["id"]))["monitored_at"]) >
          time.time() - 5)
    families = {f.name: f for f in text_string_to_metric_families(_get(push, "/metrics"))}
    dropped = {s.labels["outcome"]: s.value for s in families["appliance_collector_datagrams"].samples
               if s.name.endswith("_total")}
    assert dropped["accepted"] > 0 and dropped["replayed"] == 0, dropped
