"""ocf:appliance:proxy with a real lighttpd under ocf-tester, and what ocf-tester does not cover."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from appliance.ha import ocf_proxy
from tests.conftest import require_tool
from tests.real.test_ocf_manager import free_port


def lighttpd_conf(root: Path, port: int, extra: str = "") -> str:
    return (f'server.document-root = "{root}"\nserver.bind = "127.0.0.1"\nserver.port = {port}\n'
            f'server.errorlog = "{root}/error.log"\n{extra}')


@pytest.fixture
def agent():
    require_tool("lighttpd")
    # ocf-tester runs meta-data as nobody, who cannot enter pytest's 0700 temp directories.
    tmp_path = Path(tempfile.mkdtemp(prefix="appliance-ocf-proxy-"))
    tmp_path.chmod(0o755)
    shim = tmp_path / "proxy"
    shim.write_text(ocf_proxy.shim(sys.executable))
    shim.chmod(0o755)
    port = free_port()
    config = tmp_path / "lighttpd.conf"
    config.write_text(lighttpd_conf(tmp_path, port))
    options = {"config": str(config), "listen": f"127.0.0.1:{port}", "pidfile": str(tmp_path / "proxy.pid"),
               "logfile": str(tmp_path / "proxy.log")}
    env = {**os.environ, "OCF_ROOT": "/usr/lib/ocf", **{f"OCF_RESKEY_{k}": v for k, v in options.items()}}
    run = lambda action, **extra: subprocess.run([str(shim), action], env={**env, **extra}, capture_output=True,
                                                 text=True, timeout=120)
    yield shim, options, run, tmp_path
    run("stop")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_agent_passes_ocf_tester(agent):
    require_tool("ocf-tester", "xmllint")
    shim, options, _, _ = agent
    argv = ["ocf-tester", "-n", "proxy"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    result = subprocess.run([*argv, str(shim)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "passed all tests" in result.stdout, result.stdout + result.stderr


def test_start_is_idempotent_and_stop_leaves_no_lighttpd(agent):
    _, options, run, tmp = agent
    assert run("start").returncode == 0
    pid = (tmp / "proxy.pid").read_text()
    assert run("start").returncode == 0 and (tmp / "proxy.pid").read_text() == pid
    assert run("monitor").returncode == 0
    assert run("stop").returncode == 0 and run("monitor").returncode == 7
    assert not Path(f"/proc/{pid.strip()}").exists() or \
        Path(f"/proc/{pid.strip()}/stat").read_text().rsplit(") ", 1)[1][0] == "Z"
    assert run("stop").returncode == 0


def test_a_pid_file_naming_another_process_is_not_the_proxy(agent):
    _, _, run, tmp = agent
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp / "proxy.pid").write_text(f"{other.pid}\n")
        assert run("monitor").returncode == 7  # a reused pid after a reboot: not running
        assert run("stop").returncode == 0 and other.poll() is None  # and never killed
    finally:
        other.kill()
        other.wait()


def test_monitor_says_broken_when_lighttpd_runs_but_accepts_nothing(agent):
    _, options, run, tmp = agent
    assert run("start").returncode == 0
    elsewhere = free_port()  # the agent watches an address lighttpd does not serve
    broken = run("monitor", OCF_RESKEY_listen=f"127.0.0.1:{elsewhere}")
    assert broken.returncode == 1 and f"accepts nothing on 127.0.0.1:{elsewhere}" in broken.stderr


def test_a_config_lighttpd_refuses_is_named_and_nothing_starts(agent):
    _, options, run, tmp = agent
    Path(options["config"]).write_text(lighttpd_conf(tmp, int(options["listen"].rsplit(":", 1)[1]),
                                                      'server.modules += ( "mod_does_not_exist" )\n'))
    result = run("start")
    assert result.returncode == 6 and "lighttpd -tt refuses" in result.stderr, result.stderr
    assert run("validate-all").returncode == 6
    assert not (tmp / "proxy.pid").exists()


def test_validate_names_what_is_wrong_and_probes_are_lenient(agent):
    _, _, run, tmp = agent
    assert run("validate-all", OCF_RESKEY_binary="/nonexistent/lighttpd").returncode == 5
    bad_listen = run("validate-all", OCF_RESKEY_listen="127.0.0.1")
    assert bad_listen.returncode == 2 and "not address:port" in bad_listen.stderr  # a malformed parameter
    probe = run("monitor", OCF_RESKEY_config=str(tmp / "absent.conf"), OCF_RESKEY_CRM_meta_interval="0")
    assert probe.returncode == 7


def test_a_lighttpd_that_dies_is_seen_at_the_next_monitor(agent):
    _, _, run, tmp = agent
    assert run("start").returncode == 0
    pid = int((tmp / "proxy.pid").read_text())
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval inside the deadline loop: the start's child is reaped by init
    assert run("monitor").returncode == 7


def test_files_that_are_no_regular_files_are_named_and_never_opened(agent):
    _, _, run, tmp = agent
    fifo = tmp / "fifo.conf"
    os.mkfifo(fifo)
    for name, value, rc in (("config", str(fifo), 6), ("config", str(tmp), 6), ("config", "/dev/zero", 6),
                            ("pidfile", str(fifo), 6), ("logfile", str(tmp), 6), ("binary", str(fifo), 5),
                            ("config", "relative.conf", 2), ("config", "/" + "x" * 256, 2),
                            ("config", "/" + "a/" * 2100, 2), ("listen", "127.0.0.1:-5", 2),
                            ("listen", "127.0.0.1:65536", 2), ("listen", "127.0.0.1:8\n0", 2)):
        result = run("validate-all", **{f"OCF_RESKEY_{name}": value})  # a FIFO opened would block: timeout
        assert result.returncode == rc, (name, value, result.stderr)
        assert f"ocf-exit-reason:{name}" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_lighttpd_output_that_is_not_utf8_and_a_hanging_check_are_ocf_codes(agent):
    _, _, run, tmp = agent
    garbled, hanging = tmp / "garbled", tmp / "hanging"
    garbled.write_text("#!/bin/sh\nprintf '\\377\\376 bad \\200\\n' >&2\nexit 1\n")
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    for script in (garbled, hanging):
        script.chmod(0o755)
    result = run("validate-all", OCF_RESKEY_binary=str(garbled))
    assert result.returncode == 6 and "lighttpd -tt refuses" in result.stderr and "Traceback" not in result.stderr
    # "did not finish" is the agent's own deadline (from the 3 s action timeout), not the script's 30 s end
    result = run("validate-all", OCF_RESKEY_binary=str(hanging), OCF_RESKEY_CRM_meta_timeout="3000")
    assert result.returncode == 6 and "did not finish" in result.stderr, result.stderr
