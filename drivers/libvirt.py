"""Hypervisor driver over libvirt: `test:///default` (the embedded default), qemu:///system, any URI.

The domain XML is built by a pure function; the driver only opens connections and calls libvirt.
"""
from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

from appliance.core.protocols import DomainSpec, DriverError, HostInfo

_STATES = {1: "running", 2: "running", 3: "paused", 4: "shutoff", 5: "shutoff", 6: "shutoff", 7: "paused"}


def domain_type(uri: str) -> str:
    scheme = urlparse(uri).scheme.split("+")[0]
    return {"test": "test", "qemu": "kvm", "xen": "xen"}.get(scheme, "kvm")


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
        element = ET.SubElement(devices, "disk", {"type": "file", "device": "disk"})
        ET.SubElement(element, "driver", {"name": "qemu", "type": disk.format, "cache": "none"})
        ET.SubElement(element, "source", {"file": disk.path})
        ET.SubElement(element, "target", {"dev": disk.target, "bus": "virtio"})
    for nic in spec.nics:
        element = ET.SubElement(devices, "interface", {"type": "bridge"})
        ET.SubElement(element, "source", {"bridge": nic.bridge})
        ET.SubElement(element, "mac", {"address": nic.mac})
        ET.SubElement(element, "model", {"type": "virtio"})
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


class LibvirtHypervisor:
    _connections: dict[str, object] = {}
    _lock = threading.Lock()

    def __init__(self, uri: str):
        self.uri = uri
        self.kind = domain_type(uri)

    def _conn(self):
        try:
            import libvirt
        except ImportError:
            raise DriverError("libvirt-python is not installed") from None
        with self._lock:
            conn = self._connections.get(self.uri)
            if conn is None or not conn.isAlive():
                libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
                try:
                    conn = self._connections[self.uri] = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise DriverError(f"cannot connect to {self.uri}: {exc}") from None
            return conn

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

    def host_info(self) -> HostInfo:
        info = self._call("host info", self._conn().getInfo)
        return HostInfo(cpu_units=int(info[2]) * 100, memory_mb=int(info[1]), hypervisor=self.kind)

    def domains(self) -> dict[str, str]:
        return {d.name(): _STATES.get(d.state()[0], "shutoff")
                for d in self._call("list domains", self._conn().listAllDomains)}

    def domain_state(self, name: str) -> str | None:
        domain = self._domain(name)
        return None if domain is None else _STATES.get(domain.state()[0], "shutoff")

    def ensure_running(self, spec: DomainSpec) -> None:
        domain = self._domain(spec.name)
        if domain is None:
            domain = self._call("define", self._conn().defineXML, domain_xml(spec, self.kind))
        state = _STATES.get(domain.state()[0], "shutoff")
        if state == "paused":
            self._call("resume", domain.resume)
        elif state == "shutoff":
            self._call("start", domain.create)

    def ensure_stopped(self, name: str, graceful: bool = True) -> None:
        domain = self._domain(name)
        if domain is None or not domain.isActive():
            return
        # The test driver stops at once; a real guest gets the ACPI request, then is destroyed.
        self._call("shutdown" if graceful else "destroy", domain.shutdown if graceful else domain.destroy)
        if domain.isActive():
            self._call("destroy", domain.destroy)

    def ensure_paused(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            raise DriverError(f"domain {name} does not exist")
        if _STATES.get(domain.state()[0]) == "running":
            self._call("suspend", domain.suspend)

    def ensure_absent(self, name: str) -> None:
        domain = self._domain(name)
        if domain is None:
            return
        if domain.isActive():
            self._call("destroy", domain.destroy)
        self._call("undefine", domain.undefine)

    def migrate(self, spec: DomainSpec, target: "LibvirtHypervisor") -> None:
        if target.domain_state(spec.name) == "running":
            self.ensure_absent(spec.name)  # already there: finish by cleaning the source
            return
        domain = self._domain(spec.name)
        if domain is not None and self.kind != "test" and domain.isActive():
            import libvirt

            flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            self._call("migrate", domain.migrate, target._conn(), flags, None, None, 0)
            return
        # The test driver cannot migrate: start on the target, then remove from the source.
        target.ensure_running(spec)
        self.ensure_absent(spec.name)
