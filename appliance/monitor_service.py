"""Push monitoring in the service: the collector, the decisions, and the probe that (re)starts an agent.

The probe is the "host role" of the agent: over the host's runner (SSH for a remote libvirt URI)
it writes the host's own key (0600) and the agent's config, then starts the agent as a transient
systemd unit the manager owns (`systemd-run --unit appliance-monitor-agent`), with --min-epoch one
above the last epoch the collector stored for the host, so an agent whose epoch file was lost (a
reinstalled host) is heard again at once. A host it cannot reach fails the probe.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Callable

from appliance.core import monitor_wire as wire
from appliance.core.entities import Host
from appliance.core.protocols import DriverError
from appliance.core.runner import CommandFailed, Runner
from appliance.runner.atomic import atomic_write

UNIT = "appliance-monitor-agent"
CONFIG = "/etc/appliance/monitor-agent.toml"
KEY = "/etc/appliance/monitor-agent.key"
STATE = "/var/lib/appliance/monitor-agent.epoch"


def load_secret(path: Path) -> bytes:
    """The manager's monitoring secret (hex in an owner-only file), made on first use. Both
    frontends of a pair must hold the same one, or a failover silences every host: install copies it."""
    if not path.exists():
        atomic_write(path, (secrets.token_hex(32) + "\n").encode(), 0o600)
    if path.stat().st_mode & 0o077:
        raise DriverError(f"{path} is readable by others: chmod 600 {path}")
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise DriverError(f"{path} does not hold a hex secret: remove it to make a new one "
                          f"(and restart every agent: their keys derive from it)") from None
    if len(secret) < 16:
        raise DriverError(f"{path}: the secret is {len(secret)} bytes; 16 at least")
    return secret


def agent_config(host: Host, collector: str, interval: float, uri: str) -> str:
    """The agent's TOML. Pure; every value is typed or checked, so nothing needs quoting beyond json's."""
    import json

    return "\n".join([
        f"host_id = {int(host.id)}",
        f"collector = {json.dumps(collector)}",
        f"key_file = {json.dumps(KEY)}",
        f"state_file = {json.dumps(STATE)}",
        f"uri = {json.dumps(uri)}",
        f"interval = {float(interval)}",
        f"beacon = {float(min(5.0, interval))}",
        "watch = 1.0",
        "",
    ])


def start_command(python: str, min_epoch: int) -> list[str]:
    return ["systemd-run", f"--unit={UNIT}", "--collect", "--property=Restart=on-failure",
            "--property=RestartSec=5", python, "-m", "appliance.drivers.monitor_agent", "--config", CONFIG,
            f"--min-epoch={int(min_epoch)}"]


def _local_agent(host: Host, directory: Path, secret: bytes, collector: str, interval: float,
                 last_epoch: Callable[[int], int], fake_state: Path) -> None:
    """A fake host's agent: a process on this machine, its files under the manager's state
    directory (never /etc: a fake host is the demo's and the tests', not a machine of its own)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    home = directory / f"agent-{host.id}"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(home / "key", (wire.host_key(secret, host.id).hex() + "\n").encode(), 0o600)
    config = agent_config(host, collector, interval, f"fake:{fake_state}").replace(json.dumps(KEY), json.dumps(
        str(home / "key"))).replace(json.dumps(STATE), json.dumps(str(home / "epoch")))
    atomic_write(home / "agent.toml", config.encode(), 0o600)
    pid_file = home / "pid"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    process = subprocess.Popen([sys.executable, "-m", "appliance.drivers.monitor_agent", "--config",
                                str(home / "agent.toml"), f"--min-epoch={last_epoch(host.id) + 1}", "--exit-with-parent"],
                               stdout=open(home / "agent.log", "ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    atomic_write(pid_file, str(process.pid).encode(), 0o600)


def make_probe(runner_for: Callable[[str], Runner], secret: bytes, collector: str, interval: float,
               python: str, last_epoch: Callable[[int], int], local_uri: str = "qemu:///system",
               state_dir: Path | None = None):
    def probe(host: Host) -> None:
        if host.driver == "fake":
            if state_dir is None:
                raise DriverError(f"host {host.name}: a fake host's agent needs the manager's state directory")
            _local_agent(host, state_dir / "agents", secret, collector, interval, last_epoch,
                         state_dir / f"fake-{host.name}.json")
            return
        try:
            runner = runner_for(host.name)
            runner.run(["mkdir", "-p", "-m", "0700", "/etc/appliance", "/var/lib/appliance"])
            key = (wire.host_key(secret, host.id).hex() + "\n").encode()
            if runner.read(KEY) != key:
                runner.put(KEY, key, 0o600)
            config = agent_config(host, collector, interval, local_uri).encode()
            if runner.read(CONFIG) != config:
                runner.put(CONFIG, config, 0o600)
            runner.run(["systemctl", "stop", UNIT], check=False)
            runner.run(["systemctl", "reset-failed", UNIT], check=False)
            runner.run(start_command(python, last_epoch(host.id) + 1))
        except CommandFailed as exc:
            raise DriverError(str(exc)) from None
    return probe
