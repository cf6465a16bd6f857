"""lvm: the volume group for VM disks, on the DRBD data device only.

pvcreate and vgcreate are planned only where the drbd role's decision makes the preferred node
primary for a first install (roles/drbd.py) and the facts show no physical volume on the device;
each re-reads blkid's "nothing found" before it runs. A device that holds a PV or any other
signature is never touched, and neither is a volume group that already exists.
"""
from __future__ import annotations

from appliance.ha import drbd
from appliance.inventory.load import Site
from appliance.storage import lvm

from .drbd import decide
from .facts import SiteFacts
from .model import Check, FileSpec, RolePlan, Step, blank_device, node_plans, shell, text

NAME = "lvm"
REQUIRES = ("drbd",)
USES_FACTS = True
NOTE = ("LVM needs device-mapper to activate anything: `appliance render --validate` checks lvmlocal.conf with "
        "`lvmconfig --validate`; pvcreate/vgcreate only run on real nodes")


def plan(site: Site, facts: SiteFacts | None = None) -> RolePlan:
    inv = site.inventory
    device = f"/dev/drbd{inv.drbd.vmdata.minor}"
    vg = inv.lvm.volume_group
    config = FileSpec("/etc/lvm/lvmlocal.conf", text(lvm.lvmlocal_config((device, *inv.lvm.extra_accept))),
                      check=Check("lvm"))
    names = [n.name for n in inv.nodes]
    preferred = inv.preferred.name
    decisions = decide(site, facts)
    vmdata, cloud = decisions[inv.drbd.vmdata.resource], decisions[inv.drbd.cloud.resource]
    lvm_facts = facts.nodes[preferred].lvm if facts is not None and preferred in facts.nodes else None
    notes = (NOTE,)
    create: list[Step] = []
    if vmdata.primary_here:
        known = lvm_facts is not None and lvm_facts.state == "read"
        pv_group = lvm_facts.physical_volumes.get(device) if known else None
        if facts is not None and not known:
            notes += (f"{preferred}: LVM could not be read; pvcreate/vgcreate not planned",)
        elif pv_group is None and (facts is None or vg not in lvm_facts.volume_groups):
            create.append(Step(f"create the physical volume on {device}", tuple(lvm.pvcreate_cmd(device)),
                               once=True, destructive=True, requires=blank_device(device),
                               why="a new primary DRBD device where blkid finds nothing"))
        if (facts is None or (known and vg not in lvm_facts.volume_groups)) and pv_group in (None, ""):
            create.append(Step(f"create volume group {vg}", tuple(lvm.vgcreate_cmd(vg, device)), once=True,
                               destructive=True, why=f"no volume group {vg} exists",
                               requires=shell('! vgs "$1" >/dev/null 2>&1 && '
                                              '! pvs --noheadings -o vg_name "$2" 2>/dev/null | grep -q "[^ ]"',
                                              vg, device)))
        if any(step.what.startswith("create volume group") for step in create) or \
                (known and vg in lvm_facts.volume_groups):
            create.append(Step(f"deactivate {vg}", ("vgchange", "--activate", "n", vg), once=True,
                               why="the hypervisors use it over AoE; the frontend keeps it inactive"))
    # The last first-install step that needs DRBD primary: give the resources a first install
    # promoted back to Pacemaker. While a cluster runs, nothing is demoted here.
    create += [Step(f"hand {d.resource} to Pacemaker", tuple(drbd.secondary_cmd(inv.drbd.version, d.resource)),
                    once=True, why="a first install made it primary; no cluster manages it yet")
               for d in (cloud, vmdata) if d.hand_back]
    if inv.lab.enabled:
        notes += ("lab: no device-mapper; lvmlocal.conf is written and validated, the steps not run",)
    return RolePlan(NAME, f"volume group {vg} on {device}; LVM sees only the DRBD device",
                    node_plans(names, {n: [config] for n in names},
                               {} if inv.lab.enabled else {preferred: create}), notes=notes)
