"""The roles in the order `install` runs them. Reads as the table of contents of an install."""
from __future__ import annotations

from types import ModuleType

from appliance.inventory.load import Site

from . import base, cluster, database, drbd, exports, lvm, manager, proxy, resources
from .facts import SiteFacts
from .model import RolePlan

# database before cluster: after a cold start of both nodes, Pacemaker starts the manager as soon
# as it runs, and a manager started before its local MariaDB fails its start for good (the lab's
# cold start drill found it; production's MariaDB is started by systemd, not by the cluster).
ROLES: tuple[ModuleType, ...] = (base, drbd, lvm, database, cluster, exports, manager, proxy, resources)


def order_problems(roles: tuple[ModuleType, ...] = ROLES) -> list[str]:
    """Every role must come after the roles it requires."""
    seen: set[str] = set()
    problems = []
    for role in roles:
        problems += [f"{role.NAME} runs before {r}, which it requires" for r in role.REQUIRES if r not in seen]
        seen.add(role.NAME)
    return problems


def plan_site(site: Site, facts: SiteFacts | None = None) -> list[RolePlan]:
    """Every role's desired state for this site, in dependency order. Pure: contacts nothing.

    facts: what gather read from the nodes; None for the offline plan (`install --check`), which
    shows the first-install steps as for new disks and says so.
    """
    problems = order_problems()
    if problems:
        raise RuntimeError("; ".join(problems))
    return [role.plan(site, facts) if getattr(role, "USES_FACTS", False) else role.plan(site) for role in ROLES]
