"""Failover previews with Pacemaker's own scheduler (crm_simulate), run through a runner.

The desired CIB is brought to a realistic state offline: both nodes online with quorum (two_node
keeps it), then the promotion scores the linbit drbd agent sets on UpToDate nodes, then a node fails.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from appliance.core.runner import Runner

from . import cib


@dataclass(frozen=True)
class Preview:
    failed_node: str
    transition: str  # crm_simulate's transition summary
    revised_status: str  # the cluster status after the transition


def steady_state(runner: Runner, cib_path: str, workdir: str, nodes: tuple[str, ...],
                 promotable: tuple[str, ...]) -> str:
    """Write and return the path of a CIB where all nodes are up and every promotable clone is promoted."""
    up = str(PurePosixPath(workdir) / "state-up.xml")
    runner.run(cib.simulate_cmd(cib_path, up, cib.Simulation(node_up=nodes, extra=("--quorum", "1"))))
    for node in nodes:
        for primitive in promotable:
            runner.run(cib.promotion_score_cmd(node, primitive), env={"CIB_file": up})
    promoted = str(PurePosixPath(workdir) / "state-promoted.xml")
    runner.run(cib.simulate_cmd(up, promoted, cib.Simulation()))
    return promoted


def node_failure(runner: Runner, steady_cib: str, workdir: str, node: str) -> Preview:
    out = str(PurePosixPath(workdir) / f"state-{node}-failed.xml")
    result = runner.run(cib.simulate_cmd(steady_cib, out, cib.Simulation(node_fail=(node,))))
    return Preview(node, _section(result.stdout, "Transition Summary:", "Executing Cluster Transition:"),
                   _section(result.stdout, "Revised Cluster Status:", None))


def _section(text: str, start: str, end: str | None) -> str:
    lines = text.splitlines()
    try:
        first = lines.index(start)
    except ValueError:
        return ""
    body = lines[first + 1:]
    if end is not None and end in body:
        body = body[:body.index(end)]
    return "\n".join(line.rstrip().replace("\t", " ") for line in body).strip("\n") + "\n"
