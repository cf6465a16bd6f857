"""`appliance serve`: the composition root of the manager.

Reads the config (the same manager.toml the install renders; without one, the embedded default:
SQLite and qcow2 under the state directory, libvirt test:///default hosts), builds the database,
drivers and backends, reconciles what a previous run left in flight, then runs the controller loop
and the HTTP API. The first start writes an administrator token to <state_dir>/admin.token (0600).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.client import default_home
from appliance.core.actions import Manager, PathPolicy
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM
from appliance.core.clock import SystemClock
from appliance.core.controller import Controller, Settings
from appliance.core.db import DatabaseUrl, migrate, open_database
from appliance.core.entities import Datastore, Host
from appliance.core.hooks import Hook, Hooks
from appliance.core.pools import Store
from appliance.core.protocols import DriverError, ParamError
from appliance.core.scheduler import Policy
from appliance.drivers.fake import FakeHypervisor
from appliance.drivers.libvirt import LibvirtHypervisor
from appliance.hostrunners import HostRunners
from appliance.core.reports import Report, ReportError
from appliance.runner.atomic import atomic_write
from appliance.runner.local import LocalRunner
from appliance.storage import registry as storage_registry

log = logging.getLogger("appliance.serve")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DatabaseConfig(_Section):
    backend: Literal["sqlite", "mysql"] = "sqlite"
    path: Optional[str] = None  # sqlite: default <state_dir>/manager.db
    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    name: str = "appliance"
    user: str = "appliance"
    password: str = ""
    unix_socket: Optional[str] = None


class ApiConfig(_Section):
    bind: str = "127.0.0.1"
    port: int = Field(2633, ge=1, le=65535)


class PathsConfig(_Section):
    state_dir: Optional[str] = None
    # Directories that may hold datastores, and from which images may be imported.
    # Default: <state_dir>/datastores and <state_dir>/import. A file inside a datastore is never
    # imported, whatever the roots say (it is some user's image or VM disk).
    datastore_roots: Optional[list[str]] = None
    import_roots: Optional[list[str]] = None


class SchedulerConfig(_Section):
    policy: Literal["packing", "striping", "load-aware", "custom", "fixed"] = "packing"
    rank: str = ""
    datastore_policy: Literal["packing", "striping"] = "striping"
    interval: float = Field(1.0, gt=0, le=3600)
    monitor_interval: float = Field(10.0, gt=0, le=3600)
    resubmit_on_host_error: bool = True


class HookConfig(_Section):
    on: str = Field(pattern=r"^(VM|HOST):([A-Z]+|\*)$")
    command: list[str] = Field(min_length=1)
    timeout: float = Field(30.0, gt=0, le=3600)


class HostsConfig(_Section):
    """How the manager runs storage steps on a hypervisor host (appliance/hostrunners.py)."""
    ssh_key: Optional[str] = None  # default: the manager user's own keys and agent
    known_hosts: Optional[str] = None  # default: <state_dir>/known_hosts; unknown keys are refused
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")  # for qemu+tls:// hosts


class MonitoringConfig(_Section):
    """pull: the manager asks each host's libvirt (the embedded default); push: hosts' agents report
    over UDP to the collector (core/collector.py), which the manager probes over SSH when silent."""
    mode: Literal["pull", "push"] = "pull"
    bind: str = "0.0.0.0"  # the wildcard: the pair's floating address arrives on whichever node is active
    port: int = Field(4124, ge=1, le=65535)
    collector: str = Field("", pattern=r"^$|^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")  # what agents send to
    interval: float = Field(30.0, ge=1, le=3600)
    silent_cycles: int = Field(3, ge=1, le=100)
    secret_file: Optional[str] = None  # default: <state_dir>/monitoring.secret (made 0600 on first use)
    agent_python: str = Field("python3", pattern=r"^[A-Za-z0-9._/-]{1,255}$")
    agent_uri: str = Field("qemu:///system", pattern=r"^[a-z+]{1,32}://[A-Za-z0-9._/:@-]*$")


class ServeConfig(_Section):
    database: DatabaseConfig = DatabaseConfig()
    api: ApiConfig = ApiConfig()
    paths: PathsConfig = PathsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    hosts: HostsConfig = HostsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    hooks: list[HookConfig] = Field(default_factory=list)


def load_config(path: Path | None) -> ServeConfig:
    if path is None:
        return ServeConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return ServeConfig.model_validate(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError([Report("CONFIG_INVALID", f"cannot read {path}: {exc}", value=str(path))]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ReportError([Report("CONFIG_INVALID", f"{path} is not TOML: {exc}", value=str(path))]) from None
    except ValidationError as exc:
        raise ReportError([Report("CONFIG_INVALID", e["msg"], path=".".join(str(p) for p in e["loc"]),
                                  value=None if isinstance(e.get("input"), (dict, list)) else e.get("input"))
                           for e in exc.errors(include_url=False)]) from None


@dataclass
class Service:
    """Everything `serve` runs, built from a config. Tests build one and drive it directly."""

    config: ServeConfig
    state_dir: Path
    store: Store
    manager: Manager
    controller: Controller
    hooks: Hooks
    wake_event: threading.Event
    stop_event: threading.Event
    collector: Any = None  # drivers.monitor_udp.UdpCollector in push mode

    def start_collector(self) -> None:
        if self.collector is not None:
            m = self.config.monitoring
            address = self.collector.bind(m.bind, m.port)
            self.collector.start()
            log.warning("monitoring: collector listening on %s:%d", *address)

    def metrics(self) -> bytes:
        from appliance.core.metrics import exposition

        return exposition(self.store, self.collector.collector if self.collector else None, self.ha_facts)

    def ha_facts(self) -> dict:
        """This node's part of the pair, read where it runs: the manager runs on the active node."""
        import socket

        from appliance.runner.local import LocalRunner
        from appliance.verify import drbd_state, replication

        facts: dict = {"node": socket.gethostname(), "active": True, "drbd": {}, "replication": None}
        runner = LocalRunner()
        try:
            facts["drbd"] = drbd_state(runner)
        except OSError:
            pass
        if self.config.database.backend == "mysql":
            try:
                with self.store.read() as tx:
                    tx.execute("SHOW SLAVE STATUS")
                    names = [d[0] for d in tx.cursor.description or ()]
                    row = tx.one()
                fields = dict(zip(names, row)) if row else {}
                facts["replication"] = {"io": fields.get("Slave_IO_Running"), "sql": fields.get("Slave_SQL_Running"),
                                        "lag": str(fields.get("Seconds_Behind_Master") or "")}
            except Exception as exc:  # noqa: BLE001 (e.g. no SLAVE MONITOR grant: the metric is absent, said once)
                if not getattr(self, "_replication_warned", False):
                    self._replication_warned = True
                    log.warning("metrics: replication state unknown, its metrics are left out: %s", exc)
        return facts

    def stop_collector(self) -> None:
        if self.collector is not None:
            self.collector.stop()

    @property
    def token_file(self) -> Path:
        return self.state_dir / "admin.token"

    def ensure_admin(self) -> None:
        """The first start makes user admin. Its token reaches the file before the database, so a
        crash in between leaves a token nobody holds, never an administrator nobody can act as."""
        if not self.manager.users.has_users():
            token = secrets.token_urlsafe(32)
            atomic_write(self.token_file, (token + "\n").encode(), 0o600)
            self.manager.users.create(SYSTEM, "admin", role="admin", token=token)
            log.warning("created user admin; its token is in %s (mode 0600)", self.token_file)

    def reconcile(self) -> list[str]:
        """After a restart: crashed imports, then the controller's in-flight VMs and orphans."""
        return self.manager.images.settle_crashed_imports() + self.controller.reconcile()

    def loop(self) -> None:
        """The controller: run a pass whenever woken or every interval, until stopped."""
        interval = self.config.scheduler.interval
        while not self.stop_event.is_set():
            try:
                while self.controller.run_once() and not self.stop_event.is_set():
                    pass  # keep going while there is work: a deploy is several steps
            except Exception:  # a bug in one pass must not stop the manager
                log.exception("controller pass failed")
            self.wake_event.wait(interval)
            self.wake_event.clear()


def build(config: ServeConfig) -> Service:
    state_dir = Path(config.paths.state_dir) if config.paths.state_dir else default_home()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db_config = config.database
    url = DatabaseUrl("sqlite", path=db_config.path or str(state_dir / "manager.db")) if db_config.backend == "sqlite" \
        else DatabaseUrl("mysql", host=db_config.host, port=db_config.port, user=db_config.user,
                         password=db_config.password, name=db_config.name, unix_socket=db_config.unix_socket)
    db = open_database(url)
    migrate(db)
    store = Store(db)
    runner = LocalRunner()
    backends: dict[tuple[str, str], Any] = {}
    backends_lock = threading.Lock()
    fakes: dict[str, FakeHypervisor] = {}

    def hypervisor_for(host: Host) -> Any:
        if host.driver == "fake":
            # A fake host keeps its domains in a file: it outlives the manager like a real hypervisor.
            return fakes.setdefault(host.name, FakeHypervisor(state_file=state_dir / f"fake-{host.name}.json"))
        return LibvirtHypervisor(host.uri)

    def uri_of(name: str) -> str:
        with store.transaction() as tx:
            found = [h for h in store.hosts.where(tx) if h.name.lower() == name.lower()]
        if not found:
            raise DriverError(f"no host named {name!r}")
        return found[0].uri

    hosts = config.hosts
    host_runner = HostRunners(uri_of, Path(hosts.known_hosts) if hosts.known_hosts else state_dir / "known_hosts",
                              key_filename=hosts.ssh_key, user=hosts.ssh_user)

    def backend_for(ds: Datastore) -> Any:
        # One backend per datastore and parameter set, built by the registry (which checks the
        # parameters again: a row edited by hand cannot hand a backend a value it never accepted).
        key = (ds.backend, json.dumps([ds.path, ds.params], sort_keys=True))
        with backends_lock:
            if key not in backends:
                try:
                    backends[key] = storage_registry.build(ds.backend, runner, ds.path, ds.params, host_runner)
                except KeyError:
                    raise DriverError(f"datastore {ds.name}: no backend {ds.backend!r} in this manager") from None
                except ParamError as exc:
                    raise DriverError(f"datastore {ds.name}: {exc.field}={exc.value!r}: {exc.fix}") from None
            return backends[key]

    datastore_roots = config.paths.datastore_roots or [str(state_dir / "datastores")]
    # Never the datastores: an import from one copied another user's private image or VM disk.
    import_roots = config.paths.import_roots or [str(state_dir / "import")]
    wake_event, stop_event = threading.Event(), threading.Event()
    hooks = Hooks([Hook(h.on, tuple(h.command), h.timeout) for h in config.hooks], runner)
    s = config.scheduler
    settings = Settings(policy=Policy(s.policy, s.rank, s.datastore_policy), monitor_interval=s.monitor_interval,
                        resubmit_on_host_error=s.resubmit_on_host_error)
    controller = Controller(store, hypervisor_for, backend_for, hooks, SystemClock(), settings)
    manager = Manager(store, backend_for, wake=wake_event.set, datastore_paths=PathPolicy(datastore_roots),
                      import_paths=PathPolicy(import_roots), backend_types=storage_registry.TYPES)
    collector = _push_monitoring(config, state_dir, store, controller, host_runner) \
        if config.monitoring.mode == "push" else None
    return Service(config, state_dir, store, manager, controller, hooks, wake_event, stop_event, collector)


def _push_monitoring(config: ServeConfig, state_dir: Path, store: Store, controller: Controller, host_runner) -> Any:
    from appliance.core.collector import Collector
    from appliance.core.monitoring import PushMonitor, PushSettings
    from appliance.drivers.monitor_udp import UdpCollector
    from appliance.monitor_service import load_secret, make_probe

    m = config.monitoring
    if not m.collector:
        raise ReportError([Report("CONFIG_INVALID", "push monitoring needs the address agents send to",
                                  path="monitoring.collector", value=m.collector,
                                  fix="the pair's SAN floating address and the port, e.g. \"10.0.0.10:4124\"")])
    try:
        secret = load_secret(Path(m.secret_file) if m.secret_file else state_dir / "monitoring.secret")
    except DriverError as exc:
        raise ReportError([Report("CONFIG_INVALID", str(exc), path="monitoring.secret_file")]) from None

    def last_epoch(host_id: int) -> int:
        with store.read() as tx:
            row = tx.execute("SELECT epoch FROM mon_agents WHERE host_id = ?", (host_id,)).one()
        return int(row[0]) if row else 0

    probe = make_probe(host_runner, secret, m.collector, m.interval, m.agent_python, last_epoch, m.agent_uri,
                       state_dir)
    controller.settings.confirm_boot = True
    controller.push = PushMonitor(controller, probe, PushSettings(m.interval, m.silent_cycles))
    return UdpCollector(Collector(store.db, secret))


def serve(config_path: Path | None, bind: str | None = None, port: int | None = None, log_format: str = "text",
          access_log: bool = False) -> None:
    """Run the manager until SIGINT/SIGTERM. Reconciles before it answers any request."""
    import uvicorn

    from appliance.logs import configure

    log_config = configure(log_format, access_log=access_log)
    config = load_config(config_path)
    service = build(config)
    service.ensure_admin()
    for decision in service.reconcile():
        log.warning("startup: %s", decision)
    service.start_collector()
    worker = threading.Thread(target=service.loop, name="controller", daemon=True)
    worker.start()
    app = create_app(service.manager, metrics=service.metrics)
    try:
        uvicorn.run(app, host=bind or config.api.bind, port=port or config.api.port, log_config=log_config,
                    log_level="info" if access_log else "warning", access_log=access_log)
    finally:
        service.stop_event.set()
        service.wake_event.set()
        worker.join(timeout=30)
        service.stop_collector()
        service.hooks.close()
        service.store.db.close()
