"""The controller: drives every VM out of its transient state, schedules pending VMs, monitors hosts.

Each transient state has one idempotent step ("make it so"): PROLOG ensures the disks, BOOT
ensures the domain runs, SHUTDOWN ensures it stopped, EPILOG ensures it and its disks are gone,
MIGRATE ensures it runs on the target. The same steps serve normal progress and recovery after a
crash: a restarted manager runs `reconcile()`, which logs what it finds and re-runs each step.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

from .actions.datastores import overlap
from .clock import Clock
from .entities import ON_HOST, TRANSIENT, VM, Datastore, Host, HostState, VmState as S
from .errors import CoreError
from .hooks import Hooks
from .lifecycle import NEXT, enter
from .pools import Store
from .protocols import Backend, DiskSource, DiskSpec, DomainSpec, DriverError, Hypervisor, NicSpec
from .scheduler import DatastoreSlot, HostSlot, Policy, Request, schedule


def _cached(report) -> dict[int, float]:
    """A host's SSD-cache report (its CACHE attribute: {"<image id>": fraction of the image's blocks
    cached}) as the scheduler's CACHED reads it; anything malformed counts as nothing cached."""
    if not isinstance(report, dict):
        return {}
    out = {}
    for image, fraction in report.items():
        if str(image).isdigit() and type(fraction) in (int, float) and 0 <= fraction <= 1:
            out[int(image)] = float(fraction)
    return out

log = logging.getLogger("appliance.controller")
_DOMAIN = re.compile(r"appliance-(\d+)")


@dataclass
class Settings:
    policy: Policy = Policy()
    monitor_interval: float = 10.0
    error_after: int = 3  # consecutive failed monitors before a host is in ERROR
    resubmit_on_host_error: bool = True
    schedule_batch: int = 5000
    quarantine_days: float = 7.0  # orphan disks wait this long in <datastore>/quarantine before deletion
    # Push monitoring: a VM leaves BOOT only when its host's agent reports the domain running
    # (core/monitoring.py), not when the start call returned.
    confirm_boot: bool = False


class Controller:
    def __init__(self, store: Store, hypervisor_for: Callable[[Host], Hypervisor],
                 backend_for: Callable[[Datastore], Backend], hooks: Hooks, clock: Clock,
                 settings: Settings | None = None):
        self.store = store
        self.hypervisor_for = hypervisor_for
        self.backend_for = backend_for
        self.hooks = hooks
        self.clock = clock
        self.settings = settings or Settings()
        self.push = None  # a core.monitoring.PushMonitor: hosts' agents report instead of being polled
        self._datastores_at = float("-inf")
        if self.settings.resubmit_on_host_error:
            hooks.register("HOST:ERROR", self._resubmit_host_vms)

    # -- one pass --------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Monitor hosts that are due, place pending VMs, advance every transient VM. Returns work done."""
        work = self.monitor_hosts()
        work += self.schedule_pending()
        work += self.advance_all()
        return work

    def advance_all(self) -> int:
        with self.store.read() as tx:
            ids = [r[0] for r in tx.execute(
                "SELECT id FROM vms WHERE state IN (?, ?, ?, ?, ?) ORDER BY id", tuple(sorted(TRANSIENT))).all()]
        waiting = 0
        for vm_id in ids:
            try:
                after = self.advance(vm_id)
                # started and waiting for its host's report: not work that makes the loop spin again
                waiting += after is not None and self._awaits_monitoring(after)
            except Exception as exc:  # a database hiccup (deadlock, failover) on one VM: the others go on
                if not self.store.db.transient(exc):
                    raise
                log.warning("VM %d: the database failed its step (%s); it runs again next pass", vm_id, exc)
        return len(ids) - waiting

    # -- recovery --------------------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """After a restart: say what each in-flight VM was doing, finish or roll it back, sweep orphans."""
        decisions = []
        with self.store.read() as tx:
            in_flight = self.store.vms.where(tx, "state IN (?, ?, ?, ?, ?)", tuple(sorted(TRANSIENT)))
        for vm in in_flight:
            before = f"VM {vm.id} found in {vm.state}" + (f" ({vm.intent})" if vm.intent else "")
            after = self.advance(vm.id)
            while after is not None and after.state in TRANSIENT and not self._awaits_monitoring(after):
                after = self.advance(vm.id)
            outcome = after.state if after else "gone"
            decisions.append(f"{before}: re-ran the step, now {outcome}" +
                             (f" ({after.error})" if after and after.error else ""))
        decisions += self.sweep_orphans()
        for decision in decisions:
            log.warning("reconcile: %s", decision)
        return decisions

    def sweep_orphans(self) -> list[str]:
        """Disks and domains no live VM owns. Disks are never deleted here: they move to the
        datastore's quarantine, deleted after `quarantine_days`; a VM that exists (on any datastore)
        keeps its disks wherever they are. A datastore that shares or nests a directory with another
        is not swept at all (its "orphans" may be the other's disks)."""
        decisions = []
        with self.store.read() as tx:
            datastores = self.store.datastores.where(tx, "kind = ?", ("system",))
            every_store = self.store.datastores.where(tx)
            hosts = self.store.hosts.where(tx, "state IN (?, ?)", (HostState.MONITORED, HostState.DISABLED))
            owners = {r[0]: (r[1], r[2], r[3]) for r in tx.execute(
                "SELECT id, state, host_id, datastore_id FROM vms WHERE state <> ?", (S.DONE,)).all()}
            targets = {vm.id: vm.target_host_id for vm in self.store.vms.where(tx, "state = ?", (S.MIGRATE,))}
        wall = self.clock.wall()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
        expired = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall - self.settings.quarantine_days * 86400))
        for ds in datastores:
            shared_with = [o.name for o in every_store if o.id != ds.id and overlap(o.path, ds.path)]
            if shared_with:
                decisions.append(f"datastore {ds.name}: shares its directory with {', '.join(shared_with)}; "
                                 "not swept (see docs/runbooks/orphan-disks.md)")
                continue
            backend = self.backend_for(ds)
            try:
                for vm_id in backend.vm_ids_with_disks(ds.path):
                    owner = owners.get(vm_id)
                    if owner is not None:
                        if owner[2] != ds.id:
                            decisions.append(f"VM {vm_id} has disks on datastore {ds.name} but lives on datastore "
                                             f"{owner[2]}; left alone")
                        continue
                    moved = backend.quarantine_vm_disks(ds.path, vm_id, stamp)
                    if moved:
                        decisions.append(f"moved orphan disks of VM {vm_id} on datastore {ds.name} to {moved}")
                for removed in backend.purge_quarantine(ds.path, expired):
                    decisions.append(f"deleted {removed}: in quarantine for {self.settings.quarantine_days:g} days")
                for removed in backend.remove_partial_disks(ds.path):
                    decisions.append(f"removed the partial disk {removed}")
            except (DriverError, OSError) as exc:
                decisions.append(f"datastore {ds.name}: cannot sweep ({exc}); left alone")
        for host in hosts:
            try:
                domains = self.hypervisor_for(host).domains()
            except (DriverError, OSError) as exc:
                decisions.append(f"host {host.name}: cannot list domains ({exc}); left alone")
                continue
            for name in domains:
                match = _DOMAIN.fullmatch(name)
                if not match:
                    continue  # not ours
                vm_id = int(match.group(1))
                owner = owners.get(vm_id)
                if owner is None or (owner[1] != host.id and targets.get(vm_id) != host.id):
                    try:
                        self.hypervisor_for(host).ensure_absent(name)
                    except (DriverError, OSError) as exc:
                        decisions.append(f"host {host.name}: cannot remove domain {name} ({exc}); left alone")
                        continue
                    decisions.append(f"removed domain {name} from host {host.name}: no VM owns it there")
        return decisions

    # -- the steps -------------------------------------------------------------------------------
    def _awaits_monitoring(self, vm: VM) -> bool:
        return vm.state == S.BOOT and self.settings.confirm_boot

    def advance(self, vm_id: int) -> VM | None:
        """Run the step of the VM's transient state once; persist where it leads (or FAILED)."""
        with self.store.read() as tx:
            vm = self.store.vms.get(tx, vm_id)
        if vm is None or vm.state not in TRANSIENT:
            return vm
        state, intent = vm.state, vm.intent
        try:
            {S.PROLOG: self._prolog, S.BOOT: self._boot, S.SHUTDOWN: self._shutdown, S.EPILOG: self._epilog,
             S.MIGRATE: self._migrate}[state](vm)
            if self._awaits_monitoring(vm):
                return vm  # started (idempotently, again each pass); RUNNING when its host's agent says so
            target = NEXT[(state, intent)]
            if state == S.MIGRATE:
                vm.host_id, vm.target_host_id = vm.target_host_id, None
            enter(vm, *target)
            reason = f"{state} done"
        except (DriverError, CoreError, OSError) as exc:
            vm.failed_in, vm.state, vm.error = state, S.FAILED, str(exc)[:500]
            reason = f"{state} failed: {exc}"
            log.warning("VM %d: %s", vm.id, reason)
        except Exception as exc:  # a bug in one VM's step must not stall every other VM's
            if self.store.db.transient(exc):
                raise  # not the VM's failure: advance_all runs the step again next pass
            log.exception("VM %d: %s step raised", vm.id, state)
            vm.failed_in, vm.state, vm.error = state, S.FAILED, f"internal error: {exc.__class__.__name__}: {exc}"[:500]
            reason = f"{state} failed: internal error"
        return self._save(vm, reason)

    def _save(self, vm: VM, reason: str) -> VM | None:
        with self.store.transaction() as tx:
            saved = self.store.vms.save(tx, vm, reason)
            if saved and vm.state == S.DONE:
                # In the same transaction as DONE: released earlier, a resubmit racing the step
                # kept a VM that held an address no lease recorded (two VMs got one IP).
                self.store.leases.release_vm(tx, vm.id)
        if not saved:
            # Someone (an API call) changed the VM meanwhile: their state wins, the next pass continues.
            log.info("VM %d changed while its step ran; keeping the newer state", vm.id)
            with self.store.transaction() as tx:
                return self.store.vms.get(tx, vm.id)
        self.hooks.fire("VM", vm.id, vm.state)
        return vm

    def _context(self, vm: VM) -> tuple[Host, Datastore, Backend]:
        with self.store.read() as tx:
            if vm.host_id is None or vm.datastore_id is None:
                raise CoreError("STATE_INVALID", f"VM {vm.id} in {vm.state} has no host or datastore")
            host = self.store.hosts.require(tx, vm.host_id)
            ds = self.store.datastores.require(tx, vm.datastore_id)
        return host, ds, self.backend_for(ds)

    def _prolog(self, vm: VM) -> None:
        host, ds, backend = self._context(vm)
        with self.store.read() as tx:
            images = {d["image_id"]: self.store.images.require(tx, d["image_id"]) for d in vm.disks}
        for index, disk in enumerate(vm.disks):
            image = images[disk["image_id"]]
            owner = backend
            if image.persistent:
                disk["path"] = image.path  # the image itself, used by this VM alone
                with self.store.read() as tx:
                    owner = self.backend_for(self.store.datastores.require(tx, image.datastore_id))
            else:
                path = backend.disk_path(ds.path, vm.id, index)
                if not backend.verify(path, image.path):
                    backend.clone(image.path, path, host=host.name)
                    disk.pop("flattened", None)  # a new clone depends on its image again
                disk["path"] = path
            # How this host opens it (a file, an activated LV, an rbd: name): rendered by the driver.
            ask = getattr(owner, "disk_source", None)
            if ask is not None:
                disk["source"] = ask(disk["path"], host.name).as_dict()

    def domain_spec(self, vm: VM, for_host: str | None = None) -> DomainSpec:
        """The domain for its host, or for `for_host` (a migration's target): each disk's source is
        asked of its backend again, since how a host opens a disk may differ per host."""
        sources = {}
        if for_host is not None:
            for disk, backend in self._disk_backends(vm):
                ask = getattr(backend, "disk_source", None)
                if ask is not None:
                    sources[id(disk)] = ask(disk["path"], for_host)

        missing = [d.get("target") or str(i) for i, d in enumerate(vm.disks) if not d.get("path")]
        if missing:
            raise CoreError("STATE_INVALID", f"VM {vm.id}'s disk(s) {', '.join(missing)} have no path: its PROLOG "
                            "never completed; recover --retry prepares them", vm_id=vm.id)
        return DomainSpec(
            name=vm.domain_name, vcpu=vm.vcpu, memory_mb=vm.memory,
            disks=tuple(DiskSpec(d["path"], d.get("target") or f"vd{chr(97 + i)}",
                                 source=sources.get(id(d)) or (DiskSource.from_dict(d["source"]) if d.get("source")
                                                               else None))
                        for i, d in enumerate(vm.disks)),
            nics=tuple(NicSpec(n.get("bridge", ""), n.get("mac", "")) for n in vm.nics),
            metadata={"vm_id": str(vm.id), "name": vm.name})

    def _boot(self, vm: VM) -> None:
        host, _, _ = self._context(vm)
        # Each boot gives the host its disks alone (an iSCSI target's ACL: a host the VM ran on before
        # loses access) and asks the backends again how the host opens them: that (idempotently)
        # exports a target a tgtd restart forgot, or activates an LV a host reboot left inactive.
        for disk, backend in self._disk_backends(vm):
            attach = getattr(backend, "attach", None)
            if attach is not None:
                attach(disk["path"], host.name)
        self.hypervisor_for(host).ensure_running(self.domain_spec(vm, for_host=host.name))

    def _shutdown(self, vm: VM) -> None:
        host, _, _ = self._context(vm)
        hypervisor = self.hypervisor_for(host)
        if vm.intent == "suspend":
            hypervisor.ensure_paused(vm.domain_name)
        else:
            hypervisor.ensure_stopped(vm.domain_name, graceful=True)

    def _epilog(self, vm: VM) -> None:
        with self.store.read() as tx:
            host = self.store.hosts.get(tx, vm.host_id) if vm.host_id is not None else None
            ds = self.store.datastores.get(tx, vm.datastore_id) if vm.datastore_id is not None else None
        # A host in ERROR is presumed fenced: its domains are gone with it, only the disks remain.
        if host is not None and host.state != HostState.ERROR:
            self.hypervisor_for(host).ensure_absent(vm.domain_name)
        if vm.intent in ("done", "resubmit") and ds is not None:
            self.backend_for(ds).delete_vm_disks(ds.path, vm.id)
            for disk in vm.disks:
                disk.pop("path", None)

    def _migrate(self, vm: VM) -> None:
        with self.store.read() as tx:
            if vm.target_host_id is None:
                raise CoreError("STATE_INVALID", f"VM {vm.id} is migrating to no host")
            source = self.store.hosts.require(tx, vm.host_id)
            target = self.store.hosts.require(tx, vm.target_host_id)
        disks = self._disk_backends(vm)
        # The target must open every disk before the memory moves (activate an LV, log in to a LUN);
        # each call is idempotent, so a crash here re-runs them on recovery.
        for disk, backend in disks:
            backend.premigrate(disk["path"], source.name, target.name)
        spec = self.domain_spec(vm, for_host=target.name)
        self.hypervisor_for(source).migrate(spec, self.hypervisor_for(target))
        for disk, backend in disks:
            backend.postmigrate(disk["path"], source.name, target.name)
        for disk, where in zip(vm.disks, spec.disks):
            if where.source is not None:
                disk["source"] = where.source.as_dict()

    def _disk_backends(self, vm: VM) -> list[tuple[dict, Backend]]:
        """Each prepared disk with the backend that owns it: the VM's system datastore for its clones,
        the image's datastore for a persistent image used in place."""
        with self.store.read() as tx:
            ds = self.store.datastores.require(tx, vm.datastore_id)
            out = []
            for disk in vm.disks:
                if not disk.get("path"):
                    continue
                owner = ds
                if disk.get("persistent"):
                    image = self.store.images.require(tx, disk["image_id"])
                    owner = self.store.datastores.require(tx, image.datastore_id)
                out.append((disk, self.backend_for(owner)))
        return out

    # -- scheduling ------------------------------------------------------------------------------
    def _verbs(self, ds: Datastore) -> frozenset[str] | None:
        try:
            verbs = getattr(self.backend_for(ds), "verbs", None)
        except (DriverError, KeyError):  # no backend for it here: the prolog will say why
            return None
        return frozenset(verbs) if verbs is not None else None

    def schedule_pending(self) -> int:
        with self.store.read() as tx:
            pending = self.store.vms.where(tx, "state = ?", (S.PENDING,))[: self.settings.schedule_batch]
            if not pending:
                return 0
            hosts = self.store.hosts.where(tx, "state = ?", (HostState.MONITORED,))
            datastores = self.store.datastores.where(tx, "kind = ?", ("system",))
            usage = {r[0]: r[1:] for r in tx.execute(
                f"SELECT host_id, SUM(cpu), SUM(memory), COUNT(*) FROM vms WHERE host_id IS NOT NULL AND state IN "
                f"({', '.join('?' * len(ON_HOST))}) GROUP BY host_id", tuple(sorted(ON_HOST))).all()}
            ds_used = {r[0]: r[1] for r in tx.execute(
                "SELECT datastore_id, SUM(disk_mb) FROM vms WHERE datastore_id IS NOT NULL AND state <> ? "
                "GROUP BY datastore_id", (S.DONE,)).all()}
        slots = [HostSlot(h.id, h.cpu_total, h.mem_total, int(usage.get(h.id, (0, 0, 0))[0] or 0),
                          int(usage.get(h.id, (0, 0, 0))[1] or 0), int(usage.get(h.id, (0, 0, 0))[2] or 0),
                          h.cluster_id, {**h.attributes, "NAME": h.name, "HYPERVISOR": h.hypervisor},
                          _cached(h.attributes.get("CACHE")))
                 for h in hosts]
        stores = [DatastoreSlot(d.id, d.total_mb, int(ds_used.get(d.id) or 0), tuple(d.cluster_ids),
                                {**d.attributes, "NAME": d.name}, self._verbs(d), d.backend) for d in datastores]
        requests = [Request(vm.id, vm.cpu_units, vm.memory, sum(int(d.get("size_mb", 0)) for d in vm.disks),
                            vm.requirements, vm.rank,
                            # A stopped VM keeps its disks: it must come back on the same datastore.
                            f"ID = {vm.datastore_id}" if vm.datastore_id is not None else vm.ds_requirements,
                            frozenset({"clone"}) if any(not d.get("persistent") for d in vm.disks) else frozenset(),
                            frozenset(d["backend"] for d in vm.disks if not d.get("persistent") and d.get("backend")),
                            tuple(sorted({int(d["image_id"]) for d in vm.disks if "image_id" in d})))
                    for vm in pending]
        placed = 0
        by_id = {vm.id: vm for vm in pending}
        for placement in schedule(slots, stores, requests, self.settings.policy):
            vm = by_id[placement.vm_id]
            if not placement.placed:
                if vm.error != placement.reason:
                    vm.error = placement.reason
                    self._save(vm, "not placed")
                continue
            vm.host_id, vm.datastore_id, vm.error = placement.host_id, placement.datastore_id, ""
            enter(vm, S.PROLOG)
            if self._save(vm, f"placed on host {placement.host_id}, datastore {placement.datastore_id}") is vm:
                placed += 1
        return placed

    # -- monitoring ------------------------------------------------------------------------------
    def monitor_hosts(self, force: bool = False) -> int:
        now = self.clock.wall()  # persisted and compared on whichever node runs the manager next
        with self.store.read() as tx:
            hosts = self.store.hosts.where(tx, "state <> ?", (HostState.OFFLINE,))
            datastores = self.store.datastores.where(tx)
        if self.push is not None:  # the agents report hosts and VMs; datastores are still asked here
            due = self.push.run_once()
            if force or self._due(now - self._datastores_at):
                self._datastores_at = now
                self._monitor_caches([h.id for h in hosts], datastores)
                self._monitor_datastores(datastores, now)
            return due
        due = [h for h in hosts if force or h.state == HostState.INIT or self._due(now - h.monitored_at)]
        for host in due:
            self._monitor_host(host, now)
        if due:
            self._monitor_caches([h.id for h in due], datastores)
        if force or due:
            self._monitor_datastores(datastores, now)
        return len(due)

    def _monitor_datastores(self, datastores: list, now: float) -> None:
        for ds in datastores:
            try:
                total, free = self.backend_for(ds).capacity(ds.path)
            except (DriverError, OSError) as exc:
                log.warning("datastore %s: capacity unknown: %s", ds.name, exc)
                continue
            with self.store.transaction() as tx:
                current = self.store.datastores.require(tx, ds.id)
                current.total_mb, current.free_mb, current.monitored_at = total, free, now
                self.store.datastores.update(tx, current)

    def _monitor_caches(self, host_ids: list[int], datastores: list) -> None:
        """Each host's CACHE attribute ({"<image id>": fraction of the image its SSD cache holds}),
        which the scheduler's CACHED rank reads: asked of every image datastore whose backend has a
        cache, on the hosts just monitored. A host that cannot say keeps what it said before."""
        with self.store.read() as tx:
            hosts = [h for h in (self.store.hosts.get(tx, i) for i in host_ids) if h and h.state == HostState.MONITORED]
            images = {ds.id: self.store.images.where(tx, "datastore_id = ? AND state = ?", (ds.id, "READY"))
                      for ds in datastores if ds.kind == "image"}
        for host in hosts:
            report: dict[str, float] = {}
            asked = False
            for ds in datastores:
                backend = self.backend_for(ds) if ds.id in images and images[ds.id] else None
                if not hasattr(backend, "cached_images") or not getattr(backend, "cache_mb", 0):
                    continue
                by_path = {i.path: i for i in images[ds.id]}
                try:
                    held = backend.cached_images(host.name, {p: i.size_mb * 1024 * 1024 for p, i in by_path.items()})
                except (DriverError, OSError) as exc:
                    log.warning("host %s: SSD cache of datastore %s unknown: %s", host.name, ds.name, exc)
                    continue
                asked = True
                report.update({str(by_path[p].id): round(f, 4) for p, f in held.items() if p in by_path and f > 0})
            if not asked:
                continue
            with self.store.transaction() as tx:
                current = self.store.hosts.require(tx, host.id)
                if current.attributes.get("CACHE") != report:
                    current.attributes = {**current.attributes, "CACHE": report}
                    self.store.hosts.update(tx, current)

    def _due(self, age: float) -> bool:
        # A time in the future (a clock stepped back, a peer's clock ahead) counts as due, or a
        # host would never be monitored again.
        return age >= self.settings.monitor_interval or age < -self.settings.monitor_interval

    def _monitor_host(self, host: Host, now: float) -> None:
        try:
            hypervisor = self.hypervisor_for(host)
            info = hypervisor.host_info()
            domains = hypervisor.domains()
        except (DriverError, OSError) as exc:
            self._host_failed(host, str(exc), now)
            return
        with self.store.transaction() as tx:
            current = self.store.hosts.require(tx, host.id)
            previous = current.state
            current.cpu_total, current.mem_total, current.hypervisor = info.cpu_units, info.memory_mb, info.hypervisor
            current.failures, current.error, current.monitored_at = 0, "", now
            if current.state in (HostState.INIT, HostState.ERROR):
                current.state = HostState.MONITORED
            self.store.hosts.update(tx, current)
            vms = self.store.vms.where(tx, "host_id = ? AND state IN (?, ?, ?)",
                                       (host.id, S.RUNNING, S.UNKNOWN, S.SUSPENDED))
        if previous != current.state:
            self.hooks.fire("HOST", host.id, current.state)
        for vm in vms:
            self._sync_vm(vm, domains.get(vm.domain_name))

    def _sync_vm(self, vm: VM, domain_state: str | None) -> None:
        """What the hypervisor says wins over what the database last believed."""
        if domain_state == "running" and vm.state != S.RUNNING:
            enter(vm, S.RUNNING)
            self._save(vm, "monitoring: the domain runs")
        elif domain_state is None and vm.state in (S.RUNNING, S.UNKNOWN, S.SUSPENDED):
            enter(vm, S.POWEROFF)  # the disks are there, the domain is not (host rebooted, domain destroyed)
            self._save(vm, "monitoring: the domain disappeared")
        elif domain_state == "paused" and vm.state != S.SUSPENDED:
            enter(vm, S.SUSPENDED)
            self._save(vm, "monitoring: the domain is paused")

    def _host_failed(self, host: Host, error: str, now: float) -> None:
        with self.store.transaction() as tx:
            current = self.store.hosts.require(tx, host.id)
            current.failures += 1
            current.error, current.monitored_at = error[:500], now
            became_error = current.failures >= self.settings.error_after and current.state != HostState.ERROR
            if became_error:
                current.state = HostState.ERROR
            self.store.hosts.update(tx, current)
        log.warning("host %s: monitoring failed (%d): %s", host.name, current.failures, error)
        if became_error:
            with self.store.transaction() as tx:
                vms = self.store.vms.where(tx, "host_id = ? AND state IN (?, ?)", (host.id, S.RUNNING, S.SUSPENDED))
            for vm in vms:
                enter(vm, S.UNKNOWN)
                vm.host_id = host.id
                self._save(vm, f"host {host.name} in ERROR")
            self.hooks.fire("HOST", host.id, HostState.ERROR)

    def _resubmit_host_vms(self, host_id: int, state: str) -> None:
        """Built-in HOST:ERROR hook: the host is gone, so its VMs start again elsewhere."""
        with self.store.transaction() as tx:
            vms = self.store.vms.where(tx, "host_id = ? AND state IN (?, ?, ?)",
                                       (host_id, S.UNKNOWN, S.POWEROFF, S.FAILED))
        for vm in vms:
            enter(vm, S.EPILOG, "resubmit")
            vm.host_id = host_id
            self._save(vm, f"host {host_id} in ERROR: resubmitted")
