"""What a crash-safe binlog costs: commits/s of a real MariaDB with sync_binlog = 0 and = 1, side by side.

The replication config sets sync_binlog = 1 (templates/database/replication.cnf.j2): with 0, the VM
lab's power cut of both nodes lost binlog tails that InnoDB had committed and broke circular
replication for good. Both servers here run the frontend's settings otherwise (binlog in ROW format,
innodb_flush_log_at_trx_commit = 1), on the same disk, one after the other in this run; each commit is
one small transaction as the manager's writes are, from 1 client and from 8 (group commit shares
one fsync among concurrent commits). Writes bench/results/binlog.json.
Usage: python bench/binlog.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pymysql

from appliance.runner.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "results" / "binlog.json"


def start(directory: Path, sync_binlog: int) -> subprocess.Popen:
    data = directory / "data"
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", "--user=root"], check=True, capture_output=True)
    server = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={directory}/s.sock", "--skip-networking",
         "--user=root", f"--pid-file={directory}/pid", f"--log-error={directory}/error.log",
         f"--log-bin={directory}/bin", "--binlog-format=ROW", "--server-id=10",
         "--innodb-flush-log-at-trx-commit=1", f"--sync-binlog={sync_binlog}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            pymysql.connect(unix_socket=f"{directory}/s.sock", user="root").close()
            return server
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"MariaDB did not start; see {directory}/error.log")
            time.sleep(0.1)


def commits_per_second(socket: str, clients: int, seconds: float) -> float:
    setup = pymysql.connect(unix_socket=socket, user="root", autocommit=True)
    with setup.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS b")
        cursor.execute("CREATE TABLE IF NOT EXISTS b.t (id INT AUTO_INCREMENT PRIMARY KEY, body VARCHAR(200))")
    setup.close()
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        conn = pymysql.connect(unix_socket=socket, user="root", autocommit=True)
        with conn.cursor() as cursor:
            while time.monotonic() < stop:
                cursor.execute("INSERT INTO b.t (body) VALUES (%s)", ("vm state change " * 8,))
                counts[index] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per measurement instead of 8")
    args = parser.parse_args()
    if not shutil.which("mariadbd"):
        raise SystemExit("mariadbd is missing: run `make deps`")
    seconds = 2.0 if args.quick else 8.0
    rates: dict[str, dict[str, float]] = {}
    for sync in (0, 1):
        with tempfile.TemporaryDirectory(prefix="bench-binlog-") as tmp:
            server = start(Path(tmp), sync)
            try:
                rates[f"sync_binlog={sync}"] = {f"{c} clients": round(commits_per_second(f"{tmp}/s.sock", c, seconds), 1)
                                                for c in (1, 8)}
            finally:
                server.terminate()
                server.wait(timeout=60)
    result = {"seconds_per_measurement": seconds, "commits_per_second": rates,
              "ratio_sync1_to_sync0": {k: round(rates["sync_binlog=1"][k] / rates["sync_binlog=0"][k], 3)
                                       for k in rates["sync_binlog=0"]}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS, (json.dumps(result, indent=2) + "\n").encode(), 0o644)
    for clients, ratio in result["ratio_sync1_to_sync0"].items():
        print(f"{clients:>9}: sync_binlog=0 {rates['sync_binlog=0'][clients]:8.1f} commits/s, "
              f"sync_binlog=1 {rates['sync_binlog=1'][clients]:8.1f} commits/s, ratio {ratio:.3f}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
