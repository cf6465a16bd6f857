"""A fresh Debian runs its own one-node cluster: install replaces it only when it holds no resource.

The step's script runs for real against stand-ins for corosync-cmapctl, cibadmin, systemctl and
install that answer as the VM lab's fresh machines did (`totem.cluster_name (str) = debian`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from roles import cluster


def _fake_tools(bin_dir: Path, cluster_name: str | None, resources: str, log: Path) -> None:
    bin_dir.mkdir()
    tools = {
        "corosync-cmapctl": (f'echo "totem.cluster_name (str) = {cluster_name}"' if cluster_name
                             else 'echo "Failed to initialize the cmap API. Error CS_ERR_LIBRARY" >&2; exit 1'),
        "cibadmin": f"printf '%s\\n' '{resources}'",
        "systemctl": f'echo "systemctl $*" >> {log}',
        "install": f'mkdir -p "$(eval echo \\${{$#}})"; echo "install $*" >> {log}',
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def _run(tmp_path: Path, cluster_name: str | None, resources: str = "<resources/>"):
    cib = tmp_path / "cib"
    cib.mkdir()
    (cib / "cib.xml").write_text("<cib/>")
    log = tmp_path / "calls.log"
    log.touch()
    _fake_tools(tmp_path / "bin", cluster_name, resources, log)
    step = cluster.replace_default_cluster("cloud-cc", str(cib))
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(step.unless, env=env, capture_output=True).returncode == 0
    result = subprocess.run(step.argv, env=env, capture_output=True, text=True)
    return done, result, log.read_text(), sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cib"))


def test_debians_default_cluster_is_stopped_and_its_cib_kept_aside(tmp_path):
    done, result, calls, cibs = _run(tmp_path, "debian")
    assert not done and result.returncode == 0
    assert "systemctl stop pacemaker corosync" in calls
    assert len(cibs) == 2 and any(c.startswith("cib.before-appliance-") for c in cibs)  # moved, not deleted
    aside = next(tmp_path / c for c in cibs if c != "cib")
    assert (aside / "cib.xml").read_text() == "<cib/>"


@pytest.mark.parametrize("resources", ['<resources><primitive id="web" class="ocf"/></resources>',
                                       '<resources><clone id="c"><primitive id="p"/></clone></resources>',
                                       '<resources><group id="g"/></resources>'])
def test_a_foreign_cluster_with_resources_is_refused_untouched(tmp_path, resources):
    done, result, calls, cibs = _run(tmp_path, "production", resources)
    assert not done and result.returncode == 3
    assert "not appliance's to replace" in result.stderr
    assert calls == "" and cibs == ["cib"]


@pytest.mark.parametrize("name", ["cloud-cc", None])
def test_our_own_cluster_or_none_running_is_left_alone(tmp_path, name):
    done, result, calls, cibs = _run(tmp_path, name)
    assert done and result.returncode == 0 and calls == "" and cibs == ["cib"]


def test_production_runs_it_before_starting_the_cluster():
    from tests.conftest import load_test_site

    site = load_test_site()
    steps = [s.what for s in cluster.plan(site).for_node(site.inventory.nodes[0].name).steps]
    replace = next(i for i, w in enumerate(steps) if w.startswith("replace a running cluster"))
    assert replace < steps.index("start corosync and pacemaker")

