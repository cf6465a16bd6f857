"""ocf:appliance:manager, the OCF agent that runs `appliance serve` under Pacemaker.

start is a no-op when running and returns only when the API answers; stop succeeds when stopped;
monitor tells running (0), stopped (7) and broken (1: the process lives but the API does not
answer) apart; validate-all returns 5 (not installed) or 6 (not configured), leniently on probes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from appliance.ha import ocf

PARAMETERS = (
    ocf.Parameter("config", "manager config", "Path of manager.toml ([api] bind/port say where the API answers).",
                  default="/etc/appliance/manager.toml", required=True, unique=True),
    ocf.Parameter("binary", "appliance command", "The appliance executable that runs `serve`.",
                  default="/opt/appliance/bin/appliance"),
    ocf.Parameter("pidfile", "pid file", "Where the agent records the manager's process id.",
                  default="/run/appliance/manager.pid"),
    ocf.Parameter("logfile", "log file", "Where the manager's output goes.", default="/var/log/appliance/manager.log"),
    ocf.Parameter("user", "run as", "User to run the manager as (empty: the agent's own user).", default=""),
    ocf.Parameter("database_socket", "local MariaDB socket",
                  "The node's own MariaDB, which the database floating address reaches while the manager runs "
                  "here: start waits for it, makes it writable and stop makes it read-only again. Empty: the "
                  "agent leaves databases alone.", default="/run/mysqld/mysqld.sock"),
    ocf.Parameter("database_wait", "seconds to wait for the local MariaDB",
                  "How long start waits for the local MariaDB to answer (a node that just booted) before it "
                  "fails, so that Pacemaker moves the manager to the peer, whose database is a replica.",
                  default="20"),
)
ACTIONS = (ocf.Action("start", "120s"), ocf.Action("stop", "120s"), ocf.Action("monitor", "20s", "5s", "0"),
           ocf.Action("validate-all", "20s"), ocf.Action("meta-data", "5s"))


def param(name: str) -> str:
    return next(p for p in PARAMETERS if p.name == name).value()


def _pid() -> int | None:
    try:
        pid = int(Path(param("pidfile")).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid  # kill -0 succeeds on zombies; /proc does not lie


def _health_url() -> str:
    data = tomllib.loads(Path(param("config")).read_text())
    api = data.get("api", {})
    bind = api.get("bind", "127.0.0.1")
    host = "127.0.0.1" if bind in ("0.0.0.0", "") else bind
    return f"http://{host}:{int(api.get('port', 2633))}/api/v1/health"


def _answers(timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(_health_url(), timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def validate() -> int:
    checked = ocf.installed(param("binary"), param("config"))
    if checked != ocf.SUCCESS:
        return checked
    config = param("config")
    try:
        _health_url()
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        ocf.exit_reason(f"config {config} is not valid: {exc}")
        return ocf.ERR_CONFIGURED
    try:
        if float(param("database_wait")) < 0:
            raise ValueError
    except ValueError:
        ocf.exit_reason(f"database_wait={param('database_wait')!r} is not a number of seconds >= 0")
        return ocf.ERR_CONFIGURED
    return ocf.SUCCESS


def monitor() -> int:
    pid = _pid()
    if pid is None:
        return ocf.NOT_RUNNING
    if _manages_local_database() and not ocf.is_probe() and _sql("SELECT 1") is None:
        # Its supervisor (systemd, mariadbd-safe) restarts a crashed server within seconds; one that
        # stays down fails the start that follows, after database_wait, and the group moves.
        ocf.exit_reason(f"the local MariaDB does not answer on {param('database_socket')}")
        return ocf.ERR_GENERIC
    if _answers():
        _resume_semisync_when_peer_replicates()
        return ocf.SUCCESS
    ocf.exit_reason(f"manager process {pid} runs but its API does not answer")
    return ocf.ERR_GENERIC


# Present while start() has suspended semi-synchronous waiting because the peer had left the cluster.
SEMISYNC_SUSPENDED = Path("/run/appliance/semisync-suspended")


def _manages_local_database() -> bool:
    """Only the HA pair has a local MariaDB under a mysql config; elsewhere the agent leaves the DB alone."""
    if not param("database_socket"):
        return False
    try:
        backend = tomllib.loads(Path(param("config")).read_text()).get("database", {}).get("backend")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return backend == "mysql"


def _local_database() -> bool:
    return _manages_local_database() and Path(param("database_socket")).exists()


def _wait_for_local_database(deadline: float) -> bool:
    """A node that just booted (or was just fenced and came back) can run Pacemaker before its
    MariaDB answers; the manager would then die on its first query (seen in a drill)."""
    if not _manages_local_database():
        return True
    while time.monotonic() < deadline:
        if _local_database() and _sql("SELECT 1") is not None:
            return True
        time.sleep(0.2)  # poll interval inside the deadline loop
    return False


def _sql(statement: str) -> str | None:
    """One statement against the local MariaDB over its socket; None when it fails."""
    try:
        result = subprocess.run(["mariadb", f"--socket={param('database_socket')}", "--batch",
                                 "--skip-column-names", "-e", statement],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _local_database_read_only(read_only: bool) -> None:
    """The node that runs the manager takes the writes: its MariaDB leaves read_only, and enters it
    again when the manager leaves."""
    if _local_database():
        _sql(f"SET GLOBAL read_only = {'ON' if read_only else 'OFF'}")


def _peer_in_partition() -> bool | None:
    """Whether another node shares this node's cluster partition (None: no Pacemaker to ask)."""
    try:
        result = subprocess.run(["crm_node", "-p"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return len(result.stdout.split()) > 1 if result.returncode == 0 else None


def _suspend_semisync_if_alone() -> None:
    """A takeover after the peer died: with semi-sync on, the first commit would wait
    rpl_semi_sync_master_timeout for an acknowledgement the dead peer never sends (2 s of outage in
    every failover, measured). The peer is fenced, so there is nobody to wait for: stop waiting."""
    if not _local_database() or _peer_in_partition() is not False:
        return
    if (_sql("SELECT @@GLOBAL.rpl_semi_sync_master_enabled") or "").strip() != "1":
        return  # semi-sync is off by configuration: nothing to suspend, nothing to resume later
    if _sql("SET GLOBAL rpl_semi_sync_master_enabled = OFF") is not None:
        SEMISYNC_SUSPENDED.parent.mkdir(parents=True, exist_ok=True)
        SEMISYNC_SUSPENDED.touch()


def _resume_semisync_when_peer_replicates() -> None:
    """Back to semi-sync once the peer is in the cluster and its replica has registered with us;
    MariaDB itself holds the wait off until that replica has caught up."""
    if not SEMISYNC_SUSPENDED.exists() or not _local_database() or not _peer_in_partition():
        return
    if (_sql("SHOW SLAVE HOSTS") or "").strip() and \
            _sql("SET GLOBAL rpl_semi_sync_master_enabled = ON") is not None:
        SEMISYNC_SUSPENDED.unlink(missing_ok=True)


def start() -> int:
    checked = validate()
    if checked != ocf.SUCCESS:
        return checked
    if monitor() == ocf.SUCCESS:
        return ocf.SUCCESS
    if _pid() is not None:
        stop()  # a process that runs but does not answer is restarted cleanly
    deadline = time.monotonic() + ocf.action_timeout(120.0) - 2
    if not _wait_for_local_database(min(deadline, time.monotonic() + float(param("database_wait")))):
        ocf.exit_reason(f"the local MariaDB does not answer on {param('database_socket')}")
        return ocf.ERR_GENERIC
    _suspend_semisync_if_alone()
    _local_database_read_only(False)  # after any stop(), which leaves the database read-only
    logfile = Path(param("logfile"))
    argv = [param("binary"), "serve", "--config", param("config")]
    if param("user"):
        argv = ["setpriv", f"--reuid={param('user')}", f"--regid={param('user')}", "--init-groups", *argv]
    process = ocf.spawn(argv, Path(param("pidfile")), logfile)
    return ocf.await_ready(process, lambda: _answers(timeout=1.0), deadline, "manager", logfile,
                           "manager did not answer before the start timeout")


def stop() -> int:
    pid = _pid()
    if pid is not None and not ocf.terminate(pid, lambda: _pid() is not None,
                                             max(5.0, ocf.action_timeout(120.0) - 15), "manager process"):
        return ocf.ERR_GENERIC
    Path(param("pidfile")).unlink(missing_ok=True)
    _local_database_read_only(True)
    return ocf.SUCCESS


def metadata() -> str:
    return ocf.meta_data("manager", "1.0", "appliance core manager",
                         "Runs `appliance serve` and watches that its HTTP API answers.", PARAMETERS, ACTIONS)


def shim(python: str) -> str:
    """/usr/lib/ocf/resource.d/appliance/manager for a node whose appliance runs on `python`."""
    return ocf.shim(python, __name__ if __name__ != "__main__" else "appliance.ha.ocf_manager", metadata())


def main(argv: list[str]) -> int:
    return ocf.dispatch(argv, metadata, validate, {"start": start, "stop": stop, "monitor": monitor})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
