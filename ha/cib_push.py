"""Putting a desired configuration into a live CIB without touching what Pacemaker owns.

The desired CIB replaces the live <configuration> only; the live <status> and the root's version
attributes stay, and so do the properties the DC writes itself (dc-version, ...): dropping them
would make every install "change" them and the DC put them back. The result is compared with the
live CIB by crm_diff; only a real difference is patched in with cibadmin --patch.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

DC_OWNED = ("dc-version", "cluster-infrastructure", "have-watchdog", "last-lrm-refresh", "cluster-name")


def merge(live_xml: str, desired_xml: str) -> str:
    """The live CIB with the desired configuration in place. Pure."""
    live = ET.fromstring(live_xml)
    desired = ET.fromstring(desired_xml)
    live_config = live.find("configuration")
    desired_config = desired.find("configuration")
    if live_config is None or desired_config is None:
        raise ValueError("both CIBs need a <configuration>")
    kept = {}
    for nvpair in live_config.iterfind("./crm_config/cluster_property_set[@id='cib-bootstrap-options']/nvpair"):
        if nvpair.get("name") in DC_OWNED:
            kept[nvpair.get("name")] = nvpair
    options = desired_config.find("./crm_config/cluster_property_set[@id='cib-bootstrap-options']")
    if options is not None:
        present = {nv.get("name") for nv in options.iterfind("nvpair")}
        for name, nvpair in kept.items():
            if name not in present:
                options.append(nvpair)
    # Nodes: Pacemaker adds the members it sees; keep its entries, ours only name the same ids.
    live_nodes = live_config.find("nodes")
    if live_nodes is not None and len(live_nodes):
        desired_config.remove(desired_config.find("nodes"))
        desired_config.insert(1, live_nodes)
    index = list(live).index(live_config)
    live.remove(live_config)
    live.insert(index, desired_config)
    return ET.tostring(live, encoding="unicode")


def configuration_of(cib_xml: str) -> str:
    """The <configuration> element alone, canonically, for comparisons in tests and status."""
    element = ET.fromstring(cib_xml).find("configuration")
    return ET.canonicalize(ET.tostring(element, encoding="unicode"), strip_text=True)
