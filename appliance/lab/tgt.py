"""A tgtd (the Linux SCSI target daemon) of its own for the iSCSI tests and benchmarks: its portal on a
free loopback port and its own management channel (tgtadm -C N), so it never meets a tgtd the
machine runs. Everything lives in one directory; `down` stops the daemon by the pid recorded there.

    python -m appliance.lab.tgt up DIR
    python -m appliance.lab.tgt down DIR
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ADDRESS = "127.0.0.1"
MARK = "appliance-tgt-lab"  # the file that says this directory is ours


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return probe.getsockname()[1]


def free_control_port() -> int:
    """A management channel no tgtd uses (/var/run/tgtd/socket.N)."""
    for n in range(100, 10000):
        if not Path(f"/var/run/tgtd/socket.{n}").exists():
            return n
    raise RuntimeError("no free tgtd control port under /var/run/tgtd")


@dataclass(frozen=True)
class Target:
    directory: Path
    control_port: int
    portal: str  # host:port

    def show(self) -> str:
        return subprocess.run(["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", "--mode", "target",
                               "--op", "show"], capture_output=True, text=True, timeout=30, check=True).stdout


def _read(directory: Path) -> Target:
    control, portal = (directory / "ports").read_text().split()
    return Target(directory, int(control), portal)


def up(directory: Path) -> Target:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()) and not (directory / MARK).exists():
        raise RuntimeError(f"{directory} is not empty and not a tgt lab: choose an empty directory")
    if (directory / "tgtd.pid").exists():
        return _read(directory)
    (directory / MARK).write_text("made by appliance.lab.tgt\n")
    if not (directory / "ports").exists():  # a restart keeps its channel and portal, as a real one does
        (directory / "ports").write_text(f"{free_control_port()} {ADDRESS}:{free_port()}\n")
    log = (directory / "tgtd.log").open("w")
    target = _read(directory)
    port = int(target.portal.rsplit(":", 1)[1])
    process = subprocess.Popen(["tgtd", "-f", "-C", str(target.control_port), "--iscsi", f"portal={target.portal}"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (directory / "tgtd.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 30
    while True:
        try:
            target.show()
            with socket.create_connection((ADDRESS, port), timeout=1):
                return target
        except (OSError, subprocess.CalledProcessError):
            if process.poll() is not None or time.monotonic() > deadline:
                down(directory)
                raise RuntimeError(f"tgtd did not start: see {directory / 'tgtd.log'}") from None
            time.sleep(0.05)  # poll interval inside the deadline


def down(directory: Path) -> None:
    directory = Path(directory)
    if not (directory / MARK).exists():
        return  # not ours: nothing of it is touched
    pid_file = directory / "tgtd.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            # tgtd refuses a plain TERM while targets exist; the lab's targets are throwaway.
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)  # our child (started by up in this process): reap it, leave no zombie
        except ChildProcessError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break  # a zombie of a parent that has not reaped it yet: gone for our purposes
            time.sleep(0.05)
        pid_file.unlink()
    control = (directory / "ports").read_text().split()[0] if (directory / "ports").exists() else ""
    for leftover in (f"/var/run/tgtd/socket.{control}", f"/var/run/tgtd/socket.{control}.lock"):
        if control and Path(leftover).exists():
            Path(leftover).unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m appliance.lab.tgt up|down DIR", file=sys.stderr)
        return 2
    if argv[0] == "up":
        target = up(Path(argv[1]))
        print(f"portal {target.portal} control-port {target.control_port}")
    else:
        down(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
