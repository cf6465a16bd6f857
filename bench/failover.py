"""Failover benchmark in the lab: each drill N times with the default corosync token and with 1000 ms.

For each token: a fresh lab (`appliance lab up --token T`), `appliance install`, then N rounds of
`appliance drill kill-node` (the drill restores the killed node with `appliance install` after each
round). Reports every time, the median, and acknowledged writes lost; writes bench/results/failover.json.
Root only. Usage: python bench/failover.py [--runs 5] [--tokens 3000,1000] [--fault kill-node]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("appliance")


def run(*argv: str) -> dict | None:
    result = subprocess.run([str(BIN), *argv, "--json"], capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 5):
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", default="3000,1000")
    parser.add_argument("--fault", default="kill-node")
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
        times, lost, acknowledged = [], 0, 0
        for round_ in range(args.runs):
            drill = run("drill", args.fault, "-i", inventory)
            times.append(drill["seconds_until_api_answers"])
            lost += drill["acknowledged_writes_lost"]
            acknowledged += drill["acknowledged_writes"]
            print(f"token {token} ms, {args.fault} #{round_ + 1} on {drill['node']}: "
                  f"{drill['seconds_until_api_answers']} s, {drill['acknowledged_writes_lost']} lost", flush=True)
        measured = [t for t in times if t is not None]
        row = {"token_ms": token, "fault": args.fault, "runs": args.runs, "seconds": times,
               "median_s": statistics.median(measured) if measured else None,
               "acknowledged_writes": acknowledged, "acknowledged_writes_lost": lost}
        print(f"token {token} ms: median {row['median_s']} s over {len(measured)} runs; {lost} of {acknowledged} "
              "acknowledged writes lost", flush=True)
        results.append(row)
    subprocess.run([str(BIN), "lab", "down", "--dir", str(lab)], capture_output=True)
    out = Path(__file__).resolve().parent / "results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
