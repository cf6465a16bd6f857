"""drbd: the two replicated disks (cloud directory, VM data), identical config on both nodes."""
from __future__ import annotations

from appliance.ha import drbd
from appliance.inventory.load import Site

from . import layout
from .model import Check, FileSpec, RolePlan, Step, node_plans, text
from .specs import drbd_resources

NAME = "drbd"
REQUIRES = ("base",)
NOTE = ("DRBD needs its kernel module: `appliance render --validate` checks these files with drbdadm's own parser "
        "(`drbdadm dump`); the commands only run on real nodes")


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    version = inv.drbd.version
    resources = drbd_resources(inv)
    common = FileSpec(f"{layout.DRBD_DIR}/global_common.conf",
                      text(drbd.global_common_config(version, inv.drbd.resync_rate, site.secrets.drbd_shared_secret,
                                                    "pacemaker" if inv.cluster.stack == "corosync" else "dopd")),
                      mode=0o600, secret=True)
    files, node_steps = {}, {}
    for node in inv.nodes:
        check = Check("drbd", (("version", version), ("node", node.name), ("address", node.san_ip)))
        files[node.name] = [common] + [
            FileSpec(f"{layout.DRBD_DIR}/{res.name}.res", text(drbd.resource_config(version, res, purpose)),
                     check=check)
            for res, purpose in resources]
        steps = []
        for res, _ in resources:
            steps += [Step(f"create metadata for {res.name}", tuple(drbd.create_md_cmd(version, res.name)),
                           why="first install only: a disk that has metadata keeps it", once=True),
                      Step(f"bring up {res.name}", tuple(drbd.up_cmd(version, res.name)))]
        if node.name == inv.preferred.name:
            steps += [Step(f"start the initial sync of {res.name} from {node.name}",
                           tuple(drbd.initial_primary_cmd(version, res.name)),
                           why="first install only: both disks are empty, one must be declared the source",
                           once=True) for res, _ in resources]
            cloud = resources[0][0]
            steps.append(Step(f"make the {inv.filesystem.fstype} filesystem on {cloud.device}",
                              (f"mkfs.{inv.filesystem.fstype}", "-L", cloud.name[:16], cloud.device), once=True,
                              why="first install only: apply runs it only when blkid finds no filesystem (mkfs asks nothing off a tty)"))
        node_steps[node.name] = steps
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"DRBD {version}: " + ", ".join(f"{r.name} on {r.device}" for r, _ in resources),
                    node_plans(names, files, node_steps), notes=(NOTE,))
