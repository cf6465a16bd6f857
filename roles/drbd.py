"""drbd: the two replicated disks (cloud directory, VM data), identical config on both nodes.

The first-install steps destroy whatever a disk holds: create-md, the forced primary that makes
one side the sync source, mkfs. They are planned from gathered facts (roles/facts.py), never from
a check that merely failed: create-md only where DRBD reports no metadata on a blank disk, the
forced primary only when both sides have never held data, mkfs only right after it or on a
primary device where blkid proves there is no filesystem. Each re-reads its proof before it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from appliance.core.reports import Report, ReportError
from appliance.ha import drbd
from appliance.inventory.load import Site

from . import layout
from .facts import JUST_CREATED, NO_METADATA, SiteFacts
from .model import Check, FileSpec, RolePlan, Step, blank_device, node_plans, shell, text
from .specs import drbd_resources

NAME = "drbd"
REQUIRES = ("base",)
USES_FACTS = True  # plan(site, facts): first-install steps depend on what the disks hold
NOTE = ("DRBD needs its kernel module: `appliance render --validate` checks these files with drbdadm's own parser "
        "(`drbdadm dump`); the commands only run on real nodes")
OFFLINE_NOTE = ("offline plan: shown as for new disks; on the nodes, create-md, the forced primary, mkfs and "
                "pvcreate are planned only when the gathered facts prove the disks new")


@dataclass(frozen=True)
class FirstInstall:
    """What the facts allow for one resource. Pure data, decided once, shared with the lvm role."""

    resource: str
    create_md: tuple[str, ...] = ()  # nodes whose disk gets metadata
    bring_up: tuple[str, ...] = ()  # nodes where the new resource is brought up
    initial_primary: bool = False  # the preferred node becomes the sync source
    resume_on_primary: bool = False  # a crashed first install: primary here, device proven blank
    hand_back: bool = False  # demote the preferred node at the end: it is primary and no cluster runs
    refusals: tuple[str, ...] = field(default=())  # why something that looked new was not touched

    @property
    def primary_here(self) -> bool:
        """The preferred node is primary for the rest of the first install (mkfs, pvcreate)."""
        return self.initial_primary or self.resume_on_primary


def decide(site: Site, facts: SiteFacts | None) -> dict[str, FirstInstall]:
    """Per resource, the first-install steps the facts prove safe. facts None: the offline plan."""
    inv = site.inventory
    names = [n.name for n in inv.nodes]
    preferred = inv.preferred.name
    decisions = {}
    for volume in (inv.drbd.cloud, inv.drbd.vmdata):
        res = volume.resource
        if facts is None:
            decisions[res] = FirstInstall(res, tuple(names), tuple(names), True, hand_back=True)
            continue
        per_node = {n: facts.drbd(n, res) for n in names}
        _refuse_moved_disks(site, volume, per_node)
        refusals = [f"{n}: no facts for {res}" for n, f in per_node.items() if f is None]
        if refusals:
            decisions[res] = FirstInstall(res, refusals=tuple(refusals))
            continue
        # create-md writes to the metadata disk and later syncs over the backing disk: both must be
        # blank. "unconfigured" (no drbd-utils or .res yet) is settled by the proof at apply time.
        create_md = tuple(n for n, f in per_node.items()
                          if f.metadata in ("absent", "unconfigured") and f.backing.blank and f.meta.blank
                          and not f.up)
        for n, f in per_node.items():
            if f.metadata in ("absent", "unconfigured") and n not in create_md:
                refusals.append(f"{n}: {res} has no DRBD metadata but its disks are not proven blank "
                                f"(blkid: backing {f.backing.state} {f.backing.kind}, metadata disk "
                                f"{f.meta.state} {f.meta.kind}); create-md not planned")
            elif f.metadata == "unknown" and not f.up:
                refusals.append(f"{n}: DRBD metadata of {res} could not be read; nothing destructive planned")
        bring_up = tuple(n for n, f in per_node.items() if not f.up and (n in create_md or f.metadata == "new"))
        someone_has_data = any(f.role == "Primary" or "UpToDate" in (f.disk, f.peer_disk) or f.metadata == "used"
                               for f in per_node.values())
        # Metadata created by hand over a disk that holds data is "new" too: the backing must be blank.
        all_new = all(n in create_md or (f.metadata == "new" and f.backing.blank) for n, f in per_node.items())
        initial = all_new and not someone_has_data
        here = per_node[preferred]
        peer_primary = any(f.role == "Primary" for n, f in per_node.items() if n != preferred) or \
            here.peer_role == "Primary"
        resume = (not initial and here.role == "Primary" and not peer_primary and here.device.blank
                  and here.metadata in ("new", "used"))
        # Demote only what no cluster manages yet: a first install that stopped before its end.
        cluster_runs = any(facts.nodes[n].cluster_online is not None for n in names if n in facts.nodes)
        mounted = f"/dev/drbd{volume.minor}" in facts.nodes[preferred].mounts.values()
        hand_back = initial or resume or (here.role == "Primary" and not cluster_runs and not peer_primary
                                          and not mounted)
        decisions[res] = FirstInstall(res, create_md, bring_up, initial, resume, hand_back=hand_back,
                                      refusals=tuple(refusals))
    return decisions


BLANK = ('blank() { [ -b "$1" ] || return 1; e=$(blkid -p -o export "$1" 2>&1 >/dev/null); r=$?; '
         '[ "$r" -eq 2 ] && [ -z "$e" ]; }; ')


def _refuse_moved_disks(site: Site, volume, per_node: dict) -> None:
    """A resource that has metadata (or runs) must keep its disks: pointing it at another disk would
    have DRBD attach that disk with the old disk's metadata and serve it as up to date."""
    inv = site.inventory
    reports = []
    for name, f in per_node.items():
        if f is None or f.configured is None or not (f.up or f.metadata in ("new", "used")):
            continue
        node = inv.node(name)
        disk = node.disks.cloud if volume.resource == inv.drbd.cloud.resource else node.disks.vmdata
        wanted = (disk, node.disks.metadata, str(volume.meta_index))
        if f.configured != wanted:
            reports.append(Report(
                "DRBD_DISK_CHANGED", f"{name}: DRBD resource {volume.resource} holds data on backing disk "
                f"{f.configured[0]}, metadata {f.configured[1]}[{f.configured[2]}]; the inventory now says "
                f"{wanted[0]}, {wanted[1]}[{wanted[2]}]", host=name, value=volume.resource,
                path=f"nodes.{name}.disks", payload={"configured": list(f.configured), "inventory": list(wanted)}))
    if reports:
        raise ReportError(reports)


def metadata_absent(tool: str, resource: str, disk: str, meta_disk: str) -> tuple[str, ...]:
    """Proof for create-md, re-read at apply: both disks blank and drbdmeta finds no metadata."""
    return shell(BLANK + 'blank "$3" && blank "$4" || exit 1; out=$("$1" dstate "$2" 2>&1) && exit 1; '
                 f'case $out in *"{NO_METADATA}"*) exit 0;; esac; exit 1', tool, resource, disk, meta_disk)


def never_primary(tool: str, resource: str, disk: str) -> tuple[str, ...]:
    """Proof for the forced primary: metadata just created, backing blank, no side UpToDate, nobody Primary."""
    return shell(BLANK + f'blank "$3" || exit 1; gi=$("$1" get-gi "$2" 2>/dev/null) || exit 1; '
                 f'case $gi in {JUST_CREATED}:*) ;; *) exit 1;; esac; '
                 'ds=$("$1" dstate "$2" 2>/dev/null) || exit 1; case $ds in *UpToDate*) exit 1;; esac; '
                 'r=$("$1" role "$2" 2>/dev/null) || exit 1; case $r in *Primary*) exit 1;; esac',
                 tool, resource, disk)


def plan(site: Site, facts: SiteFacts | None = None) -> RolePlan:
    inv = site.inventory
    version = inv.drbd.version
    tool = drbd.DRBDADM[version]
    resources = drbd_resources(inv)
    decisions = decide(site, facts)
    common = FileSpec(f"{layout.DRBD_DIR}/global_common.conf",
                      text(drbd.global_common_config(version, inv.drbd.resync_rate, site.secrets.drbd_shared_secret,
                                                    "pacemaker" if inv.cluster.stack == "corosync" else "dopd")),
                      mode=0o600, secret=True)
    files, node_steps = {}, {}
    for node in inv.nodes:
        check = Check("drbd", (("version", version), ("node", node.name), ("address", node.san_ip)))
        files[node.name] = [common] + [
            FileSpec(f"{layout.DRBD_DIR}/{res.name}.res", text(drbd.resource_config(version, res, purpose)),
                     check=check)
            for res, purpose in resources]
        steps = []
        for res, _ in resources:
            decision = decisions[res.name]
            disk = next(h.disk for h in res.hosts if h.name == node.name)
            if node.name in decision.create_md:
                steps.append(Step(f"create metadata for {res.name}", tuple(drbd.create_md_cmd(version, res.name)),
                                  why=f"{disk} is blank and has no DRBD metadata", once=True, destructive=True,
                                  requires=metadata_absent(tool, res.name, disk, node.disks.metadata)))
            if node.name in decision.bring_up:
                steps.append(Step(f"bring up {res.name}", tuple(drbd.up_cmd(version, res.name)),
                                  why="a new resource; Pacemaker manages it from here on", once=True,
                                  unless=shell('"$1" role "$2" 2>/dev/null | grep -q ary', tool, res.name)))
        if node.name == inv.preferred.name:
            for res, _ in resources:
                if decisions[res.name].initial_primary:
                    steps.append(Step(f"start the initial sync of {res.name} from {node.name}",
                                      tuple(drbd.initial_primary_cmd(version, res.name)),
                                      why="both disks are new: one must be declared the source", once=True,
                                      destructive=True,
                                      requires=never_primary(tool, res.name,
                                                             next(h.disk for h in res.hosts if h.name == node.name))))
            cloud = resources[0][0]
            if decisions[cloud.name].primary_here:
                steps.append(Step(f"make the {inv.filesystem.fstype} filesystem on {cloud.device}",
                                  (f"mkfs.{inv.filesystem.fstype}", "-L", cloud.name[:16], cloud.device), once=True,
                                  destructive=True, requires=blank_device(cloud.device),
                                  why="a new primary device where blkid finds no filesystem"))
        node_steps[node.name] = [] if inv.lab.enabled else steps
    names = [n.name for n in inv.nodes]
    notes = (NOTE,) + (("lab: no DRBD kernel module; the files are written and validated, the steps not run",)
                       if inv.lab.enabled else ())
    if facts is None and not inv.lab.enabled:
        notes += (OFFLINE_NOTE,)
    if not inv.lab.enabled:
        notes += tuple(r for d in decisions.values() for r in d.refusals)
    return RolePlan(NAME, f"DRBD {version}: " + ", ".join(f"{r.name} on {r.device}" for r, _ in resources),
                    node_plans(names, files, node_steps), notes=notes)
