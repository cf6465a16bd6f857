"""The runner seam: argv lists, masked secrets, atomic writes, scripted hosts, strict host keys."""
from __future__ import annotations

import os
import secrets
import stat
import subprocess
import threading

import paramiko
import pytest

from appliance.core.runner import CommandFailed, Secret, display, on_each
from appliance.runner import DryRunner, Expected, LocalRunner, RecordingRunner, local
from appliance.runner.atomic import atomic_write
from appliance.runner.ssh import SshRunner, _RecordNewKey, wrap


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
    path = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


# --- No command can hang the runner (issue 10): its session is killed on exit and at its deadline. ---

def returns(call, limit: float = 60.0):
    """call(), which must return at all: a runner that hangs fails the test instead of the suite."""
    box: dict = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"the runner still waits after {limit} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def running(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


@pytest.fixture
def marker():
    """A unique `sleep` duration to find a test's processes by (pgrep -f); they die with the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"600.{secrets.randbelow(10**9):09d}")
        return made[-1]

    yield make
    for pattern in made:
        subprocess.run(["pkill", "-KILL", "-f", pattern], capture_output=True)


def crmadmin_like(directory, tag: str) -> list[str]:
    """The shape that hung an install: roles.model.wait_until around a check that blocks and leaves
    a child ignoring SIGTERM that holds the channel's stdout (fd 5, inherited as crmadmin inherited
    the channel). Small numbers: each attempt gets 1 s, the whole wait 3 s."""
    fake = directory / "crmadmin"
    fake.write_text("#!/bin/sh\n"
                    f"sh -c 'trap \"\" TERM; while :; do sleep 1; done' {tag} &\n"
                    "exec sleep 30\n")
    fake.chmod(0o755)
    return ["sh", "-c", 'exec 5>&1; exec "$@"', "sh",
            "timeout", "3", "sh", "-c", 'until timeout 1 sh -c "$1" >/dev/null 2>&1; do sleep 0.2; done', "sh",
            f"{fake} -D -t 2000"]


def test_local_command_leaving_a_child_that_holds_its_output_returns_with_the_output(marker):
    pattern = marker()
    result = returns(lambda: LocalRunner().run(["sh", "-c", f"sleep {pattern} & echo started"]))
    assert (result.returncode, result.stdout) == (0, "started\n")
    assert running(pattern) == []


def test_local_command_past_its_deadline_is_killed_with_everything_it_started(marker):
    pattern = marker()
    result = returns(lambda: LocalRunner().run(["sh", "-c", f"sleep {pattern} & exec sleep {pattern}"], timeout=2,
                                               check=False))
    assert result.returncode == 124 and "timed out after 2 s" in result.stderr
    assert running(pattern) == []


def test_local_crmadmin_shaped_wait_returns_and_leaves_nothing(tmp_path):
    tag = f"fake-crmadmin-child-{secrets.token_hex(6)}"
    try:
        result = returns(lambda: LocalRunner().run(crmadmin_like(tmp_path, tag), timeout=30, check=False))
        assert result.returncode == 124  # the wait's own timeout, well inside the runner's deadline:
        assert "timed out after" not in result.stderr  # the runner did not need its own
        assert "stayed open" not in result.stderr  # the runner killed the orphans; it did not just stop reading
        assert running(tag) == []
    finally:
        subprocess.run(["pkill", "-KILL", "-f", tag], capture_output=True)


def test_local_daemon_started_on_purpose_keeps_running(marker):
    pattern = marker()
    result = returns(lambda: LocalRunner().run(
        ["sh", "-c", f"setsid -f sleep {pattern} >/dev/null 2>&1 </dev/null; echo ok"]))
    assert result.stdout == "ok\n"
    assert len(running(pattern)) == 1


def test_local_output_held_outside_the_session_does_not_hold_the_runner(marker, monkeypatch):
    monkeypatch.setattr(local, "EOF_GRACE", 1.0)
    pattern = marker()
    result = returns(lambda: LocalRunner().run(["sh", "-c", f"setsid sleep {pattern} & echo x"]))
    assert (result.returncode, result.stdout) == (0, "x\n")
    assert "output stayed open" in result.stderr


def test_local_command_without_stdin_reads_nothing():
    assert returns(lambda: LocalRunner().run(["cat"])).stdout == ""


def test_remote_wrapper_passes_arguments_as_data_and_keeps_the_exit_status(tmp_path):
    marker_file = tmp_path / "pwned"
    argv = ["sh", "-c", 'printf "%s|" "$@"; cat; exit 3', "sh", f"$(touch {marker_file})", "`id`", "a b", "'"]
    result = subprocess.run(["sh", "-c", wrap(argv, 10)], input="from stdin", capture_output=True, text=True,
                            timeout=60)  # sh -c: what sshd does with the command line
    assert result.stdout == f"$(touch {marker_file})|`id`|a b|'|from stdin"
    assert result.returncode == 3 and result.stderr == ""
    assert not marker_file.exists()


def test_remote_wrapper_kills_leftovers_and_the_command_at_its_deadline(marker):
    pattern, late = marker(), marker()
    left = subprocess.run(["sh", "-c", wrap(["sh", "-c", f"sleep {pattern} & echo started"], 10)],
                          capture_output=True, text=True, timeout=60)
    assert (left.returncode, left.stdout) == (0, "started\n") and running(pattern) == []
    late_result = subprocess.run(["sh", "-c", wrap(["sh", "-c", f"sleep {late} & exec sleep {late}"], 1)],
                                 capture_output=True, text=True, timeout=60)
    assert late_result.returncode == 124 and "timed out after 1 s" in late_result.stderr
    assert running(late) == []


def test_remote_wrapper_lets_a_detached_daemon_live(marker):
    pattern = marker()
    result = subprocess.run(["sh", "-c", wrap(["sh", "-c", f"setsid -f sleep {pattern} >/dev/null 2>&1 </dev/null"],
                                              10)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and len(running(pattern)) == 1


@pytest.mark.parametrize("deadline", [0, -1, float("nan"), float("inf")])
def test_a_deadline_must_be_a_positive_number_of_seconds(deadline):
    with pytest.raises(ValueError):
        wrap(["true"], deadline)


def test_on_each_runs_every_hosts_part_at_once_and_hands_back_outcomes_in_order():
    meeting = threading.Barrier(3, timeout=10)  # run one after another, the first part never gets past this

    def part(name):
        def run():
            meeting.wait()
            if name == "b":
                raise ValueError("b broke")
            return name.upper()
        return run

    outcomes = on_each([(n, part(n)) for n in ("c", "a", "b")])
    assert [(host, value) for host, value, _ in outcomes] == [("c", "C"), ("a", "A"), ("b", None)]
    assert [type(error).__name__ if error else None for _, _, error in outcomes] == [None, None, "ValueError"]


def test_on_each_waits_for_every_part_even_when_one_fails_at_once():
    finished = []
    failed = threading.Event()

    def slow():
        assert failed.wait(10)  # goes on only once the other part has already failed
        finished.append("slow")

    def broken():
        failed.set()
        raise RuntimeError("at once")

    outcomes = on_each([("x", broken), ("y", slow)])
    assert finished == ["slow"] and isinstance(outcomes[0][2], RuntimeError)
