"""The Pacemaker CIB as plain data, serialised to CIB XML.

Built offline and compared as data; the live cluster only ever receives a `crm_diff` patch
(DESIGN.md, CIB changes). Element and attribute names follow Pacemaker 2.1 (schema 3.9):
`promotable` clones and `Promoted`/`Unpromoted` roles, not `ms` and Master/Slave.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterable, Union

SCHEMA = "pacemaker-3.9"
Pairs = tuple[tuple[str, str], ...]


def pairs(mapping: dict[str, object]) -> Pairs:
    """Stable (name, value) pairs; booleans the way Pacemaker spells them."""
    return tuple((k, _value(v)) for k, v in mapping.items())


def _value(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class Op:
    name: str
    interval: str = "0s"
    timeout: str | None = None
    role: str | None = None
    on_fail: str | None = None


@dataclass(frozen=True)
class Primitive:
    id: str
    standard: str  # ocf | stonith | lsb | systemd
    type: str
    provider: str | None = None
    params: Pairs = ()
    meta: Pairs = ()
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Group:
    id: str
    members: tuple[Primitive, ...]
    meta: Pairs = ()


@dataclass(frozen=True)
class Clone:
    id: str
    child: Union[Primitive, Group]
    meta: Pairs = ()

    @property
    def promotable(self) -> bool:
        return ("promotable", "true") in self.meta


Resource = Union[Primitive, Group, Clone]


@dataclass(frozen=True)
class Colocation:
    id: str
    rsc: str
    with_rsc: str
    score: str = "INFINITY"
    with_rsc_role: str | None = None


@dataclass(frozen=True)
class Order:
    id: str
    first: str
    then: str
    first_action: str = "start"
    then_action: str = "start"
    kind: str = "Mandatory"


@dataclass(frozen=True)
class Location:
    id: str
    rsc: str
    node: str
    score: str


Constraint = Union[Colocation, Order, Location]


@dataclass(frozen=True)
class Cib:
    properties: Pairs
    nodes: tuple[tuple[str, str], ...]  # (corosync node id, uname)
    resources: tuple[Resource, ...]
    constraints: tuple[Constraint, ...]
    rsc_defaults: Pairs = ()
    op_defaults: Pairs = ()
    epoch: int = 1

    def resource_ids(self) -> list[str]:
        return [rid for r in self.resources for rid in _ids(r)]


def _ids(resource: Resource) -> Iterable[str]:
    yield resource.id
    if isinstance(resource, Group):
        for m in resource.members:
            yield m.id
    elif isinstance(resource, Clone):
        yield from _ids(resource.child)


def reference_problems(cib: Cib) -> list[str]:
    """Duplicate ids and dangling references, found before any tool sees the XML."""
    ids = cib.resource_ids() + [c.id for c in cib.constraints]
    problems = [f"id {i!r} is used more than once" for i in sorted({i for i in ids if ids.count(i) > 1})]
    known = set(cib.resource_ids())
    nodes = {uname for _, uname in cib.nodes}
    for c in cib.constraints:
        if isinstance(c, Order):
            refs = [c.first, c.then]
        elif isinstance(c, Colocation):
            refs = [c.rsc, c.with_rsc]
        else:
            refs = [c.rsc]
        problems += [f"constraint {c.id!r} refers to unknown resource {r!r}" for r in refs if r not in known]
        if isinstance(c, Location) and c.node not in nodes:
            problems.append(f"constraint {c.id!r} refers to unknown node {c.node!r}")
    return problems


def to_xml(cib: Cib) -> str:
    """Serialise to a complete CIB document with an empty status section."""
    root = ET.Element("cib", {"validate-with": SCHEMA, "epoch": str(cib.epoch), "num_updates": "0",
                              "admin_epoch": "0"})
    configuration = ET.SubElement(root, "configuration")
    crm_config = ET.SubElement(configuration, "crm_config")
    _nvset(crm_config, "cluster_property_set", "cib-bootstrap-options", cib.properties)
    nodes = ET.SubElement(configuration, "nodes")
    for node_id, uname in cib.nodes:
        ET.SubElement(nodes, "node", {"id": node_id, "uname": uname})
    resources = ET.SubElement(configuration, "resources")
    for resource in cib.resources:
        _resource(resources, resource)
    constraints = ET.SubElement(configuration, "constraints")
    for constraint in cib.constraints:
        _constraint(constraints, constraint)
    if cib.rsc_defaults:
        _nvset(ET.SubElement(configuration, "rsc_defaults"), "meta_attributes", "rsc-options", cib.rsc_defaults)
    if cib.op_defaults:
        _nvset(ET.SubElement(configuration, "op_defaults"), "meta_attributes", "op-options", cib.op_defaults)
    ET.SubElement(root, "status")
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def _nvset(parent: ET.Element, tag: str, set_id: str, values: Pairs) -> None:
    if not values:
        return
    nvset = ET.SubElement(parent, tag, {"id": set_id})
    for name, value in values:
        ET.SubElement(nvset, "nvpair", {"id": f"{set_id}-{name}", "name": name, "value": value})


def _resource(parent: ET.Element, resource: Resource) -> None:
    if isinstance(resource, Primitive):
        attrs = {"id": resource.id, "class": resource.standard, "type": resource.type}
        if resource.provider:
            attrs["provider"] = resource.provider
        element = ET.SubElement(parent, "primitive", attrs)
        _nvset(element, "instance_attributes", f"{resource.id}-instance_attributes", resource.params)
        _nvset(element, "meta_attributes", f"{resource.id}-meta_attributes", resource.meta)
        if resource.ops:
            ops = ET.SubElement(element, "operations")
            for op in resource.ops:
                op_id = f"{resource.id}-{op.name}-interval-{op.interval}" + (f"-{op.role}" if op.role else "")
                op_attrs = {"id": op_id, "name": op.name, "interval": op.interval}
                for key, value in (("timeout", op.timeout), ("role", op.role), ("on-fail", op.on_fail)):
                    if value:
                        op_attrs[key] = value
                ET.SubElement(ops, "op", op_attrs)
    elif isinstance(resource, Group):
        element = ET.SubElement(parent, "group", {"id": resource.id})
        _nvset(element, "meta_attributes", f"{resource.id}-meta_attributes", resource.meta)
        for member in resource.members:
            _resource(element, member)
    else:
        element = ET.SubElement(parent, "clone", {"id": resource.id})
        _nvset(element, "meta_attributes", f"{resource.id}-meta_attributes", resource.meta)
        _resource(element, resource.child)


def _constraint(parent: ET.Element, c: Constraint) -> None:
    if isinstance(c, Colocation):
        attrs = {"id": c.id, "rsc": c.rsc, "with-rsc": c.with_rsc, "score": c.score}
        if c.with_rsc_role:
            attrs["with-rsc-role"] = c.with_rsc_role
        ET.SubElement(parent, "rsc_colocation", attrs)
    elif isinstance(c, Order):
        ET.SubElement(parent, "rsc_order", {"id": c.id, "first": c.first, "first-action": c.first_action,
                                            "then": c.then, "then-action": c.then_action, "kind": c.kind})
    else:
        ET.SubElement(parent, "rsc_location", {"id": c.id, "rsc": c.rsc, "node": c.node, "score": c.score})


# Commands that act on CIBs: pure argv builders (run through the runner).
def verify_cmd(path: str) -> list[str]:
    return ["crm_verify", "--xml-file", path, "-V"]


def diff_cmd(live: str, desired: str) -> list[str]:
    """`crm_diff` exit 1 means "differences found": not a failure."""
    return ["crm_diff", "--original", live, "--new", desired, "--no-version"]


def patch_cmd(patch_file: str) -> list[str]:
    return ["cibadmin", "--patch", "--xml-file", patch_file]


def query_cmd() -> list[str]:
    return ["cibadmin", "--query"]


@dataclass(frozen=True)
class Simulation:
    """One `crm_simulate` step: injected events in, a CIB with the new status out."""

    node_up: tuple[str, ...] = ()
    node_fail: tuple[str, ...] = ()
    extra: tuple[str, ...] = field(default=())


def simulate_cmd(cib_in: str, cib_out: str, sim: Simulation) -> list[str]:
    argv = ["crm_simulate", "--xml-file", cib_in, "--simulate", "--save-output", cib_out]
    for node in sim.node_up:
        argv += ["--node-up", node]
    for node in sim.node_fail:
        argv += ["--node-fail", node]
    return argv + list(sim.extra)


def promotion_score_cmd(node: str, primitive_id: str, score: int = 10000) -> list[str]:
    """What the linbit drbd agent sets on an UpToDate node; needed for promotion in a simulation."""
    return ["crm_attribute", "--node", node, "--lifetime", "reboot", "--name", f"master-{primitive_id}",
            "--update", str(score)]
