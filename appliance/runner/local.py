"""LocalRunner: subprocess with an argv list, never a shell, under a deadline.

Every command leads a session of its own (start_new_session). When it exits, what it left running
in that session gets LEFTOVER_GRACE to leave (a daemon started with `setsid -f` calls setsid()
right after its parent returns) and is then killed, so no grandchild holds the pipes; when the
deadline passes, the whole session is killed and the result is 124. The runner never waits on a
pipe longer than EOF_GRACE after the command exited: a process that escaped its session (or is
stuck in the kernel) and still holds the output does not hold the runner.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from appliance.core.runner import Arg, CommandFailed, Result, Secret, display, reveal

from .atomic import atomic_write

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # seconds: the deadline of a command whose caller gives none (local and SSH)
TIMED_OUT = 124  # the returncode of a command that hit its deadline, as timeout(1) has it
LEFTOVER_GRACE = 1.0  # after the command exits, for what it started to leave its session before it is killed
EOF_GRACE = 5.0  # after the command and its leftovers are gone, for the rest of the output
_POLL = 0.1


class LocalRunner:
    def __init__(self, host: str = "localhost"):
        self.host = host

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        """Run argv under a deadline (DEFAULT_TIMEOUT when none is given): 124 when it passes.
        stdin is the given text, or nothing (/dev/null)."""
        shown = display(argv)
        log.debug("%s: run %s", self.host, shown)
        deadline = DEFAULT_TIMEOUT if timeout is None else timeout
        data = stdin.value if isinstance(stdin, Secret) else stdin
        try:
            proc = subprocess.Popen(reveal(argv), stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    env={**os.environ, **env} if env else None)
        except FileNotFoundError:
            result = Result(shown, 127, "", f"{reveal(argv)[0]}: command not found", self.host)
        else:
            try:
                result = _collect(proc, shown, self.host, None if data is None else data.encode(), deadline)
            except BaseException:  # ^C included: the command is in a session of its own, no ^C reaches it
                kill_session(proc.pid)
                proc.wait()
                raise
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path: str, content: bytes, mode: int) -> None:
        log.debug("%s: write %s mode %04o (%d bytes)", self.host, path, mode, len(content))
        atomic_write(Path(path), content, mode)

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None


def _collect(proc: subprocess.Popen, shown: str, host: str, data: bytes | None, deadline: float) -> Result:
    """Feed stdin and read the output until the command exited and its session is empty; kill the
    session at the deadline. Never waits on pipes held by processes that outlived the command."""
    started = time.monotonic()
    timed_out = False
    ended_at = None  # when the command's session was emptied
    note = ""
    out = err = b""
    while True:
        now = time.monotonic()
        if ended_at is None and now - started > deadline:
            timed_out = True
            kill_session(proc.pid)
        if ended_at is None and proc.poll() is not None:
            _clear_session(proc.pid, shown, host)
            ended_at = time.monotonic()
        wait = _POLL if ended_at is None else max(EOF_GRACE - (now - ended_at), 0.0)
        try:
            out, err = proc.communicate(data, timeout=wait)
            if ended_at is None:  # output closed and the command exited: still, nothing of it stays behind
                _clear_session(proc.pid, shown, host)
            break
        except subprocess.TimeoutExpired as exc:
            data = None  # communicate() keeps feeding what is left of it
            out, err = exc.output or out, exc.stderr or err  # what arrived so far
            now = time.monotonic()
            if ended_at is not None and now - ended_at >= EOF_GRACE:
                log.warning("%s: `%s` exited, but a process outside its session still holds its output: "
                            "stopped reading after %g s", host, shown, EOF_GRACE)
                note = f"\nappliance: the command exited but its output stayed open; stopped reading after " \
                       f"{EOF_GRACE:g} s"
            elif timed_out and now - started > deadline + EOF_GRACE:
                # Killed, yet not gone: stuck in the kernel (a hung mount, say). Python reaps it later.
                log.warning("%s: `%s` outlived SIGKILL past its deadline: stopped waiting", host, shown)
                note = "\nappliance: the killed command did not exit (stuck in the kernel?); stopped waiting"
            else:
                continue
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            break
    if timed_out:
        note += f"\ntimed out after {deadline:g} s: killed the command and everything it started"
        return Result(shown, TIMED_OUT, _text(out), with_note(_text(err), note), host)
    return Result(shown, proc.returncode, _text(out), with_note(_text(err), note), host)


def with_note(stderr: str, note: str) -> str:
    """stderr with the runner's own lines (each note starts with a newline) after it."""
    return (stderr + note) if stderr else note.lstrip("\n")


def _text(data: bytes) -> str:
    """As text=True would have it: UTF-8 (undecodable bytes replaced), universal newlines."""
    return data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def session_pids(sid: int) -> list[int]:
    """Every process in session `sid`, zombies included, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 3 and int(fields[3]) == sid:  # after "pid (comm)": state ppid pgrp session
            found.append(int(entry))
    return found


def kill_session(sid: int) -> None:
    """SIGKILL every process in session `sid` and its process group, until none is left."""
    for _ in range(50):  # a live process can fork between the listing and its kill
        try:
            os.killpg(sid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        alive = [pid for pid in session_pids(sid) if _state(pid) != "Z"]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)  # let the kernel deliver before listing again


def _clear_session(sid: int, shown: str, host: str) -> None:
    """The command exited: give what it started LEFTOVER_GRACE to leave its session, kill the rest."""
    end = time.monotonic() + LEFTOVER_GRACE
    while _live(sid) and time.monotonic() < end:
        time.sleep(0.05)  # poll interval inside the grace
    if _live(sid):
        log.warning("%s: `%s` left processes running in its session: killed them", host, shown)
        kill_session(sid)


def _live(sid: int) -> bool:
    return any(_state(pid) not in ("Z", None) for pid in session_pids(sid))


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None
