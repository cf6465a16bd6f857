"""DRBD resources: pure config builders (8.4 and 9 syntax) and the argv lists that act on them."""
from __future__ import annotations

from dataclasses import dataclass

from appliance.templates import render

VERSIONS = ("9", "8.4")
# drbd-utils 9 parses only DRBD 9 syntax when no kernel module is loaded; 8.4 files need drbdadm-84.
DRBDADM = {"9": "drbdadm", "8.4": "/lib/drbd/drbdadm-84"}


@dataclass(frozen=True)
class DrbdHost:
    name: str  # must equal `uname -n` on that node
    node_id: int  # DRBD 9 node-id (0-based)
    address: str  # replication address (the SAN)
    disk: str  # backing device
    meta_disk: str  # external metadata device


@dataclass(frozen=True)
class DrbdResource:
    name: str
    minor: int
    port: int
    meta_index: int
    hosts: tuple[DrbdHost, ...]

    @property
    def device(self) -> str:
        return f"/dev/drbd{self.minor}"


FENCING = {"pacemaker": "resource-and-stonith", "dopd": "resource-only"}


def global_common_config(version: str, resync_rate: str, shared_secret: str, fencing: str = "pacemaker") -> str:
    """/etc/drbd.d/global_common.conf. Holds the shared secret: install it mode 0600.

    fencing: "pacemaker" (crm-fence-peer, resource-and-stonith) or "dopd" (heartbeat's peer outdater).
    """
    _check_version(version)
    if fencing not in FENCING:
        raise ValueError(f"DRBD fencing {fencing!r} is not one of {sorted(FENCING)}")
    return render("drbd/global_common.conf.j2", version=version, resync_rate=resync_rate,
                  shared_secret=shared_secret, fencing=fencing, fencing_policy=FENCING[fencing])


def resource_config(version: str, resource: DrbdResource, purpose: str) -> str:
    """/etc/drbd.d/<name>.res, identical on both nodes."""
    _check_version(version)
    return render("drbd/resource.res.j2", version=version, resource=resource, purpose=purpose)


def dump_cmd(version: str, config: str) -> list[str]:
    """Parse a config and print it back canonically: drbd-utils' own syntax check."""
    return [DRBDADM[version], "-c", config, "dump", "all"]


def create_md_cmd(version: str, resource: str) -> list[str]:
    """Forced: drbdmeta asks before writing next to another resource's metadata on a shared
    metadata disk (8.4 reads offset 0, index 0's superblock) and nobody answers. The installer runs
    it only after its own proof that both disks are blank and no metadata exists (roles/drbd.py)."""
    return [DRBDADM[version], "--force", "create-md", resource] if version == "9" else \
        [DRBDADM[version], "--", "--force", "create-md", resource]


def up_cmd(version: str, resource: str, dry_run: bool = False) -> list[str]:
    return [DRBDADM[version], *(["-d"] if dry_run else []), "up", resource]


def initial_primary_cmd(version: str, resource: str) -> list[str]:
    """First install only, on one node: declare its (empty) disk the source of the initial sync."""
    if version == "9":
        return [DRBDADM[version], "primary", "--force", resource]
    return [DRBDADM[version], "--", "--overwrite-data-of-peer", "primary", resource]


def secondary_cmd(version: str, resource: str) -> list[str]:
    return [DRBDADM[version], "secondary", resource]


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"DRBD version {version!r} is not one of {VERSIONS}")
