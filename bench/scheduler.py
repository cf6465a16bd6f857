"""Placement benchmark: `schedule` against the naive O(VMs x hosts) reference, side by side.

Workloads (deterministic, seeded):
  A  10,000 VMs on 2,500 empty hosts
  B  50,000 VMs on 5,000 near-full hosts (most VMs cannot be placed)
Both algorithms must give identical placements; the ratio is naive time / fast time.
Writes bench/results/scheduler.json.  Usage: python bench/scheduler.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

from appliance.core.scheduler import DatastoreSlot, HostSlot, Policy, Request, schedule, schedule_naive

SIZES = [(50, 512), (100, 1024), (200, 2048), (400, 4096)]  # CPU units, MiB
REQUIREMENTS = ["", 'HYPERVISOR = "kvm"', "FREE_CPU > 300"]


def workload(hosts: int, vms: int, near_full: bool, seed: int) -> tuple[list, list, list]:
    rnd = random.Random(seed)
    host_slots = []
    for i in range(hosts):
        cpu, mem = (1600, 65536) if i % 3 else (3200, 131072)
        used_cpu = rnd.randrange(int(cpu * 0.80), cpu) if near_full else 0
        used_mem = rnd.randrange(int(mem * 0.80), mem) if near_full else 0
        host_slots.append(HostSlot(i + 1, cpu, mem, used_cpu, used_mem, rnd.randrange(0, 20) if near_full else 0,
                                   i % 8, {"HYPERVISOR": "kvm" if i % 5 else "xen", "NAME": f"hv-{i}",
                                           "PRIORITY": i % 7}))
    datastores = [DatastoreSlot(1000 + j, 50_000_000, 0, (), {"SPEED": "fast" if j % 2 else "slow"}) for j in range(8)]
    requests = []
    for v in range(vms):
        cpu, mem = SIZES[rnd.randrange(len(SIZES))]
        requests.append(Request(v + 1, cpu, mem, 2048, REQUIREMENTS[v % len(REQUIREMENTS)], "",
                                'SPEED = "fast"' if v % 4 == 0 else ""))
    return host_slots, datastores, requests


def timed(function, *args, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def run(name: str, hosts: int, vms: int, near_full: bool, policies: list[str]) -> list[dict]:
    slots, stores, requests = workload(hosts, vms, near_full, seed=42)
    rows = []
    for policy_name in policies:
        policy = Policy(policy_name)
        fast_s, fast = timed(schedule, slots, stores, requests, policy, repeat=5)
        naive_s, naive = timed(schedule_naive, slots, stores, requests, policy)
        identical = fast == naive
        placed = sum(p.placed for p in fast)
        row = {"workload": name, "hosts": hosts, "vms": vms, "near_full": near_full, "policy": policy_name,
               "placed": placed, "fast_s": round(fast_s, 4), "naive_s": round(naive_s, 3),
               "speedup": round(naive_s / fast_s, 1), "identical": identical}
        print(f"{name}  {vms:>6} VMs on {hosts:>5} hosts{' (near full)' if near_full else '':12} {policy_name:<10} "
              f"placed {placed:>6}  fast {fast_s:7.3f} s  naive {naive_s:8.2f} s  x{naive_s / fast_s:6.1f}  "
              f"identical={identical}", flush=True)
        if not identical:
            raise SystemExit(f"placements differ for {name} {policy_name}: the fast scheduler is wrong")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run, not the figures)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows = run("A", 2500 // scale, 10000 // scale, False, ["packing", "striping", "load-aware"])
    rows += run("B", 5000 // scale, 50000 // scale, True, ["packing", "load-aware"])
    out = Path(__file__).resolve().parent / "results" / "scheduler.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], "machine": platform.machine(),
                               "quick": args.quick, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
