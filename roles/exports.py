"""exports: /srv/cloud/one over NFSv4 and the VM data device over AoE, from whichever node is active."""
from __future__ import annotations

from appliance.ha import lsb
from appliance.inventory.load import Site
from appliance.storage import aoe, nfs

from . import layout
from .model import RUNNING_HERE, Check, FileSpec, RolePlan, Step, node_plans, restart_where_running, shell, text

NAME = "exports"
REQUIRES = ("drbd", "cluster")


def init_nfs_server_steps() -> list[Step]:
    """Debian starts nfs-server.service when the package is installed. The cluster starts the NFS
    server, not init: a passive node must never export a disk it does not own. These run in the
    base role, before the node joins the cluster: a replaced node that joined with init's server
    running was probed as a second active p_nfsserver, Pacemaker stopped it everywhere, the stop
    failed on the survivor and the survivor was fenced (VM lab, replace-node).
    nfs-server.service by its own name: nfs-kernel-server is an alias, and `is-enabled` answers
    "alias" with exit 0 for it, so the old check never held and every install ran `disable --now`,
    which stopped the kernel NFS server under Pacemaker on the active node (VM lab)."""
    return [Step("keep init from starting the NFS server", ("systemctl", "disable", "nfs-server.service"),
                 why="the cluster starts the NFS server on the active node only",
                 unless=shell("! systemctl is-enabled --quiet nfs-server.service")),
            Step("stop the NFS server init started", ("systemctl", "stop", "nfs-server.service"),
                 why="a fresh install starts it; where Pacemaker runs it, it is left alone",
                 unless=shell(f'! systemctl is-active --quiet nfs-server.service || {{ {RUNNING_HERE}; }}',
                              "p_nfsserver"))]


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    device = f"/dev/drbd{inv.drbd.vmdata.minor}"
    files = [
        FileSpec("/etc/idmapd.conf", text(nfs.idmapd_config(inv.idmap_domain))),
        FileSpec(layout.AOE_WRAPPER, text(aoe.vblade_wrapper(layout.LOG_DIR)), mode=0o755, check=Check("shell")),
    ]
    steps: list[Step] = []  # init's NFS server: the base role (init_nfs_server_steps), before the node joins
    if inv.lab.enabled:
        device = layout.LAB_AOE_FILE
        steps = [Step("create the lab's AoE backing file", shell('mkdir -p "$(dirname "$1")" && truncate -s 64M "$1"',
                                                                  device), unless=("test", "-e", device),
                      why="lab: AoE exports a file where production exports the DRBD device"),
                 Step("create the NFS export and ganesha's state directories",
                      ("install", "-d", "-m", "0755", inv.nfs.export, layout.NFS_RECOVERY),
                      unless=shell('test -d "$1" && test -d "$2"', inv.nfs.export, layout.NFS_RECOVERY),
                      why="lab: nfs-ganesha serves the export (no kernel NFS server)")]
        files.append(FileSpec(layout.NFS_CONFIG, text(nfs.ganesha_config(
            inv.nfs.export, tuple(inv.nfs_clients), tuple(inv.nfs.options), inv.nfs.fsid, inv.network.san_vip,
            inv.idmap_domain, layout.NFS_RECOVERY))))
    if inv.cluster.stack == "corosync":
        # vblade reads its options at start: a changed wrapper (vblade -d) takes effect only then.
        steps.append(restart_where_running("p_aoe_data", "restart the AoE export if its wrapper changed",
                                           (layout.AOE_WRAPPER,)))
    if inv.cluster.stack == "heartbeat":
        files += [
            FileSpec("/etc/exports.d/appliance.exports",
                     text(nfs.exports(inv.nfs.export, tuple(inv.nfs_clients), tuple(inv.nfs.options), inv.nfs.fsid))),
            FileSpec("/etc/init.d/appliance-aoe", text(lsb.init_script(
                "appliance-aoe", "AoE export of the VM data device", "/usr/sbin/vblade",
                aoe.vblade_args(inv.aoe.shelf, inv.aoe.slot, inv.nodes[0].san_interface, device),
                f"{layout.RUN_DIR}/aoe.pid", f"{layout.LOG_DIR}/vblade.log")), mode=0o755, check=Check("shell")),
        ]
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"NFSv4 {inv.nfs.export} to {', '.join(inv.nfs_clients)}; AoE e{inv.aoe.shelf}.{inv.aoe.slot} "
                    f"of {device} on {inv.nodes[0].san_interface}",
                    node_plans(names, {n: files for n in names}, {n: steps for n in names}))
