"""The VM lab's power switch: a small TCP server on the lab host that powers lab machines off and on.

The VM lab's machines are QEMU processes on this host; Pacemaker on a frontend fences its peer with
fence_vmlab (appliance/lab/fence_vmlab.py), which asks this switch over the lab LAN, as a real
agent asks a PDU. A frontend cut off from the LAN cannot reach the switch, so it loses the fence race.

Protocol: the client sends ONE JSON line {"password": str, "action": "on|off|reboot|status|list|monitor",
"plug": str} (at most MAX_REQUEST bytes, within READ_TIMEOUT seconds) and gets ONE JSON line back:
{"ok": true, "state": "on"|"off"} (on, off, reboot, status), {"ok": true, "plugs": [...]} (list),
{"ok": true} (monitor) or {"ok": false, "error": "..."}. A reboot whose power-on fails still fenced
the machine: {"ok": true, "state": "off", "warning": "..."}.

Every switch-off (off, reboot) is recorded in the machine's directory in fence_lab's format
(appliance.lab.fence.record: running, then off or failed), so a drill can wait until it is over.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from appliance.lab import fence

PORT = 1623
ADDRESS = "10.251.0.254"  # the host's address on the lab LAN bridge
MAX_REQUEST = 4096
READ_TIMEOUT = 5.0  # seconds for the whole request line: a silent or slow client frees its thread
KEY_FILE = "pdu.key"
PID_FILE = "pdu.pid"
ACTIONS = ("on", "off", "reboot", "status", "list", "monitor")
log = logging.getLogger("appliance.lab.pdu")


class Power(Protocol):
    """What the VM lab gives the switch (appliance.lab.vm.VmPower)."""

    def plugs(self) -> list[str]: ...

    def state(self, plug: str) -> str: ...  # "on" or "off"

    def off(self, plug: str) -> None: ...  # a hard power cut; returns when the machine is off

    def on(self, plug: str) -> None: ...

    def machine_dir(self, plug: str) -> Path: ...  # where the switch-off record goes


class Refused(Exception):
    """A request the switch does not carry out: the message is the answer's error."""

    def __init__(self, message: str, logged: bool = False):
        super().__init__(message)
        self.logged = logged  # already logged, with more than the answer says


class Switch(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, power: Power, address: str, port: int, key: str):
        self.power, self.key = power, key.encode()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        super().__init__((address, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def plug_lock(self, plug: str) -> threading.Lock:
        """One lock per plug: two fences of one machine must not interleave their off and on."""
        with self._locks_lock:
            return self._locks.setdefault(plug, threading.Lock())

    def answer(self, line: bytes, client: str) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            raise Refused("the request is not JSON: send one line {\"password\", \"action\", \"plug\"}") from None
        if not isinstance(request, dict):
            raise Refused("the request is not a JSON object: send {\"password\", \"action\", \"plug\"}")
        action, plug, password = request.get("action"), request.get("plug"), request.get("password")
        if not isinstance(password, str) or not hmac.compare_digest(password.encode(errors="surrogatepass"), self.key):
            _log(logging.WARNING, "refused %r of %r from %s: wrong password", action, plug, client)
            raise Refused("refused", logged=True)  # no hint for a guesser
        if action not in ACTIONS:
            raise Refused(f"unknown action {action!r}; the actions are {', '.join(ACTIONS)}")
        if action == "monitor":
            return {"ok": True}
        plugs = list(self.power.plugs())
        if action == "list":
            return {"ok": True, "plugs": plugs}
        if not isinstance(plug, str) or plug not in plugs:
            raise Refused(f"unknown plug {plug!r}; the switch's plugs are {', '.join(plugs)}")
        _log(logging.INFO, "%s %s, asked by %s", action, plug, client)
        if action == "status":
            return {"ok": True, "state": self.power.state(plug)}
        with self.plug_lock(plug):
            if action == "on":
                self.power.on(plug)
                return {"ok": True, "state": self.power.state(plug)}
            self._switch_off(plug)
            if action == "off":
                return {"ok": True, "state": "off"}
            try:  # reboot: the machine is fenced once off; a failed power-on does not undo that
                self.power.on(plug)
            except Exception as exc:  # noqa: BLE001 (reported in the answer and the log)
                _log(logging.ERROR, "reboot %s: powered off, but powering on failed: %s: %s", plug,
                     type(exc).__name__, exc)
                return {"ok": True, "state": "off", "warning": f"{plug} is off, but powering it on failed: "
                        f"{type(exc).__name__}: {exc}"}
            return {"ok": True, "state": self.power.state(plug)}

    def _switch_off(self, plug: str) -> None:
        """A hard power cut, recorded in the machine's directory as fence_lab records its own."""
        directory = self.power.machine_dir(plug)
        started = time.time()
        fence.record(directory, "running", started)
        try:
            self.power.off(plug)
            state = self.power.state(plug)
        except Exception as exc:
            fence.record(directory, "failed", started, time.time())
            _log(logging.ERROR, "off %s failed: %s: %s", plug, type(exc).__name__, exc)
            raise Refused(f"switching {plug} off failed: {type(exc).__name__}: {exc}", logged=True) from None
        fence.record(directory, "off" if state == "off" else "failed", started, time.time())
        if state != "off":
            _log(logging.ERROR, "off %s: the machine is still %s after the power cut", plug, state)
            raise Refused(f"{plug} is still {state} after the power cut", logged=True)
        _log(logging.INFO, "off %s: done in %.1f s", plug, time.time() - started)


class _Handler(socketserver.BaseRequestHandler):
    server: Switch

    def handle(self) -> None:
        client = "%s:%s" % self.client_address[:2]
        try:
            answer = self.server.answer(_read_request(self.request), client)
        except Refused as exc:
            if not exc.logged:
                _log(logging.WARNING, "refused a request from %s: %s", client, exc)
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 (the client gets a reason, the log a line, nobody a traceback)
            _log(logging.ERROR, "request from %s failed: %s: %s", client, type(exc).__name__, exc)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            self.request.sendall(json.dumps(answer).encode() + b"\n")
            _drain(self.request)
        except OSError:
            pass  # the client is gone; the action (if any) is done and recorded


def _read_request(conn: socket.socket) -> bytes:
    """The request line: up to a newline (or the client's end), at most MAX_REQUEST bytes, all within
    READ_TIMEOUT seconds (a per-recv timeout alone would let a client dribble bytes for hours)."""
    deadline = time.monotonic() + READ_TIMEOUT
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(f"no complete request line within {READ_TIMEOUT:g} s")
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
        except TimeoutError:
            raise Refused(f"no complete request line within {READ_TIMEOUT:g} s") from None
        if not chunk:
            break
        data += chunk
        if b"\n" not in data and len(data) > MAX_REQUEST:
            raise Refused(f"the request is longer than {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0]


def _drain(conn: socket.socket) -> None:
    """Read what the client sent beyond the request until it closes (briefly, boundedly): closing with
    unread bytes makes the kernel send a reset, which can discard the answer before the client reads it."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(1.0)
    for _ in range(16):
        if not conn.recv(65536):
            return


def _log(level: int, message: str, *args: object) -> None:
    """Each line with its UTC time, whatever format the process's logging has."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    log.log(level, "%s " + message, stamp, *args)


def start(power: Power, address: str, port: int, key: str) -> Switch:
    """The switch, bound and answering in a background thread; .port is the bound port (for port 0),
    .shutdown() then .server_close() stop it."""
    if not key:
        raise ValueError("the power switch needs a key: an empty one would let anyone on the LAN fence")
    plugs = ", ".join(power.plugs())
    switch = Switch(power, address, port, key)
    threading.Thread(target=switch.serve_forever, args=(0.1,), name="pdu", daemon=True).start()
    _log(logging.INFO, "power switch listening on %s:%d for %s", address, switch.port, plugs)
    return switch


def serve(power: Power, address: str, port: int, key: str, stop: threading.Event | None = None,
          ready: Callable[[Switch], None] | None = None) -> None:
    """Serve until `stop` is set (forever without one). `ready` is called with the bound Switch once it
    answers: its .port is the port bound, when `port` was 0."""
    stop = stop or threading.Event()
    switch = start(power, address, port, key)
    try:
        if ready:
            ready(switch)
        while not stop.wait(1.0):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        _stop(switch)


def _stop(switch: Switch) -> None:
    switch.shutdown()
    switch.server_close()  # waits for requests in progress: a switch-off is not cut in half
    _log(logging.INFO, "power switch on %s:%d stopped", *switch.server_address[:2])


class Unusable(Exception):
    """The switch cannot start: the message says what and how to fix it."""


def read_key(path: Path) -> str:
    """The switch's key, from a file only its owner (this user) can read: the key lets anyone fence."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Unusable(f"cannot read the power switch's key {path}: {exc.strerror}; "
                       "`appliance lab up` writes it") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Unusable(f"{path} is not a regular file; remove it and run `appliance lab up` again")
        if info.st_uid != os.geteuid():
            raise Unusable(f"{path} belongs to uid {info.st_uid}, not to uid {os.geteuid()} that runs the switch; "
                           f"run `chown {os.geteuid()} {path}`")
        if info.st_mode & 0o077:
            raise Unusable(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, readable beyond its owner; "
                           f"run `chmod 600 {path}`")
        key = f.read().decode(errors="replace").strip()
    if not key:
        raise Unusable(f"{path} is empty; remove it and run `appliance lab up` again")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.lab.pdu", description="The VM lab's power switch.")
    parser.add_argument("--lab-dir", required=True, type=Path, help="the VM lab's directory (holds pdu.key)")
    parser.add_argument("--address", default=ADDRESS, help=f"address to listen on (default {ADDRESS})")
    parser.add_argument("--port", type=int, default=PORT, help=f"TCP port (default {PORT})")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        key = read_key(args.lab_dir / KEY_FILE)
        power = _vm_power(args.lab_dir)
        switch = start(power, args.address, args.port, key)
    except Unusable as exc:
        print(f"appliance.lab.pdu: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the address is not on this host, or the port is taken
        print(f"appliance.lab.pdu: cannot listen on {args.address}:{args.port}: {exc.strerror or exc}; check that "
              f"the lab's LAN bridge holds the address and no other switch runs (see {args.lab_dir / PID_FILE})",
              file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pid_file = args.lab_dir / PID_FILE
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        while not stop.wait(1.0):  # a timeout keeps the main thread responsive to signals
            pass
    except OSError as exc:
        print(f"appliance.lab.pdu: cannot write {pid_file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        _stop(switch)
        try:
            if pid_file.read_text().strip() == str(os.getpid()):  # a newer switch may own it now
                pid_file.unlink()
        except OSError:
            pass
    return 0


def _vm_power(lab_dir: Path) -> Power:
    try:
        from appliance.lab import vm  # lazily: the namespace lab and the tests have no QEMU
    except ImportError as exc:
        raise Unusable(f"the VM lab is not available: {exc}") from None
    try:
        return vm.VmPower(Path(lab_dir))
    except Exception as exc:  # noqa: BLE001 (a line the operator reads, not a traceback)
        raise Unusable(f"the VM lab in {lab_dir} cannot be switched: {type(exc).__name__}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
