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
        # First-install steps only run where a resource has no metadata yet.
        for i, step in enumerate(steps):
            steps[i] = Step(step.what, step.argv, step.why, step.once,
                            unless=("sh", "-c", 'drbdadm dstate "$1" >/dev/null 2>&1', "sh",
                                    step.what.rsplit(" ", 1)[-1]) if step.once else
                            ("sh", "-c", 'drbdadm role "$1" >/dev/null 2>&1', "sh", step.what.rsplit(" ", 1)[-1]))
        node_steps[node.name] = [] if inv.lab.enabled else steps
    names = [n.name for n in inv.nodes]
    notes = (NOTE,) + (("lab: no DRBD kernel module; the files are written and validated, the steps not run",)
                       if inv.lab.enabled else ())
    return RolePlan(NAME, f"DRBD {version}: " + ", ".join(f"{r.name} on {r.device}" for r, _ in resources),
                    node_plans(names, files, node_steps), notes=notes)
