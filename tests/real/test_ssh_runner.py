"""SshRunner against a real sshd on loopback: commands, atomic writes, and host key policy."""
from __future__ import annotations

import logging
import os
import secrets
import shlex
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from appliance.core.runner import CommandFailed, Secret
from appliance.core.reports import ReportError
from appliance.runner import ssh
from appliance.runner.ssh import SshRunner
from tests.conftest import in_ci, require_tool
from tests.unit.test_runner import crmadmin_like, marker, returns, running  # noqa: F401 (marker: a fixture)

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                if s.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            time.sleep(0.05)  # poll interval inside the deadline loop
    raise AssertionError(f"sshd did not answer on port {port}")


class Sshd:
    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.client_key = keygen(directory / "client_key")
        (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
        self.host_key = keygen(directory / "host_key")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        config = self.dir / "sshd_config"
        config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.dir / "sshd.log", "wb"))
        wait_for_port(self.port, time.monotonic() + 10)

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def known_hosts_line(self) -> str:
        key = (self.dir / "host_key.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"

    def runner(self, known_hosts: Path, **kwargs) -> SshRunner:
        return SshRunner("cloud-cc01", "127.0.0.1", user=os.environ.get("USER", "root") if os.geteuid() else "root",
                         port=self.port, key_filename=str(self.client_key), known_hosts=known_hosts, **kwargs)


@pytest.fixture
def sshd(tmp_path):
    require_tool(SSHD, "ssh-keygen")
    if os.geteuid() != 0:
        message = "a test sshd needs root"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = Sshd(tmp_path)
    server.start()
    yield server
    server.stop()


def test_runs_commands_and_writes_files_atomically_over_ssh(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    runner = sshd.runner(known)
    try:
        result = runner.run(["echo", "a b", "$(id)"])
        assert result.stdout == "a b $(id)\n"  # quoted for the remote shell: no expansion
        assert runner.run(["cat"], stdin=Secret("over-stdin")).stdout == "over-stdin"
        target = tmp_path / "remote" / "secret.conf"
        target.parent.mkdir()
        runner.put(str(target), b"password = x\n", 0o600)
        assert target.read_bytes() == b"password = x\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(p.name for p in target.parent.iterdir()) == ["secret.conf"]
        assert runner.read(str(target)) == b"password = x\n"
        assert runner.read(str(tmp_path / "absent")) is None
        with pytest.raises(CommandFailed) as failure:
            runner.run(["sh", "-c", "exit 4", Secret("hidden-arg")])
        assert failure.value.result.returncode == 4 and "hidden-arg" not in str(failure.value)
    finally:
        runner.close()


def test_unknown_host_key_is_refused_by_default(sshd, tmp_path):
    runner = sshd.runner(tmp_path / "known_hosts")
    with pytest.raises(ReportError) as error:
        runner.run(["true"])
    assert [r.code for r in error.value.reports] == ["HOST_KEY_UNKNOWN"]
    assert not (tmp_path / "known_hosts").exists()


def test_trust_new_host_keys_records_the_key_once(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    runner = sshd.runner(known, trust_new_host_keys=True)
    try:
        assert runner.run(["true"]).ok
    finally:
        runner.close()
    recorded = known.read_text()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in recorded
    strict = sshd.runner(known)  # the recorded key now satisfies a strict runner
    try:
        assert strict.run(["true"]).ok
    finally:
        strict.close()


def test_changed_host_key_is_refused_even_when_trusting_new_keys(sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    key = (tmp_path / "other_host_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {key[0]} {key[1]}\n")
    runner = sshd.runner(known, trust_new_host_keys=True)
    with pytest.raises(ReportError) as error:
        runner.run(["true"])
    assert [r.code for r in error.value.reports] == ["HOST_KEY_CHANGED"]
    assert other.exists() and known.read_text().count("\n") == 1  # known_hosts untouched


def test_unreachable_host_is_a_coded_error(tmp_path):
    runner = SshRunner("cloud-cc02", "127.0.0.1", port=free_port(), known_hosts=tmp_path / "known_hosts",
                       connect_timeout=2)
    with pytest.raises(ReportError) as error:
        runner.run(["true"])
    assert [(r.code, r.host) for r in error.value.reports] == [("HOST_UNREACHABLE", "cloud-cc02")]


# --- No command can hang the runner (issue 10): an orphan holding the channel's pipes once kept
# `appliance install` waiting 11+ minutes at "wait for a designated controller". ---

@pytest.fixture
def runner(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    connected = sshd.runner(known)
    yield connected
    connected.close()


def test_a_command_leaving_a_child_that_holds_the_channel_returns_with_its_output(runner, marker):
    pattern = marker()
    result = returns(lambda: runner.run(["sh", "-c", f"sleep {pattern} & echo started"]))
    assert (result.returncode, result.stdout) == (0, "started\n")
    assert running(pattern) == []


def test_a_command_past_its_deadline_returns_124_and_its_session_is_gone(runner, marker):
    pattern = marker()
    result = returns(lambda: runner.run(["sh", "-c", f"sleep {pattern} & exec sleep {pattern}"], timeout=2,
                                        check=False))
    assert result.returncode == 124 and "timed out after 2 s" in result.stderr
    assert running(pattern) == []


def test_the_crmadmin_hang_is_gone(runner, tmp_path):
    tag = f"fake-crmadmin-child-{secrets.token_hex(6)}"
    try:
        result = returns(lambda: runner.run(crmadmin_like(tmp_path, tag), timeout=30, check=False))
        assert result.returncode == 124  # the wait's own timeout, well inside the runner's deadline:
        assert "timed out after" not in result.stderr and "stayed open" not in result.stderr
        assert running(tag) == []  # the children ignoring SIGTERM died with the command's session
    finally:
        subprocess.run(["pkill", "-KILL", "-f", tag], capture_output=True)


def test_a_daemon_started_on_purpose_keeps_running(runner, marker):
    pattern = marker()
    result = returns(lambda: runner.run(["sh", "-c", f"setsid -f sleep {pattern} >/dev/null 2>&1 </dev/null; echo ok"]))
    assert result.stdout == "ok\n"
    assert len(running(pattern)) == 1


def test_output_held_outside_the_session_does_not_hold_the_runner(runner, marker, monkeypatch):
    monkeypatch.setattr(ssh, "EOF_GRACE", 1.0)
    pattern = marker()
    result = returns(lambda: runner.run(["sh", "-c", f"setsid sleep {pattern} & echo x"]))
    assert (result.returncode, result.stdout) == (0, "x\n")
    assert "output stayed open" in result.stderr


def test_a_host_that_never_sends_an_exit_status_does_not_hold_the_runner(runner, marker, monkeypatch):
    pattern = marker()
    monkeypatch.setattr(ssh, "CLIENT_GRACE", 1.0)
    monkeypatch.setattr(ssh, "wrap", lambda argv, deadline: shlex.join(["sleep", pattern]))  # no watchdog there
    result = returns(lambda: runner.run(["true"], timeout=1, check=False))
    assert result.returncode == 124 and "no exit status" in result.stderr


def test_stdin_env_and_secrets_pass_and_secrets_are_not_logged(runner, caplog):
    caplog.set_level(logging.DEBUG)
    payload = "x" * 300_000  # more than one SSH window's worth of packets
    result = runner.run(["sh", "-c", 'printf "%s %s " "$X" "$1"; wc -c', "sh", Secret("argv-s3cret")],
                        stdin=Secret(payload), env={"X": "a b"})
    assert result.stdout.split() == ["a", "b", "argv-s3cret", "300000"]
    assert "argv-s3cret" not in caplog.text and payload[:100] not in caplog.text and "********" in caplog.text
