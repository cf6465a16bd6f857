"""`appliance install`: gather -> plan -> apply, role by role, node by node, over SSH.

gather reads facts from every node (roles/facts.py: disk signatures, DRBD state per resource,
LVM, mounts, membership); plan runs once on those facts; apply compares each file and step with
the node and changes what differs. A file is written only when its content or mode differs
(atomically, through the runner). A step runs only when its `unless` check fails, or, for
handlers, when one of its files changed in this run; a destructive step re-reads its proof first
and is refused if the proof no longer holds. The CIB goes in as a crm_diff patch of appliance's
own ids, only when it differs. --check stops before any change: every comparison is a read.
A second run changes nothing. A failure stops the run with a coded report naming node and step,
and the result lists exactly what had been applied before it.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Callable

from appliance.core.runner import CommandFailed, Runner, Secret, display, on_each
from appliance.core.reports import Report, ReportError
from appliance.ha import cib as cibmod
from appliance.ha.cib_push import configuration_of, merge
from appliance.inventory.load import Site
from appliance.inventory.secrets import Redactor
from appliance.plan import cib_diff, file_diff
from appliance.roles.facts import SiteFacts, gather
from appliance.roles.model import CLUSTER, DEFERRED, FileSpec, RolePlan, Step
from appliance.roles.registry import plan_site

PENDING_DIR = "/var/lib/appliance/pending"  # handlers owed by a run that died before running them
BLOCK_BEGIN = "# BEGIN appliance managed block"
BLOCK_END = "# END appliance managed block"


@dataclass
class Change:
    role: str
    node: str
    what: str
    status: str  # changed | ok | would-change | failed | refused | deferred (a handler owed to a later run)
    detail: str = ""
    diff: str = ""  # with --diff: what changed (secrets redacted)


# Per regular file named: "PATH<TAB>MODE OWNER GROUP<TAB>SHA256". Missing or unreadable ones are left out.
FILE_STATES = ('for p; do [ -f "$p" ] || continue; s=$(stat -c "%a %U %G" "$p") || continue; '
               'd=$(sha256sum < "$p") || continue; printf "%s\\t%s\\t%s\\n" "$p" "$s" "${d%% *}"; done')


@dataclass
class InstallResult:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the facts did not allow, said plainly
    facts: SiteFacts | None = None

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.status in ("changed", "would-change", "refused", "deferred")]


def with_block(current: str, block: str) -> str:
    """`current` with the managed block replaced (or appended). Pure."""
    lines = current.splitlines(keepends=True)
    wrapped = f"{BLOCK_BEGIN}\n{block}{BLOCK_END}\n"
    if BLOCK_BEGIN in current and BLOCK_END in current:
        start = next(i for i, l in enumerate(lines) if l.startswith(BLOCK_BEGIN))
        end = next(i for i, l in enumerate(lines) if l.startswith(BLOCK_END))
        return "".join(lines[:start]) + wrapped + "".join(lines[end + 1:])
    prefix = current if current.endswith("\n") or not current else current + "\n"
    return prefix + wrapped


class Installer:
    def __init__(self, site: Site, runners: dict[str, Runner], *, check: bool = False, diff: bool = False,
                 progress: Callable[[str], None] = lambda message: None,
                 vet: Callable[[list[RolePlan]], None] = lambda plans: None):
        self.site = site
        self.runners = runners
        self.check = check
        self.diff = diff
        self.progress = progress
        self.vet = vet  # refuses a plan before anything is sent (e.g. a secret in a world-readable file)
        self.redact = Redactor(site.secrets)
        self.result = InstallResult()
        self._local = threading.local()

    def _record(self, role: str, node: str, what: str, status: str, detail: str = "", diff: str = "") -> None:
        buffer = getattr(self._local, "buffer", None)  # a node's part running in its own thread
        (self.result.changes if buffer is None else buffer).append(
            Change(role, node, what, status, detail, diff if self.diff else ""))
        if status != "ok":
            self.progress(f"  {node}: {status:<12} {what}" + (f" ({detail})" if detail else ""))

    def gather(self) -> SiteFacts:
        self.progress(f"gathering facts from {', '.join(self.runners)}")
        return gather(self.site, self.runners)

    def plan(self, facts: SiteFacts) -> list[RolePlan]:
        plans = plan_site(self.site, facts)
        self.vet(plans)
        return plans

    def run(self) -> InstallResult:
        facts = self.gather()
        self.result.facts = facts
        plans = self.plan(facts)
        self.result.notes = [n for p in plans for n in p.notes]
        try:
            self.apply(plans)
        except ReportError as exc:
            # A node lost mid-run (HOST_UNREACHABLE) raises from the runner, not from _fail: the
            # report must still say what this run had changed, never "nothing was changed".
            applied = [f"{c.node}: {c.what}" for c in self.result.changes if c.status == "changed"]
            for report in exc.reports:
                if applied and "applied_before" not in report.payload:
                    report.payload["applied_before"] = applied
            raise
        return self.result

    def apply(self, plans: list[RolePlan]) -> None:
        changed: dict[str, set[str]] = {}
        for index, plan in enumerate(plans, start=1):
            self.progress(f"[{index}/{len(plans)}] {plan.role}: {plan.summary}")
            nodes = [n for n in plan.nodes if n.node != CLUSTER]
            self._on_each(plan.role, [(n.node, lambda n=n: self._files(plan.role, n, changed.setdefault(n.node, set())))
                                      for n in nodes])
            if any(n.node == CLUSTER for n in plan.nodes):
                try:
                    self._cib(plan)
                except CommandFailed as exc:
                    self._fail(plan.role, [(CLUSTER, exc.result.argv, str(exc))])
            # Steps in lockstep across nodes, every node's step of a round at once, and the next round
            # only when all are done: two_node quorum needs corosync up on both before either can wait
            # for it, and the initial sync needs both sides of DRBD up.
            rounds = max((len(n.steps) for n in nodes), default=0)
            for position in range(rounds):
                self._on_each(plan.role, [
                    (n.node, lambda n=n: self._step(plan.role, n.node, self.runners[n.node], n.steps[position],
                                                    changed.get(n.node, set())), n.steps[position].what)
                    for n in nodes if position < len(n.steps)])

    def _files(self, role: str, node_plan, changed_paths: set[str]) -> None:
        runner = self.runners[node_plan.node]
        handlers = [s for s in node_plan.steps if s.after_change]
        seen = self._file_states(runner, node_plan.files)
        for spec in node_plan.files:
            owed = [h for h in handlers if spec.path in h.after_change]
            if self._file(role, node_plan.node, runner, spec, seen.get(spec.path),
                          before_write=lambda owed=owed: self._owe(runner, role, owed)):
                changed_paths.add(spec.path)

    def _on_each(self, role: str, work: list[tuple]) -> None:
        """Each node's part at once (core.runner.on_each). What each part records is kept aside and
        added in node order when all are done, so the result reads the same on every run; a failed
        command is named with the node and what it was doing (the step, or for files the command)."""
        buffers: dict[str, list[Change]] = {}

        def buffered(node: str, part: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                self._local.buffer = buffers.setdefault(node, [])
                try:
                    part()
                finally:
                    self._local.buffer = None
            return run

        outcomes = on_each([(item[0], buffered(item[0], item[1])) for item in work])
        failures, other = [], None
        for item, (node, _, error) in zip(work, outcomes):
            self.result.changes.extend(buffers.get(node, []))
            if isinstance(error, CommandFailed):
                failures.append((node, item[2] if len(item) > 2 else error.result.argv, str(error)))
            elif error is not None and other is None:
                other = error
        if failures:
            self._fail(role, failures)
        if other is not None:
            raise other

    def _fail(self, role: str, failures: list[tuple[str, str, str]]) -> None:
        """Record every node's failure of this round and stop the run with one report per node."""
        applied = [f"{c.node}: {c.what}" for c in self.result.changes if c.status == "changed"]
        for node, what, detail in failures:
            self._record(role, node, what, "failed", detail.splitlines()[-1] if detail else "")
        raise ReportError([Report("COMMAND_FAILED", f"role {role} failed on {node}: {detail}", host=node,
                                  value=what, payload={"role": role, "applied_before": applied})
                           for node, what, detail in failures])

    # -- files -------------------------------------------------------------------------------------
    # -- handlers owed across runs ------------------------------------------------------------------
    # A handler (restart the proxy after its config changed) runs when its file changed in this run.
    # A run killed between writing the file and the handler would leave the daemon on the old
    # config for good: the next run finds the file as wanted. So before the file is written, the
    # node gets a marker for each handler it owes; the handler runs while its marker is there and
    # removes it when done.
    @staticmethod
    def _marker(role: str, step: Step) -> str:
        return f"{PENDING_DIR}/{role}-{hashlib.sha256(step.what.encode()).hexdigest()[:16]}"

    def _owe(self, runner: Runner, role: str, handlers: list[Step]) -> None:
        if not handlers:
            return
        runner.run(["install", "-d", "-m", "0700", PENDING_DIR])
        for step in handlers:
            runner.put(self._marker(role, step), f"{step.what}\n".encode(), 0o600)

    @staticmethod
    def _file_states(runner: Runner, files: tuple[FileSpec, ...]) -> dict[str, tuple[tuple, str]]:
        """Mode, owner, group and sha256 of every file of a role, in one command: per file it took two
        (read and stat), about a second each on the VM lab, and a second install spent minutes on them.
        A file this cannot read is simply absent here and takes the per-file path."""
        paths = [spec.path for spec in files if not spec.block]
        if not paths:
            return {}
        result = runner.run(["sh", "-c", FILE_STATES, "sh", *paths], check=False)
        states = {}
        for line in result.stdout.splitlines() if result.ok else ():
            parts = line.split("\t")
            if len(parts) == 3 and len(parts[1].split()) == 3 and parts[1].split()[0].isdigit():
                mode, owner, group = parts[1].split()
                states[parts[0]] = ((int(mode, 8), owner, group), parts[2])
        return states

    def _file(self, role: str, node: str, runner: Runner, spec: FileSpec,
              seen: tuple[tuple, str] | None = None, before_write: Callable[[], None] = lambda: None) -> bool:
        desired = spec.content
        wanted = (spec.mode, spec.owner, spec.group)
        if seen is not None and not spec.block and seen == (wanted, hashlib.sha256(desired).hexdigest()):
            self._record(role, node, f"file {spec.path}", "ok")  # same bytes, same mode: nothing to read
            return False
        if spec.by_digest:
            # A wheel is megabytes: reading it back on every run would dominate a second install.
            listed = runner.run(["sha256sum", spec.path], check=False)
            same = listed.ok and listed.stdout.split()[:1] == [hashlib.sha256(desired).hexdigest()]
            current = desired if same else (b"" if listed.ok else None)
        else:
            current = runner.read(spec.path)
        if spec.block:
            desired = with_block((current or b"").decode(), spec.content.decode()).encode()
        mode_now = None
        if current is not None:
            stat = runner.run(["stat", "-c", "%a %U %G", spec.path]).stdout.split()
            mode_now = (int(stat[0], 8), stat[1], stat[2])
        if current == desired and mode_now == wanted:
            self._record(role, node, f"file {spec.path}", "ok")
            return False
        why = "new" if current is None else ("content" if current != desired else "mode/owner")
        shown = file_diff(spec, current, self.redact, desired) if self.diff else ""
        if self.check:
            self._record(role, node, f"file {spec.path}", "would-change", why, shown)
            return True
        before_write()
        directory = spec.path.rsplit("/", 1)[0] or "/"
        runner.run(["install", "-d", "-m", "0755", directory])
        runner.put(spec.path, desired, spec.mode)
        if (spec.owner, spec.group) != ("root", "root"):
            runner.run(["chown", f"{spec.owner}:{spec.group}", spec.path])
        self._record(role, node, f"file {spec.path}", "changed",
                     f"{why}, sha256 {hashlib.sha256(desired).hexdigest()[:12]}" if not spec.secret else why, shown)
        return True

    # -- steps -------------------------------------------------------------------------------------
    def _step(self, role: str, node: str, runner: Runner, step: Step, changed_paths: set[str]) -> None:
        if not step.argv:
            return
        marker = self._marker(role, step) if step.after_change else ""
        owed = bool(marker) and runner.read(marker) is not None
        if step.after_change and not changed_paths & set(step.after_change) and not owed:
            self._record(role, node, step.what, "ok")
            return
        if step.unless and runner.run(list(step.unless), check=False, timeout=180).ok:
            self._record(role, node, step.what, "ok")
            if owed and not self.check:
                runner.run(["rm", "-f", marker])
            return
        if self.check:
            # Read-only: a first install's earlier steps have not run, so the proof cannot be re-read yet.
            self._record(role, node, step.what, "would-change",
                         ("destructive, planned on gathered facts: " if step.destructive else "") + step.command)
            return
        if step.requires and not runner.run(list(step.requires), check=False, timeout=60).ok:
            # The facts proved the target new when the plan was made; it no longer is. Never guess.
            self._record(role, node, step.what, "refused", "its target is no longer proven new")
            raise ReportError([Report("NOT_PROVEN_NEW", f"{node}: refused to {step.what}: the check that proves "
                                      "its target holds no data failed just before it would run", host=node,
                                      value=step.what, payload={"role": role, "check": display(step.requires)})])
        done = runner.run(list(step.argv), stdin=step.stdin, timeout=600, check=not step.after_change)
        if step.after_change and done.returncode == DEFERRED:
            # The marker was written before the file: the handler stays owed to the next run.
            self._record(role, node, step.what, "deferred", (done.stderr or done.stdout).strip()[-200:])
            return
        if not done.ok:
            raise CommandFailed(done)
        if owed:
            runner.run(["rm", "-f", marker])
        self._record(role, node, step.what, "changed", step.command)

    # -- the CIB, once per cluster -----------------------------------------------------------------
    def _cib_node(self) -> str:
        """The node whose CIB is read and patched: the preferred node, unless the facts show it outside
        this cluster while another node is in it. A replaced node runs Debian's default cluster (or
        none) until the cluster role has run there: under --check, its CIB is not the one to compare
        with, and Pacemaker's checker refused the merge of ours into it (seen on the VM lab)."""
        inv = self.site.inventory
        names = [n.name for n in inv.nodes]
        facts = self.result.facts
        ours = [n for n in [inv.preferred.name, *names] if facts and n in facts.nodes
                and set(facts.nodes[n].cluster_online or ()) & set(names)]
        return ours[0] if ours else inv.preferred.name

    def _cib(self, plan: RolePlan) -> None:
        node = self._cib_node()
        runner = self.runners[node]
        desired = plan.nodes[0].files[0].content.decode()
        # Read now, not at gather: the cluster role may have started Pacemaker in this run.
        query = runner.run(cibmod.query_cmd(), check=not self.check, timeout=60)
        if not query.ok:  # --check before the cluster ever ran: nothing to compare with
            self._record(plan.role, CLUSTER, "CIB configuration", "would-change", "no live CIB to compare with yet")
            return
        live = query.stdout
        merged = merge(live, desired)
        shown = cib_diff(live, merged, self.redact) if self.diff else ""
        if self.check:
            # Nothing is written, not even to /run: compare here, and let Pacemaker's checker read stdin.
            if configuration_of(live) == configuration_of(merged):
                self._record(plan.role, CLUSTER, "CIB configuration", "ok")
                return
            verdict = runner.run(["crm_verify", "--xml-pipe", "-V"], stdin=Secret(merged), check=False, timeout=60)
            if not verdict.ok:
                raise CommandFailed(verdict)
            self._record(plan.role, CLUSTER, "CIB configuration", "would-change", "appliance's ids differ", shown)
            return
        work = "/run/appliance"
        runner.run(["install", "-d", "-m", "0700", work])
        runner.put(f"{work}/cib-live.xml", live.encode(), 0o600)
        runner.put(f"{work}/cib-new.xml", merged.encode(), 0o600)
        diff = runner.run(cibmod.diff_cmd(f"{work}/cib-live.xml", f"{work}/cib-new.xml"), check=False, timeout=60)
        if diff.returncode == 0:
            self._record(plan.role, CLUSTER, "CIB configuration", "ok")
            return
        if diff.returncode != 1:
            raise CommandFailed(diff)
        # Pacemaker's own checker on the result, with the live status: a configuration it would refuse
        # (e.g. stonith on but no device) never reaches the cluster.
        verdict = runner.run(cibmod.verify_cmd(f"{work}/cib-new.xml"), check=False, timeout=60)
        if not verdict.ok:
            raise CommandFailed(verdict)
        runner.put(f"{work}/cib-patch.xml", diff.stdout.encode(), 0o600)
        runner.run(cibmod.patch_cmd(f"{work}/cib-patch.xml"), timeout=120)
        self._record(plan.role, CLUSTER, "CIB configuration", "changed", f"patched on {node} with cibadmin --patch",
                     shown)
