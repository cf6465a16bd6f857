"""The main job for real, in the lab: install over SSH, verify, install again, drill a failover.

One lab for the module (a fresh pair takes about a minute to install); tests run in order.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.inventory.load import load_site
from appliance.lab import lab
from appliance.verify import api_over_tls
from tests.conftest import ROOT, in_ci, require_tool

BIN = Path(sys.executable).with_name("appliance")


def cli(*args: str, check: bool = True) -> tuple[int, dict]:
    result = subprocess.run([str(BIN), *args, "--json"], capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    for tool in ("corosync", "pacemakerd", "mariadbd", "lighttpd", "vblade", "/usr/sbin/sshd", "crm_mon"):
        require_tool(tool)
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the lab needs root")
        pytest.skip("the lab needs root")
    directory = tmp_path_factory.mktemp("lab") / "lab"
    lab.up(directory, token=1000)
    code, first = cli("install", "-i", str(directory / "lab.toml"))
    yield directory, first
    lab.down(directory)


def fingerprint(directory: Path) -> dict[str, str]:
    """What a second install must not touch: configs, the CIB configuration, the database."""
    out = {}
    for node in lab.NODES:
        script = ("cat /etc/corosync/corosync.conf /etc/appliance/manager.toml /etc/appliance/proxy/lighttpd.conf "
                  "/etc/mysql/mariadb.conf.d/60-appliance-replication.cnf; cibadmin --query --scope configuration; "
                  "mariadb --batch -e 'CHECKSUM TABLE appliance.users, appliance.hosts, appliance.vms'")
        result = subprocess.run([*lab.enter(directory, node), "sh", "-c", script], capture_output=True,
                                check=True)
        out[node.name] = hashlib.sha256(result.stdout).hexdigest()
    return out


def test_install_verifies_a_healthy_pair(installed):
    _, first = installed
    assert first["ok"], first.get("verify")
    checks = {c["check"]: c["ok"] for c in first["verify"]}
    assert checks["both nodes online"] and checks["API answers through TLS on the LAN floating address"]
    assert checks["replication into cloud-cc01"] and checks["replication into cloud-cc02"]


def test_second_install_changes_nothing(installed):
    directory, _ = installed
    before = fingerprint(directory)
    _, second = cli("install", "-i", str(directory / "lab.toml"))
    assert second["changed"] == [] and second["ok"]
    assert fingerprint(directory) == before


def hsts_through_the_vip(inventory: Path) -> str:
    """The HSTS header the proxy sends now, over TLS verified against the lab's own certificate."""
    ok, detail = api_over_tls(load_site(inventory))
    assert ok, detail
    return detail.rsplit("HSTS ", 1)[1]


def test_a_changed_proxy_setting_reaches_the_running_proxy(installed):
    """lighttpd reads its config at start: install has Pacemaker restart it where it runs."""
    directory, _ = installed
    inventory = directory / "lab.toml"
    text = inventory.read_text()
    assert hsts_through_the_vip(inventory).startswith("max-age=31536000;")
    inventory.write_text(text.replace("tls = { generate = true }", "tls = { generate = true }\nhsts_max_age = 600"))
    try:
        _, changed = cli("install", "-i", str(inventory))
        assert changed["ok"] and any(c["what"].startswith("restart the proxy") for c in changed["changed"])
        assert hsts_through_the_vip(inventory).startswith("max-age=600;")
    finally:
        inventory.write_text(text)
    _, back = cli("install", "-i", str(inventory))
    assert back["ok"] and hsts_through_the_vip(inventory).startswith("max-age=31536000;")


def test_the_nfs_export_serves_files_on_the_san_floating_address(installed, tmp_path):
    require_tool("nfs-cp", "nfs-cat")
    source = tmp_path / "probe.txt"
    source.write_text("written over NFSv4\n")
    url = "nfs://10.250.0.100/srv/cloud/one/probe.txt?version=4"
    subprocess.run(["nfs-cp", str(source), url], check=True, capture_output=True, timeout=30)
    read = subprocess.run(["nfs-cat", url], check=True, capture_output=True, text=True, timeout=30)
    assert read.stdout == "written over NFSv4\n"


def test_live_check_reports_and_changes_nothing(installed):
    directory, _ = installed
    inventory = directory / "lab.toml"
    text = inventory.read_text()
    inventory.write_text(text.replace("token = 1000", "token = 1200"))
    try:
        before = fingerprint(directory)
        _, checked = cli("install", "--check", "--live", "--diff", "-i", str(inventory))
        assert {c["what"] for c in checked["changed"]} >= {"file /etc/corosync/corosync.conf"}
        assert all(c["status"] == "would-change" for c in checked["changed"])
        corosync = next(c for c in checked["changed"] if c["what"] == "file /etc/corosync/corosync.conf")
        lines = corosync["diff"].splitlines()
        assert any(line.startswith("-") and "token: 1000" in line for line in lines), corosync["diff"]
        assert any(line.startswith("+") and "token: 1200" in line for line in lines), corosync["diff"]
        assert fingerprint(directory) == before
    finally:
        inventory.write_text(text)


def test_an_operators_ban_and_standby_survive_an_install_and_verify_reports_them(installed):
    """crm_resource --ban and a node in standby are the operator's: install keeps them and exits 0."""
    directory, _ = installed
    first = lab.NODES[0]
    node_shell(directory, first, "crm_resource --ban --resource g_frontend --node cloud-cc02 && "
                                 "crm_attribute --node cloud-cc02 --name standby --update on")
    try:
        code, result = cli("install", "-i", str(directory / "lab.toml"), check=False)
        assert code == 0 and result["ok"], result
        assert [c for c in result["changed"] if c["what"] == "CIB configuration"] == []
        constraints = node_shell(directory, first, "cibadmin --query --scope constraints")
        assert "cli-ban-g_frontend-on-cloud-cc02" in constraints
        standby = node_shell(directory, first, "crm_attribute --node cloud-cc02 --name standby --query --quiet")
        assert standby.strip() == "on"
        planned = next(c for c in result["verify"] if c["check"] == "operator's planned states")
        assert "cloud-cc02" in planned["detail"] and "cli-ban" in planned["detail"]
    finally:
        node_shell(directory, first, "crm_resource --clear --resource g_frontend; "
                                     "crm_attribute --node cloud-cc02 --name standby --update off")
    code, result = cli("install", "-i", str(directory / "lab.toml"), check=False)
    assert code == 0 and result["ok"], result


def test_kill_node_fails_over_without_losing_acknowledged_writes(installed):
    directory, _ = installed
    code, result = cli("drill", "kill-node", "-i", str(directory / "lab.toml"))
    assert code == 0, result
    assert result["seconds_until_api_answers"] is not None
    assert result["acknowledged_writes"] > 10 and result["acknowledged_writes_lost"] == 0
    assert all(check["ok"] for check in result["after_restore"]), result["after_restore"]
    # The survivor stopped waiting for its dead peer's acknowledgements during the takeover; with
    # the peer back, semi-synchronous replication is on again on both (the manager's monitor).
    deadline = time.monotonic() + 60
    while True:
        enabled = [node_shell(directory, n, "mariadb -N -e 'SELECT @@rpl_semi_sync_master_enabled'").strip()
                   for n in lab.NODES]
        if enabled == ["1", "1"] or time.monotonic() > deadline:
            break
        time.sleep(1)  # poll interval inside the deadline loop
    assert enabled == ["1", "1"]


@pytest.mark.parametrize("fault", ["cut-link", "kill-manager", "kill-db"])
def test_every_drill_recovers_without_losing_acknowledged_writes(installed, fault):
    directory, _ = installed
    code, result = cli("drill", fault, "-i", str(directory / "lab.toml"))
    assert code == 0, result
    assert result["seconds_until_api_answers"] is not None and result["failures_after_first_answer"] == 0
    assert result["acknowledged_writes"] > 10 and result["acknowledged_writes_lost"] == 0
    if fault == "cut-link":  # the cut-off node was switched off by its peer: the service moved
        assert result["survivor"] != result["node"]
    assert all(check["ok"] for check in result["after_restore"]), result["after_restore"]


def node_shell(directory: Path, node: lab.LabNode, script: str) -> str:
    return subprocess.run([*lab.enter(directory, node), "sh", "-c", script], capture_output=True,
                          text=True, check=True).stdout


def test_a_failing_step_names_node_and_step_and_what_was_applied_before(installed):
    directory, _ = installed
    inventory = directory / "lab.toml"
    text = inventory.read_text()
    node_shell(directory, lab.NODES[1], "touch /srv/not-a-directory")  # where cloud-cc02's new state dir must go
    inventory.write_text(text + '\n[manager]\nstate_dir = "/srv/not-a-directory/state"\n')
    try:
        code, document = cli("install", "-i", str(inventory), check=False)
        assert code == 5, document
        [report] = document["reports"]
        assert (report["code"], report["host"], report["value"]) == \
            ("COMMAND_FAILED", "cloud-cc02", "create the state directory")
        applied = report["payload"]["applied_before"]
        assert "cloud-cc01: file /etc/appliance/manager.toml" in applied
        assert "cloud-cc02: file /etc/appliance/manager.toml" in applied
        assert not any("resources" in a or "CIB" in a for a in applied)  # nothing after the failure ran
    finally:
        inventory.write_text(text)
        node_shell(directory, lab.NODES[1], "rm -f /srv/not-a-directory")
    _, again = cli("install", "-i", str(inventory))  # the operator fixes the cause and runs it again
    assert again["ok"] and "cloud-cc01: file /etc/appliance/manager.toml" in \
        [f"{c['node']}: {c['what']}" for c in again["changed"]]


def manager_maps(directory: Path) -> tuple[str, str]:
    """The node running the manager, and the files its process has mapped (paths resolved by the kernel)."""
    for node in lab.NODES:
        maps = node_shell(directory, node, "cat /proc/$(cat /run/appliance/manager.pid)/maps 2>/dev/null || true")
        if maps.strip():
            return node.name, maps
    raise AssertionError("no node runs the manager")


def test_a_wheelhouse_installs_a_release_on_the_nodes_without_a_package_index(installed, tmp_path_factory):
    """The production path: the operator's wheels shipped over SSH, a venv built beside the running
    one with --no-index, the link switched, and the running manager restarted on the new code."""
    directory, _ = installed
    house = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(house), str(ROOT)], check=True,
                   capture_output=True, timeout=1200)
    inventory = directory / "lab.toml"
    text = inventory.read_text()
    inventory.write_text(text + f'\n[manager]\nwheelhouse = "{house}"\n')
    try:
        _, first = cli("install", "-i", str(inventory))
        assert first["ok"], first.get("verify")
        assert any(c["what"].startswith("install appliance release") for c in first["changed"])
        for node in lab.NODES:
            link, module = node_shell(directory, node, "readlink /opt/appliance; cd / && /opt/appliance/bin/python "
                                      "-c 'import appliance; print(appliance.__file__)'").splitlines()
            assert link.startswith("/opt/appliance-releases/0.1.0-") and module.startswith("/opt/appliance/lib/")
        _, maps = manager_maps(directory)
        assert "/opt/appliance-releases/" in maps and str(Path(sys.prefix)) + "/" not in maps, \
            "the running manager was not restarted on the release"
        _, second = cli("install", "-i", str(inventory))
        assert second["changed"] == [] and second["ok"]  # wheels compared by digest, nothing sent again
        code, drill = cli("drill", "kill-manager", "-i", str(inventory))  # Pacemaker restarts it from there
        assert code == 0 and drill["acknowledged_writes_lost"] == 0, drill
        _, maps = manager_maps(directory)
        assert "/opt/appliance-releases/" in maps
    finally:
        inventory.write_text(text)


def test_an_unreachable_node_is_named_and_nothing_is_changed(installed):
    directory, _ = installed
    node = lab.NODES[1]
    for pid in lab.node_pids(node):  # sshd and everything else on cloud-cc02 stop
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code, document = cli("install", "-i", str(directory / "lab.toml"), check=False)
    assert code == 6
    assert [(r["code"], r.get("host")) for r in document["reports"]] == [("HOST_UNREACHABLE", node.name)]


def test_a_cold_start_of_both_nodes_then_install_completes_and_keeps_every_row(installed):
    """Both nodes lose power at once and come back with nothing running: install brings the pair up.

    Before the runner killed each command's process group, install hung here for good at "wait
    for a designated controller" (an orphaned crmadmin held the SSH channel open)."""
    from appliance import drill

    directory, _ = installed
    site = load_site(directory / "lab.toml")
    count = "mariadb -N -e 'SELECT COUNT(*) FROM appliance.vms'"
    before = node_shell(directory, lab.NODES[0], count).strip()  # the test before this one killed cc02
    for node in lab.NODES:
        drill.inject("kill-node", node, directory, None)
    # Power back: no fence ran (nobody was left to fence), so not drill.restore, which waits for one.
    for node in lab.NODES:
        for address in (site.inventory.network.lan_vip, site.inventory.network.san_vip):
            for interface in ("lan0", "san0"):
                subprocess.run(["ip", "-n", node.netns, "addr", "del", f"{address}/24", "dev", interface],
                               capture_output=True)
    lab.network_up()
    for node in lab.NODES:
        lab.start_node(directory, node)
    for node in lab.NODES:
        lab.wait_for_ssh(node)
    code, result = cli("install", "-i", str(directory / "lab.toml"), check=False)
    assert code == 0 and result["ok"], result
    assert [node_shell(directory, n, count).strip() for n in lab.NODES] == [before, before]


def test_replication_repair_runbook_rebuilds_a_diverged_replica_from_the_active_node(installed):
    """replication-repair.md, "Rebuild a replica", done as written: a row the replica lost behind
    MariaDB's back stops its SQL thread at the next change to that row; status names it; the dump,
    the load without binlog and the GTID position put both copies back in step."""
    directory, _ = installed
    runbook = (ROOT / "docs" / "runbooks" / "replication-repair.md").read_text()
    dump = "mariadb-dump --single-transaction --gtid --master-data=2 --databases appliance > /root/appliance.sql"
    load = "(echo 'SET SESSION sql_log_bin=0;'; cat /root/appliance.sql) | mariadb"
    restart = "SET GLOBAL gtid_slave_pos='{}'; CHANGE MASTER TO MASTER_USE_GTID=slave_pos; START SLAVE"
    for command in (dump, load, "mariadb -e 'STOP SLAVE'", restart.format("POSITION-FROM-STEP-1"),
                    "grep -m1 gtid_slave_pos /root/appliance.sql"):
        assert command in runbook, command
    where = node_shell(directory, lab.NODES[0], "crm_resource --locate -r p_manager")
    active = next(n for n in lab.NODES if n.name in where)
    replica = next(n for n in lab.NODES if n is not active)
    # The divergence: the replica loses a row without telling its binlog; the active changes it.
    victim = node_shell(directory, active, "mariadb -N -e 'SELECT MAX(id) FROM appliance.vms'").strip()
    node_shell(directory, replica, f"mariadb -e 'SET SESSION sql_log_bin=0; DELETE FROM appliance.vms WHERE id={victim}'")
    node_shell(directory, active, f"mariadb -e \"UPDATE appliance.vms SET name=CONCAT(name, '-renamed') WHERE id={victim}\"")
    broken = ""
    for _ in range(100):
        broken = node_shell(directory, replica, "mariadb -e 'SHOW SLAVE STATUS\\G'")
        if "Slave_SQL_Running: No" in broken:
            break
        time.sleep(0.1)  # poll until the SQL thread reaches the event
    assert "Slave_SQL_Running: No" in broken and "Last_SQL_Error: " in broken
    code, status = cli("status", "-i", str(directory / "lab.toml"), check=False)
    assert code != 0 and [c for c in status["checks"] if not c["ok"] and replica.name in c["check"]], status
    # The runbook, step by step.
    node_shell(directory, active, dump)
    position = node_shell(directory, active, "grep -m1 gtid_slave_pos /root/appliance.sql").split("'")[1]
    node_shell(directory, active, "chmod 600 /root/appliance.sql")
    copy = subprocess.run([*lab.enter(directory, active), "cat", "/root/appliance.sql"], capture_output=True,
                          check=True).stdout
    subprocess.run([*lab.enter(directory, replica), "sh", "-c", "umask 077; cat > /root/appliance.sql"], input=copy,
                   check=True)
    node_shell(directory, replica, "mariadb -e 'STOP SLAVE'")
    node_shell(directory, replica, load)
    node_shell(directory, replica, f"mariadb -e \"{restart.format(position)}\"")
    checksum = "mariadb -N -e 'CHECKSUM TABLE appliance.vms, appliance.users'"
    deadline = time.monotonic() + 60
    while node_shell(directory, replica, checksum) != node_shell(directory, active, checksum):
        assert time.monotonic() < deadline, "the rebuilt replica never caught up"
        time.sleep(0.2)  # poll until the replica has applied what the active wrote since the dump
    fixed = node_shell(directory, replica, "mariadb -e 'SHOW SLAVE STATUS\\G'")
    assert "Slave_IO_Running: Yes" in fixed and "Slave_SQL_Running: Yes" in fixed
    code, status = cli("status", "-i", str(directory / "lab.toml"), check=False)
    assert code == 0, [c for c in status["checks"] if not c["ok"]]
    for node in (active, replica):
        node_shell(directory, node, "rm -f /root/appliance.sql")
