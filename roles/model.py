"""What a role produces: the files and steps it wants on each node, as data.

Roles never act; `appliance install` compares this desired state with what it gathered and
applies the difference through a runner (ha_cluster's gather -> compare -> change).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from appliance.core.runner import Arg, Secret, display

CLUSTER = "cluster"  # pseudo-node for artefacts applied once per cluster (the CIB)


@dataclass(frozen=True)
class Check:
    """Which real checker validates a rendered file, with what it needs to know."""

    kind: str  # cib | corosync | drbd | lighttpd | lvm | shell
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str:
        return dict(self.options)[name]


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # holds a secret: mode must be 0600 or stricter, content never shown
    check: Check | None = None
    block: bool = False  # a managed block inside a file the system owns (e.g. /etc/hosts)
    by_digest: bool = False  # large: compare the node's sha256sum instead of reading the file back

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"{self.path!r} is not absolute")
        if self.secret and self.mode & 0o077:
            raise ValueError(f"{self.path} holds a secret but is mode {self.mode:04o}")


@dataclass(frozen=True)
class Step:
    """A command to run on the node, with why. ``once`` steps run only on a first install."""

    what: str
    argv: tuple[Arg, ...] = ()
    why: str = ""
    once: bool = False
    stdin: Secret | str | None = None  # SQL and passwords go here, never into argv (ps shows argv)
    unless: tuple[str, ...] = ()  # a check command: exit 0 means the step's work is already done
    after_change: tuple[str, ...] = ()  # paths: run only when one of these files changed in this run
    # A destructive step (mkfs, create-md, a forced primary, pvcreate) is planned only on gathered
    # facts that prove its target new; `requires` re-reads the proof right before it runs (exit 0:
    # still proven) so a disk that changed since the facts were gathered is never touched.
    destructive: bool = False
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.destructive and not self.requires:
            raise ValueError(f"destructive step {self.what!r} has no proof to re-check before it runs")

    @property
    def command(self) -> str:
        if not self.argv:
            return ""
        return display(self.argv) + (" < (secret input)" if isinstance(self.stdin, Secret) else "")


@dataclass(frozen=True)
class NodePlan:
    node: str
    files: tuple[FileSpec, ...] = ()
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class RolePlan:
    role: str
    summary: str
    nodes: tuple[NodePlan, ...]
    notes: tuple[str, ...] = field(default=())  # what this machine or mode cannot do, said plainly

    def for_node(self, name: str) -> NodePlan | None:
        return next((n for n in self.nodes if n.node == name), None)


def text(content: str) -> bytes:
    return content.encode("utf-8")


def steps(*items: Step) -> tuple[Step, ...]:
    return tuple(items)


def argv(*parts: Arg) -> tuple[Arg, ...]:
    return tuple(parts)


def node_plans(names: Sequence[str], files: dict[str, list[FileSpec]],
               node_steps: dict[str, list[Step]] | None = None) -> tuple[NodePlan, ...]:
    node_steps = node_steps or {}
    return tuple(NodePlan(n, tuple(files.get(n, [])), tuple(node_steps.get(n, []))) for n in names)


def shell(script: str, *args: str) -> tuple[str, ...]:
    """A fixed script with data as positional arguments: data never becomes shell code."""
    return ("sh", "-c", script, "sh", *args)


def detached(log: str, *argv: str) -> tuple[str, ...]:
    """Start a daemon in its own session, off the SSH channel, output to `log`."""
    return shell('log=$1; shift; mkdir -p "$(dirname "$log")"; setsid -f "$@" >>"$log" 2>&1 </dev/null', log, *argv)


def wait_until(check: str, seconds: int = 60) -> tuple[str, ...]:
    """Poll a fixed check script every 0.2 s until it succeeds; give up after `seconds` in all."""
    # Each attempt gets its own 5 s: a check that blocks (crmadmin before the controller is up)
    # must not eat the whole budget.
    return ("timeout", str(seconds), "sh", "-c", 'until timeout 5 sh -c "$1" >/dev/null 2>&1; do sleep 0.2; done',
            "sh", check)


def bounded(*argv: str, seconds: int = 10) -> tuple[str, ...]:
    """A read that may block (a Pacemaker or corosync client asking a daemon that is still starting)
    with its own limit: crmadmin -D -t 2000 was seen to hang for minutes on the VM lab while the
    controller was electing, and an `unless` that hangs eats the step's whole budget. Only for checks
    whose failure makes the step run (a wait), never for one whose failure would skip work."""
    return ("timeout", str(seconds), *argv)


# crm_resource --locate prints "resource X is running on: NODE"; crm_node -n is this node's name.
RUNNING_HERE = 'crm_resource --locate --resource "$1" 2>/dev/null | grep -q "running on: $(crm_node -n)$"'
RESTART_TIMEOUT = "120s"
DEFERRED = 75  # a handler's exit status for "not now": EX_TEMPFAIL  # crm_resource --restart waits for the stop and the start within this


def restart_where_running(resource: str, what: str, after_change: tuple[str, ...]) -> Step:
    """When one of `after_change` changed and `resource` runs on this node, have Pacemaker restart
    it (and what depends on it): its daemon reads the changed files only at start. Where it does not
    run, its next start reads them; before the CIB exists, nothing runs and nothing is restarted."""
    # crm_resource --restart stops by setting target-role=Stopped and starts by removing it: when it
    # fails or times out in between, the resource would stay stopped for good (and look like the
    # operator's choice). Remove what it left on any failure, then fail.
    # In maintenance-mode Pacemaker restarts nothing and crm_resource still succeeds: say so
    # (DEFERRED) and the installer keeps the restart owed to a run after the maintenance.
    restart = shell('case $(crm_attribute --type crm_config --name maintenance-mode --query --quiet 2>/dev/null) in '
                    f'true|on|yes|1) echo "cluster in maintenance-mode: restart deferred" >&2; exit {DEFERRED};; esac; '
                    'crm_resource --restart --resource "$1" --timeout "$2" && exit 0; rc=$?; '
                    'crm_resource --resource "$1" --meta --delete-parameter target-role >/dev/null 2>&1; exit $rc',
                    resource, RESTART_TIMEOUT)
    return Step(what, restart, unless=shell(f"! {{ {RUNNING_HERE}; }}", resource), after_change=after_change,
                why="the daemon reads its configuration at start")


def blank_device(device: str) -> tuple[str, ...]:
    """Exit 0 only on a block device where blkid finds nothing: exit 2 with a silent stderr (blkid
    also exits 2 when it cannot open the device, and says so on stderr)."""
    return shell('[ -b "$1" ] || exit 1; e=$(blkid -p -o export "$1" 2>&1 >/dev/null); r=$?; '
                 '[ "$r" -eq 2 ] && [ -z "$e" ]', device)


def all_packages_installed(packages: tuple[str, ...]) -> tuple[str, ...]:
    # ${Status} is dpkg-query's field, not the shell's: single quotes. In double quotes the shell
    # expanded it to nothing, the format was empty, and every install ran apt-get again (VM lab).
    return shell("for p; do dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed' || exit 1; done",
                 *packages)


def all_directories(paths: tuple[str, ...]) -> tuple[str, ...]:
    return shell('for d; do [ -d "$d" ] || exit 1; done', *paths)
