"""The monitoring collector: host agents' datagrams in, batched rows out.

No callback per datagram. `drain` empties a socket it is handed (non-blocking reads; the UDP
socket and the two threads that run drain and flush live in drivers/monitor_udp.py: core opens
no socket), checking each datagram (shape, the host's MAC, replay) and appending it to the pending
batch. `flush` swaps the batch out and stores it in ONE transaction: a flush costs one commit
however many datagrams it holds, so the rate the collector keeps up with is the database's bulk
insert rate, not its commit rate.

Replay: each host's (epoch, sequence) must be new. Within the current epoch a window of the last
WINDOW sequence numbers absorbs UDP reordering; anything older, or an older epoch, is dropped.
The highest (epoch, sequence) of each host is stored with every flush, so a collector that starts
after a failover accepts nothing at or below what its predecessor stored.

Datagrams dropped are counted by reason (`counters`), never stored, never logged one by one (a
flood of forged datagrams must not become a flood of log lines).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field

from . import monitor_wire as wire
from .db import Database

log = logging.getLogger("appliance.collector")

WINDOW = 1024  # sequence numbers of reordering tolerated within one epoch
REASONS = ("oversized", "truncated", "malformed", "unknown_host", "bad_mac", "replayed")


@dataclass
class AgentState:
    """What the collector keeps of one host's agent (a row of mon_agents)."""

    host_id: int
    epoch: int = 0
    seq: int = 0
    seen_at: float = 0.0
    snapshot: int = 0
    states_at: float = 0.0
    cpu_units: int = 0
    memory_mb: int = 0
    hypervisor: str = ""
    window: int = -1  # bit i set: sequence seq - i was seen; -1 (all seen) after a load from the database
    parts: dict[int, list] = field(default_factory=dict)  # the snapshot being assembled: part -> states
    building: tuple[int, int] = (0, 0)  # (epoch, snapshot) being assembled

    def accept(self, epoch: int, seq: int) -> bool:
        """True once for each new (epoch, seq); False for a replay or anything too old."""
        if epoch > self.epoch:  # the agent restarted: a new run, a new window
            self.epoch, self.seq, self.window = epoch, seq, 1
            return True
        if epoch < self.epoch:
            return False
        if seq > self.seq:
            shift = seq - self.seq
            self.window = ((self.window << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.seq = seq
            return True
        age = self.seq - seq
        if age >= WINDOW or (self.window >> age) & 1:
            return False
        self.window |= 1 << age
        return True

    def row(self) -> tuple:
        return (self.host_id, self.epoch, self.seq, self.seen_at, self.snapshot, self.states_at,
                self.cpu_units, self.memory_mb, self.hypervisor)


@dataclass
class Batch:
    # VM records stay as the datagram carried them, (host, at, payload): decoded row by row only
    # while the flush inserts them, so millions of row tuples never sit in memory (the garbage
    # collector's full passes over them cost more than the decoding itself).
    vm: list = field(default_factory=list)
    vm_records: int = 0
    host: list = field(default_factory=list)
    states: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)  # host id -> its newest complete domain list
    agents: dict = field(default_factory=dict)  # host id -> AgentState (those touched)
    since: float = 0.0  # monotonic time its first datagram arrived

    def __len__(self) -> int:
        return self.vm_records + len(self.host) + len(self.states) + len(self.agents) + len(self.snapshots)

    def vm_rows(self):
        unpack = wire.VM_RECORD.iter_unpack
        for host, at, payload in self.vm:
            tail = (host, at)
            for record in unpack(payload):
                yield record + tail


class Collector:
    def __init__(self, db: Database, secret: bytes, *, backlog_records: int = 5_000_000, flush_interval: float = 0.25,
                 wall=time.time, monotonic=time.monotonic):
        if len(secret) < 16:
            raise ValueError("the monitoring secret must be at least 16 bytes")
        self.db = db
        self._secret = secret
        self._keys: dict[int, bytes] = {}
        # backlog_records: VM records kept while the database is away (a failover of the pair's
        # MariaDB takes tens of seconds); ~40 bytes each, so the default holds ~200 MB at most.
        self.backlog_records, self.flush_interval = backlog_records, flush_interval
        self.wall, self.monotonic = wall, monotonic
        self.counters = {"datagrams": 0, "accepted": 0, "vm_records": 0, "host_records": 0, "state_records": 0,
                         "flushes": 0, "rows_stored": 0, "flush_errors": 0, "dropped_db_backlog": 0,
                         **{f"dropped_{r}": 0 for r in REASONS}}
        self.flush_seconds_last = 0.0
        self.flush_seconds_max = 0.0
        self.latency_seconds_max = 0.0  # arrival of a batch's first datagram to its commit
        self._agents: dict[int, AgentState] = {}
        self._known: set[int] = set()
        self._batch = Batch()
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self.load()

    # -- state ----------------------------------------------------------------------------------
    def load(self) -> None:
        """Each agent's stored replay state and the hosts that exist (a datagram naming any other
        host id is dropped before its MAC is even computed)."""
        with self.db.transaction(readonly=True) as tx:
            rows = tx.execute("SELECT host_id, epoch, seq, seen_at, snapshot, states_at, cpu_units, memory_mb, "
                              "hypervisor FROM mon_agents").all()
        self.refresh_hosts()
        with self._lock:
            for row in rows:
                if row[0] not in self._agents:
                    self._agents[row[0]] = AgentState(*row)

    def refresh_hosts(self) -> None:
        with self.db.transaction(readonly=True) as tx:
            known = {r[0] for r in tx.execute("SELECT id FROM hosts").all()}
        with self._lock:
            self._known = known

    def _key(self, host_id: int) -> bytes:
        key = self._keys.get(host_id)
        if key is None:
            key = self._keys[host_id] = wire.host_key(self._secret, host_id)
        return key

    # -- receiving ------------------------------------------------------------------------------
    def handle(self, datagram: bytes) -> bool:
        """Check and decode one datagram into the pending batch. False (and a counter) if dropped."""
        with self._lock:
            return self._handle(datagram, self.wall(), self.monotonic())

    def _drop(self, reason: str) -> bool:
        self.counters["dropped_" + reason] += 1
        return False

    def _handle(self, datagram: bytes, wall: float, mono: float) -> bool:
        self.counters["datagrams"] += 1
        try:
            header = wire.peek(datagram)
            if header.host_id not in self._known:
                return self._drop("unknown_host")
            payload = wire.verify(self._key(header.host_id), datagram, header)
        except wire.WireError as exc:
            return self._drop(exc.reason)
        agent = self._agents.get(header.host_id)
        if agent is None:
            agent = self._agents[header.host_id] = AgentState(header.host_id)
        if not agent.accept(header.epoch, header.seq):
            return self._drop("replayed")
        self.counters["accepted"] += 1
        batch = self._batch
        if not batch.since:
            batch.since = mono
        agent.seen_at = wall
        batch.agents[header.host_id] = agent
        at, host = int(wall), header.host_id
        kind = header.kind
        if kind == wire.VM_MONITOR:
            batch.vm.append((host, at, bytes(payload)))
            batch.vm_records += header.count
            self.counters["vm_records"] += header.count
        elif kind == wire.HOST:
            cpu, mem, domains = wire.HOST_RECORD.unpack(payload)
            batch.host.append((host, at, cpu, mem, domains))
            self.counters["host_records"] += 1
        elif kind == wire.SYSTEM:
            agent.cpu_units, agent.memory_mb, name = wire.SYSTEM_RECORD.unpack(payload)
            # it reaches the host's HYPERVISOR attribute (placement expressions): a plain word only
            agent.hypervisor = re.sub(r"[^A-Za-z0-9._-]", "", name.rstrip(b"\0").decode("ascii", "replace"))
        elif kind == wire.VM_STATE:
            self._state_part(agent, header, payload, wall)
        return True

    def _state_part(self, agent: AgentState, header: wire.Header, payload: memoryview, wall: float) -> None:
        """Assemble a host's domain list; only a complete one is stored (a VM absent from a partial
        list may simply be in a part that was lost)."""
        snapshot, part, parts = wire.STATE_PREFIX.unpack_from(payload)
        if part >= parts:
            self.counters["dropped_malformed"] += 1
            return
        key = (header.epoch, snapshot)
        if key < agent.building:
            return  # a late part of a snapshot already superseded
        if key > agent.building:
            agent.building, agent.parts = key, {}
        agent.parts[part] = [(vm, wire.STATES[code] if code < len(wire.STATES) else "unknown")
                             for vm, code in wire.STATE_RECORD.iter_unpack(payload[wire.STATE_PREFIX.size:])]
        self.counters["state_records"] += header.count
        if len(agent.parts) == parts:
            # One number for (epoch, snapshot): a restarted agent's first list is newer than any before it.
            combined = (header.epoch << 32) | snapshot
            for index in range(parts):
                self._batch.states.extend((vm, agent.host_id, state, header.epoch, combined, wall)
                                          for vm, state in agent.parts[index])
            agent.snapshot, agent.states_at, agent.parts = combined, wall, {}
            self._batch.snapshots[agent.host_id] = combined

    def drain(self, sock, limit: int = 100_000) -> int:
        """Read every datagram waiting on `sock` (up to `limit`), without blocking."""
        count = 0
        recv = sock.recv
        size = wire.MAX_DATAGRAM + 1  # one byte more: a longer datagram shows as oversized
        while count < limit:
            with self._lock:  # taken per chunk, so a flush never waits for a long drain
                wall, mono = self.wall(), self.monotonic()
                for _ in range(256):
                    try:
                        datagram = recv(size)
                    except (BlockingIOError, InterruptedError):
                        return count
                    self._handle(datagram, wall, mono)
                    count += 1
        return count

    # -- storing --------------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._batch)

    def flush(self) -> int:
        """Store everything pending in one transaction; returns the rows stored. On a database
        error the batch is kept and retried (up to backlog_records VM records; beyond that the oldest
        samples go, counted, so a dead database cannot exhaust the node's memory)."""
        with self._lock:
            batch, self._batch = self._batch, Batch()
        if not len(batch):
            return 0
        started = self.monotonic()
        try:
            with self.db.transaction() as tx:
                if batch.vm:
                    tx.insert_ints("mon_vm", ("vm_id", "cpu", "mem_kb", "net_rx", "net_tx", "host_id", "at"),
                                   batch.vm_rows())
                if batch.host:
                    tx.executemany("INSERT INTO mon_host (host_id, at, cpu, mem_mb, domains) VALUES (?, ?, ?, ?, ?)",
                                   batch.host)
                if batch.states:
                    tx.executemany("REPLACE INTO mon_vm_state (vm_id, host_id, state, epoch, snapshot, at) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", batch.states)
                if batch.snapshots:  # only each host's newest list stays (a VM that left, a host now empty)
                    tx.executemany("DELETE FROM mon_vm_state WHERE host_id = ? AND snapshot <> ?",
                                   list(batch.snapshots.items()))
                with self._lock:
                    agents = [a.row() for a in batch.agents.values()]
                tx.executemany("REPLACE INTO mon_agents (host_id, epoch, seq, seen_at, snapshot, states_at, "
                               "cpu_units, memory_mb, hypervisor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", agents)
        except Exception as exc:  # noqa: BLE001 (a flush must not kill the collector; the batch waits)
            self.counters["flush_errors"] += 1
            # a database away (failover, restart) is expected and said in a line; anything else is a
            # defect, said with its traceback
            (log.warning if self.db.transient(exc) else log.exception)(
                "collector: flush of %d rows failed, kept for the next one: %s", len(batch), exc)
            self._requeue(batch)
            return 0
        done = self.monotonic()
        rows = len(batch)
        with self._lock:
            self.counters["flushes"] += 1
            self.counters["rows_stored"] += rows
            self.flush_seconds_last = done - started
            self.flush_seconds_max = max(self.flush_seconds_max, done - started)
            self.latency_seconds_max = max(self.latency_seconds_max, done - batch.since)
            self._flushed.notify_all()
        return rows

    def _requeue(self, batch: Batch) -> None:
        with self._lock:
            newer = self._batch
            newer.vm[:0], newer.host[:0], newer.states[:0] = batch.vm, batch.host, batch.states
            newer.snapshots = {**batch.snapshots, **newer.snapshots}
            newer.vm_records += batch.vm_records
            newer.agents = {**batch.agents, **newer.agents}
            newer.since = batch.since or newer.since
            while newer.vm and newer.vm_records > self.backlog_records:  # the oldest datagrams go first
                count = len(newer.vm.pop(0)[2]) // wire.VM_RECORD.size
                newer.vm_records -= count
                self.counters["dropped_db_backlog"] += count

    def wait_flushed(self, timeout: float = 5.0) -> bool:
        """Tests and the benchmark: block until the next flush commits."""
        with self._flushed:
            return self._flushed.wait(timeout)
