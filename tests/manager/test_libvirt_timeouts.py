"""Unreachable libvirt hosts: connections open with a deadline, one attempt per URI, no lock shared by hosts.

Real libvirt-python throughout. The black hole is a listener on 127.0.0.1 that accepts and never answers;
the remote peer that can stop answering is a private libvirtd serving the test driver on a unix socket.
No assertion is about durations: each blocking call runs in a thread joined with a generous guard,
which only detects a hang; the checks themselves are about what happened (errors, attempts, threads).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from appliance.core.controller import Settings
from appliance.core.db import SqliteDatabase, migrate
from appliance.core.actions.vms import VmSpec
from appliance.core.authz import SYSTEM
from appliance.core.entities import VmState as S
from appliance.core.protocols import DiskSpec, DomainSpec, DriverError
from appliance.drivers.libvirt import LibvirtHypervisor, domain_xml
from tests.conftest import require_module, require_tool
from tests.manager.conftest import World

GUARD = 60.0  # seconds: only a hang takes this long; nothing asserts how long a call took

NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>8</active><nodes>1</nodes><sockets>1</sockets>
    <cores>8</cores><threads>1</threads></cpu>
  <memory>8388608</memory>
</node>
"""


class Call:
    """Run a call in a thread, keep its result or exception."""

    def __init__(self, function, *args):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(function, *args), daemon=True)
        self.thread.start()

    def _run(self, function, *args):
        try:
            self.result = function(*args)
        except Exception as exc:
            self.error = exc

    def wait(self, guard: float = GUARD) -> "Call":
        self.thread.join(guard)
        assert not self.thread.is_alive(), f"the call hung for {guard} s"
        return self


def until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)  # poll interval inside the guard


def attempts(uri: str) -> list[threading.Thread]:
    """The connection attempts in flight for the URI: one worker thread each."""
    return [t for t in threading.enumerate() if t.name == f"libvirt-connect {uri}"]


class BlackHole:
    """127.0.0.1:PORT accepts TCP connections and never writes a byte. Closing it ends them all."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # the accept loop checks for close() this often
        self.port = self.listener.getsockname()[1]
        self.uri = f"qemu+tcp://127.0.0.1:{self.port}/system"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.accepted.append(conn)

    def close(self):
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(GUARD)
        self.listener.close()
        for conn in self.accepted:
            conn.close()  # the client reads EOF: its hanging open() fails


@pytest.fixture
def black_hole():
    require_module("libvirt")
    hole = BlackHole()
    yield hole
    hole.close()
    for thread in attempts(hole.uri):  # no attempt outlives its test
        thread.join(GUARD)
        assert not thread.is_alive(), "the connection attempt did not end when the black hole closed"


class Libvirtd:
    """A private libvirtd with only the built-in test driver, on a unix socket: a remote peer to pause."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="appliance-libvirtd-"))  # short: a socket path has a length limit
        self.socket = self.dir / "libvirt-sock"
        self.uri = f"test+unix:///default?socket={self.socket}"
        (self.dir / "drivers").mkdir()
        (self.dir / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n')
        # An empty module directory: the qemu driver would need a libvirt-qemu user and refuse to start.
        env = {**os.environ, "LIBVIRT_DRIVER_DIR": str(self.dir / "drivers")}
        self.log = open(self.dir / "libvirtd.log", "wb")
        self.process = subprocess.Popen(
            ["libvirtd", "--config", str(self.dir / "libvirtd.conf"), "--pid-file", str(self.dir / "libvirtd.pid")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + GUARD
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"libvirtd did not start; see {self.dir}/libvirtd.log")
            time.sleep(0.05)  # poll interval inside the deadline loop

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket))
            return True
        except OSError:
            return False

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=GUARD)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def libvirtd():
    require_module("libvirt")
    require_tool("libvirtd")
    daemon = Libvirtd()
    yield daemon
    daemon.stop()


@pytest.fixture
def node_uri(tmp_path) -> str:
    """A private test-driver host of its own (8 CPUs, 8 GiB): a URI no other test has connected to."""
    require_module("libvirt")
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML)
    return f"test://{path}"


def test_a_black_hole_fails_at_the_deadline_then_fast_without_a_second_attempt(black_hole):
    first = Call(LibvirtHypervisor(black_hole.uri, connect_timeout=1).host_info).wait()
    assert isinstance(first.error, DriverError)
    assert str(first.error) == f"cannot connect to {black_hole.uri}: no answer within 1 s"
    [attempt] = attempts(black_hole.uri)  # still hanging in libvirt.open()

    second = Call(LibvirtHypervisor(black_hole.uri, connect_timeout=1).host_info).wait()
    assert isinstance(second.error, DriverError) and "still connecting" in str(second.error)
    assert attempts(black_hole.uri) == [attempt]  # the second call started no attempt of its own
    until(lambda: black_hole.accepted, "the attempt reached the black hole")
    assert len(black_hole.accepted) == 1

    black_hole.close()  # the late attempt fails now: nothing is cached, the URI may be tried again
    attempt.join(GUARD)
    assert not attempt.is_alive()
    assert black_hole.uri not in LibvirtHypervisor._connections
    assert black_hole.uri not in LibvirtHypervisor._attempts
    third = Call(LibvirtHypervisor(black_hole.uri, connect_timeout=GUARD).host_info).wait()
    assert isinstance(third.error, DriverError) and "still connecting" not in str(third.error)  # refused


def test_a_hanging_host_does_not_block_another_host(black_hole, node_uri):
    # A waits far longer than the guard: if B queued behind anything of A's, B's guard would fire.
    hanging = Call(LibvirtHypervisor(black_hole.uri, connect_timeout=3 * GUARD).host_info)
    until(lambda: attempts(black_hole.uri), "A's connection attempt started")

    healthy = LibvirtHypervisor(node_uri)  # never connected before: B opens while A's open hangs
    assert Call(healthy.host_info).wait().result.cpu_units == 800
    spec = DomainSpec("appliance-while-a-hangs", 1, 64, (DiskSpec("/tmp/x.qcow2", "vda"),))
    assert Call(healthy.ensure_running, spec).wait().error is None
    assert Call(LibvirtHypervisor("test:///default").host_info).wait().error is None
    assert healthy.domain_state(spec.name) == "running"
    # All of B happened while A was in flight: A's caller and A's attempt are both still waiting.
    assert hanging.thread.is_alive() and attempts(black_hole.uri)

    black_hole.close()
    assert isinstance(hanging.wait().error, DriverError)


def test_test_driver_define_start_stop_and_migrate(node_uri):
    source = LibvirtHypervisor("test:///default")
    spec = DomainSpec("appliance-timeouts-lifecycle", 1, 64, (DiskSpec("/tmp/x.qcow2", "vda"),),
                      metadata={"vm_id": "9"})
    source.ensure_absent(spec.name)
    source.ensure_running(spec)
    assert source.domains()[spec.name] == "running"
    defined = LibvirtHypervisor._connections["test:///default"].lookupByName(spec.name)
    assert defined.maxMemory() == 64 * 1024 and "appliance:vm_id" in defined.XMLDesc()
    assert 'type="test"' in domain_xml(spec, source.kind)
    source.ensure_stopped(spec.name)
    assert source.domain_state(spec.name) == "shutoff"
    source.ensure_running(spec)

    target = LibvirtHypervisor(node_uri)
    source.migrate(spec, target)  # the test driver cannot migrate: started on the target, removed here
    assert target.domain_state(spec.name) == "running" and source.domain_state(spec.name) is None
    target.ensure_absent(spec.name)
    assert target.domains() == {}
    with pytest.raises(DriverError):
        target.ensure_paused(spec.name)
    # One event loop for the process (keepalive needs it), however many hosts and connections.
    assert [t.name for t in threading.enumerate()].count("libvirt-event-loop") == 1


def test_keepalive_drops_a_peer_that_stops_answering(libvirtd):
    hypervisor = LibvirtHypervisor(libvirtd.uri, keepalive_interval=1, keepalive_count=1)
    assert hypervisor.host_info().cpu_units > 0
    libvirtd.pause()
    call = Call(hypervisor.host_info).wait()  # without keepalive this call never returns
    assert isinstance(call.error, DriverError) and "keepalive" in str(call.error)
    libvirtd.resume()
    assert hypervisor.host_info().cpu_units > 0  # the dead connection is replaced on the next call


def test_a_late_answer_is_cached_for_the_next_call(libvirtd):
    libvirtd.pause()  # connect() succeeds (the socket's backlog), the first reply never comes
    call = Call(LibvirtHypervisor(libvirtd.uri, connect_timeout=1).host_info).wait()
    assert isinstance(call.error, DriverError) and "no answer within 1 s" in str(call.error)
    [attempt] = attempts(libvirtd.uri)
    libvirtd.resume()
    attempt.join(GUARD)
    assert not attempt.is_alive()
    cached = LibvirtHypervisor._connections[libvirtd.uri]  # the worker published it
    assert LibvirtHypervisor(libvirtd.uri, connect_timeout=1).host_info().cpu_units > 0
    assert LibvirtHypervisor._connections[libvirtd.uri] is cached  # used, not reopened


class LibvirtWorld(World):
    """Hosts reach libvirt URIs by name; the API only accepts production URIs, the test picks its own."""

    def __init__(self, db, tmp_path: Path, uris: dict[str, str]):
        super().__init__(db, tmp_path, Settings(monitor_interval=1.0))
        self.uris = uris

    def hypervisor_for(self, host):
        return LibvirtHypervisor(self.uris[host.name], connect_timeout=1)


def passes_to_running(tmp_path: Path, hole_uri: str | None) -> int:
    """Controller passes from `vm create` to RUNNING on a healthy host, every host monitored on every pass."""
    tmp_path.mkdir()
    (tmp_path / "node.xml").write_text(NODE_XML)
    uris = {"healthy": f"test://{tmp_path}/node.xml", **({"hole": hole_uri} if hole_uri else {})}
    db = SqliteDatabase(str(tmp_path / "manager.db"))
    migrate(db)
    try:
        world = LibvirtWorld(db, tmp_path, uris)
        (tmp_path / "images").mkdir()
        (tmp_path / "system").mkdir()
        hosts = {name: world.manager.hosts.create(SYSTEM, name) for name in uris}
        images = world.manager.datastores.create(SYSTEM, "images", str(tmp_path / "images"), kind="image")
        world.manager.datastores.create(SYSTEM, "system", str(tmp_path / "system"), kind="system")
        image = world.manager.images.create(SYSTEM, "base", images.id, size_mb=16)
        world.controller.monitor_hosts(force=True)
        vm = world.manager.vms.create(SYSTEM, VmSpec("web", cpu=1.0, memory=256, disks=[image.id]))[0]
        for passes in range(1, 11):
            world.clock.sleep(1.0)  # every host is due again: the black hole is asked on every pass
            world.controller.run_once()
            current = world.vm(vm.id)
            if current.state == S.RUNNING:
                assert current.host_id == hosts["healthy"].id
                if hole_uri:
                    # Asked on every pass, it failed fast: the attempt of the first monitoring still hangs.
                    assert "still connecting" in world.manager.hosts.get(SYSTEM, hosts["hole"].id).error
                return passes
            assert current.state != S.FAILED, current.error
        raise AssertionError(f"VM still {current.state} after 10 passes")
    finally:
        db.close()


def test_a_black_holed_host_does_not_delay_a_deploy_on_a_healthy_host(black_hole, tmp_path):
    baseline = passes_to_running(tmp_path / "baseline", None)
    with_hole = passes_to_running(tmp_path / "hole", black_hole.uri)
    assert with_hole == baseline
    assert len(attempts(black_hole.uri)) == 1  # every pass after the first failed fast
