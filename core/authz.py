"""Who may do what: three roles, one rule per API operation, ownership for users' own entities.

Sized after OpenNebula's users, groups and ACLs:
- admin: the infrastructure (hosts, datastores, clusters, networks, users, groups) and everything else;
- user: its own VMs and images, and those its group shares; reads what it needs to use (datastores,
  networks, clusters); never a host, another user, or the audit log;
- auditor: reads everything, changes nothing but its own tokens.

`RULES` is the one table: every API operation id has a rule, the API refuses to start with a route
that has none, and tests/manager/test_authz_routes.py walks the OpenAPI spec for every role.
Ownership is checked by the entity's actions (core/actions/), beside the action itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from .entities import Owned
from .errors import CoreError, not_found

ADMIN, USER, AUDITOR = "admin", "user", "auditor"
ROLES = (ADMIN, USER, AUDITOR)
EVERYONE = frozenset(ROLES)
READERS = frozenset({ADMIN, AUDITOR})
WRITERS = frozenset({ADMIN, USER})
ADMINS = frozenset({ADMIN})


@dataclass(frozen=True)
class Actor:
    """The user a request acts for (or the system itself: the controller, tests, start-up)."""

    user_id: int
    name: str
    role: str
    group_id: int = 0

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    @property
    def sees_all(self) -> bool:
        return self.role in (ADMIN, AUDITOR)


SYSTEM = Actor(0, "system", ADMIN)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    why: str  # shown in the 403 answer and in docs/api.md


RULES: dict[str, Rule] = {
    # infrastructure: administrators change it; users read what they use
    "list_hosts": Rule(READERS, "hosts are infrastructure"),
    "get_host": Rule(READERS, "hosts are infrastructure"),
    "create_host": Rule(ADMINS, "hosts are infrastructure"),
    "host_action": Rule(ADMINS, "hosts are infrastructure"),
    "delete_host": Rule(ADMINS, "hosts are infrastructure"),
    "list_clusters": Rule(EVERYONE, ""),
    "get_cluster": Rule(EVERYONE, ""),
    "create_cluster": Rule(ADMINS, "clusters are infrastructure"),
    "delete_cluster": Rule(ADMINS, "clusters are infrastructure"),
    "list_datastores": Rule(EVERYONE, ""),
    "get_datastore": Rule(EVERYONE, ""),
    "list_datastore_backends": Rule(EVERYONE, ""),
    "create_datastore": Rule(ADMINS, "datastores are infrastructure"),
    "delete_datastore": Rule(ADMINS, "datastores are infrastructure"),
    "list_vnets": Rule(EVERYONE, ""),
    "get_vnet": Rule(EVERYONE, ""),
    "vnet_leases": Rule(READERS, "leases name every user's VMs"),
    "create_vnet": Rule(ADMINS, "networks are infrastructure"),
    "delete_vnet": Rule(ADMINS, "networks are infrastructure"),
    # users' own entities: the actions check ownership
    "list_images": Rule(EVERYONE, ""),
    "get_image": Rule(EVERYONE, ""),
    "create_image": Rule(WRITERS, "auditors change nothing"),
    "delete_image": Rule(WRITERS, "auditors change nothing"),
    "list_vms": Rule(EVERYONE, ""),
    "get_vm": Rule(EVERYONE, ""),
    "vm_history": Rule(EVERYONE, ""),
    "create_vms": Rule(WRITERS, "auditors change nothing"),
    "vm_action": Rule(WRITERS, "auditors change nothing"),
    "flatten_vm_disk": Rule(WRITERS, "auditors change nothing"),
    "delete_vm": Rule(WRITERS, "auditors change nothing"),
    # people
    "whoami": Rule(EVERYONE, ""),
    "list_users": Rule(READERS, "users are managed by administrators"),
    "get_user": Rule(READERS, "users are managed by administrators"),
    "create_user": Rule(ADMINS, "users are managed by administrators"),
    "delete_user": Rule(ADMINS, "users are managed by administrators"),
    "list_groups": Rule(READERS, "groups are managed by administrators"),
    "create_group": Rule(ADMINS, "groups are managed by administrators"),
    "delete_group": Rule(ADMINS, "groups are managed by administrators"),
    "list_tokens": Rule(EVERYONE, ""),  # one's own; administrators and auditors see all
    "create_token": Rule(EVERYONE, ""),  # for oneself; administrators for anyone
    "revoke_token": Rule(EVERYONE, ""),  # one's own; administrators any
    "list_audit": Rule(READERS, "the audit log names every user's actions"),
    "metrics": Rule(READERS, "the metrics name every host and datastore"),
    "host_monitoring": Rule(READERS, "hosts are infrastructure"),
    "vm_monitoring": Rule(EVERYONE, ""),  # whoever may read the VM (checked on the VM)
}
# VM actions only an administrator may take: they pick hosts or assert what happened on one.
ADMIN_VM_ACTIONS = frozenset({"deploy", "migrate", "recover"})
PUBLIC = frozenset({"health"})  # no token needed


def check_operation(actor: Actor, operation: str) -> None:
    """Raise FORBIDDEN unless the actor's role may call the operation (unknown operations: nobody)."""
    rule = RULES.get(operation)
    if rule is None:
        raise CoreError("FORBIDDEN", f"operation {operation} has no authorization rule", operation=operation)
    if actor.role not in rule.roles:
        raise CoreError("FORBIDDEN", f"a {actor.role} may not {operation.replace('_', ' ')}: {rule.why}",
                        operation=operation, role=actor.role)


def can_read(actor: Actor, entity: Owned) -> bool:
    return actor.sees_all or entity.owner_id == actor.user_id or getattr(entity, "public", False) or \
        (entity.shared and entity.group_id == actor.group_id and actor.group_id != 0)


def can_change(actor: Actor, entity: Owned) -> bool:
    return actor.admin or (actor.role == USER and entity.owner_id == actor.user_id)


def require_read(actor: Actor, kind: str, entity: Owned | None, ident: int) -> Owned:
    """The entity, or NOT_FOUND: a user learns nothing of entities it may not see."""
    if entity is None or not can_read(actor, entity):
        raise not_found(kind, ident)
    return entity


def require_use(actor: Actor, kind: str, entity: Owned | None, ident: int) -> Owned:
    """Using (a disk from an image): reading is enough."""
    return require_read(actor, kind, entity, ident)


def require_change(actor: Actor, kind: str, entity: Owned | None, ident: int) -> Owned:
    entity = require_read(actor, kind, entity, ident)
    if not can_change(actor, entity):
        raise CoreError("FORBIDDEN", f"{kind} {ident} belongs to another user; only its owner or an administrator "
                        "may change it", kind=kind, id=ident)
    return entity


def visible_condition(actor: Actor, public: bool = False) -> tuple[str, tuple]:
    """SQL condition (over owner_id, group_id, shared and, with `public`, public columns) for the
    rows a listing may show."""
    if actor.sees_all:
        return "1 = 1", ()
    return ("(owner_id = ? OR (shared = 1 AND group_id = ? AND group_id <> 0)" + (" OR public = 1)" if public else ")"),
            (actor.user_id, actor.group_id))
