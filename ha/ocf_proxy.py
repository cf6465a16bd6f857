"""ocf:appliance:proxy, the OCF agent that runs lighttpd (the TLS proxy) under Pacemaker.

It replaces ocf:heartbeat:anything, whose stop sleeps in whole seconds: 1-2 s of every manager
restart and failover went into waiting for a lighttpd that had already exited. This one polls every
50 ms, checks the config with `lighttpd -tt` before a start (an exit reason instead of a crash
loop), and its monitor checks that the proxy accepts connections on its address, not only that a
process with the right pid exists.
"""
from __future__ import annotations

import os
import signal
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
    binary, config = param("binary"), Path(param("config"))
    if not os.access(binary, os.X_OK):
        ocf.exit_reason(f"{binary} is not executable")
        return ocf.ERR_INSTALLED
    if not config.is_file():
        ocf.exit_reason(f"config {config} does not exist")
        return ocf.ERR_CONFIGURED
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
    pidfile, logfile = Path(param("pidfile")), Path(param("logfile"))
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log, open(os.devnull, "rb") as null:
        # Its own session, off Pacemaker's pipes: the proxy outlives the agent's process.
        process = subprocess.Popen([param("binary"), "-D", "-f", param("config")], stdin=null, stdout=log,
                                   stderr=log, start_new_session=True)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{process.pid}\n")
    os.replace(tmp, pidfile)
    deadline = time.monotonic() + ocf.action_timeout(60.0) - 2
    while time.monotonic() < deadline:
        if process.poll() is not None:
            ocf.exit_reason(f"lighttpd exited with {process.returncode} during start; see {logfile}")
            return ocf.ERR_GENERIC
        if _accepts(timeout=0.5):
            return ocf.SUCCESS
        time.sleep(0.05)  # poll interval inside the deadline loop: every 50 ms here is outage
    ocf.exit_reason(f"lighttpd did not accept on {param('listen')} before the start timeout")
    return ocf.ERR_GENERIC


def stop() -> int:
    pid = _pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + max(5.0, ocf.action_timeout(60.0) - 5)
        while _pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval inside the deadline loop
        if _pid() is not None:
            os.kill(pid, signal.SIGKILL)
            killed_by = time.monotonic() + 10
            while _pid() is not None and time.monotonic() < killed_by:
                time.sleep(0.05)  # poll interval inside the deadline loop
            if _pid() is not None:
                ocf.exit_reason(f"lighttpd {pid} survives SIGKILL")
                return ocf.ERR_GENERIC  # Pacemaker escalates a failed stop to fencing
    Path(param("pidfile")).unlink(missing_ok=True)
    return ocf.SUCCESS


def metadata() -> str:
    return ocf.meta_data("proxy", "1.0", "appliance TLS proxy (lighttpd)",
                         "Runs lighttpd in the foreground and watches that it accepts connections on its "
                         "address.", PARAMETERS, ACTIONS)


def shim(python: str) -> str:
    """/usr/lib/ocf/resource.d/appliance/proxy for a node whose appliance runs on `python`."""
    return ocf.shim(python, __name__ if __name__ != "__main__" else "appliance.ha.ocf_proxy", metadata())


def main(argv: list[str]) -> int:
    action = argv[1] if len(argv) > 1 else ""
    os.environ["__OCF_ACTION"] = action
    if action == "meta-data":
        print(metadata(), end="")
        return ocf.SUCCESS
    if action == "validate-all":
        checked = validate()
        if checked == ocf.SUCCESS and not _config_accepted():
            return ocf.ERR_CONFIGURED
        return checked
    if action in ("start", "stop", "monitor"):
        if action == "monitor" and ocf.is_probe() and validate() != ocf.SUCCESS:
            return ocf.NOT_RUNNING  # a probe on a node without the proxy set up: not running here
        return {"start": start, "stop": stop, "monitor": monitor}[action]()
    print(f"usage: {argv[0]} {{start|stop|monitor|validate-all|meta-data}}", file=sys.stderr)
    return ocf.ERR_UNIMPLEMENTED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
