"""Cross-field checks on a structurally valid inventory. Pure: returns every problem found."""
from __future__ import annotations

import difflib
import ipaddress
import re
from collections import defaultdict
from typing import Iterable

from ..core.reports import Report, Severity
from .schema import Inventory
from .types import (FENCE_AGENT_PARAMETERS, FENCE_COMMON_PARAMETERS, LAB_FENCE_AGENT, LAB_VM_FENCE_AGENT,
                    PACEMAKER_FENCE_PARAMETERS)

# Where the appliance puts its own things on a node: roles/layout.py. The inventory sits below the roles and
# cannot import them; tests/unit/test_inventory.py asserts both lists agree, so neither can drift.
APPLIANCE_DIRS = ("/etc/appliance", "/usr/lib/appliance", "/var/lib/appliance", "/var/log/appliance", "/run/appliance",
                  "/opt/appliance", "/opt/appliance-releases", "/var/cache/appliance")
# Every path a role renders or creates, each with everything below it, except the operator's own manager.config
# (the same test plans sites with roles.registry.plan_site and asserts each rendered file is covered here).
# No operator path may be one of these, lie below one, or (a directory or file) hold one.
RESERVED_PATHS = (
    # system files and directories the roles own
    "/etc/hosts",  # a managed block
    "/etc/drbd.d", "/etc/corosync", "/etc/ha.d", "/etc/lvm/lvmlocal.conf", "/etc/idmapd.conf",
    "/etc/exports.d/appliance.exports", "/etc/mysql/mariadb.conf.d/60-appliance-replication.cnf",
    "/etc/init.d/appliance-aoe", "/etc/init.d/appliance-manager", "/etc/init.d/appliance-proxy",
    "/usr/lib/ocf/resource.d/appliance", "/var/lib/nfs/ganesha", "/srv/aoe/data.img",
    # inside the appliance's own directories
    "/etc/appliance/proxy", "/etc/appliance/nfs", "/etc/appliance/tls/proxy.crt", "/etc/appliance/tls/proxy.key",
    "/var/lib/appliance/cib.xml", "/usr/lib/appliance", "/var/log/appliance", "/run/appliance", "/opt/appliance",
    "/opt/appliance-releases", "/var/cache/appliance",
)
# Where a file the appliance renders from an operator's path (manager.config) may go: its own, persistent
# directories (the others are reserved whole above, or volatile).
RENDER_DIRS = ("/etc/appliance", "/var/lib/appliance")
# A directory the appliance mounts or creates (and chowns) must not be one of these ...
SYSTEM_DIRECTORIES = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
                      "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                      "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock", "/var/log", "/var/mail",
                      "/var/opt", "/var/run", "/var/spool", "/var/tmp")
# ... nor lie below one of these.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/tmp", "/usr", "/var/lib/corosync", "/var/lib/drbd", "/var/lib/heartbeat",
                "/var/lib/mysql", "/var/lib/nfs", "/var/lib/pacemaker", "/var/lock", "/var/log", "/var/run",
                "/var/tmp")
# Ports the nodes listen on whatever the inventory says (what, port).
FIXED_PORTS = (("the NFS server (2049)", 2049), ("rpcbind (111)", 111))
COROSYNC_KNET_PORT = 5405  # corosync.conf sets no port: knet's default
HTTP_REDIRECT_PORT = 80
# DRBD's resync-rate: KiB/s, DRBD_RESYNC_RATE_MIN..MAX (drbd_limits.h, 8.4 and 9 alike).
RESYNC_RATE_KIB = (1, 4 << 20)
_SIZE_UNITS_KIB = {"": 1, "K": 1, "M": 1 << 10, "G": 1 << 20, "T": 1 << 30}
_DRBD_DEVICE = re.compile(r"/dev/drbd(?:[0-9]+|/.*)")
# Fence parameters with a report of their own (a secret, or set by appliance).
_FENCE_SECRET_KEYS = ("password", "passwd")
_FENCE_SET_KEYS = ("pcmk_host_list", "pcmk_host_map")


def check_inventory(inv: Inventory) -> list[Report]:
    reports: list[Report] = []
    for check in (_nodes, _addresses, _interfaces, _drbd, _disks, _database, _fencing, _tls, _nfs, _hosts,
                  _corosync, _heartbeat, _paths, _ports, _lvm, _lab):
        reports.extend(check(inv))
    return reports


def _lab(inv: Inventory) -> list[Report]:
    if inv.lab.enabled and inv.lab.vm:
        return [Report("INVENTORY_INVALID_CHOICE", "[lab] enabled (the namespace lab, which skips DRBD and LVM) "
                       "and vm (QEMU machines, which skip nothing) exclude each other", path="lab.vm", value=True,
                       fix="keep the one `appliance lab up` wrote")]
    return []


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies below it (both normalised: types.AbsPath)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _overlap(a: str, b: str) -> bool:
    return within(a, b) or within(b, a)


def _duplicates(items: Iterable[tuple[str, object]], what: str) -> list[Report]:
    seen: dict[object, list[str]] = defaultdict(list)
    for path, value in items:
        seen[value].append(path)
    return [
        Report("INVENTORY_DUPLICATE", f"{what} {value!r} is used {len(paths)} times ({', '.join(paths)})",
               path=paths[1], value=value)
        for value, paths in seen.items() if len(paths) > 1
    ]


def _nodes(inv: Inventory) -> list[Report]:
    out = []
    if len(inv.nodes) != 2:
        out.append(Report("INVENTORY_NODE_COUNT", f"an HA frontend pair has 2 nodes, the inventory lists "
                          f"{len(inv.nodes)}", path="nodes", value=len(inv.nodes)))
    out += _duplicates(((f"nodes[{i}].name", n.name) for i, n in enumerate(inv.nodes)), "node name")
    names = {n.name for n in inv.nodes}
    if inv.cluster.preferred_node and inv.cluster.preferred_node not in names:
        out.append(Report("INVENTORY_UNKNOWN_NODE", f"preferred node {inv.cluster.preferred_node!r} is not in "
                          "[[nodes]]", path="cluster.preferred_node", value=inv.cluster.preferred_node))
    if inv.cluster.name in names:
        out.append(Report("INVENTORY_DUPLICATE", "the cluster name must differ from the node names (it names "
                          "the floating addresses in /etc/hosts)", path="cluster.name", value=inv.cluster.name))
    # Where the installer connects: one machine twice, or a floating address (whichever node holds it).
    floating = {inv.network.lan_vip: "network.lan_vip", inv.network.san_vip: "network.san_vip"}
    for i, n in enumerate(inv.nodes):
        if n.ssh.address is None:
            continue
        others = {a: f"nodes[{j}].{f}" for j, m in enumerate(inv.nodes) if j != i
                  for f, a in (("lan_ip", m.lan_ip), ("san_ip", m.san_ip))}
        clash = floating.get(n.ssh.address) or others.get(n.ssh.address)
        if clash:
            out.append(Report("INVENTORY_DUPLICATE", f"{n.name} would be reached at {n.ssh.address}, which is "
                              f"{clash}: the installer would configure another machine", path=f"nodes[{i}].ssh.address",
                              value=n.ssh.address, fix=f"give {n.name}'s own address, or leave ssh.address unset "
                              "(its lan_ip)"))
    out += _duplicates(((f"nodes[{i}].ssh.address", f"{n.ssh.address}:{n.ssh.port}")
                        for i, n in enumerate(inv.nodes) if n.ssh.address is not None), "ssh destination")
    return out


def _addresses(inv: Inventory) -> list[Report]:
    out = []
    lan = ipaddress.IPv4Network(inv.network.lan)
    san = ipaddress.IPv4Network(inv.network.san)
    if lan.overlaps(san):
        out.append(Report("INVENTORY_INVALID_NETWORK", f"the LAN {lan} and the SAN {san} overlap; the floating "
                          "addresses need one network each", path="network.san", value=str(san)))
    placed = [("network.lan_vip", inv.network.lan_vip, lan), ("network.san_vip", inv.network.san_vip, san)]
    for i, n in enumerate(inv.nodes):
        placed += [(f"nodes[{i}].lan_ip", n.lan_ip, lan), (f"nodes[{i}].san_ip", n.san_ip, san)]
    for path, address, network in placed:
        ip = ipaddress.IPv4Address(address)
        if ip not in network:
            out.append(Report("INVENTORY_ADDRESS_OUTSIDE_NETWORK", f"{address} is not inside {network}",
                              path=path, value=address))
        elif ip in (network.network_address, network.broadcast_address):
            out.append(Report("INVENTORY_INVALID_ADDRESS", f"{address} is the network or broadcast address of "
                              f"{network}", path=path, value=address))
    out += _duplicates(((p, a) for p, a, _ in placed), "address")
    if inv.network.lan_domain == inv.network.san_domain:
        out.append(Report("INVENTORY_DUPLICATE", "the LAN and the SAN share a domain: /etc/hosts would give each "
                          "node's name two addresses", path="network.san_domain", value=inv.network.san_domain))
    return out


def _interfaces(inv: Inventory) -> list[Report]:
    # A CIB resource parameter (IPaddr2 nic, AoEtarget nic) is one value for both nodes.
    out = []
    for i, n in enumerate(inv.nodes):
        for field in ("lan_interface", "san_interface"):
            value = getattr(n, field)
            if ":" in value:
                out.append(Report("INVENTORY_INVALID_INTERFACE", f"{value!r} is an address label, not an interface: "
                                  "vblade and IPaddr2 need the device itself", path=f"nodes[{i}].{field}",
                                  value=value, fix=f"name the device ({value.split(':')[0]!r})"))
    for field in ("lan_interface", "san_interface"):
        values = {getattr(n, field) for n in inv.nodes}
        if len(values) > 1:
            out.append(Report("INVENTORY_INVALID_INTERFACE", f"the nodes name their {field} differently "
                              f"({', '.join(sorted(values))}); the cluster moves one address between "
                              "interfaces of the same name", path=f"nodes[1].{field}",
                              value=getattr(inv.nodes[1], field),
                              fix="rename the interfaces alike on both nodes (udev rule or bond name)"))
    return out


def _drbd(inv: Inventory) -> list[Report]:
    vols = [("drbd.cloud", inv.drbd.cloud), ("drbd.vmdata", inv.drbd.vmdata)]
    out = _duplicates(((f"{p}.resource", v.resource) for p, v in vols), "DRBD resource name")
    out += _duplicates(((f"{p}.minor", v.minor) for p, v in vols), "DRBD minor")
    out += _duplicates(((f"{p}.meta_index", v.meta_index) for p, v in vols), "DRBD metadata index")
    # Ports: _ports, with every other port of a node.
    rate = re.fullmatch(r"([0-9]+)([KMGT]?)", inv.drbd.resync_rate)
    low, high = RESYNC_RATE_KIB
    if rate and not low <= int(rate.group(1)) * _SIZE_UNITS_KIB[rate.group(2)] <= high:
        out.append(Report("INVENTORY_OUT_OF_RANGE", f"resync_rate {inv.drbd.resync_rate} is outside DRBD's range of "
                          f"{low}K to {high}K per second", path="drbd.resync_rate", value=inv.drbd.resync_rate,
                          fix=f"give a rate from 1K to 4G ({high}K) per second, e.g. 100M; no unit means K"))
    return out


def _disks(inv: Inventory) -> list[Report]:
    out = []
    for i, n in enumerate(inv.nodes):
        d = n.disks
        out += _duplicates(((f"nodes[{i}].disks.{k}", getattr(d, k)) for k in ("metadata", "cloud", "vmdata")),
                           f"{n.name} disk")
        for k in ("metadata", "cloud", "vmdata"):
            out += _device(f"nodes[{i}].disks.{k}", getattr(d, k))
    return out


def _device(path: str, device: str) -> list[Report]:
    if not device.startswith("/dev/") or _DRBD_DEVICE.fullmatch(device):
        what = "a DRBD device" if _DRBD_DEVICE.fullmatch(device) else "not under /dev"
        return [Report("INVENTORY_NOT_A_DEVICE", f"{device} is {what}: a disk here is a local block device",
                       path=path, value=device)]
    return []


def _database(inv: Inventory) -> list[Report]:
    out = _duplicates(((f"nodes[{i}].database.server_id", inv.server_id(n)) for i, n in enumerate(inv.nodes)),
                      "MariaDB server_id")
    out += _duplicates(((f"nodes[{i}].database.auto_increment_offset", inv.auto_increment_offset(n))
                        for i, n in enumerate(inv.nodes)), "auto_increment_offset")
    for i, n in enumerate(inv.nodes):
        offset = inv.auto_increment_offset(n)
        if offset > inv.database.auto_increment_increment:
            out.append(Report("INVENTORY_OUT_OF_RANGE", f"auto_increment_offset {offset} is larger than "
                              f"auto_increment_increment {inv.database.auto_increment_increment}; ids would "
                              "collide", path=f"nodes[{i}].database.auto_increment_offset", value=offset))
    if inv.database.user == inv.database.replication_user:
        out.append(Report("INVENTORY_DUPLICATE", "the manager's database user and the replication user must "
                          "differ", path="database.replication_user", value=inv.database.replication_user))
    return out


def _fencing(inv: Inventory) -> list[Report]:
    f = inv.fencing
    out = _duplicates(((f"fencing.devices[{i}].name", d.name) for i, d in enumerate(f.devices)), "fence device")
    names = {n.name for n in inv.nodes}
    for i, d in enumerate(f.devices):
        if d.node not in names:
            out.append(Report("INVENTORY_UNKNOWN_NODE", f"fence device {d.name!r} fences {d.node!r}, which is "
                              "not in [[nodes]]", path=f"fencing.devices[{i}].node", value=d.node))
        allowed = FENCE_AGENT_PARAMETERS.get(d.agent, frozenset())
        for key in d.params:
            if key in _FENCE_SECRET_KEYS + _FENCE_SET_KEYS:
                what = ("a secret: put it in the secrets file under [fence." + d.name + "]"
                        if key in _FENCE_SECRET_KEYS else "set by appliance from `node`")
                out.append(Report("INVENTORY_UNKNOWN_FIELD", f"fence parameter {key!r} is {what}",
                                  path=f"fencing.devices[{i}].params.{key}", value=key))
            elif key not in allowed:
                out.append(_unknown_fence_parameter(i, d.agent, key, allowed))
        if d.agent == LAB_VM_FENCE_AGENT and not inv.lab.vm:
            out.append(Report("INVENTORY_INVALID_CHOICE", f"{d.agent} is the VM lab's power switch; it exists only "
                              "on `appliance lab up --kind vm` machines", path=f"fencing.devices[{i}].agent",
                              value=d.agent, fix="name the agent of the node's BMC or PDU (e.g. fence_ipmilan)"))
        if d.agent == LAB_FENCE_AGENT and not inv.lab.enabled:
            out.append(Report("INVENTORY_INVALID_CHOICE", f"{d.agent} is the lab's power switch; it exists only on "
                              "`appliance lab` nodes", path=f"fencing.devices[{i}].agent", value=d.agent,
                              fix="name the agent of the node's BMC or PDU (e.g. fence_ipmilan)"))
        for key in ("ip", "ipaddr"):
            address = d.params.get(key)
            if isinstance(address, str) and address in _frontend_addresses(inv):
                out.append(Report("INVENTORY_DUPLICATE", f"fence device {d.name!r} would reach {address}, "
                                  f"{_frontend_addresses(inv)[address]}: a node's own system cannot power it off",
                                  path=f"fencing.devices[{i}].params.{key}", value=address,
                                  fix="give the address of the node's BMC (IPMI, iDRAC, iLO) or PDU"))
    if not f.enabled:
        out.append(Report("INVENTORY_FENCING_DISABLED", "fencing is disabled: a split brain can run the "
                          "frontend on both nodes and corrupt DRBD and MariaDB", path="fencing.enabled",
                          value=False, severity=Severity.WARNING))
    else:
        fenced = {d.node for d in f.devices}
        for missing in sorted(names - fenced):
            out.append(Report("INVENTORY_FENCING_INCOMPLETE", f"no fence device fences {missing!r}",
                              path="fencing.devices", value=missing))
    return out


def _unknown_fence_parameter(i: int, agent: str, key: str, allowed: frozenset[str]) -> Report:
    own = sorted(allowed - FENCE_COMMON_PARAMETERS - PACEMAKER_FENCE_PARAMETERS)
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    common = " plus the common ones (delay, power_timeout, ...) and pcmk_*" if FENCE_COMMON_PARAMETERS <= allowed \
        else " plus pcmk_*"
    return Report("INVENTORY_UNKNOWN_FIELD", f"{agent} takes no parameter {key!r}",
                  path=f"fencing.devices[{i}].params.{key}", value=key,
                  fix=f"{hint}{agent} takes {', '.join(own)}{common}")


def _frontend_addresses(inv: Inventory) -> dict[str, str]:
    out = {inv.network.lan_vip: "network.lan_vip", inv.network.san_vip: "network.san_vip"}
    for i, n in enumerate(inv.nodes):
        out.setdefault(n.lan_ip, f"nodes[{i}].lan_ip")
        out.setdefault(n.san_ip, f"nodes[{i}].san_ip")
    return out


def _tls(inv: Inventory) -> list[Report]:
    tls = inv.proxy.tls
    out = []
    for field in ("certificate", "key"):
        value = getattr(tls, field)
        if value and "snakeoil" in value:
            out.append(Report("INVENTORY_SNAKEOIL_CERTIFICATE", "the snakeoil certificate is shared by every "
                              "Debian install; clients cannot tell this frontend from any other",
                              path=f"proxy.tls.{field}", value=value))
    given = [tls.certificate is not None, tls.key is not None]
    if tls.generate and any(given):
        out.append(Report("INVENTORY_TLS_INCOMPLETE", "give either certificate and key, or generate = true, "
                          "not both", path="proxy.tls.generate", value=True))
    elif not tls.generate and not all(given):
        out.append(Report("INVENTORY_TLS_INCOMPLETE", "the TLS proxy needs a certificate and its key",
                          path="proxy.tls", value=None))
    return out


def _nfs(inv: Inventory) -> list[Report]:
    mount, export = inv.filesystem.mount, inv.nfs.export
    out = []
    if not within(export, mount):
        # The seed exported /srv/cloud above the DRBD mount: the passive node would export an empty directory.
        out.append(Report("INVENTORY_INVALID_PATH", f"the NFS export {export} is not on the replicated filesystem "
                          f"mounted at {mount}", path="nfs.export", value=export,
                          fix=f"export {mount} or a directory below it"))
    if inv.nfs.clients is not None and not inv.nfs.clients:
        out.append(Report("INVENTORY_OUT_OF_RANGE", "nfs.clients is empty: an exports(5) line without a client "
                          "exports to every host", path="nfs.clients", value=[],
                          fix="list the hypervisors' networks, or remove the field (the SAN network)"))
    out += _duplicates(((f"nfs.clients[{i}]", c) for i, c in enumerate(inv.nfs.clients or ())), "NFS client")
    return out


def _hosts(inv: Inventory) -> list[Report]:
    out = _duplicates([(f"hosts[{i}].name", h.name) for i, h in enumerate(inv.hosts)]
                      + [(f"nodes[{i}].name", n.name) for i, n in enumerate(inv.nodes)], "host name")
    san = ipaddress.IPv4Network(inv.network.san)
    taken = {n.san_ip for n in inv.nodes} | {inv.network.san_vip}
    for i, h in enumerate(inv.hosts):
        if h.name == inv.cluster.name:
            out.append(Report("INVENTORY_DUPLICATE", f"hypervisor {h.name} has the cluster's name, which /etc/hosts "
                              "gives to the floating addresses", path=f"hosts[{i}].name", value=h.name))
        if ipaddress.IPv4Address(h.address) not in san:
            out.append(Report("INVENTORY_ADDRESS_OUTSIDE_NETWORK", f"hypervisor {h.name} at {h.address} is not on "
                              f"the SAN {san}; AoE does not cross routers", path=f"hosts[{i}].address",
                              value=h.address))
        elif ipaddress.IPv4Address(h.address) in (san.network_address, san.broadcast_address):
            out.append(Report("INVENTORY_INVALID_ADDRESS", f"{h.address} is the network or broadcast address of "
                              f"{san}", path=f"hosts[{i}].address", value=h.address))
        if h.address in taken:
            out.append(Report("INVENTORY_DUPLICATE", f"hypervisor {h.name} uses a frontend address",
                              path=f"hosts[{i}].address", value=h.address))
    out += _duplicates(((f"hosts[{i}].address", h.address) for i, h in enumerate(inv.hosts)), "host address")
    return out


def _corosync(inv: Inventory) -> list[Report]:
    c = inv.corosync
    out = _duplicates(((f"corosync.links[{i}]", link) for i, link in enumerate(c.links)), "corosync link")
    if (c.crypto_cipher == "none") != (c.crypto_hash == "none"):
        out.append(Report("INVENTORY_INVALID_CHOICE", "corosync needs a crypto_hash whenever it has a "
                          "crypto_cipher, and none without one", path="corosync.crypto_hash", value=c.crypto_hash))
    return out


def _heartbeat(inv: Inventory) -> list[Report]:
    h = inv.heartbeat
    out = []
    if not h.keepalive < h.warntime < h.deadtime:
        out.append(Report("INVENTORY_OUT_OF_RANGE", f"heartbeat needs keepalive < warntime < deadtime, got "
                          f"{h.keepalive} / {h.warntime} / {h.deadtime}", path="heartbeat.warntime",
                          value=h.warntime))
    if h.initdead < 2 * h.deadtime:
        out.append(Report("INVENTORY_OUT_OF_RANGE", f"initdead {h.initdead} should be at least twice deadtime "
                          f"({2 * h.deadtime}) so a booting peer is not declared dead", path="heartbeat.initdead",
                          value=h.initdead))
    return out


def _operator_paths(inv: Inventory) -> list[tuple[str, str, str]]:
    """(field, path, kind) of every node path the inventory chooses. kind: "render" a file the appliance writes,
    "read" a file it only reads, "dir" a directory it mounts or creates (and chowns). Devices: _disks, _lvm."""
    m, tls = inv.manager, inv.proxy.tls
    out = [("filesystem.mount", inv.filesystem.mount, "dir"), ("nfs.export", inv.nfs.export, "dir"),
           ("manager.state_dir", m.state_dir, "dir"), ("manager.config", m.config, "render")]
    out += [(f"proxy.tls.{f}", getattr(tls, f), "read") for f in ("certificate", "key") if getattr(tls, f)]
    return out


# Pairs of fields that may name the same path: exporting the whole replicated filesystem; a PEM file holding
# both the certificate and its key (lighttpd reads ssl.pemfile and ssl.privkey alike).
_SAME_PATH_ALLOWED = {frozenset({"filesystem.mount", "nfs.export"}),
                      frozenset({"proxy.tls.certificate", "proxy.tls.key"})}


def _paths(inv: Inventory) -> list[Report]:
    out: list[Report] = []
    fields = _operator_paths(inv)
    for field, path, kind in fields:
        problem = None
        if kind == "dir" and (path in SYSTEM_DIRECTORIES or any(within(path, t) for t in SYSTEM_TREES)):
            problem = Report("INVENTORY_SYSTEM_DIRECTORY", f"{path} is a system directory: appliance would mount "
                             "or create it, and change its owner", path=field, value=path)
        elif reserved := next((r for r in RESERVED_PATHS if _overlap(path, r)), None):
            what = "is" if path == reserved else ("lies inside" if within(path, reserved) else "holds")
            problem = Report("INVENTORY_PATH_RESERVED", f"{path} {what} {reserved}, which appliance's roles render",
                             path=field, value=path)
        elif any(within(d, path) for d in APPLIANCE_DIRS):
            problem = Report("INVENTORY_PATH_RESERVED", f"{path} holds the appliance's own directories "
                             f"({', '.join(d for d in APPLIANCE_DIRS if within(d, path))})", path=field, value=path)
        elif kind == "render" and not any(within(path, d) and path != d for d in RENDER_DIRS):
            problem = Report("INVENTORY_PATH_OUTSIDE_APPLIANCE", f"{path} is outside the appliance's own "
                             f"directories ({', '.join(RENDER_DIRS)}): render writes this file, with the database "
                             "password in it", path=field, value=path)
        if problem:
            out.append(problem)
    for i, (field_a, a, kind_a) in enumerate(fields):
        for field_b, b, kind_b in fields[i + 1:]:
            problem = None
            if a == b:
                if frozenset({field_a, field_b}) not in _SAME_PATH_ALLOWED:
                    problem = f"{field_a} and {field_b} are both {a}"
            elif within(b, a) and kind_a != "dir" or within(a, b) and kind_b != "dir":
                problem = f"{field_a} ({a}) and {field_b} ({b}): a file cannot hold another path"
            elif within(a, b) and kind_a == "render" or within(b, a) and kind_b == "render":
                problem = (f"{field_a} ({a}) and {field_b} ({b}): a file appliance renders on both nodes cannot "
                           "lie in a directory that is mounted, exported or created by the manager")
            if problem:
                out.append(Report("INVENTORY_PATH_CONFLICT", problem, path=field_b, value=b))
    return out


def _ports(inv: Inventory) -> list[Report]:
    """Every port one node listens on, whoever chose it: any two equal is refused, naming both."""
    shared: list[tuple[str, str | None, int]] = [(name, None, port) for name, port in FIXED_PORTS]
    if inv.cluster.stack == "corosync":
        shared.append((f"corosync (knet, {COROSYNC_KNET_PORT})", None, COROSYNC_KNET_PORT))
    else:
        shared.append(("heartbeat.udpport", "heartbeat.udpport", inv.heartbeat.udpport))
    if inv.proxy.redirect_http:
        shared.append((f"proxy.redirect_http ({HTTP_REDIRECT_PORT})", "proxy.redirect_http", HTTP_REDIRECT_PORT))
    shared += [(f, f, p) for f, p in (("manager.port", inv.manager.port), ("database.port", inv.database.port),
                                      ("proxy.port", inv.proxy.port), ("drbd.cloud.port", inv.drbd.cloud.port),
                                      ("drbd.vmdata.port", inv.drbd.vmdata.port))]
    out: list[Report] = []
    seen: set[tuple[str, str]] = set()
    for i, n in enumerate(inv.nodes):
        ports = list(shared)
        # sshd's port, unless the installer connects through another address (a NAT or jump host's port).
        if n.ssh.address in (None, n.lan_ip, n.san_ip):
            ports.append((f"nodes[{i}].ssh.port", f"nodes[{i}].ssh.port", n.ssh.port))
        for j, (name_a, field_a, port_a) in enumerate(ports):
            for name_b, field_b, port_b in ports[j + 1:]:
                if port_a != port_b or (name_a, name_b) in seen:
                    continue
                seen.add((name_a, name_b))
                field = field_b or field_a or ""
                out.append(Report("INVENTORY_PORT_CONFLICT", f"{name_a} and {name_b} both use port {port_a} on "
                                  f"{n.name}", path=field, value=port_a,
                                  fix=f"give {field} a port no other service of the node uses"))
    return out


def _lvm(inv: Inventory) -> list[Report]:
    """LVM must see the VM data PV on the DRBD device only, never on the disk below it (two PVs, one UUID)."""
    disks = {}
    for i, n in enumerate(inv.nodes):
        for k in ("cloud", "vmdata", "metadata"):
            disks.setdefault(getattr(n.disks, k), f"nodes[{i}].disks.{k}")
    out = _duplicates(((f"lvm.extra_accept[{j}]", d) for j, d in enumerate(inv.lvm.extra_accept)),
                      "lvm.extra_accept device")
    for j, device in enumerate(inv.lvm.extra_accept):
        path = f"lvm.extra_accept[{j}]"
        if device in disks:
            out.append(Report("INVENTORY_LVM_FILTER", f"{device} is {disks[device]}, a DRBD disk: LVM would see the "
                              "VM data volume group twice, on DRBD and below it", path=path, value=device))
        elif _DRBD_DEVICE.fullmatch(device):
            out.append(Report("INVENTORY_LVM_FILTER", f"{device} is a DRBD device: appliance accepts "
                              f"/dev/drbd{inv.drbd.vmdata.minor} itself and no other", path=path, value=device))
        else:
            out += _device(path, device)
    return out

