"""The lab for real: namespaces, overlays and sshd per node; up is idempotent, down leaves no trace."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliance.lab import lab
from appliance.runner.ssh import SshRunner
from tests.conftest import in_ci, require_tool


@pytest.fixture
def lab_dir(tmp_path):
    require_tool("ip", "unshare", "/usr/sbin/sshd", "ssh-keygen")
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the lab needs root")
        pytest.skip("the lab needs root")
    directory = tmp_path / "lab"
    yield directory
    lab.down(directory)


def runner(directory: Path, node: lab.LabNode) -> SshRunner:
    return SshRunner(node.name, node.lan_ip, key_filename=str(directory / "client_key"),
                     known_hosts=directory / "known_hosts")


def test_lab_nodes_are_separate_hosts_reached_over_ssh_with_verified_keys(lab_dir):
    lab.up(lab_dir)
    for node in lab.NODES:
        ssh = runner(lab_dir, node)
        try:
            assert ssh.run(["uname", "-n"]).stdout.strip() == node.name
            addresses = ssh.run(["ip", "-4", "-o", "addr", "show"]).stdout
            assert node.lan_ip in addresses and node.san_ip in addresses
            ssh.put("/etc/appliance-lab-probe", node.name.encode(), 0o600)  # inside the node's overlay
            assert ssh.read("/etc/appliance-lab-probe") == node.name.encode()
        finally:
            ssh.close()
    assert not Path("/etc/appliance-lab-probe").exists()  # the host never saw it


def test_lab_up_is_idempotent_and_writes_a_valid_inventory(lab_dir):
    first = lab.up(lab_dir)
    second = lab.up(lab_dir)
    assert [n["anchor"] for n in first["nodes"]] == [n["anchor"] for n in second["nodes"]]
    assert oct((lab_dir / "lab.secrets.toml").stat().st_mode & 0o777) == "0o600"
    from appliance.inventory.load import load_site

    site = load_site(lab_dir / "lab.toml")
    assert site.inventory.lab.enabled and [n.name for n in site.inventory.nodes] == ["cloud-cc01", "cloud-cc02"]


def test_lab_down_removes_what_up_made_and_nothing_else(lab_dir):
    subprocess.run(["ip", "netns", "add", "not-the-labs"], check=True)
    try:
        lab.up(lab_dir)
        lab.down(lab_dir)
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "appliance-cloud-cc" not in namespaces and "not-the-labs" in namespaces
        assert "apl-" not in links and not lab_dir.exists()
        assert not lab.FENCE_AGENT.exists()
    finally:
        subprocess.run(["ip", "netns", "del", "not-the-labs"])


def test_a_changed_host_key_is_refused(lab_dir):
    lab.up(lab_dir)
    node = lab.NODES[0]
    other = lab_dir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = (lab_dir / "other_key.pub").read_text().split()
    (lab_dir / "known_hosts").write_text(f"{node.lan_ip} {key[0]} {key[1]}\n")
    from appliance.core.reports import ReportError

    with pytest.raises(ReportError) as error:
        runner(lab_dir, node).run(["true"])
    assert [(r.code, r.host) for r in error.value.reports] == [("HOST_KEY_CHANGED", node.name)]


def fence(node_from: lab.LabNode, directory: Path, action: str, target: str) -> subprocess.CompletedProcess:
    """Run the power switch the way Pacemaker's fenced does: inside a node, options on stdin."""
    return subprocess.run([*lab.enter(directory, node_from), str(lab.FENCE_AGENT)],
                          input=f"action={action}\nport={target}\nlab_dir={directory}\npdu={lab.LAN}.254\n",
                          capture_output=True, text=True, timeout=60)


def test_the_power_switch_really_switches_a_node_off_and_a_cut_off_node_cannot_use_it(lab_dir):
    lab.up(lab_dir)
    one, two = lab.NODES
    assert fence(one, lab_dir, "status", two.name).returncode == 0  # on
    for net in ("lan", "san"):  # cut cloud-cc01 off: it can no longer reach the switch
        subprocess.run(["ip", "link", "set", one.veth(net), "down"], check=True)
    cut_off = fence(one, lab_dir, "off", two.name)
    assert cut_off.returncode == 1 and "does not answer" in cut_off.stderr
    assert lab.node_pids(two)  # cloud-cc02 still runs
    switched = fence(two, lab_dir, "reboot", one.name)
    assert switched.returncode == 0, switched.stderr
    assert lab.node_pids(one) == []  # every process of cloud-cc01 is gone: sshd, anchor, all
    inner = subprocess.run(["ip", "-n", one.netns, "-o", "link", "show", "lan0"], capture_output=True, text=True)
    assert "state DOWN" in inner.stdout or ",UP" not in inner.stdout  # and its side of the links is off
    assert fence(two, lab_dir, "status", one.name).returncode == 2  # off
