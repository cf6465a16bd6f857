"""SshRunner: Fabric over SSH with host keys verified against a known_hosts file.

An unknown host key is refused unless ``trust_new_host_keys`` is set, in which case it is accepted
once and written to known_hosts. A *changed* key is always refused (paramiko raises
BadHostKeyException before any policy is asked).
"""
from __future__ import annotations

import logging
import os
import shlex
import socket
from pathlib import Path
from typing import Sequence

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from appliance.core.runner import Arg, CommandFailed, Result, Secret, display, reveal
from appliance.core.reports import Report, ReportError

log = logging.getLogger(__name__)


class _RecordNewKey(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key and append it to known_hosts (only with --trust-new-host-keys)."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.get_host_keys().save(str(self.known_hosts))
        log.warning("%s: trusted new host key %s %s", hostname, key.get_name(), key.fingerprint)


class SshRunner:
    def __init__(self, host: str, address: str, *, user: str = "root", port: int = 22,
                 key_filename: str | None = None, known_hosts: Path, trust_new_host_keys: bool = False,
                 connect_timeout: float = 10.0):
        self.host = host
        self.address = address
        self.known_hosts = known_hosts
        connect_kwargs = {"look_for_keys": key_filename is None, "allow_agent": key_filename is None}
        if key_filename:
            connect_kwargs["key_filename"] = key_filename
        self._conn = Connection(address, user=user, port=port, connect_timeout=connect_timeout,
                                connect_kwargs=connect_kwargs)
        client = self._conn.client
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        # Fabric's default is AutoAddPolicy: replace it, always.
        client.set_missing_host_key_policy(_RecordNewKey(known_hosts) if trust_new_host_keys
                                           else paramiko.RejectPolicy())

    def _open(self) -> None:
        try:
            self._conn.open()
        except paramiko.BadHostKeyException as exc:
            raise ReportError([Report("HOST_KEY_CHANGED", f"host key of {self.address} does not match "
                                      f"{self.known_hosts}: got {exc.key.get_name()} {exc.key.fingerprint}",
                                      host=self.host, value=self.address)]) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ReportError([Report("HOST_KEY_UNKNOWN", f"{self.address} is not in {self.known_hosts}",
                                          host=self.host, value=self.address)]) from None
            raise ReportError([Report("HOST_UNREACHABLE", f"SSH to {self.address} failed: {exc}",
                                      host=self.host, value=self.address)]) from None
        except (OSError, socket.timeout) as exc:
            raise ReportError([Report("HOST_UNREACHABLE", f"cannot connect to {self.address}: {exc}",
                                      host=self.host, value=self.address)]) from None

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        shown = display(argv)
        log.debug("%s: run %s", self.host, shown)
        self._open()
        command = shlex.join(reveal(argv))
        if env:
            command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items())]) + " " + command
        data = stdin.value if isinstance(stdin, Secret) else stdin
        try:
            out = self._conn.run(command, hide=True, warn=True, in_stream=_stream(data), timeout=timeout,
                                 echo=False)
            result = Result(shown, out.exited, out.stdout, out.stderr, self.host)
        except CommandTimedOut:
            result = Result(shown, 124, "", f"timed out after {timeout} s", self.host)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path: str, content: bytes, mode: int) -> None:
        log.debug("%s: write %s mode %04o (%d bytes)", self.host, path, mode, len(content))
        self._open()
        sftp = self._conn.sftp()
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.appliance-tmp"
        handle = sftp.open(tmp, "wb")
        try:
            sftp.chmod(tmp, mode)  # before the content: a secret is never readable by others
            handle.write(content)
            handle.flush()
        finally:
            handle.close()
        sftp.posix_rename(tmp, path)

    def read(self, path: str) -> bytes | None:
        self._open()
        sftp = self._conn.sftp()
        try:
            with sftp.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        self._conn.close()


def _stream(data: str | None):
    import io

    return io.StringIO(data) if data is not None else False
