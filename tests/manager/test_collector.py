"""The monitoring collector against hostile and careless senders, on SQLite and a real MariaDB.

Datagrams travel over real UDP on loopback where the path matters (agent -> collector); the
checks of single datagrams call handle() directly and then flush, so "none reaches the database"
is read back from the tables.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.core import monitor_wire as wire
from appliance.core.collector import WINDOW, Collector
from appliance.drivers.monitor_udp import UdpCollector
from appliance.core.entities import Host
from appliance.core.pools import Store
from appliance.drivers.fake import FakeHypervisor
from appliance.drivers.monitor_agent import Agent, next_epoch
from appliance.core.protocols import DomainSpec, DriverError

SECRET = b"s" * 32


def _hosts(db, n: int = 2) -> list[int]:
    store = Store(db)
    with store.transaction() as tx:
        return [store.hosts.insert(tx, Host(name=f"h{i}", uri="fake://")).id for i in range(n)]


def _rows(db, table: str) -> int:
    with db.transaction(readonly=True) as tx:
        return tx.execute(f"SELECT COUNT(*) FROM {table}").one()[0]


def _agent(hv, host_id, tmp_path: Path, sent: list, secret: bytes = SECRET, **kw) -> Agent:
    return Agent(hv, host_id, wire.host_key(secret, host_id), ("127.0.0.1", 9), tmp_path / f"epoch-{host_id}",
                 send=sent.append, **kw)


def _running(hv: FakeHypervisor, *vms: int) -> None:
    for vm in vms:
        hv.ensure_running(DomainSpec(name=f"appliance-{vm}", vcpu=1, memory_mb=64))


def _rig(database, *vms: int) -> tuple:
    """Two hosts, a collector, a fake hypervisor running `vms`, and the list an agent sends into."""
    host, other = _hosts(database)
    hv = FakeHypervisor()
    _running(hv, *vms)
    return host, other, Collector(database, SECRET), hv, []


def test_agent_datagrams_reach_the_tables_over_real_udp(database, tmp_path):
    host, _ = _hosts(database)
    collector = Collector(database, SECRET, flush_interval=0.05)
    udp = UdpCollector(collector)
    _, port = udp.bind("127.0.0.1", 0)
    udp.start()
    try:
        hv = FakeHypervisor()
        _running(hv, 7, 8, 9)
        agent = Agent(hv, host, wire.host_key(SECRET, host), ("127.0.0.1", port), tmp_path / "epoch")
        agent.cycle()
        deadline = time.monotonic() + 10
        while _rows(database, "mon_vm") < 3 and time.monotonic() < deadline:
            collector.wait_flushed(0.5)
    finally:
        udp.stop()
    with database.transaction(readonly=True) as tx:
        assert sorted(r[0] for r in tx.execute("SELECT vm_id FROM mon_vm WHERE host_id = ?", (host,)).all()) == [7, 8, 9]
        assert tx.execute("SELECT COUNT(*) FROM mon_host WHERE host_id = ?", (host,)).one()[0] == 1
        states = tx.execute("SELECT vm_id, state FROM mon_vm_state WHERE host_id = ? ORDER BY vm_id", (host,)).all()
        agents = tx.execute("SELECT epoch, seq, cpu_units, hypervisor FROM mon_agents WHERE host_id = ?",
                            (host,)).all()
    assert [tuple(r) for r in states] == [(7, "running"), (8, "running"), (9, "running")]
    assert [tuple(r) for r in agents] == [(1, agent.seq, 800, "fake")]
    assert collector.counters["accepted"] == agent.sent and collector.counters["dropped_bad_mac"] == 0


def test_forged_replayed_truncated_oversized_and_unknown_are_counted_and_never_stored(database, tmp_path):
    host, other, collector, hv, sent = _rig(database, 1)
    _agent(hv, host, tmp_path, sent).usage()
    good = sent[0]
    header = wire.peek(good)
    body = good[:-wire.MAC_BYTES]
    forged = [
        body + bytes(wire.MAC_BYTES),  # no key at all
        wire.pack(b"k" * 32, header.kind, host, header.epoch, header.seq + 1, body[wire.HEADER.size:], header.count),
        # the other host's own (real) key cannot speak for this host
        wire.pack(wire.host_key(SECRET, other), header.kind, host, 1, 99, body[wire.HEADER.size:], header.count),
        good[:3] + bytes([good[3] ^ 1]) + good[4:],  # one bit of the header flipped (its kind)
        good[:-20] + bytes(20),
    ]
    truncated = [good[:10], good[:wire.HEADER.size + wire.MAC_BYTES - 1], b""]
    oversized = [good + bytes(wire.MAX_DATAGRAM)]
    unknown = [wire.pack(wire.host_key(SECRET, 4242), header.kind, 4242, 1, 1, body[wire.HEADER.size:], header.count)]
    # a record count that does not match the payload, correctly signed: a sender bug, still dropped
    miscounted = [wire.pack(wire.host_key(SECRET, host), wire.VM_MONITOR, host, 1, 50, body[wire.HEADER.size:], 3)]
    for datagram in forged + truncated + oversized + unknown + miscounted:
        assert not collector.handle(datagram)
    assert collector.flush() == 0
    assert _rows(database, "mon_vm") == 0 and _rows(database, "mon_agents") == 0
    c = collector.counters
    assert c["dropped_oversized"] == 1 and c["dropped_unknown_host"] == 1
    assert c["dropped_truncated"] == len(truncated) + len(miscounted)
    assert c["dropped_bad_mac"] + c["dropped_malformed"] == len(forged)
    assert collector.handle(good) and not collector.handle(good)  # the real one once, its replay never
    assert c["dropped_replayed"] == 1
    collector.flush()
    assert _rows(database, "mon_vm") == 1


def test_a_new_collector_after_failover_accepts_no_replay_of_what_its_predecessor_stored(database, tmp_path):
    host, _, first, hv, sent = _rig(database, 3)
    agent = _agent(hv, host, tmp_path, sent)
    for _ in range(5):
        agent.usage()
    captured = list(sent)
    for datagram in captured[:-2]:  # the last two are lost on the way: never seen by anyone
        assert first.handle(datagram)
    first.flush()
    stored = _rows(database, "mon_vm")
    second = Collector(database, SECRET)  # the survivor's collector, fresh memory, same database
    for datagram in captured:
        second.handle(datagram)
    second.flush()
    # everything at or below what the first stored is a replay; the two never-seen newer ones count
    assert second.counters["dropped_replayed"] == len(captured) - 2
    assert _rows(database, "mon_vm") == stored + 1  # one of the two lost datagrams is a VM sample
    sent.clear()
    agent.usage()  # the agent just carries on
    assert all(second.handle(d) for d in sent)


def test_a_restarted_agent_resumes_and_a_lost_epoch_file_is_refused_until_min_epoch(database, tmp_path):
    host, _, collector, hv, sent = _rig(database, 1)
    for _ in range(3):  # three runs: each starts above the last
        agent = _agent(hv, host, tmp_path, sent)
        agent.usage()
    assert [wire.peek(d).epoch for d in sent] == [1, 1, 2, 2, 3, 3]
    assert all(collector.handle(d) for d in sent)
    (tmp_path / f"epoch-{host}").unlink()  # a reinstalled host: its agent starts from 1 again
    sent.clear()
    _agent(hv, host, tmp_path, sent).usage()
    assert not any(collector.handle(d) for d in sent)  # indistinguishable from a replay: refused
    sent.clear()
    _agent(hv, host, tmp_path, sent, min_epoch=4).usage()  # what the manager passes when it (re)starts one
    assert all(collector.handle(d) for d in sent)


def test_a_clock_step_on_the_host_loses_no_sample(database, tmp_path, monkeypatch):
    host, _, collector, hv, sent = _rig(database, 5)
    agent = _agent(hv, host, tmp_path, sent)
    real = time.time
    for step in (0, -3600, +7200, -86400):  # the host's wall clock jumps around between cycles
        monkeypatch.setattr(time, "time", lambda s=step: real() + s)
        agent.cycle()
    assert all(collector.handle(d) for d in sent)
    collector.flush()
    assert _rows(database, "mon_vm") == 4 and _rows(database, "mon_host") == 4


def test_reordering_inside_the_window_is_accepted_once_and_older_is_not():
    from appliance.core.collector import AgentState

    state = AgentState(1)
    assert state.accept(1, 10) and state.accept(1, 12) and state.accept(1, 11)
    assert not state.accept(1, 11) and not state.accept(1, 10) and not state.accept(1, 12)
    assert state.accept(1, 10 + WINDOW + 5)
    assert not state.accept(1, 12)  # fell out of the window: may be a replay, so refused
    assert not state.accept(0, 10 ** 9)  # an older run
    assert state.accept(2, 1)


def test_a_large_host_splits_its_lists_and_a_state_list_with_a_lost_part_changes_nothing(database, tmp_path):
    host, _ = _hosts(database)
    collector = Collector(database, SECRET)
    hv = FakeHypervisor()
    _running(hv, *range(1, 1001))
    sent: list[bytes] = []
    agent = _agent(hv, host, tmp_path, sent)
    agent.states(force=True)
    parts = list(sent)
    assert len(parts) > 3 and all(len(d) <= wire.MAX_DATAGRAM for d in parts)
    for datagram in parts[:-1]:  # the last part is lost
        collector.handle(datagram)
    collector.flush()
    assert _rows(database, "mon_vm_state") == 0
    sent.clear()
    agent.states(force=True)  # the next cycle's list arrives whole
    for datagram in sent:
        collector.handle(datagram)
    sent.clear()
    agent.usage()
    for datagram in sent:
        collector.handle(datagram)
    collector.flush()
    assert _rows(database, "mon_vm_state") == 1000 and _rows(database, "mon_vm") == 1000


def test_a_failed_flush_keeps_the_batch_for_the_next(database, tmp_path):
    host, _, collector, hv, sent = _rig(database, 1, 2)
    _agent(hv, host, tmp_path, sent).usage()
    for datagram in sent:
        collector.handle(datagram)
    with database.transaction() as tx:
        tx.execute("ALTER TABLE mon_vm RENAME TO mon_vm_away")
    assert collector.flush() == 0 and collector.counters["flush_errors"] == 1
    with database.transaction() as tx:
        tx.execute("ALTER TABLE mon_vm_away RENAME TO mon_vm")
    assert collector.flush() > 0
    assert _rows(database, "mon_vm") == 2


def test_epoch_file_is_owner_only_and_written_before_use(tmp_path):
    path = tmp_path / "epoch"
    assert next_epoch(path) == 1 and next_epoch(path) == 2 and next_epoch(path, at_least=10) == 10
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("garbage")
    with pytest.raises(DriverError, match="--min-epoch"):
        next_epoch(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=wire.MAX_DATAGRAM + 64), st.integers(0, 2000), st.integers(0, 255))
def test_no_byte_string_raises_or_gets_stored_and_no_bit_flip_survives(tmp_path_factory, noise, where, value):
    from appliance.core.db import SqliteDatabase, migrate

    db = SqliteDatabase(str(tmp_path_factory.mktemp("fuzz") / "m.db"))
    migrate(db)
    host, _ = _hosts(db)
    collector = Collector(db, SECRET)
    assert collector.handle(noise) is False  # random bytes never carry a valid MAC
    valid = wire.pack(wire.host_key(SECRET, host), wire.VM_MONITOR, host, 1, 1, wire.VM_RECORD.pack(1, 2, 3, 4, 5), 1)
    i = where % len(valid)
    mutated = valid[:i] + bytes([valid[i] ^ (value or 1)]) + valid[i + 1:]
    assert collector.handle(mutated) is False
    collector.flush()
    assert _rows(db, "mon_vm") == 0
    db.close()


def test_the_collector_drains_a_burst_over_udp_without_loss(database, tmp_path):
    """Thousands of datagrams sent back to back while the collector runs: all stored, in few flushes."""
    hosts = _hosts(database, 20)
    collector = Collector(database, SECRET, flush_interval=0.1)
    udp = UdpCollector(collector)
    _, port = udp.bind("127.0.0.1", 0)
    udp.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    records = 0
    try:
        for seq in range(1, 101):
            for host in hosts:
                payload = b"".join(wire.VM_RECORD.pack(host * 1000 + i, 1, 2, 3, 4) for i in range(40))
                sock.sendto(wire.pack(wire.host_key(SECRET, host), wire.VM_MONITOR, host, 1, seq, payload, 40),
                            ("127.0.0.1", port))
                records += 40
        deadline = time.monotonic() + 30
        while collector.counters["vm_records"] < records and time.monotonic() < deadline:
            time.sleep(0.05)  # poll inside a deadline: the burst drains in the background
    finally:
        udp.stop()
        sock.close()
    assert _rows(database, "mon_vm") == records
    assert collector.counters["flushes"] < collector.counters["accepted"] / 10  # batched, not per datagram


def test_only_each_hosts_newest_domain_list_is_kept(database, tmp_path):
    host, other, collector, hv, sent = _rig(database, 1, 2)
    agent = _agent(hv, host, tmp_path, sent)
    agent.states(force=True)
    hv.ensure_absent("appliance-1")
    agent.states()
    hv.ensure_absent("appliance-2")  # the host is empty now: an empty list must still clear it
    agent.states()
    for datagram in sent:
        collector.handle(datagram)
        collector.flush()
    assert _rows(database, "mon_vm_state") == 0


def test_the_agents_config_errors_name_the_field_the_value_and_the_fix(tmp_path):
    from appliance.drivers.monitor_agent import load_config

    key = tmp_path / "key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    good = (f'host_id = 3\ncollector = "10.0.0.10:4124"\nkey_file = "{key}"\nstate_file = "{tmp_path}/e"\n'
            f'uri = "qemu:///system"\n')
    config = tmp_path / "agent.toml"
    config.write_text(good)
    assert load_config(config)["collector_address"] == ("10.0.0.10", 4124)
    for text, words in ((good.replace("10.0.0.10:4124", "10.0.0.10"), "collector '10.0.0.10' is not address:port"),
                        (good.replace("host_id = 3", 'host_id = "3"'), "host_id must be a int"),
                        (good + "interval = 0\n", "interval = 0 must be between"),
                        ("host_id = ", "agent.toml")):
        config.write_text(text)
        with pytest.raises(DriverError, match=words):
            load_config(config)
    config.write_text(good)
    key.chmod(0o644)
    with pytest.raises(DriverError, match="chmod 600"):
        load_config(config)


@pytest.mark.parametrize("kind", ["sqlite", "mariadb"])
def test_the_monitoring_migration_killed_after_any_step_resumes(request, tmp_path, kind):
    """Migration 3 (the monitoring tables) killed after each step, as Pacemaker's start timeout
    would: the next start finishes it and the collector works."""
    from appliance.core import db as dbmod
    from appliance.core.db import SqliteDatabase, migrate

    class Killed(Exception):
        pass

    steps = len(dict(dbmod.MIGRATIONS)[3])
    for crash_at in range(steps):
        db = SqliteDatabase(str(tmp_path / f"m{crash_at}.db")) if kind == "sqlite" else \
            request.getfixturevalue("mariadb").database()

        def crash(version, index, at=crash_at):
            if version == 3 and index == at:
                raise Killed()
        with pytest.raises(Killed):
            migrate(db, after_step=crash)
        db.close()
        migrate(db)
        host, _, collector, hv, sent = _rig(db, 1)
        _agent(hv, host, tmp_path, sent).cycle()
        assert all(collector.handle(d) for d in sent) and collector.flush() > 0, (kind, crash_at)
        assert _rows(db, "mon_vm") == 1 and _rows(db, "mon_vm_state") == 1
        (tmp_path / f"epoch-{host}").unlink()
        db.close()


class _RecordingRunner:
    """A host's runner that records (the real path runs over SSH in the VM lab): files and commands."""

    def __init__(self, fail: str = ""):
        self.host, self.files, self.commands, self.fail = "hv1", {}, [], fail

    def run(self, argv, check=True, **_):
        from appliance.core.runner import CommandFailed, Result

        self.commands.append(list(argv))
        result = Result(" ".join(argv), 1 if self.fail and argv[0] == self.fail else 0, "", "refused", self.host)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path, content, mode):
        self.files[path] = (content, mode)

    def read(self, path):
        return self.files.get(path, (None,))[0]


def test_the_probe_writes_the_hosts_own_key_owner_only_and_starts_the_agent_above_the_stored_epoch():
    from appliance.core.entities import Host
    from appliance.monitor_service import CONFIG, KEY, UNIT, make_probe

    runner = _RecordingRunner()
    probe = make_probe(lambda name: runner, SECRET, "10.0.0.10:4124", 30.0, "/opt/appliance/bin/python",
                       lambda host_id: 7)
    host = Host(id=5, name="hv1", uri="qemu+ssh://root@hv1/system")
    probe(host)
    key, mode = runner.files[KEY]
    assert key == (wire.host_key(SECRET, 5).hex() + "\n").encode() and mode == 0o600
    assert SECRET.hex() not in str(runner.files) and b"host_id = 5" in runner.files[CONFIG][0]
    start = runner.commands[-1]
    assert start[:2] == ["systemd-run", f"--unit={UNIT}"] and start[-1] == "--min-epoch=8"
    runner.commands.clear()
    probe(host)  # a second probe rewrites nothing, restarts the agent
    assert [c[0] for c in runner.commands] == ["mkdir", "systemctl", "systemctl", "systemd-run"]
    with pytest.raises(DriverError, match="refused"):
        make_probe(lambda name: _RecordingRunner(fail="systemd-run"), SECRET, "10.0.0.10:4124", 30.0, "python3",
                   lambda host_id: 0)(host)
