"""Constrained value types for the inventory.

Every value that can reach a shell, a config file or a CIB is constrained here, so the
renderers never see a newline, a quote or a shell metacharacter they did not expect.
Each validator raises a PydanticCustomError whose type is our report code.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_SIZE = re.compile(r"[0-9]{1,12}[KMGT]?")
_DURATION = re.compile(r"[0-9]{1,9}(?:ms|s|min|h)?")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_FENCE_AGENT = re.compile(r"fence_[a-z0-9_]{1,40}")
_PARAM_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_NFS_OPTION = re.compile(r"[a-z_]{1,32}(?:=[A-Za-z0-9_.:/-]{1,64})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fail(code: str, message: str, value: object) -> PydanticCustomError:
    # Formatted here and passed without context: pydantic must not interpret braces in hostile input.
    return PydanticCustomError(code, message.format(value=value))


def _matching(pattern: re.Pattern[str], code: str, what: str, max_length: int = 255):
    """A validator that accepts exactly the strings ``pattern`` matches whole."""
    def check(value: str) -> str:
        if len(value) > max_length or not pattern.fullmatch(value):
            raise _fail(code, "{value!r} is not " + what, value)
        return value
    return check


_hostname = _matching(_HOSTNAME, "INVENTORY_INVALID_NAME", "a valid host name")
_identifier = _matching(_IDENTIFIER, "INVENTORY_INVALID_IDENTIFIER", "a valid identifier")
_size = _matching(_SIZE, "INVENTORY_INVALID_SIZE", "a size")
_duration = _matching(_DURATION, "INVENTORY_INVALID_DURATION", "a duration")
_domain = _matching(_DOMAIN, "INVENTORY_INVALID_NAME", "a DNS domain", max_length=253)
_fence_agent = _matching(_FENCE_AGENT, "INVENTORY_INVALID_IDENTIFIER", "a fence agent name (fence_...)")
_param_key = _matching(_PARAM_KEY, "INVENTORY_INVALID_IDENTIFIER", "a parameter name")
_nfs_option = _matching(_NFS_OPTION, "INVENTORY_INVALID_VALUE", "an NFS export option")


def _abs_path(value: str) -> str:
    if not _PATH.fullmatch(value) or ".." in value.split("/") or len(value) > 255:
        raise _fail("INVENTORY_INVALID_PATH", "{value!r} is not a safe absolute path", value)
    return value.rstrip("/") or "/"


def _interface(value: str) -> str:
    if not _INTERFACE.fullmatch(value) or value in (".", ".."):
        raise _fail("INVENTORY_INVALID_INTERFACE", "{value!r} is not a network interface name", value)
    return value


def _ipv4(value: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail("INVENTORY_INVALID_ADDRESS", "{value!r} is not an IPv4 address", value) from None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise _fail("INVENTORY_INVALID_ADDRESS", "{value!r} cannot be a node or floating address", value)
    return str(address)


def _ipv4_network(value: str) -> str:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        raise _fail("INVENTORY_INVALID_NETWORK",
                    "{value!r} is not an IPv4 network (host bits must be zero, e.g. 10.0.0.0/24)", value) from None
    return str(network)


def _safe_text(value: str) -> str:
    if _CONTROL.search(value) or '"' in value or len(value) > 1024:
        raise _fail("INVENTORY_INVALID_VALUE", "{value!r} holds a control character, a quote or is too long", value)
    return value


HostName = Annotated[str, AfterValidator(_hostname)]
Identifier = Annotated[str, AfterValidator(_identifier)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Interface = Annotated[str, AfterValidator(_interface)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]
IPv4Network = Annotated[str, AfterValidator(_ipv4_network)]
Size = Annotated[str, AfterValidator(_size)]
Duration = Annotated[str, AfterValidator(_duration)]
Domain = Annotated[str, AfterValidator(_domain)]
FenceAgent = Annotated[str, AfterValidator(_fence_agent)]
ParamKey = Annotated[str, AfterValidator(_param_key)]
SafeText = Annotated[str, AfterValidator(_safe_text)]
NfsOption = Annotated[str, AfterValidator(_nfs_option)]
