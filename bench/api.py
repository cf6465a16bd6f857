"""API benchmark against a real `appliance serve` (SQLite), with its peers measured in the same run.

1. Listing 20,000 VMs through the API (pages of 5,000, parsed as a client would) against the raw
   floor: the same bodies read straight from SQLite and parsed.
2. Mixed requests from concurrent clients (reads of one VM, pages of 100, host lists, VM
   creations) for requests/s and p50/p99 latency, against the same clients calling the trivial
   health endpoint (the framework's own ceiling on this machine); then the same mix as a plain
   user, whose every read passes the ownership checks (datastores instead of hosts).
Writes bench/results/api.json.  Usage: python bench/api.py [--quick]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from appliance.core.db import SqliteDatabase, migrate
from appliance.core.entities import VM, VmState
from appliance.core.pools import Store
from appliance.core.actions import Manager
from appliance.core.authz import SYSTEM
from appliance.runner.atomic import atomic_write


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(home: Path, vms: int) -> tuple[str, str]:
    """The admin's token and a plain user's; every other VM belongs to the user, so its reads go
    through the ownership checks and its listings through the visibility condition."""
    db = SqliteDatabase(str(home / "manager.db"))
    migrate(db)
    store = Store(db)
    manager = Manager(store, lambda ds: None)
    _, token = manager.users.create(SYSTEM, "admin", role="admin")[:2]
    user, user_token = manager.users.create(SYSTEM, "alice")[:2]
    atomic_write(home / "admin.token", token.encode(), 0o600)
    manager.hosts.create(SYSTEM, "hv1", driver="fake")
    with store.transaction() as tx:
        for i in range(vms):
            owner = (user.id, user.group_id) if i % 2 else (0, 0)
            store.vms.insert(tx, VM(name=f"vm-{i}", state=VmState.HOLD, cpu=0.5, memory=512, owner_id=owner[0],
                                    group_id=owner[1], context={"ROLE": "bench", "INDEX": str(i)}))
    db.close()
    return token, user_token


class Api:
    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def list_all(api: Api) -> int:
    after, count = 0, 0
    while True:
        status, payload = api.call("GET", f"/api/v1/vms?after={after}&limit=5000&state=HOLD")
        assert status == 200, payload[:200]
        page = json.loads(payload)
        count += len(page["items"])
        if page["next"] is None:
            return count
        after = page["next"]


def raw_floor(home: Path) -> int:
    conn = sqlite3.connect(str(home / "manager.db"))
    rows = conn.execute("SELECT body FROM vms WHERE state = 'HOLD' ORDER BY id").fetchall()
    conn.close()
    return len(json.loads("[" + ",".join(r[0] for r in rows) + "]"))


def best_of(n: int, function, *args) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def load(port: int, token: str, clients: int, per_client: int, vms: int, mix: bool, user: bool = False) -> dict:
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    errors = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        api = Api(port, token)
        mine = []
        for n in range(per_client):
            roll = rnd.random()
            if not mix:
                request = ("GET", "/api/v1/health", None)
            elif roll < 0.45:  # a user reads its own VMs (the even ids)
                ident = 2 * rnd.randrange(1, vms // 2 + 1) if user else rnd.randrange(1, vms + 1)
                request = ("GET", f"/api/v1/vms/{ident}", None)
            elif roll < 0.65:
                request = ("GET", f"/api/v1/vms?after={rnd.randrange(0, vms)}&limit=100&state=HOLD", None)
            elif roll < 0.80:
                request = ("GET", "/api/v1/datastores" if user else "/api/v1/hosts", None)
            else:
                request = ("POST", "/api/v1/vms", {"name": f"load-{seed}-{n}", "memory": 64, "cpu": 0.1,
                                                   "hold": True})
            start = time.perf_counter()
            status, payload = api.call(*request)
            elapsed = time.perf_counter() - start
            mine.append(elapsed)
            kind = request[0] + " " + request[1].split("?")[0].rstrip("0123456789")
            with lock:
                by_kind.setdefault(kind, []).append(elapsed)
            if status >= 300:
                with lock:
                    errors.append((request[:2], status, payload[:100]))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "seconds": round(wall, 3),
            "per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
            "max_ms": round(1000 * latencies[-1], 2), "first_errors": [str(e) for e in errors[:3]],
            "p99_ms_by_kind": {k: round(1000 * sorted(v)[int(len(v) * 0.99) - 1], 2) for k, v in by_kind.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    vms = 2000 if args.quick else 20000
    clients, per_client = (4, 100) if args.quick else (8, 500)
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        home = Path(tmp)
        token, user_token = populate(home, vms)
        port = free_port()
        config = home / "manager.toml"
        config.write_text(f'[api]\nbind = "127.0.0.1"\nport = {port}\n\n[paths]\nstate_dir = "{home}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        server = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--config", str(config)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(home / "serve.log", "wb"))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("serve did not start: " + (home / "serve.log").read_text()[-500:])
                    time.sleep(0.05)  # poll interval inside the deadline loop
            api = Api(port, token)
            list_all(api)  # warm up
            api_s, listed = best_of(5, list_all, api)
            floor_s, counted = best_of(5, raw_floor, home)
            assert listed == counted == vms, (listed, counted)
            print(f"list {vms} VMs through the API: {api_s:.3f} s   raw SQLite read + parse: {floor_s:.3f} s   "
                  f"API / raw = {api_s / floor_s:.1f}", flush=True)
            ceiling = load(port, token, clients, per_client, vms, mix=False)
            mixed = load(port, token, clients, per_client, vms, mix=True)
            as_user = load(port, user_token, clients, per_client, vms, mix=True, user=True)
            print(f"health only ({clients} clients): {ceiling['per_second']} req/s, p50 {ceiling['p50_ms']} ms, "
                  f"p99 {ceiling['p99_ms']} ms")
            print(f"mixed p99 by kind: {mixed['p99_ms_by_kind']}")
            print(f"mixed       ({clients} clients): {mixed['per_second']} req/s, p50 {mixed['p50_ms']} ms, "
                  f"p99 {mixed['p99_ms']} ms, errors {mixed['errors']}   mixed / health = "
                  f"{mixed['per_second'] / ceiling['per_second']:.2f}")
            print(f"mixed, a plain user (ownership checked on every read, every change audited): "
                  f"{as_user['per_second']} req/s, p50 {as_user['p50_ms']} ms, p99 {as_user['p99_ms']} ms, "
                  f"errors {as_user['errors']}   user / admin = {as_user['per_second'] / mixed['per_second']:.2f}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    out = Path(__file__).resolve().parent / "results" / "api.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "vms": vms, "list_api_s": round(api_s, 4),
                               "list_raw_s": round(floor_s, 4), "list_ratio": round(api_s / floor_s, 2),
                               "health": ceiling, "mixed": mixed, "mixed_user": as_user}, indent=2) + "\n")
    print(f"wrote {out}")
    for run in (mixed, as_user):
        if run["errors"]:
            raise SystemExit(f"{run['errors']} requests failed: {run['first_errors']}")


if __name__ == "__main__":
    main()
