"""Putting a desired configuration into a live CIB while touching only what appliance rendered.

The live CIB is the starting point: its root's version attributes, its <status>, and everything in
its <configuration> that appliance did not render stay as they are. The operator's changes are part
of the live configuration and survive an install:

* constraints `crm_resource --ban/--move` wrote (`cli-ban-*`, `cli-prefer-*`, `cli-standby-*`),
* node attributes (standby, maintenance, utilization): the live <nodes> is kept whole, and only
  a node appliance renders but Pacemaker has not recorded yet is added,
* cluster properties appliance does not render (`maintenance-mode`, ...) and those the DC writes
  itself (DC_OWNED: dc-version, ...),
* meta attributes set with `crm_resource --meta` on an appliance resource (OPERATOR_META:
  target-role, is-managed, maintenance), unless appliance renders the same name,
* resources, constraints and anything else with an id appliance does not render.

Per section of the configuration (crm_config, rsc_defaults, op_defaults, resources, constraints,
and any other the desired CIB has), each top-level element whose id appliance renders replaces the
live element with that id where it stands, and one the live section lacks is appended. The sets
of name/value pairs directly under crm_config, rsc_defaults and op_defaults (cib-bootstrap-options,
rsc-options, op-options) are merged pair by pair, by name, so a property an operator or the DC set
in the same set stays.

Ownership, for what appliance no longer renders: merge writes the ids it put in (top-level ids and
the ids of its pairs in those sets) into the cluster property set `appliance-owned` (one pair,
`appliance-owned`, the ids sorted and space-separated). An element of the live CIB is removed only
if that record, as found in the live CIB, names it and the desired CIB no longer renders it. An id
nobody recorded is never removed, so a foreign resource or constraint survives whatever its name,
and a `cli-*` constraint or a DC-owned property is never removed even if recorded. A CIB written
before the record existed therefore loses nothing; its first install adds the record.

The result is deterministic and idempotent: merging it again with the same desired CIB gives the
same configuration, so crm_diff finds nothing and a second install changes nothing. The installer
compares the result with the live CIB by crm_diff and patches in only a real difference with
cibadmin --patch.
"""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

DC_OWNED = ("dc-version", "cluster-infrastructure", "have-watchdog", "last-lrm-refresh", "cluster-name")
# Meta attributes `crm_resource --meta` sets that stay when appliance does not render them.
OPERATOR_META = ("target-role", "is-managed", "maintenance")
# Constraints crm_resource --ban/--move/--clear manage: always the operator's.
OPERATOR_PREFIXES = ("cli-ban-", "cli-prefer-", "cli-standby-")
RECORD_SET = "appliance-owned"
RECORD_NAME = "appliance-owned"
RECORD_NVPAIR = f"{RECORD_SET}-{RECORD_NAME}"
# Sections whose top-level children are name/value sets, merged pair by pair.
NVSET_SECTIONS = ("crm_config", "rsc_defaults", "op_defaults")
RESOURCE_TAGS = ("primitive", "group", "clone", "bundle")


def merge(live_xml: str, desired_xml: str) -> str:
    """The live CIB with appliance's own elements as desired and everything else as it was. Pure."""
    live = ET.fromstring(live_xml)
    desired = ET.fromstring(desired_xml)
    live_config = live.find("configuration")
    desired_config = desired.find("configuration")
    if live_config is None or desired_config is None:
        raise ValueError("both CIBs need a <configuration>")
    previous = _record_of(live_config)
    owned: set[str] = set()
    for desired_section in desired_config:
        if desired_section.tag == "nodes":
            _merge_nodes(live_config, desired_section)
            continue
        live_section = live_config.find(desired_section.tag)
        if live_section is None:
            live_section = ET.SubElement(live_config, desired_section.tag)
        owned |= _merge_section(live_section, desired_section, previous)
    desired_ids = {e.get("id") for e in desired_config.iter() if e.get("id")}
    for live_section in live_config:
        if live_section.tag != "nodes" and desired_config.find(live_section.tag) is None:
            _remove_stale(live_section, previous, desired_ids)
    _write_record(live_config, owned)
    ET.indent(live, space="  ")
    return ET.tostring(live, encoding="unicode") + "\n"


def configuration_of(cib_xml: str) -> str:
    """The <configuration> element alone, canonically, for comparisons in tests and status."""
    element = ET.fromstring(cib_xml).find("configuration")
    return ET.canonicalize(ET.tostring(element, encoding="unicode"), strip_text=True)


def owned_ids(cib_xml: str) -> list[str]:
    """The ids a CIB's ownership record names (empty before appliance ever merged into it)."""
    config = ET.fromstring(cib_xml).find("configuration")
    return sorted(_record_of(config)) if config is not None else []


def is_operators(element_id: str) -> bool:
    return element_id.startswith(OPERATOR_PREFIXES)


# -- sections -----------------------------------------------------------------------------------
def _merge_section(live_section: ET.Element, desired_section: ET.Element, previous: set[str]) -> set[str]:
    """Appliance's elements into one live section, in place; returns the ids appliance now owns there."""
    owned: set[str] = set()
    nvsets = desired_section.tag in NVSET_SECTIONS
    desired_ids = {e.get("id") for e in desired_section.iter() if e.get("id")}
    live_by_id = {e.get("id"): e for e in live_section if e.get("id")}
    for wanted in desired_section:
        element_id = wanted.get("id")
        if not element_id or (desired_section.tag == "crm_config" and element_id == RECORD_SET):
            continue
        owned.add(element_id)
        present = live_by_id.get(element_id)
        if present is None:
            live_section.append(copy.deepcopy(wanted))
            if nvsets:
                owned |= {nv.get("id") for nv in wanted.iterfind("nvpair") if nv.get("id")}
            continue
        if nvsets:
            replacement, pairs = _merge_nvset(present, wanted, previous)
            owned |= pairs
        else:
            replacement = copy.deepcopy(wanted)
            if desired_section.tag == "resources":
                _keep_operator_meta(present, replacement)
        live_section[list(live_section).index(present)] = replacement
    _remove_stale(live_section, previous, desired_ids)
    return owned


def _remove_stale(live_section: ET.Element, previous: set[str], desired_ids: set[str]) -> None:
    """Drop what appliance recorded as its own and no longer renders; never anything unrecorded."""
    nvsets = live_section.tag in NVSET_SECTIONS
    for element in list(live_section):
        element_id = element.get("id")
        if not element_id or element_id in desired_ids or element_id == RECORD_SET or is_operators(element_id):
            continue
        if nvsets:  # a set appliance no longer renders: its own pairs go, the set only when empty
            for nvpair in list(element.iterfind("nvpair")):
                if nvpair.get("id") in previous and nvpair.get("name") not in DC_OWNED:
                    element.remove(nvpair)
            if element_id in previous and not len(element):
                live_section.remove(element)
        elif element_id in previous:
            live_section.remove(element)


def _merge_nvset(present: ET.Element, wanted: ET.Element, previous: set[str]) -> tuple[ET.Element, set[str]]:
    """One set of name/value pairs: appliance's names as desired, every other name as it was live."""
    result = ET.Element(wanted.tag, dict(wanted.attrib))
    result.text = present.text
    desired_by_name = {nv.get("name"): nv for nv in wanted.iterfind("nvpair")}
    placed: set[str] = set()
    for child in present:
        if child.tag != "nvpair":
            result.append(copy.deepcopy(child))  # rules and the like: not rendered by appliance
            continue
        name = child.get("name")
        if name in desired_by_name:
            if name not in placed:
                result.append(copy.deepcopy(desired_by_name[name]))
                placed.add(name)
        elif child.get("id") in previous and name not in DC_OWNED:
            continue  # appliance rendered it once and no longer does
        else:
            result.append(copy.deepcopy(child))
    for name, nvpair in desired_by_name.items():
        if name not in placed:
            result.append(copy.deepcopy(nvpair))
    return result, {nv.get("id") for nv in wanted.iterfind("nvpair") if nv.get("id")}


def _keep_operator_meta(present: ET.Element, replacement: ET.Element) -> None:
    """Meta attributes crm_resource set on appliance's resource (and its members) stay, unless the
    desired element renders the same name."""
    wanted_by_id = {e.get("id"): e for e in replacement.iter() if e.tag in RESOURCE_TAGS}
    for live_resource in present.iter():
        if live_resource.tag not in RESOURCE_TAGS or live_resource.get("id") not in wanted_by_id:
            continue
        target = wanted_by_id[live_resource.get("id")]
        rendered = {nv.get("name") for meta in target.iterfind("meta_attributes") for nv in meta.iterfind("nvpair")}
        for live_meta in live_resource.iterfind("meta_attributes"):
            for nvpair in live_meta.iterfind("nvpair"):
                if nvpair.get("name") not in OPERATOR_META or nvpair.get("name") in rendered:
                    continue
                _meta_set(target, live_meta.get("id")).append(copy.deepcopy(nvpair))
                rendered.add(nvpair.get("name"))


def _meta_set(resource: ET.Element, live_set_id: str | None) -> ET.Element:
    sets = list(resource.iterfind("meta_attributes"))
    for meta in sets:
        if meta.get("id") == live_set_id:
            return meta
    if sets:
        return sets[0]
    meta = ET.Element("meta_attributes", {"id": live_set_id or f"{resource.get('id')}-meta_attributes"})
    # Where crm_resource puts a new set: after the resource's own attributes and operations,
    # before any member (groups, clones).
    children = list(resource)
    index = next((i for i, c in enumerate(children) if c.tag in RESOURCE_TAGS), len(children))
    resource.insert(index, meta)
    return meta


def _merge_nodes(live_config: ET.Element, desired_nodes: ET.Element) -> None:
    """The live node list is Pacemaker's and the operator's (standby, maintenance, utilization):
    kept whole; a node appliance renders that is not there yet is added."""
    live_nodes = live_config.find("nodes")
    if live_nodes is None:
        live_config.append(copy.deepcopy(desired_nodes))
        return
    known = {n.get("id") for n in live_nodes} | {n.get("uname") for n in live_nodes}
    for node in desired_nodes:
        if node.get("id") not in known and node.get("uname") not in known:
            live_nodes.append(copy.deepcopy(node))


# -- the ownership record -----------------------------------------------------------------------
def _record_of(config: ET.Element) -> set[str]:
    nvpair = config.find(f"./crm_config/cluster_property_set[@id='{RECORD_SET}']/nvpair[@name='{RECORD_NAME}']")
    return set((nvpair.get("value") or "").split()) if nvpair is not None else set()


def _write_record(config: ET.Element, owned: set[str]) -> None:
    crm_config = config.find("crm_config")
    if crm_config is None:
        crm_config = ET.SubElement(config, "crm_config")
    record = crm_config.find(f"cluster_property_set[@id='{RECORD_SET}']")
    if record is None:
        record = ET.SubElement(crm_config, "cluster_property_set", {"id": RECORD_SET})
    for child in list(record):
        record.remove(child)
    ET.SubElement(record, "nvpair", {"id": RECORD_NVPAIR, "name": RECORD_NAME, "value": " ".join(sorted(owned))})
