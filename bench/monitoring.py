"""Push monitoring: how many VM records a second the collector persists, against the database's raw limit.

Simulated hosts (one sender process) push real signed datagrams over loopback UDP to the
collector (core/collector.py, in this process: its receive and write threads), paced to an offered
rate. Measured, on SQLite (a file on disk, WAL) and on MariaDB (a private server with the pair's
durability: binlog, innodb_flush_log_at_trx_commit=1, sync_binlog=1):

- raw: the same rows inserted with `executemany`, one transaction per batch of the collector's
  size, into the same table of a fresh database: the limit;
- sustained: 10,000 hosts x 1,000 VMs pushed at 10M records per 120 s for `--seconds` (125 by
  default): records persisted a second, loss, the worst flush latency;
- hosts: 100 and 1,000 hosts carrying the same 10M VMs (shorter runs);
- maximum: offered rates rising by half until loss passes 0.01 % or the writer falls behind (a
  tail over 1 s that pulls the rate counted to its end under 95 % of the offered); the highest rate
  persisted in a run that held, over raw, is the ratio the issue asks for (>= 0.5).

Each measurement uses its own fresh database. Results: bench/results/monitoring.json and .png
(persisted against offered records a second, one line a database, raw as dashed lines).

    python bench/monitoring.py            # both databases, about 10 minutes
    python bench/monitoring.py --quick    # 15 s runs, for a look
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.core import monitor_wire as wire
from appliance.core.collector import Collector
from appliance.core.db import MysqlDatabase, SqliteDatabase, migrate
from appliance.drivers.monitor_udp import UdpCollector
from appliance.plot import BLUE, ORANGE, Series, line_plot
from appliance.runner.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "results" / "monitoring.json"
SECRET = b"bench-monitoring-secret-32-bytes"
TARGET = 10_000_000 / 120  # records a second: 10M VMs every 120 s
LOSS_LIMIT = 1e-4  # 0.01 %
PER = wire.PER_DATAGRAM[wire.VM_MONITOR]
_names = itertools.count(1)


# -- databases ------------------------------------------------------------------------------------
class MariaDB:
    def __init__(self, directory: Path):
        self.dir = directory
        self.socket = str(directory / "s.sock")
        data = directory / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                        "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"],
                       check=True, capture_output=True)
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.socket}", "--skip-networking",
             "--user=root", f"--pid-file={directory}/pid", f"--log-error={directory}/error.log",
             f"--log-bin={directory}/bin", "--binlog-format=ROW", "--server-id=10",
             "--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1", "--innodb-buffer-pool-size=1G",
             "--max-allowed-packet=64M"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import pymysql

        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(unix_socket=self.socket, user="root").close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"MariaDB did not start; see {directory}/error.log")
                time.sleep(0.1)

    def fresh(self) -> MysqlDatabase:
        import pymysql

        name = f"bench_monitoring_{next(_names)}"
        conn = pymysql.connect(unix_socket=self.socket, user="root")
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        conn.close()
        return MysqlDatabase(user="root", password="", database=name, unix_socket=self.socket)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def fresh_database(kind: str, tmp: Path, server: MariaDB | None, hosts: int):
    db = SqliteDatabase(str(tmp / f"m{next(_names)}.db")) if kind == "sqlite" else server.fresh()
    migrate(db)
    with db.transaction() as tx:  # the collector takes datagrams only from hosts it knows
        tx.executemany("INSERT INTO hosts (id, name, state, cluster_id, body) VALUES (?, ?, 'MONITORED', NULL, '{}')",
                       [(i, f"sim{i}") for i in range(1, hosts + 1)])
    return db


def persisted(db) -> int:
    with db.transaction(readonly=True) as tx:
        return tx.execute("SELECT COUNT(*) FROM mon_vm").one()[0]


# -- the simulated hosts --------------------------------------------------------------------------
def sender(port: int, hosts: int, vms: int, rate: float, seconds: float, out) -> None:
    """Each host sends its VMs' records in datagrams of PER records, hosts taking turns, paced so
    that `rate` records a second go out on average (checked every 5 ms)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    keys = [wire.host_key(SECRET, h) for h in range(1, hosts + 1)]
    seqs = [0] * hosts
    chunks = [(start, min(PER, vms - start)) for start in range(0, vms, PER)]
    pack = wire.VM_RECORD.pack
    sent = datagrams = 0
    host, chunk = 0, 0
    began = time.monotonic()
    end = began + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int(rate * (now - began))
        while sent < due:
            start, count = chunks[chunk]
            base = (host + 1) * vms + start
            payload = b"".join([pack(base + i, 150, 524288, 1000 * i, 2000 * i) for i in range(count)])
            seqs[host] += 1
            sock.sendto(wire.pack(keys[host], wire.VM_MONITOR, host + 1, 1, seqs[host], payload, count),
                        ("127.0.0.1", port))
            sent += count
            datagrams += 1
            host += 1
            if host == hosts:
                host, chunk = 0, (chunk + 1) % len(chunks)
        time.sleep(0.005)
    out.send((sent, datagrams, time.monotonic() - began))


def udp_receive_errors() -> int:
    for line in Path("/proc/net/snmp").read_text().splitlines():
        if line.startswith("Udp:") and "RcvbufErrors" not in line:
            values = line.split()[1:]
            return int(values[4])  # InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors
    return 0


def push(db, hosts: int, vms: int, rate: float, seconds: float) -> dict:
    """One run: the collector on a fresh port, the sender at `rate`, then the tail drained."""
    collector = Collector(db, SECRET, flush_interval=0.25)
    udp = UdpCollector(collector)
    _, port = udp.bind("127.0.0.1", 0)
    udp.start()
    kernel_drops = udp_receive_errors()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=sender, args=(port, hosts, vms, rate, seconds, child))
    started = time.monotonic()
    process.start()
    sent, datagrams, send_seconds = parent.recv()
    process.join()
    # The tail: what was sent is stored within a few flushes, or the writer has fallen behind.
    deadline = time.monotonic() + 30
    while collector.counters["vm_records"] < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    collector.wait_flushed(2)
    caught_up = time.monotonic() - started - send_seconds
    udp.stop()
    stored = persisted(db)
    loss = (sent - stored) / sent if sent else 0.0
    return {"hosts": hosts, "vms_per_host": vms, "offered_per_second": round(rate), "seconds": round(send_seconds, 1),
            "sent": sent, "datagrams": datagrams, "persisted": stored,
            # over the send window, and over the whole run with the tail drained (the stricter)
            "persisted_per_second": round(stored / send_seconds),
            "persisted_per_second_with_tail": round(stored / (send_seconds + max(0.0, caught_up))),
            "loss_percent": round(100 * loss, 5), "tail_seconds": round(caught_up, 2),
            "flushes": collector.counters["flushes"],
            "flush_seconds_max": round(collector.flush_seconds_max, 3),
            "latency_seconds_max": round(collector.latency_seconds_max, 3),
            "kernel_receive_drops": udp_receive_errors() - kernel_drops,
            "dropped": {k: v for k, v in collector.counters.items() if k.startswith("dropped_") and v}}


def raw_rate(db, rows: int, batch: int) -> float:
    """The limit: the same rows, executemany, one transaction per batch."""
    at = int(time.time())
    start = time.monotonic()
    done = 0
    while done < rows:
        chunk = [(done + i, 1 + (done + i) % 10_000, at, 150, 524288, 1000 * i, 2000 * i) for i in range(batch)]
        with db.transaction() as tx:
            tx.executemany("INSERT INTO mon_vm (vm_id, host_id, at, cpu, mem_kb, net_rx, net_tx) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", chunk)
        done += batch
    return done / (time.monotonic() - start)


def bench(kind: str, tmp: Path, server: MariaDB | None, seconds: float, short: float) -> dict:
    def fresh(hosts: int):
        return fresh_database(kind, tmp, server, hosts)

    batch = int(TARGET * 0.25)  # what one flush holds at the target rate
    db = fresh(10)
    raw = raw_rate(db, 40 * batch, batch)
    db.close()
    print(f"[{kind}] raw executemany: {raw:,.0f} rows/s", flush=True)
    runs = {}
    db = fresh(10_000)
    runs["sustained"] = push(db, 10_000, 1_000, TARGET, seconds)
    db.close()
    print(f"[{kind}] sustained: {runs['sustained']}", flush=True)
    for hosts in (100, 1_000):
        db = fresh(hosts)
        runs[f"hosts_{hosts}"] = push(db, hosts, 10_000_000 // hosts, TARGET, short)
        db.close()
        print(f"[{kind}] {hosts} hosts: {runs[f'hosts_{hosts}']}", flush=True)
    ramp = []
    rate = TARGET
    while True:
        db = fresh(1_000)
        run = push(db, 1_000, 10_000, rate, short)
        db.close()
        # held: nothing lost, and the writer kept up: a writer that keeps up leaves about one flush
        # behind (<= 1 s: the flush interval and a flush); one that falls behind leaves a tail that
        # grows with the run, pulling the rate counted to the end of the tail under the offered one
        held = run["loss_percent"] <= 100 * LOSS_LIMIT and (
            run["tail_seconds"] <= 1.0 or run["persisted_per_second_with_tail"] >= 0.95 * rate)
        run["held"] = held
        ramp.append(run)
        print(f"[{kind}] offered {rate:,.0f}/s: persisted {run['persisted_per_second']:,}/s, "
              f"loss {run['loss_percent']} %, tail {run['tail_seconds']} s -> {'held' if held else 'NOT held'}",
              flush=True)
        if not held or rate > 4 * raw:
            break
        rate *= 1.5
    best = max((r["persisted_per_second"] for r in ramp if r["held"]), default=0)
    return {"raw_executemany_per_second": round(raw), "runs": runs, "ramp": ramp,
            "max_sustainable_per_second": best, "max_over_raw": round(best / raw, 3),
            "sustained_meets_target": runs["sustained"]["persisted_per_second"] >= TARGET * 0.995 and
            runs["sustained"]["loss_percent"] <= 100 * LOSS_LIMIT and
            runs["sustained"]["persisted_per_second_with_tail"] >= TARGET * 0.95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s sustained, 8 s per other run")
    parser.add_argument("--seconds", type=float, default=125.0, help="the sustained run (default 125)")
    parser.add_argument("--only", choices=("sqlite", "mariadb"))
    args = parser.parse_args()
    seconds, short = (15.0, 8.0) if args.quick else (args.seconds, 20.0)
    results: dict = {"target_per_second": round(TARGET), "loss_limit_percent": 100 * LOSS_LIMIT,
                     "records_per_datagram": PER, "cpus": multiprocessing.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-", dir="/var/tmp") as name:
        tmp = Path(name)
        if args.only != "mariadb":
            results["sqlite"] = bench("sqlite", tmp, None, seconds, short)
        if args.only != "sqlite":
            if not shutil.which("mariadbd"):
                raise SystemExit("mariadbd is missing: run `make deps`")
            server = MariaDB(tmp / "mariadb")
            try:
                results["mariadb"] = bench("mariadb", tmp, server, seconds, short)
            finally:
                server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS, (json.dumps(results, indent=2) + "\n").encode(), 0o644)
    series, top = [], TARGET
    for kind, colour in (("sqlite", BLUE), ("mariadb", ORANGE)):
        if kind in results:
            points = [(r["offered_per_second"], r["persisted_per_second"]) for r in results[kind]["ramp"]]
            raw = results[kind]["raw_executemany_per_second"]
            top = max(top, raw, *(p[0] for p in points))
            series += [Series(points, colour), Series([(0, raw), (10 ** 9, raw)], colour, dashed=True)]
    png = line_plot(series, x_range=(0, top * 1.1), y_range=(0, top * 1.1))
    atomic_write(RESULTS.with_suffix(".png"), png, 0o644)
    for kind in ("sqlite", "mariadb"):
        if kind in results:
            r = results[kind]
            s = r["runs"]["sustained"]
            print(f"{kind:>8}: sustained {s['persisted_per_second']:,}/s for {s['seconds']} s, loss {s['loss_percent']} %, "
                  f"flush max {s['flush_seconds_max']} s; max {r['max_sustainable_per_second']:,}/s, raw "
                  f"{r['raw_executemany_per_second']:,}/s, ratio {r['max_over_raw']}")
    print(f"written to {RESULTS} and {RESULTS.with_suffix('.png')}")
    sys.exit(0 if all(results[k]["sustained_meets_target"] and results[k]["max_over_raw"] >= 0.5
                      for k in ("sqlite", "mariadb") if k in results) else 1)


if __name__ == "__main__":
    main()
