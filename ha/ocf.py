"""OCF resource-agent plumbing: exit codes, parameters, meta-data generated from them, exit reasons.

Standard library only: Pacemaker runs an agent for every monitor, so it must start fast.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SUCCESS, ERR_GENERIC, ERR_ARGS, ERR_UNIMPLEMENTED, ERR_PERM, ERR_INSTALLED, ERR_CONFIGURED, NOT_RUNNING = range(8)


@dataclass(frozen=True)
class Parameter:
    name: str
    shortdesc: str
    longdesc: str
    default: str = ""
    required: bool = False
    unique: bool = False

    def value(self) -> str:
        return os.environ.get(f"OCF_RESKEY_{self.name}", self.default)


@dataclass(frozen=True)
class Action:
    name: str
    timeout: str
    interval: str | None = None
    depth: str | None = None


def meta_data(name: str, version: str, shortdesc: str, longdesc: str, parameters: tuple[Parameter, ...],
              actions: tuple[Action, ...]) -> str:
    """ra-api-1 meta-data (checked against ra-api-1.dtd by ocf-tester)."""
    root = ET.Element("resource-agent", {"name": name, "version": version})
    ET.SubElement(root, "version").text = "1.0"
    ET.SubElement(root, "longdesc", {"lang": "en"}).text = longdesc
    ET.SubElement(root, "shortdesc", {"lang": "en"}).text = shortdesc
    params = ET.SubElement(root, "parameters")
    for p in parameters:
        element = ET.SubElement(params, "parameter", {"name": p.name, "unique": str(int(p.unique)),
                                                      "required": str(int(p.required))})
        ET.SubElement(element, "longdesc", {"lang": "en"}).text = p.longdesc
        ET.SubElement(element, "shortdesc", {"lang": "en"}).text = p.shortdesc
        ET.SubElement(element, "content", {"type": "string", "default": p.default})
    acts = ET.SubElement(root, "actions")
    for a in actions:
        attrs = {"name": a.name, "timeout": a.timeout}
        if a.interval:
            attrs["interval"] = a.interval
        if a.depth:
            attrs["depth"] = a.depth
        ET.SubElement(acts, "action", attrs)
    ET.indent(root, space="  ")
    return ('<?xml version="1.0"?>\n<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def exit_reason(message: str) -> None:
    """Shown by crm_mon next to a failed action."""
    print(f"ocf-exit-reason:{message}", file=sys.stderr)


def installed(binary: str, config: str) -> int:
    """The first checks of every validate: the program runs (5, not installed) and its config
    exists (6, not configured)."""
    if not os.access(binary, os.X_OK):
        exit_reason(f"{binary} is not executable")
        return ERR_INSTALLED
    if not Path(config).is_file():
        exit_reason(f"config {config} does not exist")
        return ERR_CONFIGURED
    return SUCCESS


def is_probe() -> bool:
    return os.environ.get("OCF_RESKEY_CRM_meta_interval", "0") == "0" and \
        os.environ.get("__OCF_ACTION", "") == "monitor"


def action_timeout(default: float) -> float:
    """The timeout Pacemaker gave this action, in seconds."""
    try:
        return int(os.environ["OCF_RESKEY_CRM_meta_timeout"]) / 1000.0
    except (KeyError, ValueError):
        return default


def shim(python: str, module: str, metadata: str) -> str:
    """The executable Pacemaker calls: /usr/lib/ocf/resource.d/<provider>/<agent>.

    It answers meta-data itself (static; asked often, sometimes as user nobody) and hands every
    other action to the Python module.
    """
    if "APPLIANCE_METADATA_END" in metadata:
        raise ValueError("meta-data must not contain the here-document terminator")
    return (f"#!/bin/sh\n# Managed by appliance: the OCF agent lives in {module}.\n"
            f'if [ "$1" = "meta-data" ]; then\n    cat <<\'APPLIANCE_METADATA_END\'\n{metadata}'
            f"APPLIANCE_METADATA_END\n    exit 0\nfi\n"
            f'exec {python} -m {module} "$@"\n')


def spawn(argv: list[str], pidfile: Path, logfile: Path) -> subprocess.Popen:
    """Start a daemon in its own session with its output in `logfile`, and record its pid atomically.

    Off Pacemaker's pipes: the daemon outlives the agent, and a closed pipe never kills it (vblade
    died of SIGPIPE that way)."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log, open(os.devnull, "rb") as null:
        process = subprocess.Popen(argv, stdin=null, stdout=log, stderr=log, start_new_session=True)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{process.pid}\n")
    os.replace(tmp, pidfile)
    return process


def terminate(pid: int, running: Callable[[], bool], grace: float, what: str) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; polls every 50 ms (every wait here is outage).
    False, with an exit reason, when the process survives SIGKILL: Pacemaker then escalates the
    failed stop to fencing, which is the right answer for a process stuck in I/O."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval inside the deadline loop
        if not running():
            return True
    exit_reason(f"{what} {pid} survives SIGKILL (stuck in I/O?)")
    return False


def dispatch(argv: list[str], metadata: Callable[[], str], validate: Callable[[], int],
             actions: dict[str, Callable[[], int]], validate_all: Callable[[], int] | None = None) -> int:
    """An agent's entry point: meta-data, validate-all (`validate_all` when the full check costs
    more than the one every probe runs), and start/stop/monitor. A probe on a node where the
    agent's files are missing answers "not running" rather than failing."""
    action = argv[1] if len(argv) > 1 else ""
    os.environ["__OCF_ACTION"] = action
    if action == "meta-data":
        print(metadata(), end="")
        return SUCCESS
    if action == "validate-all":
        return (validate_all or validate)()
    if action in actions:
        if action == "monitor" and is_probe() and validate() != SUCCESS:
            return NOT_RUNNING
        return actions[action]()
    print(f"usage: {argv[0]} {{{'|'.join(actions)}|validate-all|meta-data}}", file=sys.stderr)
    return ERR_UNIMPLEMENTED


def await_ready(process: subprocess.Popen, ready: Callable[[], bool], deadline: float, what: str,
                logfile: Path, not_ready: str) -> int:
    """A start's last step: poll every 50 ms until the daemon serves, or name why it does not."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            exit_reason(f"{what} exited with {process.returncode} during start; see {logfile}")
            return ERR_GENERIC
        if ready():
            return SUCCESS
        time.sleep(0.05)  # poll interval inside the deadline loop: every 50 ms here is outage
    exit_reason(not_ready)
    return ERR_GENERIC
