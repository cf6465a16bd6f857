"""Checks of the values users send, shared by every entity's actions. Each raises a coded error
naming the field, the value and what would be accepted."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import CoreError
from ..expr import ExpressionError, compile_rank, compile_requirement

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PATH = re.compile(r"/[A-Za-z0-9._+/-]{0,1000}")
BRIDGE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
MAC_PREFIX = re.compile(r"[0-9a-f]{2}:[0-9a-f]{2}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

# Which libvirt URIs a host may have. Never a form that makes the manager read a local file
# (test:///<path> loads it; ?keyfile=, ?pkipath=, ?socket= name local paths; ?command= and
# ?netcat= run commands): an API user could otherwise read the admin token through the error
# libvirt echoes. qemu+tcp is unauthenticated and unencrypted, so it is refused too.
REMOTE_SCHEMES = ("qemu+ssh", "qemu+tls")
LOCAL_URIS = ("qemu:///system", "qemu:///session")
TEST_URI = "test:///default"
URI_FIX = ("use test:///default (the test driver), qemu:///system, or qemu+ssh:// / qemu+tls:// "
           "[user@]host[:port]/system, without a query string")


def name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise CoreError("VALUE_INVALID", f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-'",
                        field=what, value=value)
    return value


def path(value: str, what: str) -> str:
    if not PATH.fullmatch(value) or ".." in value.split("/"):
        raise CoreError("VALUE_INVALID", f"{what} {value!r} must be an absolute path without '..'", field=what,
                        value=value)
    return value.rstrip("/") or "/"


def expression(value: str, what: str, rank: bool = False) -> str:
    try:
        (compile_rank if rank else compile_requirement)(value)
    except ExpressionError as exc:
        raise CoreError("EXPRESSION_INVALID", f"{what}: {exc}", field=what, value=value,
                        position=exc.position) from None
    return value


def host_uri(driver: str, uri: str) -> str:
    """The URI if the driver may use it; VALUE_INVALID otherwise. Pure: nothing is opened."""
    def refuse(why: str) -> CoreError:
        return CoreError("VALUE_INVALID", f"uri {uri!r} {why}; {URI_FIX}", field="uri", value=uri)

    if driver == "fake":
        if uri != TEST_URI:
            raise refuse("is not test:///default (a fake host has no URI of its own)")
        return uri
    if uri == TEST_URI or uri in LOCAL_URIS:
        return uri
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise refuse("is not a URI") from None
    if parts.scheme not in REMOTE_SCHEMES:
        raise refuse(f"has scheme {parts.scheme!r}, which is not allowed")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise refuse("has a query string (keyfile=, socket=, command= ... name local files or commands)")
    if parts.path != "/system":
        raise refuse("must end in /system")
    host = parts.hostname or ""
    netloc_host = parts.netloc.rpartition("@")[2]
    if netloc_host.startswith("["):
        if not _IPV6.fullmatch(netloc_host.split("]")[0] + "]"):
            raise refuse("has a malformed IPv6 address")
    elif not _HOSTNAME.fullmatch(host):
        raise refuse("has no valid host name")
    if parts.username is not None and (parts.password is not None or not _SSH_USER.fullmatch(parts.username)):
        raise refuse("has a malformed user (a password is never accepted in a URI)")
    if port is not None and not 1 <= port <= 65535:
        raise refuse("has a port outside 1-65535")
    return uri
