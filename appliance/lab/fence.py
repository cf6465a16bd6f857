"""fence_lab: the lab's power switch, as a Pacemaker fence agent.

fence_dummy reports success and leaves the node running, so a node cut off from its peer kept its
floating addresses and services (a split brain the lab hid). This agent really switches a lab node
off: its links go down and every process in its network namespace is killed, which is what a power
cut looks like from the network. Like an IPMI or PDU, the switch is reached over the LAN: a node
that cannot reach `pdu` (its links are cut) cannot fence anyone, so it loses the fence race.

There is no "on": `appliance lab up` or a drill's restore brings a switched-off node back, so
reboot is off. Pacemaker's fenced passes options as key=value lines on stdin; `-o ACTION` and
`-n NODE` work on the command line for people. Installed as /usr/sbin/fence_lab by `lab up`.

It only switches nodes of its own lab: lab_dir must be a lab (an existing directory with lab.toml),
and the plug must be a lab node's name (NODE_NAME) whose directory really lies inside lab_dir.
Every switch-off is recorded in the node's directory (RECORD: running, then off or failed), so a
drill's restore can wait until the fence is over before it starts the node again.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

PARAMETERS = (
    ("action", "Fencing action", "reboot", True),
    ("plug", "Lab node to switch (its name)", "", False),
    ("port", "Lab node to switch (its name); prefer plug", "", False),
    ("lab_dir", "The lab directory `appliance lab up` made", "", True),
    ("pdu", "Address of the lab's power switch (the host's LAN bridge address)", "10.251.0.254", False),
)
ACTIONS = ("on", "off", "reboot", "status", "list", "monitor", "metadata", "validate-all")
OK, FAILED, OFF = 0, 1, 2  # fence-agents' status convention: 0 on, 2 off, 1 error
# A lab node's name, as appliance.lab.lab.LabNode.name makes it (ASCII digits only: no \\d).
NODE_NAME = re.compile(r"cloud-cc[0-9]{2}", re.ASCII)
LAB_MARKER = "lab.toml"  # what `appliance lab up` writes into every lab directory
RECORD = "fence.json"  # in the node's directory: the last switch-off, see record()


class Refused(Exception):
    """A plug or lab_dir this agent does not switch: the message goes to stderr."""


def metadata() -> str:
    root = ET.Element("resource-agent", {"name": "fence_lab", "shortdesc": "Power switch of the appliance lab"})
    ET.SubElement(root, "longdesc").text = (
        "Switches an appliance lab node off: links down, every process in its network namespace killed. "
        "Reached over the lab LAN like a real power switch.")
    ET.SubElement(root, "vendor-url").text = "https://example.invalid/appliance"
    params = ET.SubElement(root, "parameters")
    for name, description, default, required in PARAMETERS:
        element = ET.SubElement(params, "parameter", {"name": name, "unique": "0", "required": str(int(required))})
        ET.SubElement(element, "getopt", {"mixed": f"--{name.replace('_', '-')}=[value]"})
        ET.SubElement(element, "content", {"type": "string", "default": default})
        ET.SubElement(element, "shortdesc", {"lang": "en"}).text = description
    actions = ET.SubElement(root, "actions")
    for action in ACTIONS:
        ET.SubElement(actions, "action", {"name": action})
    ET.indent(root, space="  ")
    return '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def options(argv: list[str], stdin_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in stdin_text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            found[key.strip()] = value.strip()
    flags = {"-o": "action", "--action": "action", "-n": "plug", "--plug": "plug", "--lab-dir": "lab_dir",
             "--pdu": "pdu"}
    args = iter(argv)
    for arg in args:
        key, sep, value = arg.partition("=")
        if key in flags:
            found[flags[key]] = value if sep else next(args, "")
    if "port" in found and "plug" not in found:
        found["plug"] = found["port"]
    found.setdefault("pdu", "10.251.0.254")
    found.setdefault("action", "reboot")
    return found


def reachable(address: str, timeout: float = 2.0) -> bool:
    """A refused connection is an answer: the switch's network is up. Silence is not."""
    try:
        with socket.create_connection((address, 9), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def lab_root(lab_dir: str) -> Path:
    """lab_dir, resolved, when it is a lab: an existing directory holding lab.toml."""
    if not lab_dir or "\0" in lab_dir or "\n" in lab_dir:
        raise Refused(f"lab_dir {lab_dir!r} is not the lab directory")
    try:
        root = Path(lab_dir).resolve(strict=True)
        is_lab = root.is_dir() and (root / LAB_MARKER).is_file()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, unreadable
        is_lab = False
    if not is_lab:
        raise Refused(f"lab_dir {lab_dir!r} is not the lab directory (an existing directory with {LAB_MARKER})")
    return root


def node_dir(root: Path, plug: str) -> Path:
    """The directory of lab node `plug` inside the lab `root` (from lab_root): the name must be a
    lab node's, and the directory must resolve to a child of the lab, not through a symlink out."""
    if not NODE_NAME.fullmatch(plug):
        raise Refused(f"{plug!r} is not a lab node name (cloud-ccNN)")
    try:
        path = (root / plug).resolve(strict=True)
        inside = path.is_relative_to(root) and path.parent == root and (path / "netns.id").is_file()
    except (OSError, RuntimeError, ValueError):
        inside = False
    if not inside:
        raise Refused(f"{plug!r} is not a node of the lab in {root}")
    return path


def node_netns(directory: Path) -> str:
    return (directory / "netns.id").read_text().strip()


def pids_in(netns: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == netns:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or a kernel thread
    return found


def record(directory: Path, state: str, started: float, finished: float | None = None) -> None:
    """The node's last switch-off: state "running" (by the agent `pid`), then "off" or "failed".
    Written atomically; a record that cannot be written does not stop the fence."""
    text = json.dumps({"state": state, "pid": os.getpid(), "started": started, "finished": finished})
    tmp = directory / f".{RECORD}.{os.getpid()}"
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, directory / RECORD)
    except OSError as exc:
        print(f"fence_lab: cannot record the switch-off in {directory}: {exc}", file=sys.stderr)


def last_switch(directory: Path) -> dict | None:
    """The record of the node's last switch-off, or None when it was never switched off."""
    try:
        found = json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def agent_running(pid: object) -> bool:
    """Whether `pid` is still a running fence_lab (a live process, not a zombie, not a reused pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"appliance.lab.fence" in cmdline


def switch_off(directory: Path) -> bool:
    started = time.time()
    record(directory, "running", started)
    try:
        done = _switch_off(node_netns(directory))
    except BaseException:
        record(directory, "failed", started, time.time())
        raise
    record(directory, "off" if done else "failed", started, time.time())
    return done


def _switch_off(netns: str) -> bool:
    pids = pids_in(netns)
    if pids:  # links first: from this moment the node answers nothing, not even ARP
        for link in ("lan0", "san0"):
            subprocess.run(["nsenter", f"--net=/proc/{pids[0]}/ns/net", "ip", "link", "set", link, "down"],
                           capture_output=True, timeout=10)
    for _ in range(50):  # until none is left: a live daemon can fork between listing and kill
        pids = pids_in(netns)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)  # let the kernel reap before listing again
    return not pids_in(netns)


def main(argv: list[str]) -> int:
    """A fence agent answers with a status code and a line on stderr, never a traceback."""
    try:
        return _main(argv)
    except Refused as exc:
        print(f"fence_lab: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # noqa: BLE001 (fenced reads the status; a traceback helps nobody there)
        print(f"fence_lab: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED


def _main(argv: list[str]) -> int:
    stdin_text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    opts = options(argv[1:], stdin_text)
    action = opts["action"]
    if action == "metadata":
        print(metadata(), end="")
        return OK
    if action not in ACTIONS:
        print(f"fence_lab: unknown action {action!r}", file=sys.stderr)
        return FAILED
    lab_dir = lab_root(opts.get("lab_dir", ""))
    if action == "validate-all":
        return OK
    if not reachable(opts["pdu"]):
        print(f"fence_lab: the power switch at {opts['pdu']} does not answer from here", file=sys.stderr)
        return FAILED
    if action == "monitor":
        return OK
    if action == "list":
        for entry in sorted(lab_dir.iterdir()):
            try:
                print(f"{node_dir(lab_dir, entry.name).name},")
            except Refused:
                continue  # not a node of this lab
        return OK
    directory = node_dir(lab_dir, opts.get("plug", ""))
    if action == "status":
        return OK if pids_in(node_netns(directory)) else OFF
    if action == "on":
        print("fence_lab: the lab switch has no 'on'; `appliance lab up` starts a node again", file=sys.stderr)
        return FAILED
    return OK if switch_off(directory) else FAILED  # off, and reboot (which stays off)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
