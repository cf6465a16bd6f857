"""Manager fixtures: every database-backed test runs on SQLite and on a real MariaDB."""
from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from appliance.core.clock import VirtualClock
from appliance.core.controller import Controller, Settings
from appliance.core.db import MysqlDatabase, SqliteDatabase, migrate
from appliance.core.hooks import Hooks
from appliance.core.pools import Store
from appliance.core.actions import Manager
from appliance.core.authz import SYSTEM
from appliance.drivers.fake import FakeHypervisor
from appliance.runner.local import LocalRunner
from appliance.storage.qcow2 import Qcow2Backend
from tests.conftest import in_ci, require_tool

_names = itertools.count(1)


class MariaDB:
    """A private MariaDB instance on a unix socket, started for the test session."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.socket = str(directory / "mysqld.sock")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", "--user=root"], check=True, capture_output=True)
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.socket}", "--skip-networking",
             "--user=root", f"--pid-file={self.dir}/mysqld.pid", f"--log-error={self.dir}/error.log",
             "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        import pymysql

        while True:
            try:
                pymysql.connect(unix_socket=self.socket, user="root", password="").close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"MariaDB did not start; see {self.dir}/error.log")
                time.sleep(0.1)  # poll interval inside the deadline loop

    def database(self) -> MysqlDatabase:
        import pymysql

        name = f"appliance_test_{next(_names)}"
        conn = pymysql.connect(unix_socket=self.socket, user="root", password="")
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        conn.close()
        return MysqlDatabase(user="root", password="", database=name, unix_socket=self.socket)

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    missing = [t for t in ("mariadb-install-db", "mariadbd") if shutil.which(t) is None]
    if missing:
        if in_ci():
            pytest.fail(f"missing real component(s): {missing} (run `make deps`)")
        pytest.skip(f"missing {missing}")
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "mariadb"])
def database(request, tmp_path):
    if request.param == "sqlite":
        db = SqliteDatabase(str(tmp_path / "manager.db"))
    else:
        db = request.getfixturevalue("mariadb").database()
    migrate(db)
    yield db
    db.close()


class World:
    """A manager wired to fake hypervisors and real qcow2 datastores, driven step by step."""

    def __init__(self, db, tmp_path: Path, settings: Settings | None = None):
        require_tool("qemu-img")
        self.store = Store(db)
        self.backend = Qcow2Backend(LocalRunner())
        self.hypervisors: dict[str, FakeHypervisor] = {}
        self.clock = VirtualClock()
        self.hooks = Hooks([], None)
        self.controller = Controller(self.store, self.hypervisor_for, lambda ds: self.backend, self.hooks,
                                     self.clock, settings or Settings(monitor_interval=10.0))
        self.manager = Manager(self.store, lambda ds: self.backend)
        self.tmp = tmp_path

    def hypervisor_for(self, host):
        return self.hypervisors.setdefault(host.name, FakeHypervisor())

    def settle(self, passes: int = 10) -> None:
        for _ in range(passes):
            if not self.controller.run_once():
                return

    def basic(self, hosts: int = 2, image_mb: int = 16):
        """Hosts, an image datastore with one image, a system datastore."""
        (self.tmp / "images").mkdir(exist_ok=True)
        (self.tmp / "system").mkdir(exist_ok=True)
        made = [self.manager.hosts.create(SYSTEM, f"host{i}", driver="fake") for i in range(1, hosts + 1)]
        images = self.manager.datastores.create(SYSTEM, "images", str(self.tmp / "images"), kind="image")
        system = self.manager.datastores.create(SYSTEM, "system", str(self.tmp / "system"), kind="system")
        image = self.manager.images.create(SYSTEM, "base", images.id, size_mb=image_mb, public=True)
        self.controller.monitor_hosts(force=True)
        return made, images, system, image

    def vm(self, vm_id: int):
        return self.manager.vms.get(SYSTEM, vm_id)


@pytest.fixture
def world(database, tmp_path):
    return World(database, tmp_path)
