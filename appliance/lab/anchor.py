"""The anchor of one lab node: runs as PID-holder inside the node's network, mount and UTS namespaces.

Started as `ip netns exec NS unshare --mount --uts --propagation private python -m appliance.lab.anchor DIR`.
It names the node, gives it private /run and /dev/shm, lays copy-on-write overlays of the host's
/etc, /var, /srv, /opt and OCF agent directory (so nothing a role writes inside a node reaches the
host), starts the node's sshd, writes its pid to DIR/anchor.pid, and waits. Killing it (or
`appliance lab down`) ends the node.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

OVERLAID = ("/etc", "/var", "/srv", "/opt", "/usr/lib/ocf/resource.d")


def run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def main(directory: str) -> int:
    node = Path(directory)
    name = (node / "hostname").read_text().strip()
    run("hostname", name)
    run("ip", "link", "set", "lo", "up")
    run("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")  # /var/run points here on Debian
    run("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/dev/shm")  # libqb IPC rings
    for lower in OVERLAID:
        key = lower.strip("/").replace("/", "-")
        upper, work = node / "upper" / key, node / "work" / key
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if lower == "/srv":  # the NFS export lives here: nfs-ganesha needs file handles (index + nfs_export)
            options += ",index=on,nfs_export=on"
        run("mount", "-t", "overlay", "overlay", "-o", options, lower)
    for path in ("/run/sshd", "/run/crm", "/run/resource-agents", "/run/mysqld", "/run/appliance", "/run/lock"):
        os.makedirs(path, exist_ok=True)
    os.chmod("/run/sshd", 0o755)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(node / "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=open(node / "sshd.log", "ab"), stderr=subprocess.STDOUT)
    (node / "anchor.pid").write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:  # reap every orphan that lands here; the node ends when its sshd does
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1  # no children at all: sshd is gone
        if pid == sshd.pid:
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
