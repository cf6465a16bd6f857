"""fence_lab: the lab's power switch, as a Pacemaker fence agent.

fence_dummy reports success and leaves the node running, so a node cut off from its peer kept its
floating addresses and services (a split brain the lab hid). This agent really switches a lab node
off: its links go down and every process in its network namespace is killed, which is what a power
cut looks like from the network. Like an IPMI or PDU, the switch is reached over the LAN: a node
that cannot reach `pdu` (its links are cut) cannot fence anyone, so it loses the fence race.

There is no "on": `appliance lab up` or a drill's restore brings a switched-off node back, so
reboot is off. Pacemaker's fenced passes options as key=value lines on stdin; `-o ACTION` and
`-n NODE` work on the command line for people. Installed as /usr/sbin/fence_lab by `lab up`.
"""
from __future__ import annotations

import os
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


def node_netns(lab_dir: Path, node: str) -> str:
    return (lab_dir / node / "netns.id").read_text().strip()


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


def switch_off(lab_dir: Path, node: str) -> bool:
    netns = node_netns(lab_dir, node)
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
    stdin_text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    opts = options(argv[1:], stdin_text)
    action = opts["action"]
    if action == "metadata":
        print(metadata(), end="")
        return OK
    if action not in ACTIONS:
        print(f"fence_lab: unknown action {action!r}", file=sys.stderr)
        return FAILED
    lab_dir = Path(opts.get("lab_dir", ""))
    if not opts.get("lab_dir") or not lab_dir.is_dir():
        print(f"fence_lab: lab_dir {opts.get('lab_dir')!r} is not the lab directory", file=sys.stderr)
        return FAILED
    if action == "validate-all":
        return OK
    if not reachable(opts["pdu"]):
        print(f"fence_lab: the power switch at {opts['pdu']} does not answer from here", file=sys.stderr)
        return FAILED
    if action == "monitor":
        return OK
    if action == "list":
        for node_dir in sorted(lab_dir.iterdir()):
            if (node_dir / "netns.id").is_file():
                print(f"{node_dir.name},")
        return OK
    node = opts.get("plug", "")
    if not node or not (lab_dir / node / "netns.id").is_file():
        print(f"fence_lab: {node!r} is not a node of the lab in {lab_dir}", file=sys.stderr)
        return FAILED
    if action == "status":
        return OK if pids_in(node_netns(lab_dir, node)) else OFF
    if action == "on":
        print("fence_lab: the lab switch has no 'on'; `appliance lab up` starts a node again", file=sys.stderr)
        return FAILED
    return OK if switch_off(lab_dir, node) else FAILED  # off, and reboot (which stays off)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
