"""A single-node Ceph (one monitor, one manager, one OSD on memstore) for the storage tests and the
RBD benchmark: cephx on, a pool for RBD, one client user per datastore. Everything lives in one
directory; `down` stops the daemons by the pids recorded there. Not for production: one OSD, pool
size 1, data in memory.

    python -m appliance.lab.ceph up DIR      # prints the conf path
    python -m appliance.lab.ceph down DIR
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MON_ADDR = "127.0.0.1"
MEMSTORE_BYTES = 4 * 1024 ** 3  # the OSD's memory store: the pool's capacity
DAEMONS = ("mon.a", "mgr.x", "osd.0")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((MON_ADDR, 0))
        return probe.getsockname()[1]


def conf_text(directory: Path, fsid: str, v2_port: int, v1_port: int, memstore_bytes: int = MEMSTORE_BYTES) -> str:
    """ceph.conf for the single node. Pure. One replica, small placement groups, every file of the
    cluster under `directory`; cephx required everywhere."""
    d = str(directory)
    return "\n".join([
        "[global]",
        f"fsid = {fsid}",
        f"mon host = v2:{MON_ADDR}:{v2_port},v1:{MON_ADDR}:{v1_port}",
        "mon initial members = a",
        f"public addr = {MON_ADDR}",
        "ms bind ipv6 = false",
        "auth cluster required = cephx",
        "auth service required = cephx",
        "auth client required = cephx",
        "osd pool default size = 1",
        "osd pool default min size = 1",
        "osd pool default pg num = 8",
        "osd pool default pgp num = 8",
        "osd crush chooseleaf type = 0",
        "mon allow pool size one = true",
        "mon allow pool delete = true",
        "mon warn on pool no redundancy = false",
        "mon data avail warn = 2",
        "mon data avail crit = 1",
        f"run dir = {d}/run",
        f"admin socket = {d}/run/$name.asok",
        f"log file = {d}/log/$name.log",
        f"keyring = {d}/$name.keyring",
        f"mon data = {d}/mon.$id",
        f"osd data = {d}/osd.$id",
        f"mgr data = {d}/mgr.$id",
        "osd objectstore = memstore",
        f"memstore device bytes = {memstore_bytes}",
        "rbd default features = 3",
        "",
    ])


@dataclass(frozen=True)
class Cluster:
    directory: Path

    @property
    def conf(self) -> Path:
        return self.directory / "ceph.conf"

    @property
    def monitors(self) -> str:
        """The v1 address, as libvirt's <host> names a monitor."""
        return (self.directory / "monitors").read_text().strip()

    def ceph(self, *args: str, timeout: float = 60) -> str:
        return _run(["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args], timeout=timeout)

    def pool(self, name: str) -> None:
        """An RBD pool (idempotent)."""
        self.ceph("osd", "pool", "create", name, "8", "8")
        _run(["rbd", "-c", str(self.conf), "pool", "init", name], timeout=60)
        # `ceph df` (a datastore's capacity) lists a new pool only once the manager has its stats.
        _wait(f"pool {name} in ceph df", lambda: any(
            p.get("name") == name for p in json.loads(self.ceph("df", "--format", "json")).get("pools", [])), 60)

    def user(self, name: str, pool: str) -> Path:
        """A cephx client for one datastore, allowed RBD on `pool` only; its keyring, 0600."""
        keyring = self.directory / f"client.{name}.keyring"
        text = self.ceph("auth", "get-or-create", f"client.{name}", "mon", "profile rbd", "osd",
                         f"profile rbd pool={pool}", "mgr", f"profile rbd pool={pool}")
        tmp = keyring.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, keyring)
        return keyring


def _run(argv: list[str], timeout: float = 60, **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return result.stdout


def _spawn(directory: Path, name: str, argv: list[str]) -> None:
    kind, ident = name.split(".")
    log = open(directory / "log" / f"{name}.stdout", "ab")
    process = subprocess.Popen(argv + ["-f", "-c", str(directory / "ceph.conf")], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (directory / f"{name}.pid").write_text(f"{process.pid}\n")


def _wait(what: str, check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.3)  # poll interval inside the deadline
    raise RuntimeError(f"ceph lab: {what} did not happen in {seconds:g} s")


def up(directory: Path, memstore_bytes: int = MEMSTORE_BYTES) -> Cluster:
    """A fresh cluster in `directory` (emptied of an earlier one first: stop it with `down`).
    memstore_bytes: the capacity the OSD reports; memory is used only for what is written."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not _ours(directory):
        raise RuntimeError(f"ceph lab: {directory} holds files this lab did not make; give an empty or new directory")
    down(directory)
    for sub in ("run", "log", "mon.a", "mgr.x", "osd.0"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    conf = directory / "ceph.conf"
    v2_port, v1_port = free_port(), free_port()  # two clusters (a lab, a test) never collide
    conf.write_text(conf_text(directory, fsid, v2_port, v1_port, memstore_bytes))
    (directory / "monitors").write_text(f"{MON_ADDR}:{v1_port}\n")
    os.chmod(directory, 0o700)  # keyrings inside
    mon_keyring, admin_keyring = directory / "mon.keyring", directory / "client.admin.keyring"
    _run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"])
    _run(["ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
          "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *"])
    _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)])
    for keyring in (mon_keyring, admin_keyring):
        os.chmod(keyring, 0o600)
    monmap = directory / "monmap"
    _run(["monmaptool", "--create", "--addv", "a", f"[v2:{MON_ADDR}:{v2_port},v1:{MON_ADDR}:{v1_port}]",
          "--fsid", fsid, str(monmap)])
    _run(["ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(monmap), "--keyring", str(mon_keyring)])
    _spawn(directory, "mon.a", ["ceph-mon", "-i", "a"])
    cluster = Cluster(directory)
    _wait("the monitor answering", lambda: bool(cluster.ceph("mon", "stat", timeout=15)), 60)
    cluster.ceph("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *",
                 "-o", str(directory / "mgr.x.keyring"))
    _spawn(directory, "mgr.x", ["ceph-mgr", "-i", "x"])
    osd_uuid = str(uuid.uuid4())
    osd_id = cluster.ceph("osd", "new", osd_uuid).strip()
    cluster.ceph("auth", "get-or-create", f"osd.{osd_id}", "mon", "allow profile osd", "mgr", "allow profile osd",
                 "osd", "allow *", "-o", str(directory / f"osd.{osd_id}.keyring"))
    _run(["ceph-osd", "-c", str(conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], timeout=120)
    _spawn(directory, f"osd.{osd_id}", ["ceph-osd", "-i", osd_id])
    _wait("the OSD up", lambda: json.loads(cluster.ceph("osd", "stat", "--format", "json")).get("num_up_osds") == 1,
          120)
    return cluster


def _ours(directory: Path) -> bool:
    """A directory `up` made: its ceph.conf keeps its files there and it recorded the monitors."""
    conf = directory / "ceph.conf"
    return (directory / "monitors").is_file() and conf.is_file() and f"mon data = {directory}/mon.$id" in conf.read_text()


def down(directory: Path) -> None:
    """Stop the daemons whose pid files are in `directory`, and remove the cluster's files; a
    directory `up` did not make is left alone."""
    directory = Path(directory)
    if not directory.exists() or not _ours(directory):
        return
    for name in DAEMONS:
        pid_file = directory / f"{name}.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        try:
            os.killpg(pid, signal.SIGKILL)  # memstore: nothing to flush
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
    if directory.exists():
        subprocess.run(["rm", "-rf", "--", *[str(p) for p in directory.iterdir()]], check=False)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "up":
        print(up(Path(argv[2])).conf)
    else:
        down(Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
