"""CLI start-up benchmark: how long `appliance` takes before it does anything, against bare Python.

Measured side by side in one run, interleaved round by round (so a slow moment hits every command):
  floor      python -c pass                        (the interpreter alone: nothing to gain below it)
  version    appliance --version                   (the console script of this interpreter's venv)
  module     python -m appliance --version
  help       appliance vm list --help              (builds the whole command tree and its help)
The figure is the median wall time of a fresh process; the ratio is median / floor median.
Writes bench/results/cli_start.json.  Usage: python bench/cli_start.py [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.3  # a command should start within this (docs/benchmarks.md)


def commands() -> list[tuple[str, list[str]]]:
    script = Path(sys.executable).with_name("appliance")
    if not script.exists():
        raise SystemExit(f"no console script at {script}: run from the project's venv (pip install -e .)")
    return [
        ("floor", [sys.executable, "-c", "pass"]),
        ("version", [str(script), "--version"]),
        ("module", [sys.executable, "-m", "appliance", "--version"]),
        ("help", [str(script), "vm", "list", "--help"]),
    ]


def run_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=60)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10, help="runs of each command (default 10)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "PYTHON"))}
    env["COLUMNS"] = "100"  # help output of the same width in every run
    measured = commands()
    for _, argv in measured:  # warm the page cache and write the .pyc files: not counted
        run_once(argv, env)
    times: dict[str, list[float]] = {name: [] for name, _ in measured}
    for _ in range(args.rounds):
        for name, argv in measured:
            times[name].append(run_once(argv, env))
    floor = statistics.median(times["floor"])
    rows = []
    for name, argv in measured:
        median = statistics.median(times[name])
        row = {"command": name, "argv": [Path(argv[0]).name] + argv[1:], "rounds": args.rounds,
               "median_s": round(median, 4), "min_s": round(min(times[name]), 4),
               "max_s": round(max(times[name]), 4), "ratio_to_floor": round(median / floor, 1)}
        rows.append(row)
        verdict = "" if name == "floor" else f"  {'within' if median <= TARGET_S else 'OVER'} {TARGET_S} s"
        print(f"{name:<8} {' '.join(row['argv']):<32} median {median:6.3f} s  min {row['min_s']:6.3f} s  "
              f"max {row['max_s']:6.3f} s  x{median / floor:5.1f}{verdict}", flush=True)
    out = Path(__file__).resolve().parent / "results" / "cli_start.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], "machine": platform.machine(),
                               "rounds": args.rounds, "target_s": TARGET_S, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
