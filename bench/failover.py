"""Failover benchmark in the lab: every drill N times with the default corosync token and with 1000 ms.

For each token: a fresh lab (`appliance lab up --token T`), `appliance install`, then N rounds of each
drill (the drill restores the node with `appliance install` after each round). Reports every time,
the median, acknowledged writes lost, and the median's ratio to the floor measured beside it: what
the detection alone costs (corosync's token + consensus for a lost node, the monitor interval for a
dead manager). Writes bench/results/failover.json.
Root only. Usage: python bench/failover.py [--runs 5] [--tokens 3000,1000] [--faults kill-node,cut-link,...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("appliance")
FAULTS = ("kill-node", "cut-link", "kill-manager", "kill-db")
MANAGER_MONITOR_S = 5.0  # ha/frontend.py: p_manager's monitor interval


def run(*argv: str) -> dict:
    result = subprocess.run([str(BIN), *argv, "--json"], capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 5, 6):
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def floor(fault: str, token_ms: int) -> float | None:
    """Seconds before anything can even notice the fault."""
    if fault in ("kill-node", "cut-link"):
        return round(token_ms * 2.2 / 1000, 2)  # token + consensus (corosync's default 1.2 x token)
    if fault == "kill-manager":
        return MANAGER_MONITOR_S
    return None  # kill-db: the database's own restart; no fixed floor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", default="3000,1000")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--dir", default="/tmp/appliance-lab-bench")
    args = parser.parse_args()
    lab = Path(args.dir)
    inventory = str(lab / "lab.toml")
    results = []
    for token in [int(t) for t in args.tokens.split(",")]:
        subprocess.run([str(BIN), "lab", "down", "--dir", str(lab)], capture_output=True)
        run("lab", "up", "--dir", str(lab), "--token", str(token))
        install = run("install", "-i", inventory)
        if not install["ok"]:
            raise SystemExit(f"install did not verify: {install.get('verify')}")
        for fault in args.faults.split(","):
            times, lost, acknowledged, unhealthy = [], 0, 0, 0
            for round_ in range(args.runs):
                drill = run("drill", fault, "-i", inventory)
                if "seconds_until_api_answers" not in drill:
                    raise SystemExit(f"{fault} did not run: {drill}")
                times.append(drill["seconds_until_api_answers"])
                lost += drill["acknowledged_writes_lost"]
                acknowledged += drill["acknowledged_writes"]
                unhealthy += not all(c["ok"] for c in drill.get("after_restore", []))
                print(f"token {token} ms, {fault} #{round_ + 1} on {drill['node']}: "
                      f"{drill['seconds_until_api_answers']} s, {drill['acknowledged_writes_lost']} lost", flush=True)
            measured = [t for t in times if t is not None]
            median = statistics.median(measured) if measured else None
            limit = floor(fault, token)
            row = {"token_ms": token, "fault": fault, "runs": args.runs, "seconds": times, "median_s": median,
                   "floor_s": limit, "median_over_floor": round(median / limit, 2) if median and limit else None,
                   "not_recovered": len(times) - len(measured), "unhealthy_after_restore": unhealthy,
                   "acknowledged_writes": acknowledged, "acknowledged_writes_lost": lost}
            print(f"token {token} ms, {fault}: median {median} s over {len(measured)} runs"
                  + (f" = {row['median_over_floor']} x the {limit} s detection floor" if row["median_over_floor"]
                     else "") + f"; {lost} of {acknowledged} acknowledged writes lost", flush=True)
            results.append(row)
    subprocess.run([str(BIN), "lab", "down", "--dir", str(lab)], capture_output=True)
    out = Path(__file__).resolve().parent / "results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
