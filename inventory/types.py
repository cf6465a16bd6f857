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
_PARAM_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_NFS_OPTION = re.compile(r"[a-z_]{1,32}(?:=[A-Za-z0-9_.:/-]{1,64})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # useradd's default NAME_REGEX, 32 characters at most

# The fence agents an inventory may name, each with the parameters it takes (from `fence_X -o metadata`,
# fence-agents 4.12). A typo in [[fencing.devices]] params would otherwise reach the CIB, where the agent
# ignores it or fails only when a node must be fenced. Left out on purpose: the secrets (password,
# passwd: the secrets file), what appliance sets (pcmk_host_list, pcmk_host_map), `action` (Pacemaker's
# pcmk_*_action replace it), help/version, agents that do not cut power (fence_dummy, fence_kdump) and
# agents that need storage set-up appliance does not do (fence_sbd, fence_scsi, fence_mpath).
FENCE_COMMON_PARAMETERS = frozenset({
    "debug", "debug_file", "delay", "disable_timeout", "login_timeout", "plug_separator", "power_timeout",
    "power_wait", "quiet", "retry_on", "shell_timeout", "stonith_status_sleep", "verbose", "verbose_level"})
# Pacemaker's own stonith resource parameters, valid with every agent.
PACEMAKER_FENCE_PARAMETERS = frozenset({
    "pcmk_host_argument", "pcmk_host_check", "pcmk_delay_base", "pcmk_delay_max", "pcmk_action_limit",
    *(f"pcmk_{action}_{what}" for action in ("reboot", "off", "on", "list", "monitor", "status")
      for what in ("action", "timeout", "retries"))})
_LOGIN = frozenset({"ip", "ipaddr", "ipport", "username", "login", "password_script", "passwd_script", "plug", "port"})
_IPMI = _LOGIN | {"auth", "cipher", "hexadecimal_kg", "ipmitool_path", "ipmitool_timeout", "lanplus", "method",
                  "port_as_ip", "privlvl", "sudo", "sudo_path", "target", "use_sudo"}
_SHELL = _LOGIN | {"cmd_prompt", "command_prompt", "identity_file", "inet4_only", "inet6_only", "secure", "ssh",
                   "ssh_options", "ssh_path"}
_HTTPS = _LOGIN | {"gnutlscli_path", "ssl", "ssl_insecure", "ssl_secure"}
_SNMP = _LOGIN | {"community", "separator", "snmp_auth_prot", "snmp_priv_passwd_script", "snmp_priv_prot",
                  "snmp_sec_level", "snmp_version", "snmpget_path", "snmpset_path", "snmpwalk_path"}
_AGENT_PARAMETERS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("fence_ipmilan", "fence_ipmilanplus", "fence_idrac", "fence_ilo3", "fence_ilo4", "fence_ilo5",
                     "fence_imm"), _IPMI),
    **dict.fromkeys(("fence_ilo_ssh", "fence_ilo4_ssh", "fence_ilo5_ssh"),
                    _SHELL | {"telnet_path", "method", "port_as_ip"}),
    **dict.fromkeys(("fence_ilo", "fence_ilo2"), _HTTPS | {"notls", "port_as_ip", "ribcl", "ribcl_version"}),
    "fence_redfish": _HTTPS | {"port_as_ip", "redfish-uri", "redfish_uri", "systems-uri", "systems_uri"},
    "fence_apc": _SHELL | {"telnet_path", "separator", "switch"},
    "fence_drac5": _SHELL | {"telnet_path", "separator", "drac_version"},
    "fence_wti": _SHELL | {"telnet_path", "separator"},
    "fence_raritan": _LOGIN | {"telnet_path", "separator"},
    "fence_virsh": _SHELL | {"separator", "missing_as_off", "sudo", "sudo_path", "use_sudo"},
    **dict.fromkeys(("fence_apc_snmp", "fence_eaton_snmp"), _SNMP),
    "fence_cisco_ucs": _HTTPS | {"notls", "missing_as_off", "separator", "suborg"},
    "fence_vmware_rest": _HTTPS | {"notls", "separator", "api_path", "filter"},
    "fence_vmware_soap": _HTTPS | {"notls", "separator"},
}
# agent -> every parameter key an inventory may give it
FENCE_AGENT_PARAMETERS: dict[str, frozenset[str]] = {
    **{agent: params | FENCE_COMMON_PARAMETERS | PACEMAKER_FENCE_PARAMETERS
       for agent, params in _AGENT_PARAMETERS.items()},
    # `appliance lab`'s own agent (appliance/lab/fence.py PARAMETERS): only with [lab] enabled.
    "fence_lab": frozenset({"plug", "port", "lab_dir", "pdu"}) | PACEMAKER_FENCE_PARAMETERS,
    # The VM lab's agent (appliance/lab/fence_vmlab.py PARAMETERS); its password is a secret (secrets file).
    "fence_vmlab": frozenset({"plug", "port", "ip", "ipport"}) | PACEMAKER_FENCE_PARAMETERS,
}
LAB_FENCE_AGENT = "fence_lab"
LAB_VM_FENCE_AGENT = "fence_vmlab"


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
_user = _matching(_USER, "INVENTORY_INVALID_USER", "a Linux user name")
_param_key = _matching(_PARAM_KEY, "INVENTORY_INVALID_IDENTIFIER", "a parameter name")
_nfs_option = _matching(_NFS_OPTION, "INVENTORY_INVALID_VALUE", "an NFS export option")


def _abs_path(value: str) -> str:
    if not _PATH.fullmatch(value) or ".." in value.split("/") or len(value) > 255:
        raise _fail("INVENTORY_INVALID_PATH", "{value!r} is not a safe absolute path", value)
    path = value.rstrip("/") or "/"
    # One spelling per path: "/etc//hosts" or "/etc/./hosts" would slip past every comparison of paths.
    if path != "/" and any(part in ("", ".") for part in path.split("/")[1:]):
        raise _fail("INVENTORY_INVALID_PATH", "{value!r} is not a normalised path (no '//' or '/./')", value)
    return path


def _fence_agent(value: str) -> str:
    if value not in FENCE_AGENT_PARAMETERS:
        raise _fail("INVENTORY_INVALID_CHOICE", "{value!r} is not a fence agent appliance knows; use one of "
                    + ", ".join(sorted(FENCE_AGENT_PARAMETERS)), value)
    return value


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
UserName = Annotated[str, AfterValidator(_user)]
NfsOption = Annotated[str, AfterValidator(_nfs_option)]
