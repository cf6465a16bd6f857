"""The install plan as data, text and JSON. Everything shown passes through the Redactor."""
from __future__ import annotations

import difflib
import hashlib
from typing import Any, Callable, Iterable

from appliance.inventory.load import Site
from appliance.core.reports import Report
from appliance.roles.model import CLUSTER, FileSpec, RolePlan, Step

Redact = Callable[[str], str]


def file_entry(spec: FileSpec) -> dict[str, Any]:
    return {
        "path": spec.path,
        "mode": f"{spec.mode:04o}",
        "owner": spec.owner,
        "group": spec.group,
        "bytes": len(spec.content),
        "sha256": None if spec.secret else hashlib.sha256(spec.content).hexdigest(),
        "secret": spec.secret,
        "block": spec.block,
        "checker": spec.check.kind if spec.check else None,
    }


def step_entry(step: Step, redact: Redact) -> dict[str, Any]:
    return {"what": redact(step.what), "command": redact(step.command), "why": redact(step.why), "once": step.once}


def file_diff(spec: FileSpec, before: bytes | None, redact: Redact, after: bytes | None = None) -> str:
    """A unified diff from what is there (None: unknown or absent) to what will be, secrets redacted.

    A file that holds a secret is shown only when new: its old content may hold an old secret
    the redactor does not know."""
    if spec.secret and before is not None:
        return f"(holds a secret: content not shown, {len(after if after is not None else spec.content)} bytes)\n"
    try:
        after_text = (after if after is not None else spec.content).decode("utf-8")
        before_text = before.decode("utf-8") if before is not None else ""
    except UnicodeDecodeError:
        return f"(binary, {len(spec.content)} bytes: not shown)\n"
    lines = difflib.unified_diff(redact(before_text).splitlines(keepends=True),
                                 redact(after_text).splitlines(keepends=True),
                                 fromfile="/dev/null" if before is None else f"a{spec.path}", tofile=f"b{spec.path}")
    return "".join(lines)


SECRET_NAMES = ("pass", "secret", "key")  # nvpair names whose values a diff masks, old values included


def _pretty_configuration(cib_xml: str) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(cib_xml)
    config = root.find("configuration")
    if config is None:
        return []
    config = ET.fromstring(ET.tostring(config))  # a copy: masking must not touch the caller's tree
    for nvpair in config.iter("nvpair"):
        if any(word in (nvpair.get("name") or "").lower() for word in SECRET_NAMES):
            nvpair.set("value", "<secret>")
    for element in config.iter():
        element.tail = None
        if element.text is not None and not element.text.strip():
            element.text = None
    ET.indent(config, space="  ")
    return (ET.tostring(config, encoding="unicode") + "\n").splitlines(keepends=True)


def cib_diff(live_xml: str, new_xml: str, redact: Redact) -> str:
    """A unified diff of the CIB <configuration> (what an install changes), secret values masked. Pure."""
    lines = difflib.unified_diff(_pretty_configuration(live_xml), _pretty_configuration(new_xml),
                                 fromfile="a/cib/configuration", tofile="b/cib/configuration")
    return redact("".join(lines))


def plan_data(site: Site, plans: Iterable[RolePlan], redact: Redact, *, diff: bool = False,
              warnings: Iterable[Report] = ()) -> dict[str, Any]:
    inv = site.inventory
    roles = []
    for plan in plans:
        nodes = {}
        for node in plan.nodes:
            files = []
            for spec in node.files:
                entry = file_entry(spec)
                if diff:
                    entry["diff"] = file_diff(spec, None, redact)
                files.append(entry)
            nodes[node.node] = {"files": files, "steps": [step_entry(s, redact) for s in node.steps]}
        roles.append({"role": plan.role, "summary": redact(plan.summary), "notes": list(plan.notes), "nodes": nodes})
    return {
        "ok": True,
        "inventory": str(site.path),
        "contacted": False,
        "stack": inv.cluster.stack,
        "secrets": "placeholders" if site.secrets.placeholder else "loaded",
        "nodes": [{"name": n.name, "lan_ip": n.lan_ip, "san_ip": n.san_ip} for n in inv.nodes],
        "roles": roles,
        "warnings": [w.as_dict() for w in warnings],
    }


def plan_text(data: dict[str, Any], *, diff: bool = False) -> str:
    out = [f"appliance install --check: {data['inventory']} (offline: no node contacted, nothing changed)",
           "nodes: " + ", ".join(f"{n['name']} (LAN {n['lan_ip']}, SAN {n['san_ip']})" for n in data["nodes"])
           + f"; stack {data['stack']}; secrets {data['secrets']}", ""]
    files = steps = 0
    total = len(data["roles"])
    for index, role in enumerate(data["roles"], start=1):
        out.append(f"[{index}/{total}] {role['role']}: {role['summary']}")
        for node, content in role["nodes"].items():
            out.append(f"  {'whole cluster (once)' if node == CLUSTER else node}")
            for f in content["files"]:
                files += 1
                kind = "block " if f["block"] else "write "
                extra = ", secret" if f["secret"] else ""
                check = f", checked by {f['checker']}" if f["checker"] else ""
                out.append(f"    {kind} {f['path']} ({f['mode']} {f['owner']}:{f['group']}, {f['bytes']} B{extra}{check})")
                if diff and "diff" in f:
                    out += ["      " + line for line in f["diff"].rstrip("\n").splitlines()]
            for s in content["steps"]:
                steps += 1
                verb = "once  " if s["once"] else "run   "
                out.append(f"    {verb} {s['what']}" + (f": {s['command']}" if s["command"] else ""))
                if s["why"]:
                    out.append(f"           why: {s['why']}")
        for note in role["notes"]:
            out.append(f"  note: {note}")
        out.append("")
    for w in data["warnings"]:
        out.append(f"warning: {w.get('path', '')}: {w['message']} [{w['code']}]")
    out.append(f"plan: {total} roles, {files} files, {steps} steps on {len(data['nodes'])} nodes. "
               "`once` steps run on a first install only.")
    return "\n".join(out) + "\n"


def secret_leaks(plans: Iterable[RolePlan], contains_secret: Callable[[bytes], bool]) -> list[str]:
    """Files that hold a secret value but could be read by others: must be empty before anything is written."""
    return [f"{node.node}:{spec.path} (mode {spec.mode:04o})"
            for plan in plans for node in plan.nodes for spec in node.files
            if spec.mode & 0o077 and contains_secret(spec.content)]
