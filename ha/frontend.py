"""The HA frontend's CIB: the seed's two-node design, with its mistakes fixed.

Seed (002) -> here:
* stonith-enabled=false, no-quorum-policy=ignore -> fencing on with one device per node, corosync
  `two_node` (wait_for_all) and the default no-quorum-policy=stop; `priority-fencing-delay` (off
  by default: it delays every real failover by its value) lets the node that runs the services win
  a fence race.
* `ms` Master/Slave -> promotable clones, Promoted role.
* `property default-resource-stickiness` -> rsc_defaults resource-stickiness.
* lsb:one / lsb:lighttpd -> ocf:appliance:manager and ocf:appliance:proxy (lighttpd on our own
  config), so the distro's lighttpd service is untouched.
* vblade through AoEtarget dies of SIGPIPE when execd closes its pipe -> AoEtarget's `binary=` points
  at a wrapper that detaches vblade's output.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .cib import Cib, Clone, Colocation, Group, Location, Op, Order, Primitive, pairs


@dataclass(frozen=True)
class FenceSpec:
    name: str
    agent: str
    node: str  # the node this device fences
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FrontendSpec:
    cluster_name: str
    nodes: tuple[tuple[str, str], ...]  # (corosync node id, name)
    preferred: str
    stickiness: int
    san_vip: str
    san_prefix: int
    san_nic: str
    lan_vip: str
    lan_prefix: int
    lan_nic: str
    cloud_resource: str
    cloud_device: str
    vmdata_resource: str
    vmdata_device: str
    mount: str
    fstype: str
    export_dir: str
    export_clients: tuple[str, ...]
    export_options: str
    export_fsid: int
    aoe_shelf: int
    aoe_slot: int
    aoe_binary: str
    manager_config: str
    proxy_config: str
    proxy_pidfile: str
    proxy_port: int
    fencing_enabled: bool
    priority_fencing_delay: str
    fence_devices: tuple[FenceSpec, ...]
    # False in the lab: no kernel DRBD, device-mapper or NFS server, so no DRBD clones, Filesystem
    # or exports; the AoE export serves a file. Everything else is the production design.
    replicated_storage: bool = True
    dc_deadtime: str | None = None
    load_threshold: int | None = None  # percent; Pacemaker's default (80) when None
    # The lab's NFSv4 export: nfs-ganesha from userspace, bound to the SAN floating address.
    userspace_nfs_config: str | None = None
    userspace_nfs_pidfiles: tuple[str, str] = ("", "")  # (the agent's, ganesha's own)
    timeout_scale: int = 1  # [cluster] timeout_scale: every operation timeout times this


GROUP = "g_frontend"
EXPORTS_GROUP = "g_exports"


def drbd_clone(resource: str, primitive_id: str, clone_id: str) -> Clone:
    primitive = Primitive(
        id=primitive_id, standard="ocf", provider="linbit", type="drbd",
        params=pairs({"drbd_resource": resource}),
        ops=(Op("monitor", "29s", "20s", role="Promoted"), Op("monitor", "31s", "20s", role="Unpromoted"),
             Op("start", "0s", "240s"), Op("stop", "0s", "100s"), Op("promote", "0s", "90s"),
             Op("demote", "0s", "90s"), Op("notify", "0s", "90s")),
    )
    return Clone(id=clone_id, child=primitive, meta=pairs({
        "promotable": True, "promoted-max": 1, "promoted-node-max": 1, "clone-max": 2, "clone-node-max": 1,
        "notify": True}))


def _monitored(interval: str, timeout: str, start: str = "60s", stop: str = "60s") -> tuple[Op, ...]:
    return Op("monitor", interval, timeout), Op("start", "0s", start), Op("stop", "0s", stop)


def frontend_group(s: FrontendSpec) -> Group:
    members = []
    if s.replicated_storage:
        members += [
            Primitive("p_fs_one", "ocf", "Filesystem", "heartbeat",
                      pairs({"device": s.cloud_device, "directory": s.mount, "fstype": s.fstype}),
                      ops=_monitored("20s", "40s")),
            Primitive("p_nfsserver", "ocf", "nfsserver", "heartbeat",
                      pairs({"nfs_shared_infodir": f"{s.mount}/.nfs-state", "nfs_ip": s.san_vip}),
                      ops=_monitored("30s", "40s", start="90s", stop="90s")),
        ]
    for index, client in enumerate(s.export_clients if s.replicated_storage else (), start=1):
        members.append(Primitive(
            f"p_export_{index}", "ocf", "exportfs", "heartbeat",
            pairs({"clientspec": client, "directory": s.export_dir, "options": s.export_options,
                   "fsid": s.export_fsid, "unlock_on_stop": True, "wait_for_leasetime_on_stop": False}),
            ops=_monitored("30s", "40s")))
    # What the API needs: its addresses, the manager, the proxy in front of it. The proxy starts
    # once the manager answers: started first, it answered 503 for up to a second after the manager
    # was up (lighttpd holds a refusing backend down for a while), measured in the lab.
    members += [
        Primitive("p_ip_san", "ocf", "IPaddr2", "heartbeat",
                  pairs({"ip": s.san_vip, "cidr_netmask": s.san_prefix, "nic": s.san_nic}),
                  ops=_monitored("10s", "20s")),
        Primitive("p_ip_lan", "ocf", "IPaddr2", "heartbeat",
                  pairs({"ip": s.lan_vip, "cidr_netmask": s.lan_prefix, "nic": s.lan_nic}),
                  ops=_monitored("10s", "20s")),
        Primitive("p_manager", "ocf", "manager", "appliance", pairs({"config": s.manager_config}),
                  ops=_monitored("5s", "20s", start="120s", stop="120s")),
        Primitive("p_proxy", "ocf", "proxy", "appliance",
                  pairs({"config": s.proxy_config, "listen": f"{s.lan_vip}:{s.proxy_port}",
                         "pidfile": s.proxy_pidfile}),
                  ops=_monitored("5s", "20s", start="60s", stop="60s")),
    ]
    # priority: with priority-fencing-delay, the node running the group wins a fence race.
    return Group(GROUP, tuple(members), meta=pairs({"priority": 10}))


def exports_group(s: FrontendSpec) -> Group:
    """The exports the hypervisors use, apart from the API's group: a group restarts every member
    after the one that failed, so in one group a crashed manager also cut the VMs' AoE storage for
    a few seconds (and the lab's NFS). Here they only follow the SAN address (and, in production,
    the promoted DRBD data device), and start beside the manager during a failover."""
    members = [Primitive("p_aoe_data", "ocf", "AoEtarget", "heartbeat",
                         pairs({"device": s.vmdata_device, "nic": s.san_nic, "shelf": s.aoe_shelf,
                                "slot": s.aoe_slot, "binary": s.aoe_binary}),
                         ops=_monitored("20s", "20s"))]
    if s.userspace_nfs_config:
        # Two pid files: the agent writes its own, ganesha its own (-p); one file with two writers
        # raced and failed a start (seen with lighttpd).
        agent_pidfile, ganesha_pidfile = s.userspace_nfs_pidfiles
        members.append(Primitive(
            "p_nfs", "ocf", "anything", "heartbeat",
            pairs({"binfile": "/usr/bin/ganesha.nfsd", "pidfile": agent_pidfile,
                   "cmdline_options": f"-F -f {s.userspace_nfs_config} -L /var/log/appliance/ganesha.log "
                                      f"-p {ganesha_pidfile} -N NIV_EVENT"}),
            ops=_monitored("10s", "20s")))
    return Group(EXPORTS_GROUP, tuple(members))


def fence_primitive(device: FenceSpec) -> Primitive:
    params = dict(device.params)
    params["pcmk_host_list"] = device.node
    return Primitive(f"st_{device.name}", "stonith", device.agent, params=pairs(params),
                     ops=(Op("monitor", "60s", "20s"),))


def frontend_cib(s: FrontendSpec) -> Cib:
    """The whole desired configuration. Pure: same spec in, same CIB out."""
    group, exports = frontend_group(s), exports_group(s)
    constraints: list = [
        Location("loc_frontend_prefers_" + s.preferred, GROUP, s.preferred, "100"),
        Colocation("col_exports_with_san_ip", EXPORTS_GROUP, "p_ip_san"),
        Order("ord_san_ip_before_exports", "p_ip_san", EXPORTS_GROUP),
    ]
    resources: list = [group, exports]
    if s.replicated_storage:
        clone_one = drbd_clone(s.cloud_resource, "p_drbd_one", "ms_drbd_one")
        clone_data = drbd_clone(s.vmdata_resource, "p_drbd_data", "ms_drbd_data")
        resources = [clone_one, clone_data, group, exports]
        constraints = [
            # The frontend group pins both promotions to its node; the exports follow it there.
            Colocation("col_frontend_on_drbd_one", GROUP, clone_one.id, with_rsc_role="Promoted"),
            Colocation("col_frontend_on_drbd_data", GROUP, clone_data.id, with_rsc_role="Promoted"),
            Colocation("col_exports_on_drbd_data", EXPORTS_GROUP, clone_data.id, with_rsc_role="Promoted"),
            Order("ord_drbd_one_before_frontend", clone_one.id, GROUP, first_action="promote"),
            Order("ord_drbd_data_before_exports", clone_data.id, EXPORTS_GROUP, first_action="promote"),
        ] + constraints
    properties = {"cluster-name": s.cluster_name, "stonith-enabled": s.fencing_enabled,
                  "no-quorum-policy": "stop"}
    if s.dc_deadtime:
        properties["dc-deadtime"] = s.dc_deadtime
    if s.load_threshold is not None:
        properties["load-threshold"] = f"{s.load_threshold}%"
    if s.fencing_enabled and s.priority_fencing_delay.rstrip("smhin") not in ("", "0"):
        properties["priority-fencing-delay"] = s.priority_fencing_delay
    if s.fencing_enabled:
        for device in s.fence_devices:
            primitive = fence_primitive(device)
            resources.append(primitive)
            # A device never runs on the node it is meant to kill.
            constraints.append(Location(f"loc_{primitive.id}_avoids_{device.node}", primitive.id, device.node,
                                        "-INFINITY"))
            # Fencing before services when both start in one transition (the first install): a
            # throttled controller (a loaded node runs one action at a time) otherwise starts the
            # devices last, minutes after the services they protect (seen on the VM lab). Optional:
            # a device that cannot run never holds the group back.
            constraints.append(Order(f"ord_{primitive.id}_before_frontend", primitive.id, GROUP, kind="Optional"))
    return Cib(
        properties=pairs(properties),
        nodes=s.nodes,
        resources=tuple(scaled(r, s.timeout_scale) for r in resources),
        constraints=tuple(constraints),
        rsc_defaults=pairs({"resource-stickiness": s.stickiness, "migration-threshold": 3}),
        op_defaults=pairs({"timeout": f"{60 * s.timeout_scale}s"}),
    )


def scaled(resource, factor: int):
    """The resource with every operation timeout multiplied by `factor` (timeouts are "Ns")."""
    if factor == 1:
        return resource
    if isinstance(resource, Primitive):
        ops = tuple(replace(op, timeout=f"{int(op.timeout[:-1]) * factor}s") if op.timeout else op
                    for op in resource.ops)
        return replace(resource, ops=ops)
    if isinstance(resource, Group):
        return replace(resource, members=tuple(scaled(m, factor) for m in resource.members))
    if isinstance(resource, Clone):
        return replace(resource, child=scaled(resource.child, factor))
    raise TypeError(resource)
