"""ocf:appliance:manager under ocf-tester, and the cases ocf-tester does not cover."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from appliance.ha import ocf_manager
from tests.conftest import require_tool

BIN = Path(sys.executable).with_name("appliance")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def agent():
    # ocf-tester runs meta-data as nobody, who cannot enter pytest's 0700 temp directories.
    tmp_path = Path(tempfile.mkdtemp(prefix="appliance-ocf-"))
    tmp_path.chmod(0o755)
    shim = tmp_path / "manager"
    shim.write_text(ocf_manager.shim(sys.executable))
    shim.chmod(0o755)
    config = tmp_path / "manager.toml"
    config.write_text(f'[api]\nbind = "127.0.0.1"\nport = {free_port()}\n[paths]\nstate_dir = "{tmp_path}/home"\n')
    env = {**os.environ, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_config": str(config), "OCF_RESKEY_binary": str(BIN),
           "OCF_RESKEY_pidfile": str(tmp_path / "manager.pid"), "OCF_RESKEY_logfile": str(tmp_path / "manager.log")}
    run = lambda action, **extra: subprocess.run([str(shim), action], env={**env, **extra}, capture_output=True,
                                                 text=True, timeout=150)
    yield shim, config, run, tmp_path
    run("stop")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_agent_passes_ocf_tester(agent):
    require_tool("ocf-tester", "xmllint")
    shim, config, _, tmp = agent
    result = subprocess.run(["ocf-tester", "-n", "manager", "-o", f"config={config}", "-o", f"binary={BIN}",
                             "-o", f"pidfile={tmp}/manager.pid", "-o", f"logfile={tmp}/manager.log", str(shim)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "passed all tests" in result.stdout, result.stdout + result.stderr


def test_monitor_says_broken_when_the_process_lives_but_the_api_does_not_answer(agent):
    _, _, run, tmp = agent
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        (tmp / "manager.pid").write_text(f"{impostor.pid}\n")
        result = run("monitor")
        assert result.returncode == 1 and "ocf-exit-reason:" in result.stderr
    finally:
        impostor.kill()
        impostor.wait()


def test_start_is_idempotent_and_the_api_answers(agent):
    _, _, run, tmp = agent
    assert run("start").returncode == 0
    pid = (tmp / "manager.pid").read_text()
    assert run("start").returncode == 0 and (tmp / "manager.pid").read_text() == pid
    assert run("monitor").returncode == 0
    assert run("stop").returncode == 0 and run("monitor").returncode == 7
    assert run("stop").returncode == 0


def test_validate_names_what_is_wrong_and_probes_are_lenient(agent):
    _, _, run, tmp = agent
    missing_binary = run("validate-all", OCF_RESKEY_binary="/nonexistent/appliance")
    assert missing_binary.returncode == 5 and "not executable" in missing_binary.stderr
    missing_config = run("validate-all", OCF_RESKEY_config=str(tmp / "absent.toml"))
    assert missing_config.returncode == 6
    probe = run("monitor", OCF_RESKEY_config=str(tmp / "absent.toml"), OCF_RESKEY_CRM_meta_interval="0")
    assert probe.returncode == 7  # a node without the manager installed is simply not running it


def test_meta_data_is_answered_without_python(agent):
    shim, *_ = agent
    result = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", str(shim), "meta-data"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and '<resource-agent name="manager"' in result.stdout


def test_start_waits_for_the_local_database_and_names_it_when_it_never_answers(agent):
    _, config, run, tmp = agent
    config.write_text(config.read_text() + '[database]\nbackend = "mysql"\nhost = "127.0.0.1"\n')
    absent = tmp / "mysqld.sock"
    result = run("start", OCF_RESKEY_database_socket=str(absent), OCF_RESKEY_CRM_meta_timeout="4000")
    assert result.returncode == 1, result.stderr
    assert f"ocf-exit-reason:the local MariaDB does not answer on {absent}" in result.stderr
    assert not (tmp / "manager.pid").exists()  # the manager was never started against a missing database


@pytest.mark.parametrize("api, field", [("api = 5", "api = 5"), ("[api]\nport = [1]", "[api] port=[1]"),
                                        ("[api]\nport = -5", "[api] port=-5"),
                                        ("[api]\nport = true", "[api] port=True"),
                                        ("[api]\nbind = 7", "[api] bind=7"),
                                        ('[api]\nbind = "a b"', "[api] bind='a b'"),
                                        ('[database]\nbackend = "oracle"', "[database] backend = 'oracle'"),
                                        ("[api\nport = 1", "not valid TOML")])
def test_config_values_of_the_wrong_type_or_range_are_named(agent, api, field):
    _, config, run, _ = agent
    config.write_text(api + "\n")
    result = run("validate-all")
    assert result.returncode == 6 and field in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "ocf-exit-reason:config" in result.stderr


def test_parameters_and_files_that_fail_their_checks_get_ocf_codes(agent):
    _, config, run, tmp = agent
    fifo = tmp / "fifo.toml"
    os.mkfifo(fifo)
    invalid = tmp / "invalid.toml"
    invalid.write_bytes(b"[api]\nbind = \"\xff\xfe\"\n")
    for name, value, rc in (("config", str(fifo), 6), ("config", str(tmp), 6), ("config", "/dev/zero", 6),
                            ("config", str(invalid), 6), ("config", "/" + "x" * 300, 2),
                            ("config", "/" + "ab/" * 1400, 2), ("config", "", 2), ("config", "manager.toml", 2),
                            ("pidfile", str(fifo), 6), ("logfile", str(fifo), 6), ("binary", str(tmp), 5),
                            ("database_wait", "-5", 2), ("database_wait", "nan", 2), ("database_wait", "[1]", 2),
                            ("user", "no body", 2), ("user", "nosuchuser-ocf", 5), ("CRM_meta_timeout", "-1", 2)):
        result = run("validate-all", **{f"OCF_RESKEY_{name}": value})
        assert result.returncode == rc, (name, value, result.stderr)
        assert "ocf-exit-reason:" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_stopped_manager_is_not_running_whatever_its_config_and_a_probe_without_one_too(agent):
    _, config, run, tmp = agent
    assert run("monitor", OCF_RESKEY_CRM_meta_interval="10000").returncode == 7
    config.write_text("api = 5\n")
    assert run("monitor", OCF_RESKEY_CRM_meta_interval="10000").returncode == 7  # start names the config
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        (tmp / "manager.pid").write_text(f"{impostor.pid}\n")  # "running": now the config is read, and refused
        result = run("monitor", OCF_RESKEY_CRM_meta_interval="10000")
        assert result.returncode == 6 and "ocf-exit-reason:config" in result.stderr, result.stderr
        probe = run("monitor", OCF_RESKEY_config=str(tmp / "absent.toml"), OCF_RESKEY_CRM_meta_interval="0")
        assert probe.returncode == 7  # the pid file names some process, but no manager runs without a config
    finally:
        impostor.kill()
        impostor.wait()
