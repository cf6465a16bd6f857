"""OCF resource-agent plumbing: exit codes, parameters, meta-data generated from them, exit reasons.

Standard library only: Pacemaker runs an agent for every monitor, so it must start fast.
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass

SUCCESS, ERR_GENERIC, ERR_ARGS, ERR_UNIMPLEMENTED, ERR_PERM, ERR_INSTALLED, ERR_CONFIGURED, NOT_RUNNING = range(8)


@dataclass(frozen=True)
class Parameter:
    name: str
    shortdesc: str
    longdesc: str
    default: str = ""
    required: bool = False
    unique: bool = False

    def value(self) -> str:
        return os.environ.get(f"OCF_RESKEY_{self.name}", self.default)


@dataclass(frozen=True)
class Action:
    name: str
    timeout: str
    interval: str | None = None
    depth: str | None = None


def meta_data(name: str, version: str, shortdesc: str, longdesc: str, parameters: tuple[Parameter, ...],
              actions: tuple[Action, ...]) -> str:
    """ra-api-1 meta-data (checked against ra-api-1.dtd by ocf-tester)."""
    root = ET.Element("resource-agent", {"name": name, "version": version})
    ET.SubElement(root, "version").text = "1.0"
    ET.SubElement(root, "longdesc", {"lang": "en"}).text = longdesc
    ET.SubElement(root, "shortdesc", {"lang": "en"}).text = shortdesc
    params = ET.SubElement(root, "parameters")
    for p in parameters:
        element = ET.SubElement(params, "parameter", {"name": p.name, "unique": str(int(p.unique)),
                                                      "required": str(int(p.required))})
        ET.SubElement(element, "longdesc", {"lang": "en"}).text = p.longdesc
        ET.SubElement(element, "shortdesc", {"lang": "en"}).text = p.shortdesc
        ET.SubElement(element, "content", {"type": "string", "default": p.default})
    acts = ET.SubElement(root, "actions")
    for a in actions:
        attrs = {"name": a.name, "timeout": a.timeout}
        if a.interval:
            attrs["interval"] = a.interval
        if a.depth:
            attrs["depth"] = a.depth
        ET.SubElement(acts, "action", attrs)
    ET.indent(root, space="  ")
    return ('<?xml version="1.0"?>\n<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def exit_reason(message: str) -> None:
    """Shown by crm_mon next to a failed action."""
    print(f"ocf-exit-reason:{message}", file=sys.stderr)


def is_probe() -> bool:
    return os.environ.get("OCF_RESKEY_CRM_meta_interval", "0") == "0" and \
        os.environ.get("__OCF_ACTION", "") == "monitor"


def action_timeout(default: float) -> float:
    """The timeout Pacemaker gave this action, in seconds."""
    try:
        return int(os.environ["OCF_RESKEY_CRM_meta_timeout"]) / 1000.0
    except (KeyError, ValueError):
        return default


def shim(python: str, module: str, metadata: str) -> str:
    """The executable Pacemaker calls: /usr/lib/ocf/resource.d/<provider>/<agent>.

    It answers meta-data itself (static; asked often, sometimes as user nobody) and hands every
    other action to the Python module.
    """
    if "APPLIANCE_METADATA_END" in metadata:
        raise ValueError("meta-data must not contain the here-document terminator")
    return (f"#!/bin/sh\n# Managed by appliance: the OCF agent lives in {module}.\n"
            f'if [ "$1" = "meta-data" ]; then\n    cat <<\'APPLIANCE_METADATA_END\'\n{metadata}'
            f"APPLIANCE_METADATA_END\n    exit 0\nfi\n"
            f'exec {python} -m {module} "$@"\n')
