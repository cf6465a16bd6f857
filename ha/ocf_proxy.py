"""ocf:appliance:proxy, the OCF agent that runs lighttpd (the TLS proxy) under Pacemaker.

It replaces ocf:heartbeat:anything, whose stop sleeps in whole seconds: 1-2 s of every manager
restart and failover went into waiting for a lighttpd that had already exited. This one polls every
50 ms, checks the config with `lighttpd -tt` before a start (an exit reason instead of a crash
loop), and its monitor checks that the proxy accepts connections on its address, not only that a
process with the right pid exists. Every parameter passes a typed check first (ocf.py: 2 for a
malformed one, 5 not installed, 6 a config file that is missing, not a regular file or refused).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from appliance.ha import ocf

PARAMETERS = (
    ocf.Parameter("config", "lighttpd config", "Path of the proxy's lighttpd.conf.",
                  default="/etc/appliance/proxy/lighttpd.conf", required=True, unique=True, check=ocf.path),
    ocf.Parameter("listen", "address:port", "Where the proxy accepts connections (the LAN floating address and "
                  "its port): monitor connects there.", required=True, check=ocf.address_port),
    ocf.Parameter("binary", "lighttpd executable", "The lighttpd binary.", default="/usr/sbin/lighttpd",
                  check=ocf.path),
    ocf.Parameter("pidfile", "pid file", "Where the agent records lighttpd's process id (lighttpd.conf must "
                  "not name the same file: two writers race).", default="/run/appliance/proxy.pid", check=ocf.path),
    ocf.Parameter("logfile", "log file", "Where lighttpd's own output goes.", default="/var/log/appliance/proxy.log",
                  check=ocf.path),
)
ACTIONS = (ocf.Action("start", "60s"), ocf.Action("stop", "60s"), ocf.Action("monitor", "20s", "5s", "0"),
           ocf.Action("validate-all", "20s"), ocf.Action("meta-data", "5s"))


def param(name: str) -> Any:
    """The parameter's value after its typed check (ocf.Invalid, 2, when it fails)."""
    return next(p for p in PARAMETERS if p.name == name).get()


def _listen() -> tuple[str, int]:
    return param("listen")


def _listen_text() -> str:
    """listen as given (after its check), for exit reasons."""
    _listen()
    return next(p for p in PARAMETERS if p.name == "listen").value()


def _pid() -> int | None:
    """lighttpd's pid, only if that process still is our lighttpd (a pid file can outlive a reboot)."""
    pid = ocf.read_pid("pidfile", param("pidfile"))
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if stat.rsplit(b") ", 1)[-1][:1] == b"Z" or os.fsencode(param("config")) not in cmdline:
        return None
    return pid


def _accepts(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(_listen(), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def validate() -> int:
    """binary (5), config a regular file (6), and the files the agent writes not a FIFO or a
    directory (6)."""
    ocf.executable("binary", param("binary"))
    ocf.regular_file("config", param("config"))
    ocf.absent_or_regular("pidfile", param("pidfile"))
    ocf.absent_or_regular("logfile", param("logfile"))
    return ocf.SUCCESS


def _config_accepted() -> bool:
    """lighttpd's own full check (modules loaded, certificate read): a broken file is named here.
    Its output is whatever bytes lighttpd wrote: decoded with replacement, never trusted to be UTF-8."""
    config = param("config")
    timeout = max(1.0, min(30.0, ocf.action_timeout(30.0) - 2))
    try:
        result = subprocess.run([param("binary"), "-tt", "-f", config], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=timeout, check=False, env=ocf.child_env())
    except subprocess.TimeoutExpired:
        raise ocf.Invalid(ocf.ERR_CONFIGURED, f"lighttpd -tt did not finish checking {ocf.show(config)} in "
                                              f"{timeout:g} s; does it include a FIFO or a slow include_shell?"
                          ) from None
    except OSError as exc:
        raise ocf.Invalid(ocf.ERR_INSTALLED, f"binary {ocf.show(param('binary'))} cannot run: {exc.strerror}") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode("utf-8", errors="replace")
        lines = output.strip().splitlines()
        ocf.exit_reason(f"lighttpd -tt refuses {config}: {lines[-1][:200] if lines else result.returncode}")
    return result.returncode == 0


def monitor() -> int:
    pid = _pid()
    if pid is None:
        return ocf.NOT_RUNNING
    if _accepts():
        return ocf.SUCCESS
    ocf.exit_reason(f"lighttpd {pid} runs but accepts nothing on {_listen_text()}")
    return ocf.ERR_GENERIC


def start() -> int:
    validate()
    if monitor() == ocf.SUCCESS:
        return ocf.SUCCESS
    if _pid() is not None:
        stop()
    if not _config_accepted():
        return ocf.ERR_CONFIGURED
    logfile = Path(param("logfile"))
    process = ocf.spawn([param("binary"), "-D", "-f", param("config")], Path(param("pidfile")), logfile)
    return ocf.await_ready(process, lambda: _accepts(timeout=0.5), time.monotonic() + ocf.action_timeout(60.0) - 2,
                           "lighttpd", logfile, f"lighttpd did not accept on {_listen_text()} before the start timeout")


def stop() -> int:
    pid = _pid()
    if pid is not None and not ocf.terminate(pid, lambda: _pid() is not None,
                                             max(5.0, ocf.action_timeout(60.0) - 15), "lighttpd"):
        return ocf.ERR_GENERIC
    try:
        Path(param("pidfile")).unlink(missing_ok=True)
    except OSError:
        pass  # lighttpd is gone; a pid file left behind names no live lighttpd, and _pid() checks
    return ocf.SUCCESS


def metadata() -> str:
    return ocf.meta_data("proxy", "1.0", "appliance TLS proxy (lighttpd)",
                         "Runs lighttpd in the foreground and watches that it accepts connections on its "
                         "address.", PARAMETERS, ACTIONS)


def shim(python: str) -> str:
    """/usr/lib/ocf/resource.d/appliance/proxy for a node whose appliance runs on `python`."""
    return ocf.shim(python, __name__ if __name__ != "__main__" else "appliance.ha.ocf_proxy", metadata())


def _validate_all() -> int:
    validate()
    return ocf.SUCCESS if _config_accepted() else ocf.ERR_CONFIGURED


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """The agent: argv[1] is the action, the parameters are OCF_RESKEY_* in `env` (default os.environ).
    Always an OCF code: ocf.dispatch() turns failed checks and anything unexpected into one."""
    return ocf.dispatch(argv, metadata, PARAMETERS, {"start": start, "stop": stop, "monitor": monitor,
                                                     "validate-all": _validate_all}, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
