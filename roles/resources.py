"""resources: the CIB that ties it together, pushed once per cluster as a crm_diff patch."""
from __future__ import annotations

from appliance.ha import cib
from appliance.ha.frontend import frontend_cib
from appliance.inventory.load import Site

from . import layout
from .model import CLUSTER, Check, FileSpec, NodePlan, RolePlan, Step, text
from .specs import frontend_spec

NAME = "resources"
REQUIRES = ("cluster", "drbd", "lvm", "exports", "manager", "proxy")


def desired_cib(site: Site) -> cib.Cib:
    return frontend_cib(frontend_spec(site))


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    if inv.cluster.stack != "corosync":
        return RolePlan(NAME, "not used in heartbeat mode (resources are in haresources)", (),
                        notes=("heartbeat mode has no CIB",))
    desired = desired_cib(site)
    problems = cib.reference_problems(desired)
    if problems:
        raise ValueError("the CIB builder produced a broken CIB: " + "; ".join(problems))
    has_fence_secret = bool(site.secrets.fence_passwords)
    document = FileSpec(layout.CIB_FILE, text(cib.to_xml(desired)), mode=0o600, secret=has_fence_secret,
                        check=Check("cib"))
    steps = (
        Step("verify the desired CIB", tuple(cib.verify_cmd(layout.CIB_FILE))),
        Step("compare it with the live CIB", tuple(cib.diff_cmd("<live>", layout.CIB_FILE)),
             why="only a difference is pushed; the whole CIB is never replaced"),
        Step("apply the difference", tuple(cib.patch_cmd("<patch>")), why="skipped when crm_diff finds nothing"),
    )
    groups = [r for r in desired.resources if isinstance(r, cib.Group)]
    members = sum(len(g.members) for g in groups)
    stonith = "stonith on" if inv.fencing.enabled else "STONITH OFF"
    return RolePlan(NAME, f"{len(desired.resources)} top-level resources ({members} in {groups[0].id}), "
                    f"{len(desired.constraints)} constraints, {stonith}",
                    (NodePlan(CLUSTER, (document,), steps),))
