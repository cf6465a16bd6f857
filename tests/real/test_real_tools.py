"""Real tier: the real tools accept what we render, and reject what is broken.

Each checker is shown to fail on a broken file too, so a pass means something.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.actions import check_plans
from appliance.checkers import check_node
from appliance.ha import lsb
from appliance.roles.model import NodePlan, RolePlan
from appliance.roles.registry import plan_site
from appliance.runner.local import LocalRunner
from tests.conftest import EXAMPLE, GOLDEN, TEST_SECRETS, load_test_site, require_root_namespaces, require_tool
from tests.golden.test_golden import variant_site

NODES = ("cloud-cc01", "cloud-cc02")
PROMOTABLE = ("p_drbd_one", "p_drbd_data")


def role(site, name: str) -> RolePlan:
    return next(p for p in plan_site(site) if p.role == name)


def check(node: NodePlan, tmp_path: Path):
    return check_node(LocalRunner(), node, tmp_path, cluster_nodes=NODES, promotable=PROMOTABLE)


def with_file(node: NodePlan, path: str, content: bytes) -> NodePlan:
    files = tuple(dataclasses.replace(f, content=content) if f.path == path else f for f in node.files)
    return dataclasses.replace(node, files=files)


def verdicts(run) -> list[tuple[str, bool]]:
    return [(o.path, o.ok) for o in run.outcomes]


# --- CIB: crm_verify and crm_simulate -------------------------------------------------------------

def test_generated_cib_passes_crm_verify(tmp_path):
    require_tool("crm_verify", "crm_simulate", "crm_attribute")
    cluster = role(load_test_site(), "resources").nodes[0]
    run = check(cluster, tmp_path)
    assert verdicts(run) == [("/var/lib/appliance/cib.xml", True)], run.outcomes


def test_crm_verify_rejects_a_dangling_reference(tmp_path):
    require_tool("crm_verify", "crm_simulate", "crm_attribute")
    cluster = role(load_test_site(), "resources").nodes[0]
    text = cluster.files[0].content.decode().replace('with-rsc="ms_drbd_data"', 'with-rsc="ms_nonexistent"')
    run = check(with_file(cluster, "/var/lib/appliance/cib.xml", text.encode()), tmp_path)
    assert not run.ok


MEMBERS = ["p_fs_one", "p_nfsserver", "p_export_1", "p_ip_san", "p_ip_lan", "p_manager", "p_proxy", "p_aoe_data"]
EXPORTS = ["p_aoe_data"]


def preview_for(failed: str, tmp_path: Path, update_golden: bool):
    require_tool("crm_verify", "crm_simulate", "crm_attribute")
    cluster = role(load_test_site(), "resources").nodes[0]
    preview = check(cluster, tmp_path).previews[failed]
    golden = GOLDEN / "failover" / f"{failed}.txt"
    text = f"Transition Summary:\n{preview.transition}\nRevised Cluster Status:\n{preview.revised_status}"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    return preview


def started_on(preview, node: str) -> list[str]:
    lines = [line for line in preview.revised_status.splitlines() if line.endswith(f"Started {node}")]
    return [m for m in MEMBERS if any(f"* {m} " in line for line in lines)]


def test_active_node_failure_fences_it_and_moves_everything_to_the_survivor(tmp_path, update_golden):
    preview = preview_for("cloud-cc01", tmp_path, update_golden)
    assert "Fence (reboot) cloud-cc01" in preview.transition
    for clone in ("p_drbd_one", "p_drbd_data"):
        assert re.search(rf"Promote\s+{clone}:\d\s+\(\s*Unpromoted -> Promoted cloud-cc02\s*\)", preview.transition)
    assert started_on(preview, "cloud-cc02") == MEMBERS
    assert "OFFLINE: [ cloud-cc01 ]" in preview.revised_status


def test_passive_node_failure_fences_it_and_moves_nothing(tmp_path, update_golden):
    preview = preview_for("cloud-cc02", tmp_path, update_golden)
    assert "Fence (reboot) cloud-cc02" in preview.transition
    assert not any(m in preview.transition for m in MEMBERS)  # the group is not touched
    assert "Promote" not in preview.transition
    assert started_on(preview, "cloud-cc01") == MEMBERS


def test_a_crashed_manager_restarts_in_place_and_leaves_the_exports_alone(tmp_path):
    """Pacemaker's own scheduler on a failed manager monitor: VM storage (AoE) must not blink."""
    require_tool("crm_simulate", "crm_attribute")
    from appliance.ha import simulate

    cluster = role(load_test_site(), "resources").nodes[0]
    cib_file = tmp_path / "cib.xml"
    cib_file.write_bytes(cluster.files[0].content)
    runner = LocalRunner()
    steady = simulate.steady_state(runner, str(cib_file), str(tmp_path), ("cloud-cc01", "cloud-cc02"),
                                   ("p_drbd_one", "p_drbd_data"))
    result = runner.run(["crm_simulate", "--xml-file", steady, "--simulate",
                         "--op-inject", "p_manager_monitor_5000@cloud-cc01=7"])
    summary = result.stdout.split("Transition Summary:")[1].split("Executing Cluster Transition:")[0]
    assert re.search(r"Recover\s+p_manager\s+\(\s*cloud-cc01\s*\)", summary), summary
    untouched = EXPORTS + ["p_ip_san", "p_ip_lan", "p_fs_one", "p_nfsserver"]
    assert not any(member in summary for member in untouched), summary


# --- DRBD: drbdadm dump (9 syntax) and drbdadm-84 dump (8.4 syntax) ------------------------------

@pytest.mark.parametrize("variant,tool", [("two-node", "drbdadm"), ("drbd84", "/lib/drbd/drbdadm-84"),
                                          ("heartbeat", "drbdadm")])
def test_drbd_configs_pass_drbdadm_dump_on_both_nodes(variant, tool, tmp_path):
    require_tool(tool, "unshare")
    require_root_namespaces()
    for node in role(variant_site(variant, tmp_path), "drbd").nodes:
        run = check(node, tmp_path)
        assert verdicts(run) == [("/etc/drbd.d/one-disk.res", True), ("/etc/drbd.d/data-disk.res", True)], \
            run.outcomes


@pytest.mark.parametrize("variant,tool", [("two-node", "drbdadm"), ("drbd84", "/lib/drbd/drbdadm-84")])
def test_drbdadm_rejects_a_broken_resource(variant, tool, tmp_path):
    require_tool(tool, "unshare")
    require_root_namespaces()
    node = role(variant_site(variant, tmp_path), "drbd").nodes[0]
    res = next(f for f in node.files if f.path.endswith("one-disk.res"))
    broken = res.content.replace(b"meta-disk", b"bogus-option")
    run = check(with_file(node, res.path, broken), tmp_path)
    assert ("/etc/drbd.d/one-disk.res", False) in verdicts(run)


# --- corosync -t, lighttpd -tt, lvmconfig, bash -n --------------------------------------------

def test_corosync_conf_passes_corosync_t_and_a_duplicate_nodeid_fails(tmp_path):
    require_tool("corosync", "unshare")
    require_root_namespaces()
    node = role(load_test_site(), "cluster").nodes[0]
    assert verdicts(check(node, tmp_path)) == [("/etc/corosync/corosync.conf", True)]
    conf = node.files[0].content.replace(b"nodeid: 2", b"nodeid: 1")
    assert verdicts(check(with_file(node, "/etc/corosync/corosync.conf", conf), tmp_path)) == \
        [("/etc/corosync/corosync.conf", False)]


def test_lighttpd_proxy_config_passes_lighttpd_tt_and_a_bad_module_fails(tmp_path):
    require_tool("lighttpd", "openssl")
    node = role(load_test_site(), "proxy").nodes[0]
    run = check(node, tmp_path)
    assert ("/etc/appliance/proxy/lighttpd.conf", True) in verdicts(run)
    conf = node.files[0].content.replace(b'"mod_proxy"', b'"mod_no_such_module"')
    run = check(with_file(node, "/etc/appliance/proxy/lighttpd.conf", conf), tmp_path)
    assert ("/etc/appliance/proxy/lighttpd.conf", False) in verdicts(run)


def test_tls_settings_are_what_lighttpd_parses(tmp_path):
    text = role(load_test_site(), "proxy").nodes[0].files[0].content.decode()
    assert '"MinProtocol" => "TLSv1.2"' in text and "Strict-Transport-Security" in text
    assert "snakeoil" not in text


def test_lvm_filter_passes_lvmconfig_and_an_unknown_setting_fails(tmp_path):
    require_tool("lvmconfig")
    node = role(load_test_site(), "lvm").nodes[0]
    assert verdicts(check(node, tmp_path)) == [("/etc/lvm/lvmlocal.conf", True)]
    broken = node.files[0].content.replace(b"write_cache_state", b"write_cache_stat")
    assert verdicts(check(with_file(node, "/etc/lvm/lvmlocal.conf", broken), tmp_path)) == \
        [("/etc/lvm/lvmlocal.conf", False)]


def test_scripts_pass_bash_n_and_a_syntax_error_fails(tmp_path):
    require_tool("bash")
    node = role(load_test_site(), "manager").nodes[0]
    assert ("/etc/init.d/appliance-manager", True) in verdicts(check(node, tmp_path))
    broken = node.files[1].content.replace(b"esac", b"")
    assert ("/etc/init.d/appliance-manager", False) in \
        verdicts(check(with_file(node, "/etc/init.d/appliance-manager", broken), tmp_path))


# --- The LSB init script, with a real daemon ----------------------------------------------------

@pytest.fixture
def init_script(tmp_path) -> Path:
    require_tool("sh", "setsid")
    script = tmp_path / "appliance-test"
    script.write_text(lsb.init_script("appliance-test", "test daemon", "/bin/sleep", ("600",),
                                      str(tmp_path / "run" / "test.pid"), str(tmp_path / "log" / "test.log"),
                                      user="root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
                                      stop_timeout=5))
    script.chmod(0o755)
    yield script
    subprocess.run([str(script), "stop"], capture_output=True)


def lsb_run(script: Path, action: str) -> int:
    return subprocess.run([str(script), action], capture_output=True, text=True, timeout=30).returncode


def test_lsb_script_exit_codes(init_script, tmp_path):
    pidfile = tmp_path / "run" / "test.pid"
    assert lsb_run(init_script, "status") == 3  # stopped
    assert lsb_run(init_script, "stop") == 0  # stopping a stopped service succeeds
    assert lsb_run(init_script, "start") == 0
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep", b"600"]
    assert lsb_run(init_script, "status") == 0
    assert lsb_run(init_script, "start") == 0 and int(pidfile.read_text()) == pid  # idempotent
    assert lsb_run(init_script, "restart") == 0 and int(pidfile.read_text()) != pid
    assert lsb_run(init_script, "reload") == 3  # unimplemented
    assert lsb_run(init_script, "bogus") == 2  # invalid argument
    assert lsb_run(init_script, "stop") == 0 and lsb_run(init_script, "status") == 3
    assert not pidfile.exists()


def test_lsb_status_says_dead_when_the_daemon_died_behind_its_back(init_script, tmp_path):
    assert lsb_run(init_script, "start") == 0
    pid = int((tmp_path / "run" / "test.pid").read_text())
    os.kill(pid, 9)
    for _ in range(100):  # wait until reaped by init (not a zombie of ours: setsid detached it)
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
            break
        os.sched_yield()
    assert lsb_run(init_script, "status") == 1  # dead, pid file left behind
    assert lsb_run(init_script, "start") == 0 and lsb_run(init_script, "status") == 0


def test_lsb_start_fails_when_the_daemon_exits_at_once(tmp_path):
    script = tmp_path / "appliance-false"
    script.write_text(lsb.init_script("appliance-false", "exits at once", "/bin/false", (),
                                      str(tmp_path / "f.pid"), str(tmp_path / "f.log")))
    script.chmod(0o755)
    assert lsb_run(script, "start") == 1


# --- The CLI end to end on the example ----------------------------------------------------------

def test_render_validates_every_checkable_file_and_keeps_modes(tmp_path):
    require_tool("crm_verify", "crm_simulate", "drbdadm", "corosync", "lighttpd", "lvmconfig", "unshare")
    require_root_namespaces()
    out = tmp_path / "out"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_SECRET_")}, **TEST_SECRETS}
    result = subprocess.run([sys.executable, "-m", "appliance", "render", "-i", str(EXAMPLE), "-o", str(out),
                             "--secrets", str(tmp_path / "none.toml"), "--json"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    checked = [f for f in document["files"] if f["checker"]]
    assert len(checked) == 21 and all(f["checked"]["ok"] for f in checked)
    for entry in document["files"]:
        on_disk = out / entry["node"] / entry["path"].lstrip("/")
        assert f"{stat.S_IMODE(on_disk.stat().st_mode):04o}" == entry["mode"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # the tree holds secrets
    assert set(document["failover"]) == set(NODES)
    assert "Fence (reboot) cloud-cc01" in (out / document["failover"]["cloud-cc01"]).read_text()
    for value in TEST_SECRETS.values():
        assert value not in result.stdout


def test_render_refuses_a_non_empty_directory_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("operator's file")
    env = {**os.environ, **TEST_SECRETS}
    result = subprocess.run([sys.executable, "-m", "appliance", "render", "-i", str(EXAMPLE), "-o", str(out),
                             "--no-validate", "--secrets", str(tmp_path / "none.toml")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 3 and "OUTPUT_NOT_EMPTY" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_check_plans_reports_a_missing_tool_as_missing_not_as_passed(tmp_path, monkeypatch):
    site = load_test_site()
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: every checker's tool is missing
    run = check_plans(site, plan_site(site))
    assert len(run.outcomes) == 21 and all(o.missing and not o.ok for o in run.outcomes)
