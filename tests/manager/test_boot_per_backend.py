"""A VM on each backend, deployed by the real manager (API actions, the controller's prolog, the
backend's clone and disk source, the libvirt driver's domain XML), is started by a real qemu through
libvirt's embedded driver (qemu:///embed: libvirt's own qemu driver, in this process, standing in
for the host's libvirtd) and reaches RUNNING with its disk open through the rendered source: a file,
an rbd: disk with its cephx secret, an iSCSI LUN logged in with the host's initiator name.

qemu opens every disk when it starts: a source it cannot open fails the start, so RUNNING plus
qemu's own block list (query-block) is the proof. The guest has no OS; it sits in the firmware."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from appliance.core.actions import Manager, PathPolicy
from appliance.core.actions.vms import VmSpec
from appliance.core.authz import SYSTEM
from appliance.core.clock import SystemClock
from appliance.core.controller import Controller, Settings
from appliance.core.db import DatabaseUrl, migrate, open_database
from appliance.core.hooks import Hooks
from appliance.core.pools import Store
from appliance.runner.local import LocalRunner
from appliance.storage import registry
from tests.conftest import require_module, require_tool
from tests.manager.test_backend_contract import (CASES, _datastore, backend_params, ceph_cluster,  # noqa: F401
                                                 moosefs_cluster, tgt_target)  # (the fixtures, by name)

BOOTED = [name for name in sorted(CASES) if CASES[name].holds_data]
_LOOP: dict = {}


def _event_loop(libvirt) -> None:
    """The embedded driver needs an event loop in the process; one daemon thread runs it."""
    if not _LOOP:
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                                  daemon=True, name="libvirt-events")
        thread.start()
        _LOOP["thread"] = thread


@pytest.fixture(scope="module")
def embedded_driver():
    """qemu:///embed rooted in a directory of the module's own (one root per process: libvirt's rule)."""
    libvirt = require_module("libvirt")
    require_tool("qemu-system-x86_64")
    _event_loop(libvirt)
    # Short: qemu's monitor socket lives below it and a UNIX socket path has 107 bytes at most.
    root = Path(tempfile.mkdtemp(prefix="apl-lv-", dir="/tmp"))
    (root / "etc").mkdir()
    # qemu as root without namespaces: the test runs as root and its disks are in /tmp; no virtlogd.
    (root / "etc" / "qemu.conf").write_text('user = "root"\ngroup = "root"\ndynamic_ownership = 0\n'
                                            'remember_owner = 0\nnamespaces = [ ]\nstdio_handler = "file"\n')
    uri = f"qemu:///embed?root={root}"
    conn = libvirt.open(uri)
    try:
        yield uri, conn
    finally:
        from appliance.drivers.libvirt import LibvirtHypervisor

        shared = LibvirtHypervisor._connections.pop(uri, None)
        for c in (shared, conn):
            if c is not None:
                c.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def embedded(embedded_driver):
    """The module's embedded driver; every domain destroyed and undefined after the test."""
    uri, conn = embedded_driver
    try:
        yield uri, conn
    finally:
        for domain in conn.listAllDomains():
            if domain.isActive():
                domain.destroy()
            domain.undefine()


class QemuDirect:
    """qemu started by hand from the disk sources of the domain the manager asks for (the rbd case).

    libvirt 9.0's embedded driver cannot read a secret ("No current identity to elevate"), so an
    rbd disk with <auth> does not start there; its rendered <disk> is a golden file
    (tests/golden/drivers/domain-disk-rbd.xml) and qemu here opens the same source by the
    equivalent filename (qemu_filename), as the datastore's own cephx user."""

    def __init__(self, directory: Path, ceph_conf: str):
        self.directory, self.ceph_conf = directory, ceph_conf

    def host_info(self):
        from appliance.core.protocols import HostInfo
        return HostInfo(cpu_units=400, memory_mb=4096, hypervisor="qemu")

    def _pid(self, name: str) -> int | None:
        pid_file = self.directory / f"{name}.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text())
        return pid if Path(f"/proc/{pid}").exists() else None

    def domains(self) -> dict[str, str]:
        return {p.stem: "running" for p in self.directory.glob("*.pid") if self._pid(p.stem)}

    def domain_state(self, name: str) -> str | None:
        return "running" if self._pid(name) else None

    def ensure_running(self, spec) -> None:
        from appliance.drivers.libvirt import qemu_filename

        if self._pid(spec.name):
            return
        drives = [a for d in spec.disks for a in (
            "-drive", f"file={qemu_filename(d.where, self.ceph_conf)},format={d.where.format},if=virtio,cache=none")]
        subprocess.run(["qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "accel=kvm:tcg",
                        "-m", str(spec.memory_mb), "-daemonize", "-pidfile", str(self.directory / f"{spec.name}.pid"),
                        "-qmp", f"unix:{self.directory / spec.name}.qmp,server=on,wait=off", *drives],
                       check=True, capture_output=True, timeout=60)

    def query_block(self, name: str) -> list:
        import socket
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.directory / f"{name}.qmp"))
            reader = sock.makefile("r")
            reader.readline()  # the greeting
            for command in ("qmp_capabilities", "query-block"):
                sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
                answer = json.loads(reader.readline())
            return answer["return"]

    def ensure_stopped(self, name: str, graceful: bool = True) -> None:
        self.ensure_absent(name)

    def ensure_paused(self, name: str) -> None:
        raise AssertionError("not used")

    def ensure_absent(self, name: str) -> None:
        pid = self._pid(name)
        if pid:  # as libvirt's destroy: TERM (qemu closes its disks, rbd drops its watch), KILL after 10 s
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)  # until the kernel has it gone
        (self.directory / f"{name}.pid").unlink(missing_ok=True)

    def migrate(self, spec, target) -> None:
        raise AssertionError("not used")


def _manager(work: Path, hypervisor, datastores: Path):

    db = open_database(DatabaseUrl("sqlite", path=str(work / "manager.db")))
    migrate(db)
    store = Store(db)
    built: dict = {}

    def backend_for(ds):
        if ds.id not in built:
            built[ds.id] = registry.build(ds.backend, LocalRunner(), ds.path, ds.params)
        return built[ds.id]
    controller = Controller(store, lambda host: hypervisor, backend_for, Hooks([], None), SystemClock(),
                            Settings(monitor_interval=3600))
    manager = Manager(store, backend_for, datastore_paths=PathPolicy([str(datastores)]),
                      import_paths=PathPolicy([str(work)]), backend_types=registry.TYPES)
    return manager, controller


@pytest.mark.parametrize("variant", BOOTED + ["qcow2+cache"])
def test_a_vm_on_each_backend_runs_with_its_disk_opened_by_qemu(variant, embedded, tmp_path, request):
    """qcow2+cache: the VM's overlay reads its image through the host's SSD cache (nbdkit)."""
    import libvirt_qemu

    uri, conn = embedded
    name, cached = variant.split("+")[0], variant.endswith("+cache")
    fixture = {"rbd": "ceph_cluster", "iscsi": "tgt_target", "moosefs": "moosefs_cluster"}.get(name)
    if fixture:
        request.getfixturevalue(fixture)
    else:
        require_tool(*CASES[name].needs)
    params = backend_params(request, name)
    if cached:
        require_tool("nbdkit")
        cache_dir = tempfile.mkdtemp(prefix="apl-c-", dir="/tmp")  # short: a socket lives there

        def stop_caches():
            subprocess.run(["sh", "-c", f"for p in {cache_dir}/*.pid; do [ -f $p ] && kill $(cat $p); done; true"])
            shutil.rmtree(cache_dir, ignore_errors=True)
        request.addfinalizer(stop_caches)
        params = {**params, "cache_mb": 16, "cache_dir": cache_dir}
    work = tmp_path / "work"
    work.mkdir()
    base = Path(_datastore(name, tmp_path / "ds", request))  # for moosefs: in the MooseFS mount
    paths = {kind: base / kind for kind in ("images", "system")}
    for path in paths.values():
        path.mkdir()
    from appliance.drivers.libvirt import LibvirtHypervisor

    hypervisor = QemuDirect(work, params["conf"]) if name == "rbd" else LibvirtHypervisor(uri)
    if name == "rbd":
        request.addfinalizer(lambda: [hypervisor.ensure_absent(n) for n in list(hypervisor.domains())])
    manager, controller = _manager(work, hypervisor, base)
    manager.hosts.create(SYSTEM, "hv01", driver="fake")
    images = manager.datastores.create(SYSTEM, "images", str(paths["images"]), kind="image", backend=name,
                                       params=params)
    manager.datastores.create(SYSTEM, "system", str(paths["system"]), backend=name, params=params)
    image = manager.images.create(SYSTEM, "blank", images.id, size_mb=16, public=True)
    controller.monitor_hosts(force=True)
    vm = manager.vms.create(SYSTEM, VmSpec("boot", cpu=0.1, memory=64, disks=[image.id]))[0]
    deadline = time.monotonic() + 120
    while manager.vms.get(SYSTEM, vm.id).state not in ("RUNNING", "FAILED") and time.monotonic() < deadline:
        controller.run_once()
    got = manager.vms.get(SYSTEM, vm.id)
    assert got.state == "RUNNING", got.error
    if name == "rbd":
        blocks = hypervisor.query_block(f"appliance-{vm.id}")
    else:
        domain = conn.lookupByName(f"appliance-{vm.id}")
        assert domain.isActive()
        blocks = json.loads(libvirt_qemu.qemuMonitorCommand(domain, '{"execute": "query-block"}', 0))["return"]
    opened = [b for b in blocks if b.get("inserted")]
    assert len(opened) == 1, blocks
    inserted = opened[0]["inserted"]
    assert inserted["image"]["virtual-size"] == 16 * 1024 * 1024
    described = json.dumps(inserted)
    if name == "rbd":  # as the datastore's own cephx user
        assert f'\\"user\\": \\"{params["user"]}\\"' in json.dumps(inserted), inserted
    expected = {"rbd": lambda: f"{params['prefix']}vm-{vm.id}-disk-0",
                "iscsi": lambda: f"vm-{vm.id}-disk-0"}.get(name, lambda: str(paths["system"]))()
    assert expected in described, described  # qemu opened this VM's own disk, through its source
    if cached:  # and its image through the host's cache
        backing = inserted["image"]["backing-image"]["filename"]  # qemu's spelling: nbd+unix://?socket=...
        assert backing.startswith("nbd+unix:") and f"socket={cache_dir}/" in backing, backing
    disk = got.disks[0]["path"]
    backend = controller.backend_for(manager.datastores.get(SYSTEM, got.datastore_id))
    assert backend.verify(disk, image.path)

    manager.vms.action(SYSTEM, vm.id, "delete")  # the domain goes, then its disk
    deadline = time.monotonic() + 120
    while manager.vms.get(SYSTEM, vm.id).state != "DONE" and time.monotonic() < deadline:
        controller.run_once()
    assert manager.vms.get(SYSTEM, vm.id).state == "DONE"
    assert not [d for d in conn.listAllDomains() if d.isActive()] and not hypervisor.domains()
    assert not backend.verify(disk, image.path) and backend.vm_ids_with_disks(str(paths["system"])) == []
    if cached:  # qemu's reads of the image (the firmware reads the boot sector) went through the cache
        from appliance.runner.local import LocalRunner as Local
        from appliance.storage.cachehost import CacheHost
        assert CacheHost(Local(), cache_dir).stats(image.path).get("misses", 0) > 0
