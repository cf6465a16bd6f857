"""lvm: the volume group for VM disks, on the DRBD data device only."""
from __future__ import annotations

from appliance.ha import drbd
from appliance.inventory.load import Site
from appliance.storage import lvm

from .model import Check, FileSpec, RolePlan, Step, node_plans, text

NAME = "lvm"
REQUIRES = ("drbd",)
NOTE = ("LVM needs device-mapper to activate anything: `appliance render --validate` checks lvmlocal.conf with "
        "`lvmconfig --validate`; pvcreate/vgcreate only run on real nodes")


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    device = f"/dev/drbd{inv.drbd.vmdata.minor}"
    config = FileSpec("/etc/lvm/lvmlocal.conf", text(lvm.lvmlocal_config((device, *inv.lvm.extra_accept))),
                      check=Check("lvm"))
    names = [n.name for n in inv.nodes]
    create = [Step(f"create the physical volume on {device}", tuple(lvm.pvcreate_cmd(device)), once=True,
                   why="first install only, on the node where DRBD is primary"),
              Step(f"create volume group {inv.lvm.volume_group}",
                   tuple(lvm.vgcreate_cmd(inv.lvm.volume_group, device)), once=True),
              Step(f"deactivate {inv.lvm.volume_group}", ("vgchange", "--activate", "n", inv.lvm.volume_group),
                   once=True, why="the hypervisors use it over AoE; the frontend keeps it inactive")]
    # The last first-install step that needs DRBD primary: give both resources back to Pacemaker.
    create += [Step(f"hand {volume.resource} to Pacemaker", tuple(drbd.secondary_cmd(inv.drbd.version,
                                                                                       volume.resource)), once=True)
               for volume in (inv.drbd.cloud, inv.drbd.vmdata)]
    create = [Step(s.what, s.argv, s.why, s.once, unless=("vgs", inv.lvm.volume_group)) for s in create]
    notes = (NOTE,) + (("lab: no device-mapper; lvmlocal.conf is written and validated, the steps not run",)
                       if inv.lab.enabled else ())
    return RolePlan(NAME, f"volume group {inv.lvm.volume_group} on {device}; LVM sees only the DRBD device",
                    node_plans(names, {n: [config] for n in names},
                               {} if inv.lab.enabled else {inv.preferred.name: create}), notes=notes)
