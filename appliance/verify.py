"""After an install (and for `appliance status`): is the pair really healthy? Reads only."""
from __future__ import annotations

import json
import re
import ssl
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from appliance.core.runner import Runner
from appliance.inventory.load import Site


@dataclass
class Health:
    checks: list[dict] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "ok": ok, "detail": detail})

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)


def cluster_state(runner: Runner) -> dict:
    """Nodes online and where each resource runs, from crm_mon's XML (Pacemaker 2.1, API 2.x).

    Besides where things run, the states an operator plans: nodes in standby or maintenance, the
    cluster's maintenance-mode, resources unmanaged or with target-role Stopped, and bans (negative
    -INFINITY location constraints, crm_resource --ban's and appliance's own)."""
    result = runner.run(["crm_mon", "-1", "--output-as=xml"], check=False)
    if not result.ok:
        return {"online": [], "resources": {}, "error": (result.stderr or result.stdout).strip()[-200:]}
    root = ET.fromstring(result.stdout)
    nodes = [n for n in root.iterfind("./nodes/node") if n.get("name")]
    online = [n.get("name") for n in nodes if n.get("online") == "true"]

    def flagged(attribute: str) -> list[str]:
        return sorted(n.get("name") for n in nodes if n.get(attribute) == "true")

    resources: dict[str, dict] = {}
    section = root.find("resources")
    for resource, parents in _resources_with_parents(section if section is not None else ET.Element("x"), ()):
        nodes_on = [n.get("name") for n in resource.iter("node")]
        entry = resources.setdefault(resource.get("id"), {
            "role": None, "nodes": [], "failed": False, "managed": True, "target_role": None,
            "parents": [p.get("id") for p in parents], "instances": 0, "running": 0})
        entry["instances"] += 1
        entry["running"] += 1 if nodes_on else 0
        entry["nodes"] += [n for n in nodes_on if n not in entry["nodes"]]
        # A clone's instances: the roles they run in ("Promoted/Unpromoted"), or "Stopped" if none runs.
        role = resource.get("role")
        if entry["role"] is None or (nodes_on and entry["running"] == 1):
            entry["role"] = role
        elif nodes_on and role not in entry["role"].split("/"):
            entry["role"] += f"/{role}"
        entry["failed"] = entry["failed"] or resource.get("failed") == "true"
        # An instance on a node in maintenance is unmanaged alone: the resource is as managed as its least.
        entry["managed"] = entry["managed"] and resource.get("managed") != "false" and \
            all(p.get("managed") != "false" for p in parents)
        target = resource.get("target_role") or next((p.get("target_role") for p in reversed(parents)
                                                      if p.get("target_role")), None)
        if target is None and any(p.get("disabled") == "true" for p in parents):
            target = "Stopped"
        entry["target_role"] = entry["target_role"] or target
    dc = root.find("./summary/current_dc")
    options = root.find("./summary/cluster_options")
    # Failed actions stay recorded (and can keep a resource off a node: migration-threshold) until
    # someone cleans them up; a resource can be "failed=false" and still stopped because of them.
    failures = [{"action": f.get("op_key"), "node": f.get("node"), "result": f.get("exitstatus"),
                 "reason": f.get("exitreason") or "", "when": f.get("last-rc-change")}
                for f in root.iter("failure")]
    bans = [{"id": b.get("id"), "resource": b.get("resource"), "node": b.get("node"),
             "weight": b.get("weight"), "promoted_only": b.get("promoted-only") == "true"}
            for b in root.iterfind("./bans/ban")]
    return {"online": sorted(online), "resources": resources, "failures": failures,
            "dc": dc.get("name") if dc is not None and dc.get("present") != "false" else None,
            "standby": flagged("standby"), "standby_onfail": flagged("standby_onfail"),
            "maintenance_nodes": flagged("maintenance"),
            "maintenance_mode": options is not None and options.get("maintenance-mode") == "true",
            "bans": bans}


def _resources_with_parents(element: ET.Element, parents: tuple):
    """Each <resource> (a primitive or one clone instance) with the groups, clones and bundles above it."""
    for child in element:
        if child.tag == "resource":
            yield child, parents
        elif child.tag in ("group", "clone", "bundle", "replica"):
            yield from _resources_with_parents(child, parents + ((child,) if child.tag != "replica" else ()))


INFINITY = 1000000


def stopped_resources(state: dict) -> tuple[list[str], dict[str, str]]:
    """Resources with an instance that runs nowhere: (unexplained, {planned: the operator's reason}).

    Planned: target-role Stopped (its own or its group's/clone's), unmanaged (is-managed=false, the
    cluster's maintenance-mode, a node in maintenance), or no node left that may run it: every
    online node is in standby or maintenance, bans it with -INFINITY, or already runs an instance
    (a clone's second half while one node is in standby). A stop with none of these reasons is a
    failure, even if a node is in standby."""
    unexplained, planned = [], {}
    away = set(state.get("standby", [])) | set(state.get("maintenance_nodes", []))
    for rid, r in sorted(state["resources"].items()):
        instances, running = r.get("instances", 1), r.get("running", 1 if r["nodes"] else 0)
        if r["nodes"] and running >= instances:
            continue
        if (r.get("target_role") or "").lower() == "stopped":
            planned[rid] = "target-role Stopped"
            continue
        if state.get("maintenance_mode"):
            planned[rid] = "maintenance-mode"
            continue
        if not r.get("managed", True):
            planned[rid] = "unmanaged"
            continue
        scope = {rid, *r.get("parents", [])}
        banned = {b["node"]: b["id"] for b in state.get("bans", []) if b["resource"] in scope
                  and not b.get("promoted_only") and _score(b.get("weight")) <= -INFINITY}
        available = [n for n in state["online"] if n not in away and n not in banned]
        if running >= len(available) and len(available) < len(state["online"]):
            reasons = [f"{n} in {'standby' if n in state.get('standby', []) else 'maintenance'}"
                       for n in sorted(away & set(state["online"]))]
            reasons += [f"banned from {n} ({banned[n]})" for n in sorted(banned)
                        if n in state["online"] and n not in away]
            planned[rid] = "no other node may run it: " + ", ".join(reasons)
            continue
        unexplained.append(rid)
    return unexplained, planned


def _score(weight: str | None) -> int:
    try:
        return int(weight or 0)
    except ValueError:
        return -INFINITY if (weight or "").startswith("-") else INFINITY


OPERATOR_CONSTRAINTS = ("cli-ban-", "cli-prefer-", "cli-standby-")


def operator_constraints(runner: Runner) -> list[str]:
    """crm_resource's --ban/--move constraints in the live CIB, shown as the operator's plan."""
    result = runner.run(["cibadmin", "--query", "--scope", "constraints"], check=False)
    if not result.ok:
        return []
    try:
        root = ET.fromstring(result.stdout)
    except ET.ParseError:
        return []
    shown = []
    for c in root.iter("rsc_location"):
        if (c.get("id") or "").startswith(OPERATOR_CONSTRAINTS):
            shown.append(f"{c.get('id')} ({c.get('rsc')} {c.get('score')} on {c.get('node')})")
    return shown


def planned_states(state: dict, constraints: list[str], planned_stops: dict[str, str]) -> str:
    """What the operator set on purpose, in one line for the "operator's planned states" check."""
    parts = []
    if state.get("maintenance_mode"):
        parts.append("cluster maintenance-mode")
    if state.get("standby"):
        parts.append(f"standby: {', '.join(state['standby'])}")
    if state.get("maintenance_nodes"):
        parts.append(f"nodes in maintenance: {', '.join(state['maintenance_nodes'])}")
    unmanaged = sorted(rid for rid, r in state["resources"].items() if not r.get("managed", True))
    if unmanaged and not state.get("maintenance_mode"):
        parts.append(f"unmanaged: {', '.join(unmanaged)}")
    targets = sorted(f"{rid}={r['target_role']}" for rid, r in state["resources"].items() if r.get("target_role"))
    if targets:
        parts.append(f"target-role: {', '.join(targets)}")
    shown = list(constraints) or [f"{b['id']} ({b['resource']} banned from {b['node']})"
                                  for b in state.get("bans", []) if b["id"].startswith(OPERATOR_CONSTRAINTS)]
    if shown:
        parts.append(f"constraints: {', '.join(shown)}")
    if planned_stops:
        parts.append("stopped on purpose: " + ", ".join(f"{rid} ({why})" for rid, why in sorted(planned_stops.items())))
    if state.get("standby_onfail"):
        parts.append(f"NOT planned, standby after a failure (on-fail=standby): {', '.join(state['standby_onfail'])}")
    return "; ".join(parts) or "none"


def replication(runner: Runner) -> dict:
    result = runner.run(["mariadb", "--batch", "-e", "SHOW SLAVE STATUS\\G"], check=False)
    fields = {}
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        fields[key] = value
    return {"io": fields.get("Slave_IO_Running"), "sql": fields.get("Slave_SQL_Running"),
            "lag": fields.get("Seconds_Behind_Master"), "source": fields.get("Master_Host"),
            "error": fields.get("Last_Error") or fields.get("Last_IO_Error") or ""}


_PROC_DRBD = re.compile(r"^\s*(\d+): cs:(\S+) ro:(\S+)/(\S+) ds:(\S+)/(\S+)")
_OOS = re.compile(r"\boos:(\d+)")


def parse_proc_drbd(text: str) -> dict[int, dict]:
    """DRBD 8.4's /proc/drbd: per minor the connection state, roles, disk states and KiB out of sync."""
    found: dict[int, dict] = {}
    current = None
    for line in text.splitlines():
        match = _PROC_DRBD.match(line)
        if match:
            minor, cs, role, peer_role, disk, peer_disk = match.groups()
            current = found[int(minor)] = {"connection": cs, "role": role, "peer_role": peer_role, "disk": disk,
                                           "peer_disk": peer_disk, "out_of_sync_kib": None}
            continue
        oos = _OOS.search(line)
        if oos and current is not None:
            current["out_of_sync_kib"] = int(oos.group(1))
    return found


def drbd_state(runner: Runner) -> dict[int, dict]:
    """What this node's kernel says of every DRBD minor; {} where no DRBD module is loaded."""
    result = runner.run(["cat", "/proc/drbd"], check=False)
    return parse_proc_drbd(result.stdout) if result.ok else {}


def drbd_verdict(minor: int, states: dict[str, dict]) -> tuple[bool, str]:
    """One DRBD resource seen from both nodes: healthy is Connected UpToDate/UpToDate, nothing out of sync.

    Split-brain: DRBD drops the connection and leaves at least one side StandAlone (it will not
    reconnect by itself), each side with data the other may lack. No after-sb policy here discards
    data on its own, so status says so and names the runbook; `drbdadm disconnect` by hand looks the
    same, and the runbook tells the two apart."""
    seen = {node: state.get(minor) for node, state in states.items()}
    missing = sorted(node for node, state in seen.items() if state is None)
    if missing:
        return False, f"minor {minor} is not configured on {', '.join(missing)}"
    words = "; ".join(f"{node} {s['connection']} {s['role']}/{s['peer_role']} {s['disk']}/{s['peer_disk']}"
                      f" oos {s['out_of_sync_kib']} KiB" for node, s in sorted(seen.items()))
    standalone = [node for node, s in seen.items() if s["connection"] == "StandAlone"]
    if standalone:
        return False, f"SPLIT-BRAIN suspected, {' and '.join(sorted(standalone))} StandAlone ({words}): " \
                      "follow docs/runbooks/split-brain.md"
    ok = all(s["connection"] == "Connected" and s["disk"] == "UpToDate" and s["peer_disk"] == "UpToDate"
             and not s["out_of_sync_kib"] for s in seen.values())
    primaries = sum(1 for s in seen.values() if s["role"] == "Primary")
    if primaries > 1:
        return False, f"two Primaries ({words}): follow docs/runbooks/split-brain.md"
    return ok, words


def api_over_tls(site: Site, timeout: float = 5.0) -> tuple[bool, str]:
    """GET /api/v1/health through the proxy on the LAN floating address, verifying the site certificate."""
    inv = site.inventory
    url = f"https://{inv.network.lan_vip}:{inv.proxy.port}/api/v1/health"
    context = ssl.create_default_context()
    if site.secrets.tls_certificate:
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as cafile:
            cafile.write(site.secrets.tls_certificate)
            cafile.flush()
            context = ssl.create_default_context(cafile=cafile.name)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            body = json.loads(response.read())
            hsts = response.headers.get("Strict-Transport-Security", "")
            return response.status == 200 and body.get("status") == "ok" and bool(hsts), f"{url}: {body}, HSTS {hsts}"
    except Exception as exc:  # noqa: BLE001 (every failure is an answer here)
        return False, f"{url}: {exc}"


def nfs_answers(site: Site, timeout: float = 10.0) -> tuple[bool, str]:
    """List the export over NFSv4 from here, with libnfs (no kernel NFS client needed)."""
    import subprocess

    inv = site.inventory
    url = f"nfs://{inv.network.san_vip}{inv.nfs.export}?version=4"
    try:
        result = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{url}: {exc}"
    return result.returncode == 0, f"{url}: " + ("listed" if result.returncode == 0 else
                                                 (result.stderr or result.stdout).strip()[-200:])


def verify(site: Site, runners: dict[str, Runner], wait: float = 90.0) -> Health:
    """Wait (up to `wait` s) for the pair to settle, then report every check."""
    inv = site.inventory
    names = [n.name for n in inv.nodes]
    deadline = time.monotonic() + wait
    while True:
        health = Health()
        state = cluster_state(runners[names[0]])
        health.add("both nodes online", state["online"] == sorted(names), f"online: {state['online']}")
        group = [r for r in state["resources"].values()]
        failed = [rid for rid, r in state["resources"].items() if r["failed"]]
        health.add("no failed resources", not failed and bool(group), f"failed: {failed}")
        stopped, planned = stopped_resources(state)
        health.add("every resource runs", not stopped and bool(group),
                   f"stopped: {stopped}" + (f", stopped on purpose: {sorted(planned)}" if planned else ""))
        health.add("operator's planned states", True,
                   planned_states(state, operator_constraints(runners[names[0]]), planned))
        recorded = [f"{f['action']} on {f['node']}: {f['result']} {f['reason']}".strip()
                    for f in state.get("failures", [])]
        health.add("no failed actions recorded", not recorded,
                   "; ".join(recorded) + " (docs/runbooks/failover.md: read the cause, then crm_resource --cleanup)"
                   if recorded else "none")
        for vip in (inv.network.lan_vip, inv.network.san_vip):
            holders = [n for n in names if vip in runners[n].run(["ip", "-4", "-o", "addr"], check=False).stdout]
            health.add(f"{vip} held once", len(holders) == 1, f"held by {holders}")
        for name in names:
            repl = replication(runners[name])
            health.add(f"replication into {name}", repl["io"] == "Yes" and repl["sql"] == "Yes",
                       f"from {repl['source']}, lag {repl['lag']} s {repl['error']}")
        if not inv.lab.enabled:  # the namespace lab has no DRBD module
            states = {name: drbd_state(runners[name]) for name in names}
            for volume in (inv.drbd.cloud, inv.drbd.vmdata):
                ok, detail = drbd_verdict(volume.minor, states)
                health.add(f"DRBD {volume.resource} in sync", ok, detail)
        ok, detail = api_over_tls(site)
        health.add("API answers through TLS on the LAN floating address", ok, detail)
        if inv.lab.enabled:  # the installer sits on the lab's SAN, among the export's clients
            ok, detail = nfs_answers(site)
            health.add("NFSv4 export answers on the SAN floating address", ok, detail)
        if health.ok or time.monotonic() > deadline:
            return health
        time.sleep(1)  # poll interval inside the deadline loop
