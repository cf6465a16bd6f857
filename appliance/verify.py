"""After an install (and for `appliance status`): is the pair really healthy? Reads only."""
from __future__ import annotations

import json
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
    """Nodes online and where each resource runs, from crm_mon's XML."""
    result = runner.run(["crm_mon", "-1", "--output-as=xml"], check=False)
    if not result.ok:
        return {"online": [], "resources": {}, "error": (result.stderr or result.stdout).strip()[-200:]}
    root = ET.fromstring(result.stdout)
    online = [n.get("name") for n in root.iter("node") if n.get("online") == "true" and n.get("name")]
    resources = {}
    for resource in root.iter("resource"):
        nodes = [n.get("name") for n in resource.iter("node")]
        resources[resource.get("id")] = {"role": resource.get("role"), "nodes": nodes,
                                         "failed": resource.get("failed") == "true"}
    dc = root.find("./summary/current_dc")
    # Failed actions stay recorded (and can keep a resource off a node: migration-threshold) until
    # someone cleans them up; a resource can be "failed=false" and still stopped because of them.
    failures = [{"action": f.get("op_key"), "node": f.get("node"), "result": f.get("exitstatus"),
                 "reason": f.get("exitreason") or "", "when": f.get("last-rc-change")}
                for f in root.iter("failure")]
    return {"online": sorted(online), "resources": resources, "failures": failures,
            "dc": dc.get("name") if dc is not None else None}


def replication(runner: Runner) -> dict:
    result = runner.run(["mariadb", "--batch", "-e", "SHOW SLAVE STATUS\\G"], check=False)
    fields = {}
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        fields[key] = value
    return {"io": fields.get("Slave_IO_Running"), "sql": fields.get("Slave_SQL_Running"),
            "lag": fields.get("Seconds_Behind_Master"), "source": fields.get("Master_Host"),
            "error": fields.get("Last_Error") or fields.get("Last_IO_Error") or ""}


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
        stopped = sorted(rid for rid, r in state["resources"].items() if not r["nodes"])
        health.add("every resource runs", not stopped and bool(group), f"stopped: {stopped}")
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
        ok, detail = api_over_tls(site)
        health.add("API answers through TLS on the LAN floating address", ok, detail)
        if inv.lab.enabled:  # the installer sits on the lab's SAN, among the export's clients
            ok, detail = nfs_answers(site)
            health.add("NFSv4 export answers on the SAN floating address", ok, detail)
        if health.ok or time.monotonic() > deadline:
            return health
        time.sleep(1)  # poll interval inside the deadline loop
