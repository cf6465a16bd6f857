"""OCF resource-agent plumbing: exit codes, parameters with typed checks, meta-data generated from
them, exit reasons, and dispatch(), the entry point every agent's main() is.

Standard library only: Pacemaker runs an agent for every monitor, so it must start fast.

Which code a failed check answers:
  2 ERR_ARGS        a parameter's value is malformed: not text, out of range, too long, a NUL or a
                    newline, not an absolute path. The CIB must change; no node can fix it.
  5 ERR_INSTALLED   a program the agent runs is missing or not executable on this node.
  6 ERR_CONFIGURED  a file a parameter names is missing, not a regular file (a FIFO, a directory, a
                    device), unreadable, not UTF-8, or holds a value that fails its check.
Each comes with an `ocf-exit-reason:` line that names the parameter or field, its value and the fix.
Whatever else escapes an action is a bug in the agent: dispatch()'s guard answers 1 with the
exception's type and message as the reason (it starts with GUARD_PREFIX), never a traceback.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

SUCCESS, ERR_GENERIC, ERR_ARGS, ERR_UNIMPLEMENTED, ERR_PERM, ERR_INSTALLED, ERR_CONFIGURED, NOT_RUNNING = range(8)

PATH_MAX = 4096  # bytes, with the terminating NUL (linux/limits.h)
NAME_MAX = 255  # bytes in one path component
PID_MAX = 4194304  # PID_MAX_LIMIT on 64-bit Linux
CONFIG_MAX = 1 << 20  # bytes: no configuration the agents read comes near it
GUARD_PREFIX = "internal error in the agent: "

# What dispatch() runs under: the environment (None: os.environ) and the action; reset afterwards,
# so that main(argv, env) can be called in-process.
_env: Mapping[str, Any] | None = None
_action = ""
guard_fired = 0  # how often the guard caught an exception no typed check caught (tests expect 0)


class Invalid(Exception):
    """A check failed: the action answers `rc`, with `reason` as its exit reason. `absent` marks a
    file that does not exist on this node (a probe there answers "not running")."""

    def __init__(self, rc: int, reason: str, *, absent: bool = False):
        super().__init__(reason)
        self.rc, self.reason, self.absent = rc, reason, absent


def environ() -> Mapping[str, Any]:
    return os.environ if _env is None else _env


def child_env() -> dict[str, str] | None:
    """The environment of the programs the agent runs: its own (None) unless main() was given one."""
    if _env is None:
        return None
    return {k: v for k, v in _env.items() if isinstance(k, str) and isinstance(v, str) and k and "=" not in k
            and "\0" not in k + v}


def a(value: object) -> str:
    """'an int', 'a list': the type of a value, for exit reasons."""
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def show(value: object, limit: int = 60) -> str:
    """A value for an exit reason: quoted, escaped (NUL, newline) and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- typed checks: each takes the name to blame and the value, returns the typed value or raises Invalid


def text(name: str, value: object, *, limit: int = NAME_MAX, rc: int = ERR_ARGS) -> str:
    if not isinstance(value, str):
        raise Invalid(rc, f"{name}={show(value)} is {a(value)}, not text")
    if len(value) > limit:
        raise Invalid(rc, f"{name}={show(value)} is {len(value)} characters long; at most {limit}")
    if any(c < " " or c == "\x7f" for c in value):
        raise Invalid(rc, f"{name}={show(value)} holds a control character (NUL, newline, tab); remove it")
    return value


def path(name: str, value: object, *, empty_ok: bool = False, rc: int = ERR_ARGS) -> str:
    """An absolute path of at most PATH_MAX bytes with components of at most NAME_MAX bytes."""
    text(name, value, limit=PATH_MAX, rc=rc)
    assert isinstance(value, str)
    if value == "":
        if empty_ok:
            return value
        raise Invalid(rc, f"{name} is empty; set it to an absolute path")
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:
        raise Invalid(rc, f"{name}={show(value)} cannot be encoded as a file name") from None
    if len(raw) >= PATH_MAX:
        raise Invalid(rc, f"{name}={show(value)} is {len(raw)} bytes long; a path has fewer than {PATH_MAX}")
    if not value.startswith("/"):
        raise Invalid(rc, f"{name}={show(value)} is not an absolute path; give it from /")
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise Invalid(rc, f"{name}={show(value)} has a component longer than {NAME_MAX} bytes")
    return value


_INTEGER = re.compile(r"[+-]?[0-9]{1,19}", re.ASCII)
_DECIMAL = re.compile(r"\+?([0-9]{1,9}(\.[0-9]{0,9})?|\.[0-9]{1,9})", re.ASCII)


def integer(name: str, value: object, low: int, high: int, *, rc: int = ERR_ARGS) -> int:
    """An int (not a bool) or its decimal text, within low..high."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(rc, f"{name}={show(value)} is not an integer; give one in {low}..{high}")
    if not low <= value <= high:
        raise Invalid(rc, f"{name}={show(value)} is out of range; give an integer in {low}..{high}")
    return value


def port(name: str, value: object, *, rc: int = ERR_ARGS) -> int:
    return integer(name, value, 1, 65535, rc=rc)


def seconds(name: str, value: object, low: float, high: float, *, rc: int = ERR_ARGS) -> float:
    """A number of seconds as decimal text (no nan, inf or exponent), within low..high."""
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value.strip()):
        raise Invalid(rc, f"{name}={show(value)} is not a number of seconds; give one in {low:g}..{high:g}")
    number = float(value.strip())
    if not low <= number <= high:
        raise Invalid(rc, f"{name}={show(value)} is out of range; give seconds in {low:g}..{high:g}")
    return number


_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?", re.ASCII)


def is_ip(value: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return True
        except (OSError, ValueError):
            pass
    return False


def host(name: str, value: object, *, empty_ok: bool = False, rc: int = ERR_ARGS) -> str:
    """An IP address or a host name."""
    text(name, value, limit=253, rc=rc)
    assert isinstance(value, str)
    if (value == "" and empty_ok) or (value.isascii() and (is_ip(value) or _HOSTNAME.fullmatch(value))):
        return value
    raise Invalid(rc, f"{name}={show(value)} is not an IP address or host name")


def address_port(name: str, value: object, *, rc: int = ERR_ARGS) -> tuple[str, int]:
    """address:port, [v6-address]:port."""
    text(name, value, limit=300, rc=rc)
    assert isinstance(value, str)
    address, _, number = value.rpartition(":")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    fix = f"{name}={show(value)} is not address:port; give e.g. 192.0.2.10:443 or [2001:db8::1]:443"
    if not address or not number.isascii() or not number.isdigit():
        raise Invalid(rc, fix)
    try:
        return host(name, address, rc=rc), port(name, number, rc=rc)
    except Invalid:
        raise Invalid(rc, fix) from None


_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}", re.ASCII)


def user(name: str, value: object, *, rc: int = ERR_ARGS) -> str:
    """A user name or uid, or empty."""
    text(name, value, limit=32, rc=rc)
    assert isinstance(value, str)
    if value and not _USER.fullmatch(value):
        raise Invalid(rc, f"{name}={show(value)} is not a user name")
    return value


# ---- files: stat first (a FIFO is never opened: the open would block), then read within a limit

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def _stat(name: str, file: str, rc: int) -> os.stat_result | None:
    """None when the file does not exist."""
    try:
        return os.stat(file)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Invalid(rc, f"{name} {show(file)}: {exc.strerror}") from None


def _not_regular(name: str, file: str, result: os.stat_result, rc: int) -> Invalid:
    kind = _KINDS.get(stat.S_IFMT(result.st_mode), "not a regular file")
    return Invalid(rc, f"{name} {show(file)} is {kind}, not a regular file; point {name} at a file")


def regular_file(name: str, file: str, *, rc: int = ERR_CONFIGURED) -> os.stat_result:
    result = _stat(name, file, rc)
    if result is None:
        raise Invalid(rc, f"{name} {show(file)} does not exist; create it or set {name}", absent=True)
    if not stat.S_ISREG(result.st_mode):
        raise _not_regular(name, file, result, rc)
    return result


def absent_or_regular(name: str, file: str, *, rc: int = ERR_CONFIGURED) -> bool:
    """For a file the agent writes (pid file, log): missing is fine, a FIFO or directory is not."""
    result = _stat(name, file, rc)
    if result is not None and not stat.S_ISREG(result.st_mode):
        raise _not_regular(name, file, result, rc)
    return result is not None


def executable(name: str, value: object) -> str:
    path(name, value)
    assert isinstance(value, str)
    result = _stat(name, value, ERR_INSTALLED)
    if result is None:
        raise Invalid(ERR_INSTALLED, f"{name} {show(value)} is not executable: it does not exist; install it "
                                     f"or set {name}", absent=True)
    if not stat.S_ISREG(result.st_mode):
        raise Invalid(ERR_INSTALLED, f"{name} {show(value)} is not executable: it is "
                                     f"{_KINDS.get(stat.S_IFMT(result.st_mode), 'not a file')}; set {name}")
    if not os.access(value, os.X_OK):
        raise Invalid(ERR_INSTALLED, f"{name} {show(value)} is not executable; chmod +x it or set {name}")
    return value


def read_bytes(name: str, file: str, *, limit: int = CONFIG_MAX, rc: int = ERR_CONFIGURED,
               cut: bool = False) -> bytes:
    """The file's content; larger than `limit`: Invalid, or with `cut` its first limit + 1 bytes."""
    regular_file(name, file, rc=rc)
    try:
        # O_NONBLOCK: should a FIFO replace the file after the stat, the open still returns.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Invalid(rc, f"{name} {show(file)} cannot be opened: {exc.strerror}") from None
    try:
        result = os.fstat(fd)
        if not stat.S_ISREG(result.st_mode):
            raise _not_regular(name, file, result, rc)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise Invalid(rc, f"{name} {show(file)} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit and not cut:
        raise Invalid(rc, f"{name} {show(file)} is larger than {limit} bytes; is it the right file?")
    return data


def read_text(name: str, file: str, *, limit: int = CONFIG_MAX, rc: int = ERR_CONFIGURED) -> str:
    data = read_bytes(name, file, limit=limit, rc=rc)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(rc, f"{name} {show(file)} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}); rewrite it as UTF-8") from None


def read_pid(name: str, file: str) -> int | None:
    """The pid a pid file records; None when it is missing or holds no pid (a stale or torn file)."""
    if not absent_or_regular(name, file):
        return None
    try:
        content = read_bytes(name, file, limit=64, cut=True).strip()
    except Invalid as exc:
        if exc.absent:
            return None  # removed between the stat and the open: a stop ran
        raise
    if len(content) > 64 or not content.isdigit() or not 0 < int(content) <= PID_MAX:
        return None
    return int(content)


# ---- parameters


def _parameter_text(name: str, value: object) -> str:
    return text(name, value)


@dataclass(frozen=True)
class Parameter:
    name: str
    shortdesc: str
    longdesc: str
    default: str = ""
    required: bool = False
    unique: bool = False
    check: Callable[[str, object], Any] = field(default=_parameter_text, compare=False)

    def value(self) -> str:
        """The raw value (OCF_RESKEY_<name>, else the default), unchecked but text."""
        raw = environ().get(f"OCF_RESKEY_{self.name}", self.default)
        if not isinstance(raw, str):
            raise Invalid(ERR_ARGS, f"{self.name}={show(raw)} is {a(raw)}, not text")
        return raw

    def get(self) -> Any:
        """The value after its typed check (raises Invalid, ERR_ARGS)."""
        raw = environ().get(f"OCF_RESKEY_{self.name}", self.default)
        if self.required and raw == "":
            raise Invalid(ERR_ARGS, f"{self.name} is required; set it")
        return self.check(self.name, raw)


@dataclass(frozen=True)
class Action:
    name: str
    timeout: str
    interval: str | None = None
    depth: str | None = None


def meta_data(name: str, version: str, shortdesc: str, longdesc: str, parameters: tuple[Parameter, ...],
              actions: tuple[Action, ...]) -> str:
    """ra-api-1 meta-data (checked against ra-api-1.dtd by ocf-tester)."""
    root = ET.Element("resource-agent", {"name": name, "version": version})
    ET.SubElement(root, "version").text = "1.0"
    ET.SubElement(root, "longdesc", {"lang": "en"}).text = longdesc
    ET.SubElement(root, "shortdesc", {"lang": "en"}).text = shortdesc
    params = ET.SubElement(root, "parameters")
    for p in parameters:
        element = ET.SubElement(params, "parameter", {"name": p.name, "unique": str(int(p.unique)),
                                                      "required": str(int(p.required))})
        ET.SubElement(element, "longdesc", {"lang": "en"}).text = p.longdesc
        ET.SubElement(element, "shortdesc", {"lang": "en"}).text = p.shortdesc
        ET.SubElement(element, "content", {"type": "string", "default": p.default})
    acts = ET.SubElement(root, "actions")
    for a in actions:
        attrs = {"name": a.name, "timeout": a.timeout}
        if a.interval:
            attrs["interval"] = a.interval
        if a.depth:
            attrs["depth"] = a.depth
        ET.SubElement(acts, "action", attrs)
    ET.indent(root, space="  ")
    return ('<?xml version="1.0"?>\n<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def exit_reason(message: str) -> None:
    """Shown by crm_mon next to a failed action; one line, whatever the message holds."""
    line = "".join(c if " " <= c != "\x7f" else repr(c)[1:-1] for c in message)
    print(f"ocf-exit-reason:{line}", file=sys.stderr)


def installed(binary: str, config: str) -> int:
    """The program runs (5, not installed) and its config is a regular file (6, not configured)."""
    try:
        executable("binary", binary)
        path("config", config)
        regular_file("config", config)
    except Invalid as exc:
        exit_reason(exc.reason)
        return exc.rc
    return SUCCESS


def _meta(name: str, low: int) -> int | None:
    """OCF_RESKEY_CRM_meta_<name> in milliseconds (Pacemaker sets it); None when unset."""
    raw = environ().get(f"OCF_RESKEY_CRM_meta_{name}")
    return None if raw is None else integer(f"CRM_meta_{name}", raw, low, 2**31 - 1)


def is_probe() -> bool:
    interval = _meta("interval", 0)
    return _action == "monitor" and not interval


def action_timeout(default: float) -> float:
    """The timeout Pacemaker gave this action, in seconds."""
    timeout = _meta("timeout", 1)
    return default if timeout is None else timeout / 1000.0


def shim(python: str, module: str, metadata: str) -> str:
    """The executable Pacemaker calls: /usr/lib/ocf/resource.d/<provider>/<agent>.

    It answers meta-data itself (static; asked often, sometimes as user nobody) and hands every
    other action to the Python module.
    """
    if "APPLIANCE_METADATA_END" in metadata:
        raise ValueError("meta-data must not contain the here-document terminator")
    return (f"#!/bin/sh\n# Managed by appliance: the OCF agent lives in {module}.\n"
            f'if [ "$1" = "meta-data" ]; then\n    cat <<\'APPLIANCE_METADATA_END\'\n{metadata}'
            f"APPLIANCE_METADATA_END\n    exit 0\nfi\n"
            f'exec {python} -m {module} "$@"\n')


def _write_error(what: str, file: Path, exc: OSError) -> Invalid:
    rc = ERR_PERM if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ERR_GENERIC
    return Invalid(rc, f"cannot write {what} {show(str(file))}: {exc.strerror}")


def spawn(argv: list[str], pidfile: Path, logfile: Path) -> subprocess.Popen:
    """Start a daemon in its own session with its output in `logfile`, and record its pid atomically.

    Off Pacemaker's pipes: the daemon outlives the agent, and a closed pipe never kills it (vblade
    died of SIGPIPE that way)."""
    for name, file in (("pidfile", pidfile), ("logfile", logfile)):
        absent_or_regular(name, str(file))  # never append to a FIFO (blocks) or replace a directory
    try:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        log = open(logfile, "ab")
    except OSError as exc:
        raise _write_error("logfile", logfile, exc) from None
    try:
        with log, open(os.devnull, "rb") as null:
            process = subprocess.Popen(argv, stdin=null, stdout=log, stderr=log, start_new_session=True,
                                       env=child_env())
    except OSError as exc:
        raise Invalid(ERR_INSTALLED, f"cannot run {show(argv[0])}: {exc.strerror}") from None
    tmp = pidfile.with_suffix(".tmp")
    try:
        tmp.write_text(f"{process.pid}\n")
        os.replace(tmp, pidfile)
    except OSError as exc:
        process.kill()  # a daemon nobody can find again must not stay
        process.wait()
        raise _write_error("pidfile", pidfile, exc) from None
    return process


def terminate(pid: int, running: Callable[[], bool], grace: float, what: str) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; polls every 50 ms (every wait here is outage).
    False, with an exit reason, when the process survives SIGKILL: Pacemaker then escalates the
    failed stop to fencing, which is the right answer for a process stuck in I/O."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval inside the deadline loop
        if not running():
            return True
    exit_reason(f"{what} {pid} survives SIGKILL (stuck in I/O?)")
    return False


def _guard(exc: Exception) -> int:
    """The last resort: a bug, named in one line instead of a traceback."""
    global guard_fired
    guard_fired += 1
    import traceback  # only on this path: the agents start fast

    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    exit_reason(f"{GUARD_PREFIX}{type(exc).__name__}: {exc}{place}; please report it")
    return ERR_GENERIC


def dispatch(argv: list[str], metadata: Callable[[], str], parameters: tuple[Parameter, ...],
             actions: dict[str, Callable[[], int]], env: Mapping[str, Any] | None = None) -> int:
    """An agent's entry point: meta-data, and every action in `actions` (validate-all among them)
    after the typed checks of every parameter and of Pacemaker's meta attributes (stop checks only
    what it uses: a stop that fails gets the node fenced). `env` replaces os.environ (tests call
    main() in-process). Whatever escapes is answered with an OCF code and an exit reason."""
    global _env, _action
    saved = _env, _action
    _env = env
    _action = argv[1] if len(argv) > 1 and isinstance(argv[1], str) else ""
    try:
        if _action == "meta-data":
            print(metadata(), end="")
            return SUCCESS
        if _action not in actions:
            names = "|".join(a for a in actions if a != "validate-all")
            print(f"usage: {argv[0] if argv else 'agent'} {{{names}|validate-all|meta-data}}", file=sys.stderr)
            exit_reason(f"unknown action {show(_action)}")
            return ERR_UNIMPLEMENTED
        _meta("interval", 0)
        _meta("timeout", 1)
        if _action != "stop":
            for parameter in parameters:
                parameter.get()
        return actions[_action]()
    except Invalid as exc:
        exit_reason(exc.reason)
        return exc.rc
    except Exception as exc:  # the guard: a bug, but still an OCF code and a reason
        return _guard(exc)
    finally:
        _env, _action = saved


def await_ready(process: subprocess.Popen, ready: Callable[[], bool], deadline: float, what: str,
                logfile: Path, not_ready: str) -> int:
    """A start's last step: poll every 50 ms until the daemon serves, or name why it does not."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            exit_reason(f"{what} exited with {process.returncode} during start; see {logfile}")
            return ERR_GENERIC
        if ready():
            return SUCCESS
        time.sleep(0.05)  # poll interval inside the deadline loop: every 50 ms here is outage
    exit_reason(not_ready)
    return ERR_GENERIC
