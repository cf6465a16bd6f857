"""The manager's way onto a hypervisor host, for the storage steps that happen where a VM runs
(activating its LVM disk, its SSD cache service): a runner per host, derived from the host's own
libvirt URI, so a host needs nothing registered twice.

qemu+ssh://[user@]host[:port]/system -> SSH there as that user (root when none), the same machine
libvirt reaches; qemu+tls://host/system -> SSH to that host as [hosts] ssh_user; qemu:///system,
test:///default (a fake host) -> this machine. Host keys are checked against [hosts] known_hosts,
never trusted on first use: a host whose key is unknown is refused, as the installer refuses one.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from appliance.core.protocols import DriverError
from appliance.core.runner import Runner
from appliance.runner.local import LocalRunner


def ssh_target(uri: str, default_user: str = "root") -> Optional[tuple[str, str, int]]:
    """(address, user, port) of the SSH way to the host of `uri`; None for this machine. Pure.
    The URI was checked when the host was created (core/actions/values.host_uri)."""
    parts = urlsplit(uri)
    if parts.scheme in ("qemu", "test") and not parts.netloc:
        return None
    if parts.scheme == "qemu+ssh" and parts.hostname:
        return parts.hostname, parts.username or "root", parts.port or 22  # qemu+ssh's port is sshd's
    if parts.scheme == "qemu+tls" and parts.hostname:
        return parts.hostname, default_user, 22
    raise DriverError(f"host URI {uri!r}: no way to run a command there (qemu+ssh://, qemu+tls:// or a local "
                      "qemu:/// URI)")


class HostRunners:
    """Callable: the runner of the host named `name` (looked up at each call: a host's URI may
    change), one SSH connection per host and URI, kept for the manager's life."""

    def __init__(self, uri_of: Callable[[str], str], known_hosts: Path, key_filename: str | None = None,
                 user: str = "root"):
        self.uri_of, self.known_hosts, self.key_filename, self.user = uri_of, known_hosts, key_filename, user
        self._runners: dict[tuple[str, str], Runner] = {}
        self._lock = threading.Lock()
        self._local = LocalRunner()

    def __call__(self, name: str) -> Runner:
        uri = self.uri_of(name)
        target = ssh_target(uri, self.user)
        if target is None:
            return self._local
        with self._lock:
            key = (name.lower(), uri)
            if key not in self._runners:
                from appliance.runner.ssh import SshRunner

                address, user, port = target
                self._runners[key] = SshRunner(name, address, user=user, port=port, key_filename=self.key_filename,
                                               known_hosts=self.known_hosts)
            return self._runners[key]
