"""Hypervisor driver over libvirt: `test:///default` (the embedded default), qemu:///system, any URI.

The domain XML is built by a pure function; the driver only opens connections and calls libvirt.
Opening a connection is bounded by a deadline and never holds a lock shared between URIs: a host
that does not answer costs its callers the deadline once, then fails fast, and never delays
another host (see "Unreachable hosts" in docs/manager.md).
"""
from __future__ import annotations

import json

import logging
import threading
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

from appliance.core.protocols import DiskSource, DomainSpec, DriverError, HostInfo

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds a caller waits for libvirt.open(), which has no timeout of its own
KEEPALIVE_INTERVAL = 5  # seconds of silence before a keepalive probe on a remote connection;
KEEPALIVE_COUNT = 3  # a peer silent for interval * (count + 1) s is dropped: calls fail instead of hanging

_STATES = {1: "running", 2: "running", 3: "paused", 4: "shutoff", 5: "shutoff", 6: "shutoff", 7: "paused"}


def domain_type(uri: str) -> str:
    scheme = urlparse(uri).scheme.split("+")[0]
    return {"test": "test", "qemu": "kvm", "xen": "xen"}.get(scheme, "kvm")


def _host(element: ET.Element, address: str) -> None:
    name, _, port = address.rpartition(":")
    ET.SubElement(element, "host", {"name": name or address, **({"port": port} if name and port else {})})


def disk_element(devices: ET.Element, source: DiskSource, target: str) -> ET.Element:
    """One <disk> for a typed source: a file, a block device, or a network disk qemu opens itself
    (rbd with its cephx secret, iscsi, nbd). cache=none everywhere: live migration needs it."""
    kind = {"file": "file", "block": "block"}.get(source.kind, "network")
    element = ET.SubElement(devices, "disk", {"type": kind, "device": "disk"})
    ET.SubElement(element, "driver", {"name": "qemu", "type": source.format, "cache": "none"})
    if source.kind == "file":
        ET.SubElement(element, "source", {"file": source.path})
    elif source.kind == "block":
        ET.SubElement(element, "source", {"dev": source.path})
    else:
        attrs = {"protocol": source.kind, **({"name": source.name} if source.name else {})}
        src = ET.SubElement(element, "source", attrs)
        for address in source.hosts:
            _host(src, address)
        if source.initiator:  # qemu logs in as this name: the target's ACL admits only the VM's host
            ET.SubElement(ET.SubElement(src, "initiator"), "iqn", {"name": source.initiator})
        if source.auth_user and source.secret_uuid:  # the key itself stays in libvirt's secret
            auth = ET.SubElement(element, "auth", {"username": source.auth_user})
            ET.SubElement(auth, "secret", {"type": "ceph" if source.kind == "rbd" else "iscsi",
                                           "uuid": source.secret_uuid})
    ET.SubElement(element, "target", {"dev": target, "bus": "virtio"})
    return element


def qemu_filename(source: DiskSource, ceph_conf: str = "") -> str:
    """The same disk as qemu's own filename, for `qemu-img info` or `qemu-io` to open it exactly as
    the rendered <disk> names it (what the contract tests check). Pure."""
    if source.kind in ("file", "block"):
        return source.path
    if source.kind == "rbd":
        options = [f"id={source.auth_user}"] if source.auth_user else []
        options += [f"conf={ceph_conf}"] if ceph_conf else []
        return ":".join([f"rbd:{source.name}", *options])
    host = source.hosts[0] if source.hosts else ""
    if source.kind == "iscsi" and source.initiator:  # the URL form has no initiator name
        target, _, lun = source.name.rpartition("/")
        return "json:" + json.dumps({"driver": "raw", "file": {
            "driver": "iscsi", "transport": "tcp", "portal": host, "target": target, "lun": int(lun),
            "initiator-name": source.initiator}}, sort_keys=True)
    if source.kind == "iscsi":
        return f"iscsi://{host}/{source.name}"
    return f"nbd://{host}/{source.name}" if source.name else f"nbd://{host}"


def domain_xml(spec: DomainSpec, kind: str) -> str:
    """The libvirt domain definition. Pure: the same spec gives the same bytes."""
    root = ET.Element("domain", {"type": kind})
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "memory", {"unit": "MiB"}).text = str(spec.memory_mb)
    ET.SubElement(root, "vcpu").text = str(spec.vcpu)
    if spec.metadata:
        meta = ET.SubElement(ET.SubElement(root, "metadata"), "appliance:vm",
                             {"xmlns:appliance": "https://appliance.invalid/xmlns/vm/1"})
        for key, value in sorted(spec.metadata.items()):
            ET.SubElement(meta, f"appliance:{key}").text = value
    os_ = ET.SubElement(root, "os")
    ET.SubElement(os_, "type", {"arch": "x86_64"}).text = "hvm"
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")  # without it a guest ignores the shutdown request
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "restart"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    for disk in spec.disks:
        disk_element(devices, disk.where, disk.target)
    for nic in spec.nics:
        element = ET.SubElement(devices, "interface", {"type": "bridge"})
        ET.SubElement(element, "source", {"bridge": nic.bridge})
        ET.SubElement(element, "mac", {"address": nic.mac})
        ET.SubElement(element, "model", {"type": "virtio"})
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


class _Attempt:
    """One libvirt.open() in flight. It cannot be cancelled, so it runs in a daemon thread of its own."""

    def __init__(self, uri: str):
        self.uri = uri
        self.started = time.monotonic()
        self.done = threading.Event()
        self.conn = None
        self.error = ""
        self.late = False  # a caller gave up on it
        self.thread: threading.Thread | None = None


_setup_lock = threading.Lock()
_event_loop: threading.Thread | None = None


def _quiet(_ctx, _err) -> None:
    """Errors arrive as exceptions; libvirt's default handler would also print them to stderr."""


def _run_event_loop(libvirt) -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:
            log.warning("libvirt event loop: %s", exc)
            time.sleep(1.0)  # a loop that keeps failing must not spin


def _libvirt():
    """The libvirt module, with the error handler and the event loop set up once per process.

    The event loop must be registered before the first connection opens: keepalive needs it."""
    global _event_loop
    try:
        import libvirt
    except ImportError:
        raise DriverError("libvirt-python is not installed") from None
    if _event_loop is None:
        with _setup_lock:
            if _event_loop is None:
                libvirt.registerErrorHandler(_quiet, None)  # errors arrive as exceptions
                libvirt.virEventRegisterDefaultImpl()
                thread = threading.Thread(target=_run_event_loop, args=(libvirt,), name="libvirt-event-loop",
                                          daemon=True)
                thread.start()
                _event_loop = thread
    return libvirt


def _is_remote(uri: str) -> bool:
    # The test driver runs in this process: it has no peer to probe and refuses setKeepAlive.
    return urlparse(uri).scheme != "test"


class LibvirtHypervisor:
    """One host. Connections are shared by URI across instances and threads.

    Each URI has its own lock, held only for dictionary updates and the local isAlive() check, never
    around a call that can wait on the network; so a host that hangs cannot block another host.
    (One dict operation is atomic in CPython: different URIs may update the shared dicts at once.)"""

    _connections: dict[str, object] = {}
    _attempts: dict[str, _Attempt] = {}  # at most one open() in flight per URI
    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()  # guards _locks only

    def __init__(self, uri: str, connect_timeout: float = CONNECT_TIMEOUT,
                 keepalive_interval: int = KEEPALIVE_INTERVAL, keepalive_count: int = KEEPALIVE_COUNT):
        self.uri = uri
        self.kind = domain_type(uri)
        self.connect_timeout = connect_timeout
        # The first instance to open a URI's shared connection sets its keepalive.
        self.keepalive = (keepalive_interval, keepalive_count)

    @classmethod
    def _uri_lock(cls, uri: str) -> threading.Lock:
        with cls._locks_guard:
            return cls._locks.setdefault(uri, threading.Lock())

    def _conn(self):
        libvirt = _libvirt()
        with self._uri_lock(self.uri):
            conn = self._connections.get(self.uri)
            if conn is not None:
                if self._alive(libvirt, conn):
                    return conn
                # Dropped, not closed: another thread may still hold it; the last reference closes it.
                del self._connections[self.uri]
            attempt = self._attempts.get(self.uri)
            if attempt is None:
                attempt = self._attempts[self.uri] = _Attempt(self.uri)
                attempt.thread = threading.Thread(target=self._open, args=(libvirt, attempt, self.keepalive),
                                                  name=f"libvirt-connect {self.uri}", daemon=True)
                attempt.thread.start()
        # Wait only until this attempt's own deadline: once it has passed, a black hole costs ~0 s per call.
        elapsed = time.monotonic() - attempt.started
        if not attempt.done.wait(max(0.0, self.connect_timeout - elapsed)):
            if elapsed >= self.connect_timeout:
                raise DriverError(f"cannot connect to {self.uri}: still connecting, {elapsed:.0f} s so far")
            attempt.late = True
            raise DriverError(f"cannot connect to {self.uri}: no answer within {self.connect_timeout:g} s")
        if attempt.conn is None:
            raise DriverError(f"cannot connect to {self.uri}: {attempt.error}")
        return attempt.conn

    @classmethod
    def _open(cls, libvirt, attempt: _Attempt, keepalive: tuple[int, int]) -> None:
        """The worker: whenever open() returns, even long after every caller gave up, publish the outcome."""
        try:
            attempt.conn = libvirt.open(attempt.uri)
            if _is_remote(attempt.uri) and keepalive[0] > 0:
                try:
                    if attempt.conn.setKeepAlive(*keepalive) == 1:
                        log.info("%s: the peer does not support keepalive", attempt.uri)
                except libvirt.libvirtError as exc:  # a driver without keepalive still gives a usable connection
                    log.info("%s: no keepalive: %s", attempt.uri, exc)
        except libvirt.libvirtError as exc:
            attempt.error = str(exc)
        except Exception as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        finally:  # the attempt must end whatever happened, or its URI would stay "still connecting"
            with cls._uri_lock(attempt.uri):
                if cls._attempts.get(attempt.uri) is attempt:
                    del cls._attempts[attempt.uri]
                if attempt.conn is not None:
                    cls._connections[attempt.uri] = attempt.conn
            if attempt.late:
                log.warning("%s: the connection attempt that timed out %s after %.0f s", attempt.uri,
                            "succeeded" if attempt.conn is not None else f"failed ({attempt.error})",
                            time.monotonic() - attempt.started)
            attempt.done.set()

    @staticmethod
    def _alive(libvirt, conn) -> bool:
        try:
            return conn.isAlive() == 1  # local state only: no round trip
        except libvirt.libvirtError:
            return False

    def _domain(self, name: str):
        import libvirt

        try:
            return self._conn().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise DriverError(str(exc)) from None

    def _call(self, what: str, function, *args):
        import libvirt

        try:
            return function(*args)
        except libvirt.libvirtError as exc:
            raise DriverError(f"{what}: {exc}") from None

    def _state(self, domain) -> str:
        # A call on a connection that keepalive dropped raises: a DriverError fails this VM, not the whole pass.
        return _STATES.get(self._call("domain state", domain.state)[0], "shutoff")

    def _active(self, domain) -> bool:
        return bool(self._call("domain state", domain.isActive))

    def host_info(self) -> HostInfo:
        info = self._call("host info", self._conn().getInfo)
        return HostInfo(cpu_units=int(info[2]) * 100, memory_mb=int(info[1]), hypervisor=self.kind)

    def domains(self) -> dict[str, str]:
        return {d.name(): self._state(d)
                for d in self._call("list domains", self._conn().listAllDomains)}

    def domain_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """{domain name: (cpu time ns, memory KiB, net rx bytes, net tx bytes)} of the running ones,
        in one call (the monitoring agent turns cpu time into usage between two samples)."""
        import libvirt

        conn = self._conn()
        out: dict[str, tuple[int, int, int, int]] = {}
        try:
            records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON |
                                             libvirt.VIR_DOMAIN_STATS_INTERFACE,
                                             libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        except libvirt.libvirtError:  # a driver without bulk stats (the test driver): one info() each
            for domain in self._call("list domains", conn.listAllDomains):
                if self._active(domain):
                    _, _, memory, _, cpu_time = self._call("domain info", domain.info)
                    out[domain.name()] = (int(cpu_time), int(memory), 0, 0)
            return out
        for domain, stats in records:
            nets = int(stats.get("net.count", 0))
            out[domain.name()] = (int(stats.get("cpu.time", 0)), int(stats.get("balloon.current", 0)),
                                  sum(int(stats.get(f"net.{i}.rx.bytes", 0)) for i in range(nets)),
                                  sum(int(stats.get(f"net.{i}.tx.bytes", 0)) for i in range(nets)))
        return out

    def domain_state(self, name: str) -> str | None:
        domain = self._domain(name)
        return None if domain is None else self._state(domain)

    def ensure_running(self, spec: DomainSpec) -> None:
        domain = self._domain(spec.name)
        if domain is None:
            domain = self._call("define", self._conn().defineXML, domain_xml(spec, self.kind))
        state = self._state(domain)
        if state == "paused":
            self._call("resume", domain.resume)
        elif state == "shutoff":
            self._call("start", domain.create)

    def ensure_stopped(self, name: str, graceful: bool = True) -> None:
        domain = self._domain(name)
        if domain is None or not self._active(domain):
            return
        # The test driver stops at once; a real guest gets the ACPI request, then is destroyed.
        self._call("shutdown" if graceful else "destroy", domain.shutdown if graceful else domain.destroy)
        if self._active(domain):
            self._call("destroy", domain.destroy)

    def ensure_paused(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            raise DriverError(f"domain {name} does not exist")
        if self._state(domain) == "running":
            self._call("suspend", domain.suspend)

    def ensure_absent(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            return
        if self._active(domain):
            self._call("destroy", domain.destroy)
        self._call("undefine", domain.undefine)

    def migrate(self, spec: DomainSpec, target: "LibvirtHypervisor") -> None:
        if target.domain_state(spec.name) == "running":
            self.ensure_absent(spec.name)  # already there: finish by cleaning the source
            return
        domain = self._domain(spec.name)
        if domain is not None and self.kind != "test" and self._active(domain):
            import libvirt

            flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            self._call("migrate", domain.migrate, target._conn(), flags, None, None, 0)
            return
        # The test driver cannot migrate: start on the target, then remove from the source.
        target.ensure_running(spec)
        self.ensure_absent(spec.name)
