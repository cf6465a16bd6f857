#!/usr/bin/python3
"""fence_vmlab: the VM lab's fence agent, a client of the lab's power switch (appliance.lab.pdu).

The VM lab's machines are QEMU processes on one host. Only the host can cut a machine's power, so
the host runs a small power switch on its LAN bridge address and this agent, inside a frontend,
asks it over the lab LAN, as a real agent asks a PDU or a BMC. A frontend cut off from the LAN
cannot reach the switch and so cannot fence its peer: it loses the fence race, as it should.

Copied verbatim to /usr/sbin/fence_vmlab in the machines, which run Debian's python3 and nothing of
appliance: so the standard library only, and this file is the whole agent.

Protocol: one JSON line {"password", "action", "plug"} out, one JSON line back: {"ok": true,
"state": "on"|"off"}, {"ok": true, "plugs": [...]} for list, or {"ok": false, "error": "..."}.
Pacemaker's fenced passes options as key=value lines on stdin (read only when there are no
arguments, as fence-agents do); people use -o ACTION -n PLUG -a IP -u IPPORT -p PASSWORD or the
--name=value forms. Exit codes follow fence-agents: 0 done (or on), 2 off (status), 1 error.
"""
from __future__ import annotations

import json
import socket
import sys
import xml.etree.ElementTree as ET

NAME = "fence_vmlab"
SWITCH = "10.251.0.254"  # the host's address on the lab LAN bridge
SWITCH_PORT = 1623
CONNECT_TIMEOUT = 10.0  # seconds to reach the switch: a cut-off node must give up, not hang
ANSWER_TIMEOUT = 60.0  # seconds for the switch's answer: a power cut waits for the machine to be off
MAX_ANSWER = 65536
# name, short flag, description, default, required
PARAMETERS = (
    ("action", "-o", "Fencing action", "reboot", True),
    ("plug", "-n", "Machine to switch (its name)", "", False),
    ("port", None, "Machine to switch (its name); prefer plug", "", False),
    ("ip", "-a", "Address of the lab's power switch (the host's LAN bridge address)", SWITCH, False),
    ("ipport", "-u", "TCP port of the lab's power switch", str(SWITCH_PORT), False),
    ("password", "-p", "The power switch's key (the lab's pdu.key)", "", True),
)
ACTIONS = ("on", "off", "reboot", "status", "list", "monitor", "metadata", "validate-all")
OK, FAILED, OFF = 0, 1, 2  # fence-agents' status convention: 0 on, 2 off, 1 error
# What a flag sets; "--port" names the plug, as on stdin ("ipport" is the switch's TCP port).
FLAGS = {"-o": "action", "-n": "plug", "-a": "ip", "-u": "ipport", "-p": "password",
         **{f"--{name}": name for name, *_ in PARAMETERS}}


class Failed(Exception):
    """An expected failure: the message goes to stderr. It never holds the password."""


def metadata() -> str:
    root = ET.Element("resource-agent", {"name": NAME, "shortdesc": "Power switch of the appliance VM lab"})
    ET.SubElement(root, "longdesc").text = (
        "Powers an appliance VM lab machine off or on through the lab host's power switch, reached over "
        "the lab LAN like a real PDU.")
    ET.SubElement(root, "vendor-url").text = "https://example.invalid/appliance"
    params = ET.SubElement(root, "parameters")
    for name, flag, description, default, required in PARAMETERS:
        element = ET.SubElement(params, "parameter", {"name": name, "unique": "0", "required": str(int(required))})
        getopt = f"--{name}=[value]" if flag is None else f"{flag}, --{name}=[value]"
        ET.SubElement(element, "getopt", {"mixed": getopt})
        ET.SubElement(element, "content", {"type": "string", "default": default})
        ET.SubElement(element, "shortdesc", {"lang": "en"}).text = description
    actions = ET.SubElement(root, "actions")
    for action in ACTIONS:
        ET.SubElement(actions, "action", {"name": action})
    ET.indent(root, space="  ")
    return '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def options(argv: list[str], stdin_text: str) -> dict[str, str]:
    """Options from stdin's key=value lines (unknown keys ignored: fenced sends nodename and more),
    then from the command line (an unknown flag is an error, named without its value)."""
    found: dict[str, str] = {}
    for line in stdin_text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            found[key.strip()] = value.strip()
    args = iter(argv)
    for arg in args:
        key, sep, value = arg.partition("=")
        if key not in FLAGS:
            raise Failed(f"unknown option {key!r}; the options are {', '.join(sorted(FLAGS))}")
        if not sep:
            value = next(args, None)
            if value is None:
                raise Failed(f"option {key} needs a value")
        found[FLAGS[key]] = value
    if found.get("port") and not found.get("plug"):
        found["plug"] = found["port"]
    found.setdefault("action", "reboot")
    found.setdefault("ip", SWITCH)
    found.setdefault("ipport", str(SWITCH_PORT))
    return found


def validate(opts: dict[str, str]) -> None:
    if opts["action"] not in ACTIONS:
        raise Failed(f"unknown action {opts['action']!r}; the actions are {', '.join(ACTIONS)}")
    if not opts.get("password"):
        raise Failed("no password: give the switch's key as password (the lab's pdu.key)")
    if not opts["ip"]:
        raise Failed(f"no ip: give the power switch's address (the lab's is {SWITCH})")
    if not (opts["ipport"].isascii() and opts["ipport"].isdigit() and 0 < int(opts["ipport"]) < 65536):
        raise Failed(f"ipport {opts['ipport']!r} is not a TCP port: give 1-65535 (the lab's is {SWITCH_PORT})")
    if opts["action"] in ("on", "off", "reboot", "status") and not opts.get("plug"):
        raise Failed(f"action {opts['action']} needs plug: the name of the machine to switch")


def ask(opts: dict[str, str], action: str, timeout: float) -> dict:
    """One request to the switch, its answer when ok; Failed with the switch's error otherwise."""
    where = f"{opts['ip']}:{opts['ipport']}"
    request = {"password": opts["password"], "action": action, "plug": opts.get("plug", "")}
    try:
        with socket.create_connection((opts["ip"], int(opts["ipport"])), timeout=timeout) as conn:
            conn.settimeout(max(timeout, ANSWER_TIMEOUT))
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = _read_line(conn)
    except TimeoutError:
        raise Failed(f"the power switch at {where} did not answer in time; check that the lab host's switch "
                     "runs (python -m appliance.lab.pdu) and that this machine's LAN link is up") from None
    except OSError as exc:
        raise Failed(f"cannot reach the power switch at {where}: {exc.strerror or exc}; check the ip and ipport "
                     "parameters and that the lab host's switch runs (python -m appliance.lab.pdu)") from None
    try:
        found = json.loads(answer)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise Failed(f"the power switch at {where} sent an answer that is not a JSON object")
    if found.get("ok") is not True:
        raise Failed(f"the power switch at {where} answered: {found.get('error', 'no reason given')}")
    return found


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_ANSWER:
            raise Failed(f"the power switch's answer is longer than {MAX_ANSWER} bytes")
    return data.split(b"\n", 1)[0]


def main(argv: list[str], timeout: float = CONNECT_TIMEOUT) -> int:
    """A fence agent answers with a status code and a line on stderr, never a traceback."""
    try:
        return _main(argv, timeout)
    except Failed as exc:
        print(f"{NAME}: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # noqa: BLE001 (fenced reads the status; a traceback helps nobody there)
        print(f"{NAME}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED


def _main(argv: list[str], timeout: float) -> int:
    # fence-agents read stdin only without arguments: a person's command line must not wait on it.
    stdin_text = "" if argv[1:] or sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    opts = options(argv[1:], stdin_text)
    if opts["action"] == "metadata":
        print(metadata(), end="")
        return OK
    validate(opts)
    action = opts["action"]
    if action == "validate-all":
        return OK
    if action in ("list", "monitor"):  # monitor: the switch answers and takes the password
        plugs = ask(opts, "list", timeout).get("plugs")
        if not isinstance(plugs, list):
            raise Failed("the power switch's list holds no plugs")
        if action == "list":
            for plug in plugs:
                print(f"{plug},")
        return OK
    answer = ask(opts, action, timeout)
    state = answer.get("state")
    if state not in ("on", "off"):
        raise Failed(f"the power switch reported {opts['plug']!r} in state {state!r}, neither on nor off")
    if answer.get("warning"):
        print(f"{NAME}: {answer['warning']}", file=sys.stderr)
    if action == "status":
        print(f"Status: {state.upper()}")
        return OK if state == "on" else OFF
    print({"on": "Success: Powered ON", "off": "Success: Powered OFF", "reboot": "Success: Rebooted"}[action])
    return OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
