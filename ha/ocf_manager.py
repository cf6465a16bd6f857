"""ocf:appliance:manager, the OCF agent that runs `appliance serve` under Pacemaker.

start is a no-op when running and returns only when the API answers; stop succeeds when stopped;
monitor tells running (0), stopped (7) and broken (1: the process lives but the API does not
answer) apart; it reads the config only when the process runs, so a probe on a node without the
config answers 7. Every parameter and every config value the agent reads passes a typed check
first (ocf.py: 2 for a malformed parameter, 5 not installed, 6 a missing or bad config).
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from appliance.ha import ocf

PARAMETERS = (
    ocf.Parameter("config", "manager config", "Path of manager.toml ([api] bind/port say where the API answers).",
                  default="/etc/appliance/manager.toml", required=True, unique=True, check=ocf.path),
    ocf.Parameter("binary", "appliance command", "The appliance executable that runs `serve`.",
                  default="/opt/appliance/bin/appliance", check=ocf.path),
    ocf.Parameter("pidfile", "pid file", "Where the agent records the manager's process id.",
                  default="/run/appliance/manager.pid", check=ocf.path),
    ocf.Parameter("logfile", "log file", "Where the manager's output goes.", default="/var/log/appliance/manager.log",
                  check=ocf.path),
    ocf.Parameter("user", "run as", "User to run the manager as (empty: the agent's own user).", default="",
                  check=ocf.user),
    ocf.Parameter("database_socket", "local MariaDB socket",
                  "The node's own MariaDB, which the database floating address reaches while the manager runs "
                  "here: start waits for it, makes it writable and stop makes it read-only again. Empty: the "
                  "agent leaves databases alone.", default="/run/mysqld/mysqld.sock",
                  check=lambda name, value: ocf.path(name, value, empty_ok=True)),
    ocf.Parameter("database_wait", "seconds to wait for the local MariaDB",
                  "How long start waits for the local MariaDB to answer (a node that just booted) before it "
                  "fails, so that Pacemaker moves the manager to the peer, whose database is a replica.",
                  default="20", check=lambda name, value: ocf.seconds(name, value, 0, 3600)),
)
ACTIONS = (ocf.Action("start", "120s"), ocf.Action("stop", "120s"), ocf.Action("monitor", "20s", "5s", "0"),
           ocf.Action("validate-all", "20s"), ocf.Action("meta-data", "5s"))


def param(name: str) -> Any:
    """The parameter's value after its typed check (ocf.Invalid, 2, when it fails)."""
    return next(p for p in PARAMETERS if p.name == name).get()


def _pid() -> int | None:
    pid = ocf.read_pid("pidfile", param("pidfile"))
    if pid is None:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b") ", 1)[1][:1]
    except (OSError, IndexError):
        return None
    return None if state in (b"", b"Z") else pid  # kill -0 succeeds on zombies; /proc does not lie


@dataclass(frozen=True)
class Config:
    """What the agent reads from manager.toml, checked as `appliance serve` checks it."""
    health_url: str
    backend: str


def _table(data: Mapping[str, Any], key: str, config: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ocf.Invalid(ocf.ERR_CONFIGURED, f"config {ocf.show(config)}: {key} = {ocf.show(table)} is "
                                              f"{ocf.a(table)}; make [{key}] a table")
    return table


def _config() -> Config:
    config = param("config")
    source = ocf.read_text("config", config)
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ocf.Invalid(ocf.ERR_CONFIGURED, f"config {ocf.show(config)} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ocf.Invalid(ocf.ERR_CONFIGURED, f"config {ocf.show(config)} nests too deeply") from None
    where = f"config {ocf.show(config)}: [api]"
    api = _table(data, "api", config)
    bind = ocf.host(f"{where} bind", api.get("bind", "127.0.0.1"), empty_ok=True, rc=ocf.ERR_CONFIGURED)
    port = ocf.port(f"{where} port", api.get("port", 2633), rc=ocf.ERR_CONFIGURED)
    backend = _table(data, "database", config).get("backend", "sqlite")
    if backend not in ("sqlite", "mysql"):
        raise ocf.Invalid(ocf.ERR_CONFIGURED, f"config {ocf.show(config)}: [database] backend = "
                                              f"{ocf.show(backend)} is neither \"sqlite\" nor \"mysql\"")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    host = f"[{host}]" if ":" in host else host
    return Config(f"http://{host}:{port}/api/v1/health", backend)


def _answers(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def validate() -> int:
    """binary (5), the config and every value the agent reads from it (6), the user (5), and the
    files the agent writes (6: a FIFO or a directory there would block or break the start)."""
    ocf.executable("binary", param("binary"))
    _config()
    if param("user"):
        try:
            name = param("user")
            pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise ocf.Invalid(ocf.ERR_INSTALLED, f"user {ocf.show(param('user'))} does not exist on this node; "
                                                 "create it or change user") from None
        search = ocf.environ().get("PATH")
        if shutil.which("setpriv", path=search if isinstance(search, str) and search else None) is None:
            raise ocf.Invalid(ocf.ERR_INSTALLED, "setpriv (util-linux), which runs the manager as user, is "
                                                 "not installed")
    ocf.absent_or_regular("pidfile", param("pidfile"))
    ocf.absent_or_regular("logfile", param("logfile"))
    return ocf.SUCCESS


def monitor() -> int:
    pid = _pid()
    if pid is None:
        return ocf.NOT_RUNNING
    try:
        config = _config()
    except ocf.Invalid as exc:
        if exc.absent and ocf.is_probe():
            return ocf.NOT_RUNNING  # no manager of ours runs without its config: the pid is another's
        raise
    if config.backend == "mysql" and param("database_socket") and not ocf.is_probe():
        # One query proves the local MariaDB answers and reads its replica's state.
        replica = _sql("SHOW SLAVE STATUS", names=True)
        if replica is None:
            # Its supervisor (systemd, mariadbd-safe) restarts a crashed server within seconds; one that
            # stays down fails the start that follows, after database_wait, and the group moves.
            ocf.exit_reason(f"the local MariaDB does not answer on {param('database_socket')}")
            return ocf.ERR_GENERIC
        _retry_replica_after_a_gap(parse_rows(replica))
    if _answers(config.health_url):
        _resume_semisync_when_peer_replicates()
        return ocf.SUCCESS
    ocf.exit_reason(f"manager process {pid} runs but its API does not answer")
    return ocf.ERR_GENERIC


# Present while start() has suspended semi-synchronous waiting because the peer had left the cluster.
SEMISYNC_SUSPENDED = Path("/run/appliance/semisync-suspended")


def _manages_local_database() -> bool:
    """Only the HA pair has a local MariaDB under a mysql config; elsewhere the agent leaves the DB
    alone, and so does a stop whose parameters or config fail their checks (a failed stop fences)."""
    try:
        return bool(param("database_socket")) and _config().backend == "mysql"
    except ocf.Invalid:
        return False


def _local_database() -> bool:
    return _manages_local_database() and os.path.exists(param("database_socket"))


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


def _sql(statement: str, names: bool = False) -> str | None:
    """One statement against the local MariaDB over its socket; None when it fails."""
    try:
        result = subprocess.run(["mariadb", f"--socket={param('database_socket')}", "--batch",
                                 *(() if names else ("--skip-column-names",)), "-e", statement],
                                stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, errors="replace", timeout=30, check=False,
                                env=ocf.child_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def parse_rows(batch: str) -> list[dict[str, str]]:
    """The mariadb client's --batch output with column names: tab-separated, one row per line."""
    lines = batch.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


# When the replica was last restarted after a gap (its mtime); in /run: a boot forgets it.
REPLICA_RETRIED = Path("/run/appliance/replica-retried")
RETRY_EVERY = 30.0  # seconds between two restarts of a replica the peer could not serve yet
GAP = "which is not in the master's binlog"


def _retry_replica_after_a_gap(rows: list[dict[str, str]], now=time.time) -> bool:
    """After both nodes lost power, the peer can have lost the last events it had received from
    this node (written, not yet on its disk) while this node, their source, kept them. This node's
    replica then asks the peer to start after a GTID the peer no longer has: error 1236, which
    MariaDB treats as fatal and never retries, although the peer fetches those events again from
    this node within seconds. Seen on the VM lab's reboot-both: replication into the active node
    stayed stopped until an install restarted it. Restart the IO thread here, at most every 30 s,
    and only for that error: a purged binlog or another error stays for status and the runbook.
    True when it restarted it."""
    if len(rows) != 1:
        return False
    row = rows[0]
    if row.get("Slave_IO_Running") != "No" or row.get("Last_IO_Errno") != "1236" or \
            GAP not in row.get("Last_IO_Error", ""):
        return False
    try:
        if now() - REPLICA_RETRIED.stat().st_mtime < RETRY_EVERY:
            return False
    except FileNotFoundError:
        pass
    REPLICA_RETRIED.parent.mkdir(parents=True, exist_ok=True)
    REPLICA_RETRIED.touch()
    return _sql("START SLAVE IO_THREAD") is not None


def _local_database_read_only(read_only: bool) -> None:
    """The node that runs the manager takes the writes: its MariaDB leaves read_only, and enters it
    again when the manager leaves."""
    if _local_database():
        _sql(f"SET GLOBAL read_only = {'ON' if read_only else 'OFF'}")


def _peer_in_partition() -> bool | None:
    """Whether another node shares this node's cluster partition (None: no Pacemaker to ask)."""
    try:
        result = subprocess.run(["crm_node", "-p"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                errors="replace", timeout=10, check=False, env=ocf.child_env())
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
    validate()
    config = _config()
    if monitor() == ocf.SUCCESS:
        return ocf.SUCCESS
    if _pid() is not None:
        stop()  # a process that runs but does not answer is restarted cleanly
    deadline = time.monotonic() + ocf.action_timeout(120.0) - 2
    if not _wait_for_local_database(min(deadline, time.monotonic() + param("database_wait"))):
        ocf.exit_reason(f"the local MariaDB does not answer on {param('database_socket')}")
        return ocf.ERR_GENERIC
    _suspend_semisync_if_alone()
    _local_database_read_only(False)  # after any stop(), which leaves the database read-only
    logfile = Path(param("logfile"))
    argv = [param("binary"), "serve", "--config", param("config")]
    if param("user"):
        argv = ["setpriv", f"--reuid={param('user')}", f"--regid={param('user')}", "--init-groups", *argv]
    process = ocf.spawn(argv, Path(param("pidfile")), logfile)
    return ocf.await_ready(process, lambda: _answers(config.health_url, timeout=1.0), deadline, "manager", logfile,
                           "manager did not answer before the start timeout")


def stop() -> int:
    pid = _pid()
    if pid is not None and not ocf.terminate(pid, lambda: _pid() is not None,
                                             max(5.0, ocf.action_timeout(120.0) - 15), "manager process"):
        return ocf.ERR_GENERIC
    try:
        Path(param("pidfile")).unlink(missing_ok=True)
    except OSError:
        pass  # the process is gone; a pid file left behind names no live manager, and _pid() checks
    _local_database_read_only(True)
    return ocf.SUCCESS


def metadata() -> str:
    return ocf.meta_data("manager", "1.0", "appliance core manager",
                         "Runs `appliance serve` and watches that its HTTP API answers.", PARAMETERS, ACTIONS)


def shim(python: str) -> str:
    """/usr/lib/ocf/resource.d/appliance/manager for a node whose appliance runs on `python`."""
    return ocf.shim(python, __name__ if __name__ != "__main__" else "appliance.ha.ocf_manager", metadata())


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """The agent: argv[1] is the action, the parameters are OCF_RESKEY_* in `env` (default os.environ).
    Always an OCF code: ocf.dispatch() turns failed checks and anything unexpected into one."""
    return ocf.dispatch(argv, metadata, PARAMETERS, {"start": start, "stop": stop, "monitor": monitor,
                                                     "validate-all": validate}, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
