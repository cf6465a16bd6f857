"""The proxy's OCF agent against its peer: ocf:appliance:proxy beside ocf:heartbeat:anything.

Both run the same lighttpd config on 127.0.0.1 the way Pacemaker does (OCF_RESKEY_* in the
environment). Each round times start (until lighttpd accepts) and stop (until it is gone) for each
agent, alternating, so both see the same machine. A manager restart or a failover runs one proxy
stop and one start, so their sum is the agent's share of that outage.
Writes bench/results/proxy_agent.json.  Usage: python bench/proxy_agent.py [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.ha import ocf_proxy

ANYTHING = "/usr/lib/ocf/resource.d/heartbeat/anything"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def timed(argv: list[str], env: dict[str, str], done) -> float:
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr[-500:]}")
    deadline = began + 30
    while not done():  # `anything` returns from start before lighttpd listens: count until it does
        if time.perf_counter() > deadline:
            raise SystemExit(f"{' '.join(argv)}: lighttpd did not reach the expected state within 30 s")
        time.sleep(0.005)  # poll interval inside the deadline loop
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    port = free_port()
    config = work / "lighttpd.conf"
    config.write_text(f'server.document-root = "{work}"\nserver.bind = "127.0.0.1"\nserver.port = {port}\n')
    shim = work / "proxy"
    shim.write_text(ocf_proxy.shim(sys.executable))
    shim.chmod(0o755)
    base = {**os.environ, "OCF_ROOT": "/usr/lib/ocf"}
    agents = {
        "ocf:appliance:proxy": ([str(shim)], {**base, "OCF_RESKEY_config": str(config),
                                              "OCF_RESKEY_listen": f"127.0.0.1:{port}",
                                              "OCF_RESKEY_pidfile": str(work / "ours.pid"),
                                              "OCF_RESKEY_logfile": str(work / "ours.log")}),
        "ocf:heartbeat:anything": ([ANYTHING], {**base, "OCF_RESKEY_binfile": "/usr/sbin/lighttpd",
                                                "OCF_RESKEY_cmdline_options": f"-D -f {config}",
                                                "OCF_RESKEY_pidfile": str(work / "anything.pid")}),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"start": [], "stop": []} for name in agents}
    for _ in range(args.rounds):
        for name, (argv, env) in agents.items():
            times[name]["start"].append(timed([*argv, "start"], env, lambda: accepts(port)))
            times[name]["stop"].append(timed([*argv, "stop"], env, lambda: not accepts(port)))
    rows = {}
    for name, measured in times.items():
        rows[name] = {action: round(statistics.median(values), 3) for action, values in measured.items()}
        rows[name]["stop+start"] = round(rows[name]["start"] + rows[name]["stop"], 3)
    ours, theirs = rows["ocf:appliance:proxy"], rows["ocf:heartbeat:anything"]
    result = {"rounds": args.rounds, "median_seconds": rows,
              "ratio_anything_to_ours": {k: round(theirs[k] / ours[k], 1) for k in ours}}
    for name, row in rows.items():
        print(f"{name:24} start {row['start']:.3f} s  stop {row['stop']:.3f} s  stop+start {row['stop+start']:.3f} s")
    print(f"anything / ours: {result['ratio_anything_to_ours']}")
    out = Path(__file__).resolve().parent / "results" / "proxy_agent.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
