"""gather: read-only facts about each node, the evidence every destructive step is planned on.

Nothing here changes a machine: each command only reads (blkid -p, drbdadm get-gi/role/dstate,
pvs, /proc/self/mounts, crm_node). Each fact keeps "unknown" apart from "no": a command that
failed for a reason we cannot read proves nothing, and a step that destroys data is planned only
on a positive answer: blkid's "nothing found" (exit 2 *with nothing on stderr*: blkid also exits
2 when it cannot open the device), drbdmeta's "No valid meta data found" (printed by dstate and
dump-md, not by get-gi), the generation identifier DRBD writes into metadata it has just created.

On a first install drbd-utils or the resource's .res file may not be there yet when facts are
gathered ("unconfigured"): the plan may then hold create-md on two blkid-blank disks, and the
proof the step re-reads right before it runs (drbdadm dstate, after base and drbd have installed
the tools and the files) decides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from appliance.core.runner import Runner, on_each
from appliance.ha import drbd
from appliance.inventory.load import Site

FACT_TIMEOUT = 20.0  # seconds per read; a node that cannot answer in this is not one to change

# DRBD's UUID_JUST_CREATED (drbd_int.h): the current generation identifier of metadata that
# create-md wrote and no node has ever been primary on. Any other value: the disk has had data.
JUST_CREATED = "0000000000000004"
NO_METADATA = "No valid meta data found"
# No .res for it yet ("no resources defined!" when there is none at all); a missing drbdadm exits 127.
NOT_CONFIGURED = ("not defined in your config", "no resources defined")
_GI = re.compile(r"^([0-9A-Fa-f]{16}):")


@dataclass(frozen=True)
class Signature:
    """What `blkid -p` found on a block device: nothing (proven), a type, or unknown."""

    state: str  # none | found | unknown
    kind: str = ""  # TYPE or PTTYPE, when found

    @property
    def blank(self) -> bool:
        return self.state == "none"


@dataclass(frozen=True)
class DrbdFacts:
    """One DRBD resource on one node, read by the resource's name."""

    metadata: str  # absent | unconfigured (no tools/.res yet) | new (never primary) | used (has had data) | unknown
    backing: Signature  # the backing disk
    role: str = ""  # this node's role: Primary | Secondary | "" when the resource is not up
    peer_role: str = ""  # 8.4 shows it; "" when unknown
    disk: str = ""  # this node's disk state: UpToDate, Inconsistent, Diskless, ...
    peer_disk: str = ""
    device: Signature = Signature("unknown")  # the /dev/drbdN device, read only where Primary
    meta: Signature = Signature("unknown")  # the external metadata disk create-md writes to
    # What the node's current .res says (drbdadm sh-ll-dev, sh-md-dev, sh-md-idx): the disks this
    # resource's metadata belongs to. None when there is no such resource in its config yet.
    configured: tuple[str, str, str] | None = None

    @property
    def up(self) -> bool:
        return self.role in ("Primary", "Secondary")

    @property
    def proven_new(self) -> bool:
        """Never held data on this node: no metadata on a blank disk, or metadata never promoted."""
        if self.role == "Primary" or self.disk == "UpToDate" or not self.backing.blank:
            return False
        return (self.metadata in ("absent", "unconfigured") and self.meta.blank) or self.metadata == "new"


@dataclass(frozen=True)
class LvmFacts:
    state: str  # read | unknown
    physical_volumes: Mapping[str, str] = field(default_factory=dict)  # device -> VG ("" when none)
    volume_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeFacts:
    node: str
    drbd: Mapping[str, DrbdFacts] = field(default_factory=dict)  # by resource name
    lvm: LvmFacts = LvmFacts("unknown")
    mounts: Mapping[str, str] = field(default_factory=dict)  # mount point -> device
    cluster_online: tuple[str, ...] | None = None  # None: no cluster answered


@dataclass(frozen=True)
class SiteFacts:
    nodes: Mapping[str, NodeFacts]

    def drbd(self, node: str, resource: str) -> DrbdFacts | None:
        facts = self.nodes.get(node)
        return facts.drbd.get(resource) if facts else None


# -- parsing: pure ---------------------------------------------------------------------------------
def parse_blkid(returncode: int, stdout: str, stderr: str = "") -> Signature:
    """`blkid -p -o export DEV`: exit 2 and a silent stderr is blkid's own "nothing found"; exit 2
    with an error ("cannot open") and anything else is not proof."""
    if returncode == 2 and not stderr.strip():
        return Signature("none")
    if returncode == 0:
        fields = dict(line.partition("=")[::2] for line in stdout.splitlines() if "=" in line)
        return Signature("found", fields.get("TYPE") or fields.get("PTTYPE") or "unknown-signature")
    return Signature("unknown")


def parse_metadata(returncode: int, stdout: str, stderr: str, dstate: tuple[int, str, str] = (0, "", "")) -> str:
    """`drbdadm get-gi RES` and `drbdadm dstate RES` (returncode, stdout, stderr): dstate says when
    there is no metadata; the current generation identifier says whether the disk ever had data."""
    ds_rc, ds_out, ds_err = dstate
    if ds_rc != 0 and NO_METADATA in ds_out + ds_err:
        return "absent"
    said = stdout + stderr + ds_out + ds_err
    if 127 in (returncode, ds_rc) or (returncode != 0 and any(text in said for text in NOT_CONFIGURED)):
        return "unconfigured"
    if returncode != 0:
        return "unknown"
    match = _GI.match(stdout.strip())
    if not match:
        return "unknown"
    return "new" if match.group(1).upper() == JUST_CREATED else "used"


def parse_pair(returncode: int, stdout: str) -> tuple[str, str]:
    """`drbdadm role|dstate RES`: "Primary/Secondary" (8.4) or "Primary" (9); ("", "") when down."""
    text = stdout.strip().splitlines()[0] if stdout.strip() else ""
    if returncode != 0 or not text or "Unconfigured" in text:
        return "", ""
    mine, _, peer = text.partition("/")
    return mine.strip(), peer.strip()


def parse_configured(results) -> tuple[str, str, str] | None:
    """sh-ll-dev, sh-md-dev, sh-md-idx of one resource: (backing, metadata disk, index) or None."""
    if any(r.returncode != 0 or not r.stdout.strip() for r in results):
        return None
    return tuple(r.stdout.strip().splitlines()[0].strip() for r in results)  # type: ignore[return-value]


def parse_pvs(returncode: int, stdout: str) -> LvmFacts:
    if returncode != 0:
        return LvmFacts("unknown")
    pvs = {}
    for line in stdout.splitlines():
        device, _, group = line.strip().partition("|")
        if device:
            pvs[device.strip()] = group.strip()
    return LvmFacts("read", pvs, tuple(sorted({g for g in pvs.values() if g})))


def parse_mounts(content: bytes | None) -> dict[str, str]:
    mounts = {}
    for line in (content or b"").decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            mounts[parts[1].replace("\\040", " ")] = parts[0]
    return mounts


def parse_online(returncode: int, stdout: str) -> tuple[str, ...] | None:
    """`crm_node -l`: "ID NAME STATE" per known node."""
    if returncode != 0:
        return None
    return tuple(sorted(p[1] for p in (line.split() for line in stdout.splitlines())
                        if len(p) >= 3 and p[2] == "member"))


# -- gathering: reads through the runner -----------------------------------------------------------
def gather_node(site: Site, runner: Runner) -> NodeFacts:
    inv = site.inventory
    node = inv.node(runner.host)
    version = inv.drbd.version
    tool = drbd.DRBDADM[version]
    resources: dict[str, DrbdFacts] = {}

    def read(argv: list[str]):
        return runner.run(argv, check=False, timeout=FACT_TIMEOUT)

    if not inv.lab.enabled:  # the lab has no DRBD, device-mapper or block devices of its own
        for volume, disk in ((inv.drbd.cloud, node.disks.cloud), (inv.drbd.vmdata, node.disks.vmdata)):
            gi = read([tool, "get-gi", volume.resource])
            ds = read([tool, "dstate", volume.resource])
            role = parse_pair(*_rc_out(read([tool, "role", volume.resource])))
            dstate = parse_pair(ds.returncode, ds.stdout)
            device = _blkid(read, f"/dev/drbd{volume.minor}") if role[0] == "Primary" else Signature("unknown")
            shown = [read([tool, verb, volume.resource]) for verb in ("sh-ll-dev", "sh-md-dev", "sh-md-idx")]
            resources[volume.resource] = DrbdFacts(
                metadata=parse_metadata(gi.returncode, gi.stdout, gi.stderr, (ds.returncode, ds.stdout, ds.stderr)),
                backing=_blkid(read, disk), role=role[0], peer_role=role[1], disk=dstate[0], peer_disk=dstate[1],
                device=device, meta=_blkid(read, node.disks.metadata), configured=parse_configured(shown))
        pvs = read(["pvs", "--noheadings", "--separator", "|", "-o", "pv_name,vg_name"])
        lvm_facts = parse_pvs(pvs.returncode, pvs.stdout)
    else:
        lvm_facts = LvmFacts("unknown")
    online = read(["crm_node", "-l"])
    return NodeFacts(node=runner.host, drbd=resources, lvm=lvm_facts,
                     mounts=parse_mounts(runner.read("/proc/self/mounts")),
                     cluster_online=parse_online(online.returncode, online.stdout))


def gather(site: Site, runners: Mapping[str, Runner]) -> SiteFacts:
    """Every node's facts, read from all nodes at once; the first node (in inventory order) whose
    reading failed raises, after every node has finished."""
    outcomes = on_each([(name, lambda runner=runner: gather_node(site, runner)) for name, runner in runners.items()])
    for _, _, error in outcomes:
        if error is not None:
            raise error
    return SiteFacts({name: facts for name, facts, _ in outcomes})


# blkid exits 2 with nothing on stderr for a path that does not exist (seen on Debian 12's
# util-linux 2.38): only a block device can be proven blank.
BLKID = '[ -b "$1" ] || { echo "not a block device: $1" >&2; exit 99; }; exec blkid -p -o export "$1"'


def _blkid(read, device: str) -> Signature:
    result = read(["sh", "-c", BLKID, "sh", device])
    return parse_blkid(result.returncode, result.stdout, result.stderr)


def _rc_out(result) -> tuple[int, str]:
    return result.returncode, result.stdout
