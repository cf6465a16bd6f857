"""Inventory -> the plain specs that ha/ and storage/ builders take. Pure."""
from __future__ import annotations

from appliance.ha.corosync import CorosyncNode
from appliance.ha.drbd import DrbdHost, DrbdResource
from appliance.ha.frontend import FenceSpec, FrontendSpec
from appliance.inventory.load import Site
from appliance.inventory.schema import DrbdVolume, Inventory

from . import layout


def drbd_resource(inv: Inventory, volume: DrbdVolume, disk: str) -> DrbdResource:
    hosts = tuple(DrbdHost(name=n.name, node_id=inv.node_id(n) - 1, address=n.san_ip,
                           disk=getattr(n.disks, disk), meta_disk=n.disks.metadata) for n in inv.nodes)
    return DrbdResource(name=volume.resource, minor=volume.minor, port=volume.port, meta_index=volume.meta_index,
                        hosts=hosts)


def drbd_resources(inv: Inventory) -> tuple[tuple[DrbdResource, str], ...]:
    """(resource, purpose) for the cloud directory and the VM data volume group."""
    return ((drbd_resource(inv, inv.drbd.cloud, "cloud"), f"replicated {inv.filesystem.mount}, exported over NFS"),
            (drbd_resource(inv, inv.drbd.vmdata, "vmdata"),
             f"VM data: LVM volume group {inv.lvm.volume_group}, exported over AoE"))


def link_address(inv: Inventory, node_name: str, link: str) -> str:
    node = inv.node(node_name)
    return node.san_ip if link == "san" else node.lan_ip


def corosync_nodes(inv: Inventory) -> tuple[CorosyncNode, ...]:
    return tuple(CorosyncNode(name=n.name, node_id=inv.node_id(n),
                              addresses=tuple(link_address(inv, n.name, link) for link in inv.corosync.links))
                 for n in inv.nodes)


def certificate_paths(inv: Inventory) -> tuple[str, str]:
    tls = inv.proxy.tls
    if tls.generate:
        return layout.GENERATED_CERTIFICATE, layout.GENERATED_KEY
    assert tls.certificate and tls.key  # guaranteed by validation
    return tls.certificate, tls.key


def frontend_spec(site: Site) -> FrontendSpec:
    inv = site.inventory
    first = inv.nodes[0]
    fence = tuple(
        FenceSpec(name=d.name, agent=d.agent, node=d.node,
                  params=tuple((k, _param(v)) for k, v in d.params.items())
                  + ((("password", site.secrets.fence_passwords[d.name]),)
                     if d.name in site.secrets.fence_passwords else ()))
        for d in inv.fencing.devices)
    return FrontendSpec(
        cluster_name=inv.cluster.name,
        nodes=tuple((str(inv.node_id(n)), n.name) for n in inv.nodes),
        preferred=inv.preferred.name,
        stickiness=inv.cluster.stickiness,
        san_vip=inv.network.san_vip, san_prefix=inv.prefix(inv.network.san), san_nic=first.san_interface,
        lan_vip=inv.network.lan_vip, lan_prefix=inv.prefix(inv.network.lan), lan_nic=first.lan_interface,
        cloud_resource=inv.drbd.cloud.resource, cloud_device=f"/dev/drbd{inv.drbd.cloud.minor}",
        vmdata_resource=inv.drbd.vmdata.resource,
        vmdata_device=layout.LAB_AOE_FILE if inv.lab.enabled else f"/dev/drbd{inv.drbd.vmdata.minor}",
        mount=inv.filesystem.mount, fstype=inv.filesystem.fstype,
        export_dir=inv.nfs.export, export_clients=tuple(inv.nfs_clients), export_options=",".join(inv.nfs.options),
        export_fsid=inv.nfs.fsid,
        aoe_shelf=inv.aoe.shelf, aoe_slot=inv.aoe.slot, aoe_binary=layout.AOE_WRAPPER,
        manager_config=inv.manager.config,
        proxy_config=layout.PROXY_CONFIG, proxy_pidfile=layout.PROXY_PIDFILE, proxy_port=inv.proxy.port,
        fencing_enabled=inv.fencing.enabled, priority_fencing_delay=inv.fencing.priority_fencing_delay,
        fence_devices=fence,
        replicated_storage=not inv.lab.enabled,
        dc_deadtime="5s" if inv.lab.enabled else None,
        userspace_nfs_config=layout.NFS_CONFIG if inv.lab.enabled else None,
        userspace_nfs_pidfiles=(layout.NFS_PIDFILE, layout.GANESHA_PIDFILE),
        timeout_scale=inv.cluster.timeout_scale,
        load_threshold=inv.cluster.load_threshold,
    )


def _param(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"  # fence agents take 1/0 for flags such as lanplus
    return str(value)
