"""Cross-field checks on a structurally valid inventory. Pure: returns every problem found."""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Iterable

from ..core.reports import Report, Severity
from .schema import Inventory


def check_inventory(inv: Inventory) -> list[Report]:
    reports: list[Report] = []
    for check in (_nodes, _addresses, _interfaces, _drbd, _disks, _database, _fencing, _tls, _nfs, _hosts,
                  _corosync, _heartbeat):
        reports.extend(check(inv))
    return reports


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
    return out


def _interfaces(inv: Inventory) -> list[Report]:
    # A CIB resource parameter (IPaddr2 nic, AoEtarget nic) is one value for both nodes.
    out = []
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
    out += _duplicates(((f"{p}.port", v.port) for p, v in vols), "DRBD port")
    out += _duplicates(((f"{p}.meta_index", v.meta_index) for p, v in vols), "DRBD metadata index")
    for p, v in vols:
        if v.port in (inv.database.port, inv.manager.port, inv.proxy.port):
            out.append(Report("INVENTORY_DUPLICATE", f"DRBD port {v.port} clashes with a service port",
                              path=f"{p}.port", value=v.port))
    return out


def _disks(inv: Inventory) -> list[Report]:
    out = []
    for i, n in enumerate(inv.nodes):
        d = n.disks
        out += _duplicates(((f"nodes[{i}].disks.{k}", getattr(d, k)) for k in ("metadata", "cloud", "vmdata")),
                           f"{n.name} disk")
    return out


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
        for key in d.params:
            if key in ("password", "passwd", "pcmk_host_list", "pcmk_host_map"):
                what = ("a secret: put it in the secrets file under [fence." + d.name + "]"
                        if key in ("password", "passwd") else "set by appliance from `node`")
                out.append(Report("INVENTORY_UNKNOWN_FIELD", f"fence parameter {key!r} is {what}",
                                  path=f"fencing.devices[{i}].params.{key}", value=key))
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
    if export != mount and not export.startswith(mount + "/"):
        # The seed exported /srv/cloud above the DRBD mount: the passive node would export an empty directory.
        return [Report("INVENTORY_INVALID_PATH", f"the NFS export {export} is not on the replicated filesystem "
                       f"mounted at {mount}", path="nfs.export", value=export,
                       fix=f"export {mount} or a directory below it")]
    return []


def _hosts(inv: Inventory) -> list[Report]:
    out = _duplicates([(f"hosts[{i}].name", h.name) for i, h in enumerate(inv.hosts)]
                      + [(f"nodes[{i}].name", n.name) for i, n in enumerate(inv.nodes)], "host name")
    san = ipaddress.IPv4Network(inv.network.san)
    taken = {n.san_ip for n in inv.nodes} | {inv.network.san_vip}
    for i, h in enumerate(inv.hosts):
        if ipaddress.IPv4Address(h.address) not in san:
            out.append(Report("INVENTORY_ADDRESS_OUTSIDE_NETWORK", f"hypervisor {h.name} at {h.address} is not on "
                              f"the SAN {san}; AoE does not cross routers", path=f"hosts[{i}].address",
                              value=h.address))
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
