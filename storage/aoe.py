"""ATA over Ethernet export of the VM data device with vblade."""
from __future__ import annotations

import shlex

from appliance.templates import render


def vblade_wrapper(log_dir: str) -> str:
    """The `binary=` for ocf:heartbeat:AoEtarget: vblade detached from execd's pipe."""
    return render("storage/vblade-wrapper.sh.j2", logdir_q=shlex.quote(log_dir))


def vblade_args(shelf: int, slot: int, nic: str, device: str) -> tuple[str, ...]:
    # -d (O_DIRECT): the frontend writes the same device below its page cache (LVM metadata and
    # snapshots through device-mapper); buffered, vblade would serve hosts stale cached blocks.
    return ("-d", str(shelf), str(slot), nic, device)
