"""Monitoring as operators read it: /metrics (parsed by prometheus-client, linted by promtool),
the alert rules (promtool check rules), history through the API with retention, on both databases."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from appliance.core import monitor_wire as wire
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM
from appliance.core.collector import Collector
from appliance.core.history import Retention, compact, samples
from appliance.core.metrics import exposition
from appliance.core.protocols import DomainSpec
from appliance.drivers.fake import FakeHypervisor
from appliance.drivers.monitor_agent import Agent
from tests.conftest import require_tool
from tests.manager.test_lifecycle import spec

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"monitoring-api-test-secret-01234"


@pytest.fixture
def api(world):
    _, admin_token = world.manager.users.create(SYSTEM, "admin", role="admin")[:2]
    _, auditor_token = world.manager.users.create(SYSTEM, "prometheus", role="auditor")[:2]
    _, user_token = world.manager.users.create(SYSTEM, "alice")[:2]
    collector = Collector(world.store.db, SECRET)
    client = TestClient(create_app(world.manager, metrics=lambda: exposition(world.store, collector, lambda: {
        "node": "cloud-cc01", "active": True, "replication": {"io": "Yes", "sql": "No", "lag": ""},
        "drbd": {0: {"connection": "Connected", "disk": "UpToDate", "peer_disk": "Inconsistent",
                     "out_of_sync_kib": 1024}}})), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    client.tokens = {"admin": admin_token, "auditor": auditor_token, "user": user_token}
    client.world, client.collector = world, collector
    return client


def _report(api, host, vms: list[int], cycles: int = 1) -> None:
    hv = FakeHypervisor()
    for vm in vms:
        hv.ensure_running(DomainSpec(name=f"appliance-{vm}", vcpu=1, memory_mb=64))
    agent = Agent(hv, host.id, wire.host_key(SECRET, host.id), ("127.0.0.1", 9),
                  api.world.tmp / f"epoch-{host.id}", send=api.collector.handle)
    api.collector.refresh_hosts()
    for _ in range(cycles):
        agent.cycle()
    api.collector.handle(b"forged" * 10)
    api.collector.flush()


def test_metrics_parse_and_name_hosts_vms_datastores_collector_and_the_pair(api):
    hosts, _, _, image = api.world.basic()
    api.world.manager.vms.create(SYSTEM, spec(disks=[image.id]))
    _report(api, hosts[0], [1])
    response = api.get("/metrics", headers={"Authorization": f"Bearer {api.tokens['auditor']}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("appliance_host_up", (("host", "host1"),))] == 1
    assert value[("appliance_hosts", (("state", "MONITORED"),))] == 2
    assert value[("appliance_vms", (("state", "PENDING"),))] == 1
    assert value[("appliance_collector_records_total", (("kind", "vm"),))] == 1
    assert value[("appliance_collector_datagrams_total", (("outcome", "malformed"),))] == 1
    assert value[("appliance_mysql_replication_running", (("node", "cloud-cc01"),))] == 0
    assert value[("appliance_drbd_uptodate", (("minor", "0"),))] == 0
    assert ("appliance_datastore_free_mib", (("datastore", "system"), ("kind", "system"))) in value
    require_tool("promtool")
    lint = subprocess.run(["promtool", "check", "metrics"], input=response.text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_metrics_need_an_administrators_or_auditors_token(api):
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert api.get("/metrics", headers={"Authorization": f"Bearer {api.tokens['user']}"}).status_code == 403


def test_the_alert_rules_and_the_scrape_config_pass_promtool(tmp_path):
    require_tool("promtool")
    rules = subprocess.run(["promtool", "check", "rules", str(ROOT / "docs/monitoring/alerts.yml")],
                           capture_output=True, text=True)
    assert rules.returncode == 0 and "SUCCESS: 8 rules found" in rules.stdout, rules.stdout + rules.stderr
    for runbook in ("monitoring.md", "replication-repair.md", "split-brain.md", "storage.md"):
        assert (ROOT / "docs/runbooks" / runbook).exists()
        assert f"docs/runbooks/{runbook}" in (ROOT / "docs/monitoring/alerts.yml").read_text()
    (tmp_path / "token").write_text("a-token\n")  # promtool checks the files exist
    (tmp_path / "token").chmod(0o600)
    (tmp_path / "ca.crt").write_bytes((ROOT / "tests/data/test-only-tls.crt").read_bytes())
    config = tmp_path / "prometheus.yml"
    config.write_text((ROOT / "docs/monitoring/prometheus.yml").read_text()
                      .replace("alerts.yml", str(ROOT / "docs/monitoring/alerts.yml"))
                      .replace("/etc/prometheus/appliance.token", str(tmp_path / "token"))
                      .replace("/etc/prometheus/appliance-ca.crt", str(tmp_path / "ca.crt")))
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_history_through_the_api_only_for_who_may_read_the_vm(api):
    hosts, _, _, image = api.world.basic()
    mine = api.world.manager.vms.create(SYSTEM, spec(disks=[image.id]))[0]
    _report(api, hosts[0], [mine.id], cycles=3)
    host_rows = api.get(f"/api/v1/hosts/{hosts[0].id}/monitoring").json()
    vm_rows = api.get(f"/api/v1/vms/{mine.id}/monitoring?since=0").json()
    assert len(host_rows) == 3 and len(vm_rows) == 3 and all(r["span"] == 0 for r in vm_rows)
    other = {"Authorization": f"Bearer {api.tokens['user']}"}  # alice does not own the VM
    assert api.get(f"/api/v1/vms/{mine.id}/monitoring", headers=other).status_code in (403, 404)
    assert api.get(f"/api/v1/hosts/{hosts[0].id}/monitoring", headers=other).status_code == 403
    assert api.get(f"/api/v1/vms/{mine.id}/monitoring?limit=0").status_code == 422


def test_retention_folds_old_samples_and_bounds_rows_per_vm(database):
    from appliance.core.pools import Store
    from appliance.core.entities import Host

    store = Store(database)
    with store.transaction() as tx:
        host = store.hosts.insert(tx, Host(name="h", uri="fake://"))
    now = 1_800_000_000
    start = now - 3 * 86400
    rows = [(7, host.id, at, 100 + (at // 30) % 2 * 100, 1000, at, 2 * at) for at in range(start, now, 30)]
    with database.transaction() as tx:
        tx.insert_ints("mon_vm", ("vm_id", "host_id", "at", "cpu", "mem_kb", "net_rx", "net_tx"), rows)
    done = compact(database, now, Retention(raw_seconds=3600, medium_seconds=86400, keep_seconds=2 * 86400))
    with database.transaction(readonly=True) as tx:
        kept = samples(tx, "vm", 7, 0, 10000)
    spans = {r["span"] for r in kept}
    assert spans == {0, 300, 3600}
    assert len(kept) <= 3600 // 30 + 86400 // 300 + 86400 // 3600 + 3  # raw + 5-min + hourly, bounded
    assert min(r["at"] for r in kept) >= now - 2 * 86400
    hourly = [r for r in kept if r["span"] == 3600]
    assert all(r["cpu"] == 150 for r in hourly)  # the average of 100 and 200
    assert all(r["net_rx"] == r["at"] + 3600 - 30 for r in hourly)  # the last counter of the hour
    assert done["vm_raw_folded"] > 0 and done["vm_expired"] > 0
    again = compact(database, now, Retention(raw_seconds=3600, medium_seconds=86400, keep_seconds=2 * 86400))
    assert again["vm_raw_folded"] == again["vm_medium_folded"] == again["vm_expired"] == 0  # idempotent
