"""One function per user action. The CLI parses flags, calls one of these, and renders the result."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.checkers import CheckRun, check_node
from appliance.ha.cib import Clone
from appliance.inventory.load import Site, load_site, read_inventory
from appliance.inventory.secrets import Redactor, new_secrets_text, write_secrets_file
from appliance.plan import plan_data, secret_leaks
from appliance.render import refuse_non_empty, write_tree
from appliance.core.reports import Report, ReportError, errors_in
from appliance.roles.model import RolePlan
from appliance.roles.registry import plan_site
from appliance.roles.resources import desired_cib
from appliance.runner.local import LocalRunner


def _plans(site: Site) -> list[RolePlan]:
    plans = plan_site(site)
    leaks = secret_leaks(plans, Redactor(site.secrets).contains_secret)
    if leaks:  # a bug in a role, never the operator's fault: stop before anything is shown or written
        raise RuntimeError("files holding secrets are readable by others: " + ", ".join(leaks))
    return plans


def validate_site(inventory: Path, secrets: Path | None) -> Site:
    """Load and validate inventory and secrets. Contacts nothing."""
    return load_site(inventory, secrets, require_secrets=True)


def plan_install(inventory: Path, secrets: Path | None, *, diff: bool) -> dict[str, Any]:
    """`install --check`: the offline plan of every role on every node, in dependency order. Contacts nothing."""
    site = load_site(inventory, secrets, require_secrets=False)
    return plan_data(site, _plans(site), Redactor(site.secrets), diff=diff, warnings=site.warnings)


@dataclass(frozen=True)
class RenderResult:
    out_dir: Path
    manifest: dict[str, Any]
    checks: CheckRun | None
    warnings: tuple[Report, ...]


def render_site(inventory: Path, secrets: Path | None, out_dir: Path, *, validate: bool, force: bool,
                progress=lambda message: None) -> RenderResult:
    """Write every node's files under out_dir; with validate, only after the real checkers accepted them."""
    site = load_site(inventory, secrets, require_secrets=True)
    refuse_non_empty(out_dir, force)
    plans = _plans(site)
    checks = None
    if validate:
        checks = check_plans(site, plans, progress)
        missing = [o for o in checks.outcomes if o.missing]
        rejected = [o for o in checks.outcomes if not o.ok and not o.missing]
        if missing or rejected:
            raise ReportError(
                [Report("CHECKER_MISSING", f"cannot check {o.path}: {o.detail}", host=o.node, value=o.tool)
                 for o in missing]
                + [Report("CHECKER_REJECTED", f"{o.tool} rejected {o.path}: {o.detail}", host=o.node, value=o.path)
                   for o in rejected])
    manifest = write_tree(out_dir, plans, checks, force=force)
    return RenderResult(out_dir, manifest, checks, site.warnings)


def check_plans(site: Site, plans: list[RolePlan], progress=lambda message: None) -> CheckRun:
    """Run the real checker of every rendered file that has one, on this machine."""
    runner = LocalRunner()
    nodes = tuple(n.name for n in site.inventory.nodes)
    promotable = ()
    if site.inventory.cluster.stack == "corosync":
        promotable = tuple(r.child.id for r in desired_cib(site).resources if isinstance(r, Clone) and r.promotable)
    total = CheckRun()
    with tempfile.TemporaryDirectory(prefix="appliance-check-") as workdir:
        for plan in plans:
            for node in plan.nodes:
                if not any(f.check for f in node.files):
                    continue
                progress(f"checking {plan.role} files for {node.node}")
                run = check_node(runner, node, Path(workdir), cluster_nodes=nodes, promotable=promotable,
                                 redactor=Redactor(site.secrets))
                total.outcomes += run.outcomes
                total.previews.update(run.previews)
    return total


def init_secrets(inventory: Path, output: Path | None) -> Path:
    """Write a fresh secrets file (mode 0600) for this inventory; never replaces an existing one."""
    inv, reports = read_inventory(inventory)
    if inv is None or errors_in(reports):
        raise ReportError(reports)
    if output is None:
        if not inv.secrets_file:
            raise ReportError([Report("SECRETS_MISSING", "the inventory names no secrets_file; pass --output",
                                      path="secrets_file")])
        output = inventory.parent / inv.secrets_file
    if output.exists():
        raise ReportError([Report("SECRETS_EXISTS", f"{output} already exists", value=str(output))])
    write_secrets_file(output, new_secrets_text(inv))
    return output


def connect(site: Site, trust_new_host_keys: bool = False) -> dict:
    """An SSH runner per node, each checked before anything is changed (unreachable, unknown or changed key)."""
    from appliance.runner.ssh import SshRunner

    base = site.base_dir
    runners, problems = {}, []
    for node in site.inventory.nodes:
        ssh = node.ssh
        key = str(base / ssh.key) if ssh.key else None
        known = base / ssh.known_hosts if ssh.known_hosts else Path.home() / ".ssh" / "known_hosts"
        runner = SshRunner(node.name, ssh.address or node.lan_ip, user=ssh.user, port=ssh.port, key_filename=key,
                           known_hosts=known, trust_new_host_keys=trust_new_host_keys)
        try:
            runner.run(["true"])
        except ReportError as exc:
            problems += exc.reports
            continue
        runners[node.name] = runner
    if problems:
        raise ReportError(problems)
    return runners


def require_wheelhouse(site: Site) -> None:
    """Production nodes get the operator's own wheelhouse: refuse before anything is touched."""
    if not site.inventory.lab.enabled and not site.inventory.manager.wheelhouse:
        raise ReportError([Report("INVENTORY_MISSING_FIELD", "[manager] wheelhouse is not set: the nodes need "
                                  "the appliance package, and nothing installs it by name from an index",
                                  path="manager.wheelhouse", fix="run `make wheelhouse` and set [manager] "
                                  "wheelhouse to the directory it wrote (relative to the inventory)")])


def install(inventory: Path, secrets: Path | None, *, check: bool, diff: bool = False,
            trust_new_host_keys: bool = False, progress=lambda message: None) -> dict:
    """Gather facts from the live nodes, plan once on them, apply what differs (unless check), verify."""
    from appliance.install import Installer
    from appliance.verify import verify

    site = load_site(inventory, secrets, require_secrets=True)
    if not check:
        require_wheelhouse(site)
    with install_lock(inventory, exclusive=not check):
        runners = connect(site, trust_new_host_keys)
        progress(f"connected to {', '.join(runners)}; {'checking' if check else 'applying'}")
        installer = Installer(site, runners, check=check, diff=diff, progress=progress, vet=_vet(site))
        result = installer.run()
    document = {"ok": True, "check": check,
                "changed": [{k: v for k, v in vars(c).items() if v or k != "diff"} for c in result.changed],
                "unchanged": sum(1 for c in result.changes if c.status == "ok"), "notes": result.notes}
    if not check:
        progress("verifying")
        health = verify(site, runners, wait=90.0 * site.inventory.cluster.timeout_scale)
        document["verify"] = health.checks
        document["ok"] = health.ok
    return document


@contextmanager
def install_lock(inventory: Path, *, exclusive: bool):
    """One install per inventory at a time. Two at once raced each other's Pacemaker restarts and
    left the proxy stopped. The kernel drops the lock when the process dies (kill -9 included), so a
    crashed install never blocks the next. --check takes it shared: it may run beside another check."""
    import fcntl

    import hashlib

    path = inventory.resolve().parent / f".{inventory.name}.install-lock"
    try:
        handle = open(path, "a+")
    except OSError:  # a read-only inventory directory: a per-user lock keyed by the inventory's path
        digest = hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"appliance-install-{os.getuid()}-{digest}.lock"
        handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReportError([Report("INSTALL_RUNNING", f"another `appliance install` of {inventory} is running "
                                      f"(it holds {path})", value=str(inventory))]) from None
        yield
    finally:
        handle.close()


def _vet(site: Site):
    """The same leak guard on the plan made from the nodes' facts, before it is applied."""
    def vet(plans: list[RolePlan]) -> None:
        leaks = secret_leaks(plans, Redactor(site.secrets).contains_secret)
        if leaks:
            raise RuntimeError("files holding secrets are readable by others: " + ", ".join(leaks))
    return vet


def run_drill(inventory: Path, fault: str, node: str | None, *, restore_after: bool = True,
              progress=lambda message: None) -> dict:
    """Inject a fault in the lab while writing through the API; measure; put the lab back."""
    from appliance import drill
    from appliance.install import Installer

    site = load_site(inventory, None, require_secrets=True)
    inv = site.inventory
    if not (inv.lab.enabled or inv.lab.vm):
        raise ReportError([Report("LAB_NOT_ROOT", "drills only run against the lab (an inventory with [lab])",
                                  fix="use `appliance lab up` and its lab.toml")])
    runners = connect(site)
    result = drill.drill(site, runners, fault, inventory.parent, node=node, progress=progress)
    if restore_after:
        victim = drill._node_of(site, result["node"])
        if fault in ("kill-node", "cut-link"):
            for runner in runners.values():
                runner.close()
            if inv.lab.vm:
                drill.restore_machine(victim, inventory.parent, faulted_at=result["faulted_at"], progress=progress)
            else:
                drill.restore(site, victim, inventory.parent, (inv.network.lan_vip, inv.network.san_vip),
                              progress=progress)
            runners = connect(site)
        elif fault == "reboot-both":
            from appliance.lab import vm

            for machine in vm.FRONTENDS:
                vm.wait_for_ssh(machine, progress=progress)
        # The drill checked that no failure was recorded before it; those recorded now are its own.
        holder = runners[result["survivor"]]
        holder.run(["crm_resource", "--cleanup"], check=False, timeout=60)
        from appliance.verify import verify

        wait = 120 * inv.cluster.timeout_scale
        wait_first, install_anyway = drill.restore_plan(inv.lab.vm, fault)
        checks = verify(site, runners, wait=wait).checks if wait_first else None
        result["healed_by_itself"] = checks is not None and all(c["ok"] for c in checks)
        result["restore_changed"], result["restored_by"] = [], "the cluster"
        if install_anyway or not result["healed_by_itself"]:
            progress(f"restoring {victim.name} with appliance install")
            installed = Installer(site, runners, progress=lambda m: None).run()
            # What the restoring install changed: after a cold start or a node's return it must never
            # be a create-md, a forced primary or a mkfs (the VM tier reads this).
            result["restore_changed"] = [{"role": c.role, "node": c.node, "what": c.what, "detail": c.detail}
                                         for c in installed.changed]
            result["restored_by"] = "appliance install"
            checks = verify(site, runners, wait=wait).checks
        result["after_restore"] = checks
    return result


def status(inventory: Path) -> dict:
    """Cluster, resources, replication and API, read from the live nodes."""
    from appliance.verify import cluster_state, replication, verify

    site = load_site(inventory, None, require_secrets=True)
    runners = connect(site)
    first = next(iter(runners.values()))
    return {"cluster": cluster_state(first), "replication": {n: replication(r) for n, r in runners.items()},
            "checks": verify(site, runners, wait=0).checks}
