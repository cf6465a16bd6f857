"""The Prometheus exposition of the manager: hosts, VMs, datastores, the collector and the HA pair.

Read from the database at scrape time (one read transaction) and rendered by prometheus-client,
which escapes every label value. Aggregates where a label per VM would be millions of series: VMs
are counted by state, their usage summed per host; each host and datastore has its own series.
The HA facts (this node's role, DRBD, replication) come from a callable the service passes in,
so the module stays pure of the machine; docs/monitoring.md has the scrape config and alert rules.
"""
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .entities import HostState, VmState

HOST_STATES = (HostState.INIT, HostState.MONITORED, HostState.ERROR, HostState.DISABLED, HostState.OFFLINE)
VM_STATES = tuple(v for k, v in vars(VmState).items() if k.isupper())


class _Snapshot:
    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


def families(store, collector=None, ha: Callable[[], dict] | None = None, wall: Callable[[], float] | None = None) -> list:
    import time

    now = (wall or time.time)()
    with store.read() as tx:
        hosts = store.hosts.where(tx)
        datastores = store.datastores.where(tx)
        vm_states = dict(tx.execute("SELECT state, COUNT(*) FROM vms GROUP BY state").all())
        agents = {r[0]: r[1] for r in tx.execute("SELECT host_id, seen_at FROM mon_agents").all()}
    out: list[Any] = []
    by_state = GaugeMetricFamily("appliance_hosts", "Hosts by state", labels=["state"])
    for state in HOST_STATES:
        by_state.add_metric([state], sum(1 for h in hosts if h.state == state))
    up = GaugeMetricFamily("appliance_host_up", "1 when the host is MONITORED (or DISABLED: monitored, takes no VMs)",
                           labels=["host"])
    cpu = GaugeMetricFamily("appliance_host_cpu_units", "CPU units the host has (100 a core)", labels=["host"])
    mem = GaugeMetricFamily("appliance_host_memory_mib", "Memory the host has, MiB", labels=["host"])
    age = GaugeMetricFamily("appliance_host_report_age_seconds",
                            "Seconds since the host's agent (push) or the manager (pull) last heard from it",
                            labels=["host"])
    for h in hosts:
        if h.state == HostState.OFFLINE:
            continue
        up.add_metric([h.name], 1 if h.state in (HostState.MONITORED, HostState.DISABLED) else 0)
        cpu.add_metric([h.name], h.cpu_total)
        mem.add_metric([h.name], h.mem_total)
        heard = agents.get(h.id, h.monitored_at)
        if heard:
            age.add_metric([h.name], max(0.0, now - heard))
    out += [by_state, up, cpu, mem, age]
    vms = GaugeMetricFamily("appliance_vms", "VMs by state", labels=["state"])
    for state in VM_STATES:
        vms.add_metric([state], int(vm_states.get(state, 0)))
    out.append(vms)
    total = GaugeMetricFamily("appliance_datastore_total_mib", "Datastore size, MiB", labels=["datastore", "kind"])
    free = GaugeMetricFamily("appliance_datastore_free_mib", "Datastore free space, MiB", labels=["datastore", "kind"])
    for ds in datastores:
        if ds.total_mb:
            total.add_metric([ds.name, ds.kind], ds.total_mb)
            free.add_metric([ds.name, ds.kind], ds.free_mb)
    out += [total, free]
    if collector is not None:
        out += collector_families(collector)
    if ha is not None:
        out += ha_families(ha())
    return out


def collector_families(collector) -> list:
    c = dict(collector.counters)
    datagrams = CounterMetricFamily("appliance_collector_datagrams", "Datagrams received", labels=["outcome"])
    datagrams.add_metric(["accepted"], c["accepted"])
    for key, value in sorted(c.items()):
        if key.startswith("dropped_") and key != "dropped_db_backlog":
            datagrams.add_metric([key[len("dropped_"):]], value)
    records = CounterMetricFamily("appliance_collector_records", "Records accepted", labels=["kind"])
    for kind in ("vm", "host", "state"):
        records.add_metric([kind], c[f"{kind}_records"])
    lost = CounterMetricFamily("appliance_collector_backlog_dropped_records",
                               "VM records dropped because the database was away longer than the backlog holds")
    lost.add_metric([], c["dropped_db_backlog"])
    flushes = CounterMetricFamily("appliance_collector_flushes", "Batches stored (one transaction each)")
    flushes.add_metric([], c["flushes"])
    errors = CounterMetricFamily("appliance_collector_flush_errors", "Flushes the database refused (batch kept)")
    errors.add_metric([], c["flush_errors"])
    pending = GaugeMetricFamily("appliance_collector_pending_rows", "Rows waiting for the next flush")
    pending.add_metric([], collector.pending())
    slowest = GaugeMetricFamily("appliance_collector_flush_seconds_max", "The slowest flush so far, seconds")
    slowest.add_metric([], collector.flush_seconds_max)
    return [datagrams, records, lost, flushes, errors, pending, slowest]


def ha_families(facts: dict) -> list:
    """facts: {"node": name, "active": bool, "replication": {"io", "sql", "lag"} or None,
    "drbd": {minor: {"connection", "disk", "peer_disk", "out_of_sync_kib"}}}."""
    out = []
    active = GaugeMetricFamily("appliance_ha_active", "1 on the node that runs the manager", labels=["node"])
    active.add_metric([str(facts.get("node", ""))], 1 if facts.get("active", True) else 0)
    out.append(active)
    repl = facts.get("replication")
    if repl is not None:
        running = GaugeMetricFamily("appliance_mysql_replication_running",
                                    "1 when both replication threads run on this node", labels=["node"])
        running.add_metric([str(facts.get("node", ""))], 1 if repl.get("io") == "Yes" and repl.get("sql") == "Yes" else 0)
        out.append(running)
        lag = repl.get("lag")
        if lag not in (None, "", "NULL") and str(lag).isdigit():
            behind = GaugeMetricFamily("appliance_mysql_replication_lag_seconds", "Seconds_Behind_Master",
                                       labels=["node"])
            behind.add_metric([str(facts.get("node", ""))], int(lag))
            out.append(behind)
    drbd = facts.get("drbd") or {}
    if drbd:
        connected = GaugeMetricFamily("appliance_drbd_connected", "1 when the DRBD minor is Connected",
                                      labels=["minor"])
        uptodate = GaugeMetricFamily("appliance_drbd_uptodate", "1 when both disks are UpToDate", labels=["minor"])
        oos = GaugeMetricFamily("appliance_drbd_out_of_sync_kib", "KiB out of sync", labels=["minor"])
        for minor, state in sorted(drbd.items()):
            connected.add_metric([str(minor)], 1 if state.get("connection") == "Connected" else 0)
            uptodate.add_metric([str(minor)], 1 if state.get("disk") == state.get("peer_disk") == "UpToDate" else 0)
            if state.get("out_of_sync_kib") is not None:
                oos.add_metric([str(minor)], state["out_of_sync_kib"])
        out += [connected, uptodate, oos]
    return out


def exposition(store, collector=None, ha: Callable[[], dict] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(store, collector, ha)))
    return generate_latest(registry)
