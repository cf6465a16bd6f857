"""SshRunner: commands over SSH under a deadline, with host keys verified against a known_hosts file.

An unknown host key is refused unless ``trust_new_host_keys`` is set, in which case it is accepted
once and written to known_hosts. A *changed* key is always refused (paramiko raises
BadHostKeyException before any policy is asked).

No command can hang the runner. Every command runs on the host under REMOTE_WRAPPER: in a session
of its own (setsid), with a watchdog that kills that session at the deadline, and whatever the
command left behind in its session is killed when it exits, so no orphan holds the channel's pipes
(an orphaned `crmadmin -D` once kept an install waiting for EOF for 11 minutes). Daemons started on
purpose with `setsid -f ... </dev/null >>log 2>&1` are in a session of their own and keep running.
On this side the runner never waits for EOF longer than EOF_GRACE after the exit status, nor for
the exit status longer than the deadline plus CLIENT_GRACE: then it closes the channel.
"""
from __future__ import annotations

import logging
import math
import os
import select
import shlex
import socket
import time
from pathlib import Path
from typing import Sequence

import paramiko
from fabric import Connection

from appliance.core.runner import Arg, CommandFailed, Result, Secret, display, reveal
from appliance.core.reports import Report, ReportError

from .local import DEFAULT_TIMEOUT, LEFTOVER_GRACE, TIMED_OUT, with_note

log = logging.getLogger(__name__)

CLIENT_GRACE = 15.0  # beyond the deadline: the host's watchdog fires at the deadline; this covers the network
EOF_GRACE = 5.0  # after the exit status, for the rest of the output (the wrapper killed what could hold it)
CHANNEL_OPEN_TIMEOUT = 30.0
CONNECTION_LOST = 255  # what ssh(1) returns when the connection fails
_POLL = 0.05  # longest sleep of the I/O loop while nothing arrives

# The fixed script every command runs under. $1 is the deadline in seconds, the rest is the command:
# both arrive as positional parameters, so no argument ever becomes shell code. The command runs in
# the background (fd 3 hands it the channel's stdin, which an asynchronous list would otherwise lose
# to /dev/null) under `setsid`, so it leads a new session and process group whose ID is its PID.
# The watchdog is a session of its own, off the channel's pipes; it kills the command's session at
# the deadline and exits 124. When the command exits, the wrapper gives what is still in its session
# up to LEFTOVER_GRACE to leave (the child of `setsid -f` calls setsid() right after its parent
# returns), kills the rest, stops the watchdog, and exits with the command's status, or 124 when
# the watchdog fired. A session is killed with pkill -s and, without procps, as a process group.
# The wrapper's own stderr goes to fd 4 so the shell's job notices ("Killed") stay off the channel.
# (`kill -KILL -PGID`, not `kill -KILL -- -PGID`: dash's kill takes no `--`.)
REMOTE_WRAPPER = r"""d=$1; shift
left() { if command -v pgrep >/dev/null; then pgrep -s "$1" >/dev/null; else kill -0 -"$1"; fi; }
end() { if command -v pkill >/dev/null; then pkill -KILL -s "$1"; fi; kill -KILL -"$1"; }
exec 3<&0
setsid -- "$@" 0<&3 3<&- &
pid=$!
exec 3<&- 4>&2 2>/dev/null
setsid sh -c 'sleep "$1"; if command -v pkill >/dev/null; then pkill -KILL -s "$2"; fi; kill -KILL -"$2"; exit 124' \
    appliance-watchdog "$d" "$pid" </dev/null >/dev/null 2>&1 &
dog=$!
wait "$pid"
rc=$?
n=0
while [ "$n" -lt %(grace_polls)d ] && left "$pid"; do sleep 0.1; n=$((n + 1)); done
if left "$pid"; then
    echo "appliance: killed what the command left running" >&4
    end "$pid"
fi
kill -KILL "$dog"
kill -KILL -"$dog"
wait "$dog"
if [ "$?" -eq 124 ]; then
    echo "appliance: timed out after $d s: killed the command and everything it started" >&4
    exit 124
fi
exit "$rc"
""" % {"grace_polls": round(LEFTOVER_GRACE / 0.1)}


def wrap(argv: Sequence[str], deadline: float) -> str:
    """The command line sshd runs: REMOTE_WRAPPER with the deadline and the argv as parameters."""
    return shlex.join(["sh", "-c", REMOTE_WRAPPER, "appliance-run", _seconds(deadline), *argv])


def _seconds(value: float) -> str:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"a command's timeout must be a positive number of seconds, not {value!r}")
    return f"{float(value):.3f}".rstrip("0").rstrip(".")


class _RecordNewKey(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key and append it to known_hosts (only with --trust-new-host-keys)."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.get_host_keys().save(str(self.known_hosts))
        log.warning("%s: trusted new host key %s %s", hostname, key.get_name(), key.fingerprint)


class SshRunner:
    def __init__(self, host: str, address: str, *, user: str = "root", port: int = 22,
                 key_filename: str | None = None, known_hosts: Path, trust_new_host_keys: bool = False,
                 connect_timeout: float = 10.0):
        self.host = host
        self.address = address
        self.known_hosts = known_hosts
        connect_kwargs = {"look_for_keys": key_filename is None, "allow_agent": key_filename is None}
        if key_filename:
            connect_kwargs["key_filename"] = key_filename
        self._conn = Connection(address, user=user, port=port, connect_timeout=connect_timeout,
                                connect_kwargs=connect_kwargs)
        client = self._conn.client
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        # Fabric's default is AutoAddPolicy: replace it, always.
        client.set_missing_host_key_policy(_RecordNewKey(known_hosts) if trust_new_host_keys
                                           else paramiko.RejectPolicy())

    def _open(self) -> None:
        try:
            self._conn.open()
        except paramiko.BadHostKeyException as exc:
            raise ReportError([Report("HOST_KEY_CHANGED", f"host key of {self.address} does not match "
                                      f"{self.known_hosts}: got {exc.key.get_name()} {exc.key.fingerprint}",
                                      host=self.host, value=self.address)]) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ReportError([Report("HOST_KEY_UNKNOWN", f"{self.address} is not in {self.known_hosts}",
                                          host=self.host, value=self.address)]) from None
            raise ReportError([Report("HOST_UNREACHABLE", f"SSH to {self.address} failed: {exc}",
                                      host=self.host, value=self.address)]) from None
        except (OSError, socket.timeout) as exc:
            raise ReportError([Report("HOST_UNREACHABLE", f"cannot connect to {self.address}: {exc}",
                                      host=self.host, value=self.address)]) from None

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        """Run argv on the host under a deadline (DEFAULT_TIMEOUT when none is given): 124 when it
        passes. Secrets reach the remote command line only; stdin is sent, then closed."""
        shown = display(argv)
        log.debug("%s: run %s", self.host, shown)
        deadline = DEFAULT_TIMEOUT if timeout is None else timeout
        words = reveal(argv)
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        command = wrap(words, deadline)
        data = stdin.value if isinstance(stdin, Secret) else stdin
        self._open()
        try:
            channel = self._conn.client.get_transport().open_session(timeout=CHANNEL_OPEN_TIMEOUT)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as exc:
            # AttributeError: no transport, the connection dropped between open() and here.
            result = Result(shown, CONNECTION_LOST, "", f"cannot start the command on {self.address}: {exc}",
                            self.host)
        else:
            try:
                result = self._exchange(channel, shown, (data or "").encode(), deadline)
            finally:
                channel.close()
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def _exchange(self, channel: paramiko.Channel, shown: str, data: bytes, deadline: float) -> Result:
        """Send stdin, collect stdout and stderr, and stop waiting when there is nothing left worth
        waiting for: never blocks past the deadline plus CLIENT_GRACE."""
        started = time.monotonic()
        give_up = started + deadline + CLIENT_GRACE
        out, err = bytearray(), bytearray()
        pending = memoryview(data)
        if not pending:
            _shutdown_write(channel)
        fd = channel.fileno()  # readable while output is buffered, and for good after EOF
        exited_at = None
        note = ""
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            now = time.monotonic()
            if channel.exit_status_ready():  # also true once the channel is closed
                exited_at = exited_at or now
                if channel.eof_received or channel.closed:
                    break
                if now - exited_at > EOF_GRACE:
                    log.warning("%s: `%s` exited, but something it started still holds its output: "
                                "stopped reading after %g s", self.host, shown, EOF_GRACE)
                    note = (f"\nappliance: the command exited but its output stayed open; stopped reading "
                            f"after {EOF_GRACE:g} s")
                    break
            elif now > give_up:
                log.warning("%s: `%s` gave no exit status within %g s: closed the channel", self.host, shown,
                            give_up - started)
                return Result(shown, TIMED_OUT, out.decode(errors="replace"), with_note(
                    err.decode(errors="replace"), f"\ntimed out after {deadline:g} s: no exit status from "
                    f"{self.host} within {give_up - started:g} s; closed the channel (the command may still be "
                    "running there)"), self.host)
            if pending and exited_at is None and channel.send_ready():
                try:
                    pending = pending[channel.send(bytes(pending[:32768])):]
                except OSError:  # the channel closed: the status (or its absence) says why
                    pending = pending[:0]
                if not pending:
                    _shutdown_write(channel)
            if channel.eof_received:
                channel.status_event.wait(min(4 * _POLL, max(give_up - now, 0)))  # output done; the status is next
            else:
                select.select([fd], [], [], _POLL)
        while channel.recv_ready():
            out += channel.recv(65536)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        status = channel.exit_status  # -1 when the channel closed without one: the wrapper always sends one
        if status < 0:
            return Result(shown, CONNECTION_LOST, out.decode(errors="replace"), with_note(
                err.decode(errors="replace"), f"\nthe connection to {self.address} closed before the command's "
                "exit status arrived"), self.host)
        return Result(shown, status, out.decode(errors="replace"), with_note(err.decode(errors="replace"), note),
                      self.host)

    def put(self, path: str, content: bytes, mode: int) -> None:
        log.debug("%s: write %s mode %04o (%d bytes)", self.host, path, mode, len(content))
        self._open()
        sftp = self._conn.sftp()
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.appliance-tmp"
        handle = sftp.open(tmp, "wb")
        try:
            sftp.chmod(tmp, mode)  # before the content: a secret is never readable by others
            handle.write(content)
            handle.flush()
        finally:
            handle.close()
        sftp.posix_rename(tmp, path)

    def read(self, path: str) -> bytes | None:
        self._open()
        sftp = self._conn.sftp()
        try:
            with sftp.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        self._conn.close()


def _shutdown_write(channel: paramiko.Channel) -> None:
    """EOF on the command's stdin."""
    try:
        channel.shutdown_write()
    except (OSError, EOFError):
        pass  # the channel is gone: the exit status (or its absence) says what happened
