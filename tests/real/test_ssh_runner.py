"""SshRunner against a real sshd on loopback: commands, atomic writes, and host key policy."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from appliance.core.runner import CommandFailed, Secret
from appliance.core.reports import ReportError
from appliance.runner.ssh import SshRunner
from tests.conftest import in_ci, require_tool

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
