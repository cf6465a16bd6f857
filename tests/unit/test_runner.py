"""The runner seam: argv lists, masked secrets, atomic writes, scripted hosts, strict host keys."""
from __future__ import annotations

import os
import stat

import paramiko
import pytest

from appliance.core.runner import CommandFailed, Secret, display
from appliance.runner import DryRunner, Expected, LocalRunner, RecordingRunner
from appliance.runner.atomic import atomic_write
from appliance.runner.ssh import SshRunner, _RecordNewKey


def test_local_runner_passes_arguments_without_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    result = LocalRunner().run(["echo", f"$(touch {marker}); `id`"])
    assert result.stdout == f"$(touch {marker}); `id`\n"
    assert not marker.exists()


def test_secret_argument_reaches_the_process_but_not_the_error():
    with pytest.raises(CommandFailed) as failure:
        LocalRunner().run(["sh", "-c", 'echo "got $1" >&2; exit 3', "sh", Secret("s3cr3t-value")])
    message = str(failure.value)
    assert "exited 3" in message and "********" in message
    assert "s3cr3t-value" not in failure.value.result.argv
    assert "got s3cr3t-value" in failure.value.result.stderr  # the process did get it


def test_secret_stdin_reaches_the_process():
    result = LocalRunner().run(["cat"], stdin=Secret("from-stdin"))
    assert result.stdout == "from-stdin"


def test_missing_program_is_a_result_not_a_crash():
    result = LocalRunner().run(["/nonexistent/program"], check=False)
    assert result.returncode == 127


def test_display_quotes_for_a_shell_reader():
    assert display(["echo", "a b", Secret("x")]) == "echo 'a b' '********'"


def test_atomic_write_sets_mode_before_content_and_leaves_no_temp(tmp_path):
    old_umask = os.umask(0)
    try:
        target = tmp_path / "dir" / "secret.conf"
        atomic_write(target, b"first", 0o600)
        atomic_write(target, b"second", 0o600)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret.conf"]


def test_recording_runner_enforces_order():
    runner = RecordingRunner("n1", [Expected("drbdadm up one-disk"), Expected("drbdadm up data-disk", 1)])
    runner.run(["drbdadm", "up", "one-disk"])
    with pytest.raises(CommandFailed):
        runner.run(["drbdadm", "up", "data-disk"])
    runner.assert_done()
    with pytest.raises(AssertionError):
        runner.run(["reboot"])


def test_recording_runner_reports_commands_that_never_ran():
    runner = RecordingRunner("n1", [Expected("true")])
    with pytest.raises(AssertionError):
        runner.assert_done()


def test_dry_runner_changes_nothing(tmp_path):
    target = tmp_path / "x"
    runner = DryRunner("n1", inner=LocalRunner())
    runner.run(["rm", "-rf", str(tmp_path)])
    runner.put(str(target), b"data", 0o644)
    assert tmp_path.exists() and not target.exists()
    assert runner.commands == [f"rm -rf {tmp_path}"] and runner.writes == [(str(target), 0o644, 4)]
    assert runner.read("/etc/hostname") == LocalRunner().read("/etc/hostname")


def test_ssh_runner_rejects_unknown_host_keys_by_default(tmp_path):
    runner = SshRunner("cloud-cc01", "192.0.2.1", known_hosts=tmp_path / "known_hosts")
    assert isinstance(runner._conn.client._policy, paramiko.RejectPolicy)


def test_ssh_runner_records_new_keys_only_when_asked(tmp_path):
    known = tmp_path / "known_hosts"
    runner = SshRunner("cloud-cc01", "192.0.2.1", known_hosts=known, trust_new_host_keys=True)
    policy = runner._conn.client._policy
    assert isinstance(policy, _RecordNewKey)
    key = paramiko.Ed25519Key.from_private_key_file(_make_key(tmp_path))
    policy.missing_host_key(runner._conn.client, "192.0.2.1", key)
    assert "192.0.2.1 ssh-ed25519" in known.read_text()


def _make_key(tmp_path) -> str:
    import subprocess

    path = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)
