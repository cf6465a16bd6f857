"""Legacy heartbeat 3 (haresources mode): ha.cf, authkeys and haresources.

Kept for sites that still run it; Pacemaker 2 cannot run on heartbeat, so this mode has no CIB:
resources are heartbeat resource scripts and LSB init scripts, started in line order.
"""
from __future__ import annotations

from appliance.templates import render


def ha_cf(node_names: tuple[str, ...], ucast: tuple[tuple[str, str], ...], keepalive: int, warntime: int,
          deadtime: int, initdead: int, udpport: int) -> str:
    return render("heartbeat/ha.cf.j2", node_names=node_names, ucast=ucast, keepalive=keepalive,
                  warntime=warntime, deadtime=deadtime, initdead=initdead, udpport=udpport)


def authkeys(key: str) -> str:
    """/etc/ha.d/authkeys: heartbeat refuses to start unless it is mode 0600."""
    if not key.isalnum():
        raise ValueError("the heartbeat key must be alphanumeric")
    return render("heartbeat/authkeys.j2", key=key)


def haresources(preferred: str, resources: tuple[str, ...]) -> str:
    for resource in resources:
        if any(c.isspace() for c in resource):
            raise ValueError(f"haresources entry {resource!r} contains white space")
    return render("heartbeat/haresources.j2", preferred=preferred, resources=resources)


def ipaddr2(address: str, prefix: int, nic: str) -> str:
    return f"IPaddr2::{address}/{prefix}/{nic}"


def drbddisk(resource: str) -> str:
    return f"drbddisk::{resource}"


def filesystem(device: str, mount: str, fstype: str) -> str:
    return f"Filesystem::{device}::{mount}::{fstype}"
