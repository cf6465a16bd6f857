"""ocf:appliance:proxy, the OCF agent that runs lighttpd (the TLS proxy) under Pacemaker.

It replaces ocf:heartbeat:anything, whose stop sleeps in whole seconds: 1-2 s of every manager
restart and failover went into waiting for a lighttpd that had already exited. This one polls every
50 ms, checks the config with `lighttpd -tt` before a start (an exit reason instead of a crash
loop), and its monitor checks that the proxy accepts connections on its address, not only that a
process with the right pid exists.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from appliance.ha import ocf

PARAMETERS = (
    ocf.Parameter("config", "lighttpd config", "Path of the proxy's lighttpd.conf.",
                  default="/etc/appliance/proxy/lighttpd.conf", required=True, unique=True),
    ocf.Parameter("listen", "address:port", "Where the proxy accepts connections (the LAN floating address and "
                  "its port): monitor connects there.", required=True),
    ocf.Parameter("binary", "lighttpd executable", "The lighttpd binary.", default="/usr/sbin/lighttpd"),
    ocf.Parameter("pidfile", "pid file", "Where the agent records lighttpd's process id (lighttpd.conf must "
                  "not name the same file: two writers race).", default="/run/appliance/proxy.pid"),
    ocf.Parameter("logfile", "log file", "Where lighttpd's own output goes.", default="/var/log/appliance/proxy.log"),
)
ACTIONS = (ocf.Action("start", "60s"), ocf.Action("stop", "60s"), ocf.Action("monitor", "20s", "5s", "0"),
           ocf.Action("validate-all", "20s"), ocf.Action("meta-data", "5s"))


def param(name: str) -> str:
    return next(p for p in PARAMETERS if p.name == name).value()


def _listen() -> tuple[str, int]:
    host, _, port = param("listen").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen={param('listen')!r} is not address:port")
    return host.strip("[]"), int(port)


def _pid() -> int | None:
    """lighttpd's pid, only if that process still is our lighttpd (a pid file can outlive a reboot)."""
    try:
        pid = int(Path(param("pidfile")).read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if stat.rsplit(") ", 1)[-1][:1] == "Z" or param("config").encode() not in cmdline:
        return None
    return pid


def _accepts(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(_listen(), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def validate() -> int:
    checked = ocf.installed(param("binary"), param("config"))
    if checked != ocf.SUCCESS:
        return checked
    try:
        _listen()
    except ValueError as exc:
        ocf.exit_reason(str(exc))
        return ocf.ERR_CONFIGURED
    return ocf.SUCCESS


def _config_accepted() -> bool:
    """lighttpd's own full check (modules loaded, certificate read): a broken file is named here."""
    result = subprocess.run([param("binary"), "-tt", "-f", param("config")], capture_output=True, text=True,
                            timeout=30, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        ocf.exit_reason(f"lighttpd -tt refuses {param('config')}: {lines[-1] if lines else result.returncode}")
    return result.returncode == 0


def monitor() -> int:
    pid = _pid()
    if pid is None:
        return ocf.NOT_RUNNING
    if _accepts():
        return ocf.SUCCESS
    ocf.exit_reason(f"lighttpd {pid} runs but accepts nothing on {param('listen')}")
    return ocf.ERR_GENERIC


def start() -> int:
    checked = validate()
    if checked != ocf.SUCCESS:
        return checked
    if monitor() == ocf.SUCCESS:
        return ocf.SUCCESS
    if _pid() is not None:
        stop()
    if not _config_accepted():
        return ocf.ERR_CONFIGURED
    logfile = Path(param("logfile"))
    process = ocf.spawn([param("binary"), "-D", "-f", param("config")], Path(param("pidfile")), logfile)
    return ocf.await_ready(process, lambda: _accepts(timeout=0.5), time.monotonic() + ocf.action_timeout(60.0) - 2,
                           "lighttpd", logfile, f"lighttpd did not accept on {param('listen')} before the start timeout")


def stop() -> int:
    pid = _pid()
    if pid is not None and not ocf.terminate(pid, lambda: _pid() is not None,
                                             max(5.0, ocf.action_timeout(60.0) - 15), "lighttpd"):
        return ocf.ERR_GENERIC
    Path(param("pidfile")).unlink(missing_ok=True)
    return ocf.SUCCESS


def metadata() -> str:
    return ocf.meta_data("proxy", "1.0", "appliance TLS proxy (lighttpd)",
                         "Runs lighttpd in the foreground and watches that it accepts connections on its "
                         "address.", PARAMETERS, ACTIONS)


def shim(python: str) -> str:
    """/usr/lib/ocf/resource.d/appliance/proxy for a node whose appliance runs on `python`."""
    return ocf.shim(python, __name__ if __name__ != "__main__" else "appliance.ha.ocf_proxy", metadata())


def _validate_all() -> int:
    checked = validate()
    if checked == ocf.SUCCESS and not _config_accepted():
        return ocf.ERR_CONFIGURED
    return checked


def main(argv: list[str]) -> int:
    return ocf.dispatch(argv, metadata, validate, {"start": start, "stop": stop, "monitor": monitor}, validate_all=_validate_all)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
