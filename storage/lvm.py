"""LVM on the DRBD data device: the device filter and the argv lists that build the volume group.

device-mapper cannot run in the lab; `lvmconfig --validate` checks the filter file for real and
the commands are planned, not run (docs/lab.md says so).
"""
from __future__ import annotations

import re

from appliance.templates import render


def lvmlocal_config(accept_devices: tuple[str, ...]) -> str:
    """/etc/lvm/lvmlocal.conf: accept exactly these devices, reject the rest."""
    return render("storage/lvmlocal.conf.j2", accept=[re.escape(d) for d in accept_devices])


def pvcreate_cmd(device: str) -> list[str]:
    return ["pvcreate", device]


def vgcreate_cmd(volume_group: str, device: str) -> list[str]:
    return ["vgcreate", volume_group, device]


def snapshot_cmd(volume_group: str, origin: str, name: str, size: str) -> list[str]:
    return ["lvcreate", "--snapshot", "--name", name, "--size", size, f"{volume_group}/{origin}"]


def validate_cmd() -> list[str]:
    """Validate the configuration under $LVM_SYSTEM_DIR (lvm.conf + lvmlocal.conf)."""
    return ["lvmconfig", "--validate"]
