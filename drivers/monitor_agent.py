"""The monitoring agent: runs on a hypervisor host and pushes what it sees to the collector over UDP.

What it sends (core/monitor_wire.py): the host's system info at start and every `system_every`
cycles, the domain list (VM states) at once when it changes and on every usage cycle, VM and host
usage every `interval` seconds, a beacon every `beacon` seconds between them. Every datagram is
signed with the host's own key and numbered (epoch, sequence): the epoch is raised at each start and
persisted (temp file, atomic rename) before the first datagram, so a restarted agent resumes with
numbers the collector has never seen. Intervals run on the monotonic clock: a wall-clock step on
the host changes nothing it sends.

    python -m appliance.drivers.monitor_agent --config /etc/appliance/monitor-agent.toml
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

from appliance.core import monitor_wire as wire
from appliance.core.protocols import DriverError

log = logging.getLogger("appliance.agent")
_DOMAIN = re.compile(r"appliance-(\d+)")


def next_epoch(state_file: Path, at_least: int = 0) -> int:
    """Raise and persist the run counter before anything is sent with it."""
    try:
        stored = int(state_file.read_text().strip() or 0)
    except FileNotFoundError:
        stored = 0
    except ValueError:
        raise DriverError(f"{state_file} does not hold an epoch number: remove it and start with "
                          f"--min-epoch above the collector's (appliance host show names it)") from None
    epoch = max(stored + 1, at_least)
    if epoch >= 2 ** 31:  # (epoch << 32 | snapshot) is stored in a signed 64-bit column
        raise DriverError(f"epoch {epoch} is past 2^31")
    tmp = state_file.with_name(state_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{epoch}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, state_file)
    return epoch


class Agent:
    def __init__(self, hypervisor: Any, host_id: int, key: bytes, collector: tuple[str, int], state_file: Path,
                 *, interval: float = 30.0, beacon: float = 5.0, watch: float = 1.0, system_every: int = 10,
                 min_epoch: int = 0, monotonic: Callable[[], float] = time.monotonic,
                 send: Callable[[bytes], None] | None = None):
        self.hypervisor, self.host_id, self.key = hypervisor, host_id, key
        self.interval, self.beacon_interval, self.watch, self.system_every = interval, beacon, watch, system_every
        self.monotonic = monotonic
        self.epoch = next_epoch(state_file, min_epoch)
        self.seq = 0
        self.snapshot = 0
        self.cycles = 0
        self._last_states: list[tuple[int, str]] | None = None
        self._last_cpu: dict[int, tuple[int, float]] = {}
        if send is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(collector)
            send = sock.send
        self._send = send
        self.sent = 0
        self.send_errors = 0

    def _emit(self, kind: int, payloads: list[tuple[bytes, int]]) -> None:
        for payload, count in payloads:
            self.seq += 1
            datagram = wire.pack(self.key, kind, self.host_id, self.epoch, self.seq, payload, count)
            try:
                self._send(datagram)
                self.sent += 1
            except OSError:  # collector unreachable (ICMP refused, no route): counted, the next cycle sends again
                self.send_errors += 1

    # -- reports ---------------------------------------------------------------------------------
    def system(self) -> None:
        info = self.hypervisor.host_info()
        self._emit(wire.SYSTEM, [wire.system_payload(info.cpu_units, info.memory_mb, info.hypervisor)])

    def beacon(self) -> None:
        self._emit(wire.BEACON, [(b"", 0)])

    def states(self, force: bool = False) -> bool:
        """Send the domain list if it changed (or `force`); True if sent."""
        listed = sorted((int(m.group(1)), state) for name, state in self.hypervisor.domains().items()
                        if (m := _DOMAIN.fullmatch(name)) and int(m.group(1)) < 2 ** 32)
        listed = [(vm, state if state in wire.STATE_CODE else "shutoff") for vm, state in listed]
        if not force and listed == self._last_states:
            return False
        self.snapshot += 1
        self._emit(wire.VM_STATE, wire.state_payloads(self.snapshot, listed))
        self._last_states = listed
        return True

    def usage(self) -> None:
        now = self.monotonic()
        stats = self.hypervisor.domain_stats() if hasattr(self.hypervisor, "domain_stats") else {}
        records, cpu_total, mem_total = [], 0, 0
        seen: dict[int, tuple[int, float]] = {}
        for name, (cpu_ns, mem_kb, rx, tx) in stats.items():
            m = _DOMAIN.fullmatch(name)
            if not m or int(m.group(1)) >= 2 ** 32:
                continue
            vm = int(m.group(1))
            previous = self._last_cpu.get(vm)
            # CPU units (100 = one core busy) over the time since the last sample, by the monotonic clock
            cpu = 0 if previous is None or now <= previous[1] else \
                max(0, int((cpu_ns - previous[0]) / ((now - previous[1]) * 1e9) * 100))
            seen[vm] = (cpu_ns, now)
            cap = 2 ** 32 - 1
            records.append((vm, min(cpu, cap), min(mem_kb, cap), rx % 2 ** 64, tx % 2 ** 64))
            cpu_total += cpu
            mem_total += mem_kb
        self._last_cpu = seen
        if records:
            self._emit(wire.VM_MONITOR, wire.vm_payloads(records))
        self._emit(wire.HOST, [wire.host_payload(min(cpu_total, 2 ** 32 - 1), mem_total // 1024, len(records))])

    def cycle(self) -> None:
        """One usage cycle: states (always, so a lost datagram heals), usage, system info now and then."""
        if self.cycles % self.system_every == 0:
            self.system()
        self.states(force=True)
        self.usage()
        self.cycles += 1

    # -- running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        next_cycle = next_beacon = self.monotonic()
        while not stop.is_set():
            now = self.monotonic()
            try:
                if now >= next_cycle:
                    self.cycle()
                    next_cycle, next_beacon = now + self.interval, now + self.beacon_interval
                else:
                    self.states()  # a change goes out within `watch` seconds, not at the next cycle
                    if now >= next_beacon:
                        self.beacon()
                        next_beacon = now + self.beacon_interval
            except (DriverError, OSError) as exc:  # the hypervisor is down: the collector's silence check sees it
                log.warning("agent: the hypervisor did not answer: %s", exc)
            stop.wait(self.watch)


def load_config(path: Path) -> dict:
    """The agent's TOML: host_id, collector ("address:port"), key_file, state_file, uri, intervals."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DriverError(f"{path}: {exc}") from None
    for name, kind in (("host_id", int), ("collector", str), ("key_file", str), ("state_file", str), ("uri", str)):
        if not isinstance(data.get(name), kind):
            raise DriverError(f"{path}: {name} must be a {kind.__name__} (got {data.get(name)!r})")
    address, _, port = data["collector"].rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise DriverError(f"{path}: collector {data['collector']!r} is not address:port, e.g. 10.0.0.10:4124")
    for name in ("interval", "beacon", "watch"):
        value = data.get(name, 1.0)
        if not isinstance(value, (int, float)) or not 0.05 <= value <= 3600:
            raise DriverError(f"{path}: {name} = {value!r} must be between 0.05 and 3600 seconds")
    key_file = Path(data["key_file"])
    if key_file.stat().st_mode & 0o077:
        raise DriverError(f"{key_file} is readable by others: chmod 600 {key_file}")
    data["key"] = bytes.fromhex(key_file.read_text().strip())
    data["collector_address"] = (address, int(port))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-monitor-agent")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--min-epoch", type=int, default=0)
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started it is gone (a fake host's agent, run by the manager)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
        if config["uri"].startswith("fake:"):
            from appliance.drivers.fake import FakeHypervisor
            hypervisor: Any = FakeHypervisor(state_file=Path(config["uri"][5:]))
        else:
            from appliance.drivers.libvirt import LibvirtHypervisor
            hypervisor = LibvirtHypervisor(config["uri"])
        agent = Agent(hypervisor, config["host_id"], config["key"], config["collector_address"],
                      Path(config["state_file"]), interval=config.get("interval", 30.0),
                      beacon=config.get("beacon", 5.0), watch=config.get("watch", 1.0), min_epoch=args.min_epoch)
    except (DriverError, OSError, ValueError) as exc:
        print(f"monitor agent: {exc}", file=sys.stderr)
        return 2
    log.info("agent: host %d, epoch %d, collector %s:%d", agent.host_id, agent.epoch, *config["collector_address"])
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.exit_with_parent:
        parent = os.getppid()

        def orphaned() -> None:
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    stop.set()
        threading.Thread(target=orphaned, daemon=True).start()
    try:
        agent.run(stop)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
