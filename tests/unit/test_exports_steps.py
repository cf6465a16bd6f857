"""The exports role on a fresh Debian 12 and on a running pair: its checks run for real in sh against
stand-ins that answer as the VM lab's machines did (`systemctl is-enabled nfs-kernel-server` printed
"alias" and exited 0, which made every install stop the active node's NFS server)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from roles import base
from roles.registry import plan_site
from tests.conftest import load_test_site


def _steps():
    site = load_test_site()
    plan = base.plan(site).for_node(site.inventory.nodes[0].name)
    return {s.what: s for s in plan.steps}


def _bin(tmp_path: Path, enabled: bool, active: bool, running_here: bool) -> dict:
    b = tmp_path / "bin"
    b.mkdir()
    scripts = {
        "systemctl": f"""case "$*" in
  "is-enabled --quiet nfs-kernel-server") exit 0 ;;  # Debian 12: an alias, "enabled" for is-enabled
  "is-enabled --quiet nfs-server.service") exit {0 if enabled else 1} ;;
  "is-active --quiet nfs-server.service") exit {0 if active else 3} ;;
esac
exit 1""",
        "crm_resource": f'echo "resource p_nfsserver is running on: {"cloud-cc01" if running_here else "cloud-cc02"}"',
        "crm_node": 'echo cloud-cc01',
    }
    for name, body in scripts.items():
        (b / name).write_text("#!/bin/sh\n" + body + "\n")
        (b / name).chmod(0o755)
    return {**os.environ, "PATH": f"{b}:{os.environ['PATH']}"}


def _skipped(step, env) -> bool:
    return subprocess.run(step.unless, env=env).returncode == 0


def test_an_installed_pair_runs_neither_step(tmp_path):
    env = _bin(tmp_path, enabled=False, active=True, running_here=True)
    steps = _steps()
    assert _skipped(steps["keep init from starting the NFS server"], env)
    assert _skipped(steps["stop the NFS server init started"], env)  # Pacemaker runs it here


def test_a_fresh_debian_disables_and_stops_the_distros_nfs_server(tmp_path):
    env = _bin(tmp_path, enabled=True, active=True, running_here=False)
    steps = _steps()
    assert not _skipped(steps["keep init from starting the NFS server"], env)
    assert not _skipped(steps["stop the NFS server init started"], env)


@pytest.mark.parametrize("active", [False, True])
def test_disable_never_stops_the_server(active):
    step = _steps()["keep init from starting the NFS server"]
    assert "--now" not in step.argv and "nfs-kernel-server" not in " ".join(step.unless)


def test_init_nfs_server_is_stopped_before_the_node_joins_the_cluster():
    """A node that joins with init's NFS server running is probed as a second active p_nfsserver:
    Pacemaker stops it on both nodes, and a failed stop fences the node that runs the services
    (VM lab, replace-node, 2026-12-07)."""
    site = load_test_site()
    for node in site.inventory.nodes:
        order = [s.what for p in plan_site(site) if p.for_node(node.name) for s in p.for_node(node.name).steps]
        join = order.index("start corosync and pacemaker")
        assert order.index("keep init from starting the NFS server") < join
        assert order.index("stop the NFS server init started") < join
