"""VMs: created by users, owned by them, changed by their owner or an administrator.

Actions persist intent with compare-and-set; the controller performs it. Choosing a host (deploy,
migrate) and asserting what happened to a step (recover) are for administrators only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import authz
from ..authz import Actor
from ..db import Tx
from ..entities import TRANSIENT, VM, HostState, VmState as S
from ..errors import CoreError
from ..lifecycle import action_target, enter, recover_target
from ..protocols import VERB_WORDS
from . import Env, values
from .vnets import Vnets

# A transient VM is being worked on by the controller; recovering it by hand races with the step
# (a delete followed at once by `recover --success` left a running domain behind a DONE VM).
# Only a VM stuck in its state this long (wall clock) may be recovered; FAILED and UNKNOWN at once.
RECOVER_TRANSIENT_AFTER = 300.0


@dataclass
class VmSpec:
    name: str
    cpu: float = 1.0
    vcpu: int = 1
    memory: int = 512
    disks: list[int] = field(default_factory=list)  # image ids
    nics: list[int] = field(default_factory=list)  # vnet ids
    requirements: str = ""
    rank: str = ""
    ds_requirements: str = ""
    context: dict[str, str] = field(default_factory=dict)
    hold: bool = False
    shared: bool = False


class Vms:
    def __init__(self, env: Env):
        self.env = env
        self.vnets = Vnets(env)
        self.recover_transient_after = RECOVER_TRANSIENT_AFTER

    def create(self, actor: Actor, spec: VmSpec, count: int = 1) -> list[VM]:
        """`count` VMs (named NAME-0, NAME-1, ... when more than one), all or none."""
        values.name(spec.name)
        values.expression(spec.requirements, "requirements")
        values.expression(spec.rank, "rank", rank=True)
        values.expression(spec.ds_requirements, "ds_requirements")
        if not 0 < spec.cpu <= 1024 or not 1 <= spec.vcpu <= 1024 or not 1 <= spec.memory <= 16 * 1024 * 1024:
            raise CoreError("VALUE_INVALID", "cpu 0-1024, vcpu 1-1024 and memory 1-16777216 MiB", field="cpu")
        if not 1 <= count <= 1000:
            raise CoreError("VALUE_INVALID", "count must be 1-1000", field="count", value=count)
        created = []
        with self.env.store.transaction() as tx:  # one transaction: a 409 on the fifth VM leaves none
            disks = self._disks(tx, actor, spec.disks, count)
            vnets = [self.env.store.vnets.require(tx, vnet_id) for vnet_id in spec.nics]
            for vnet_id in sorted(set(spec.nics)):  # one order for every transaction: no deadlock
                self.env.store.leases.lock_vnet(tx, vnet_id)
            for index in range(count):
                vm = VM(name=spec.name if count == 1 else f"{spec.name[:120]}-{index}", owner_id=actor.user_id,
                        group_id=actor.group_id, shared=spec.shared, state=S.HOLD if spec.hold else S.PENDING,
                        cpu=spec.cpu, vcpu=spec.vcpu, memory=spec.memory, disks=[dict(d) for d in disks],
                        requirements=spec.requirements, rank=spec.rank, ds_requirements=spec.ds_requirements,
                        context=dict(spec.context))
                self.env.store.vms.insert(tx, vm)
                vm.nics = [self.vnets.lease(tx, vnet, vm.id) for vnet in vnets]
                tx.execute("UPDATE vms SET body = ? WHERE id = ?", (vm.body(), vm.id))
                created.append(vm)
        self.env.wake()
        return created

    def _disks(self, tx: Tx, actor: Actor, image_ids: list[int], count: int) -> list[dict[str, Any]]:
        disks = []
        for index, image_id in enumerate(image_ids):
            image = authz.require_use(actor, "image", self.env.store.images.get(tx, image_id), image_id)
            if image.state != "READY":
                raise CoreError("STATE_INVALID", f"image {image.name} is {image.state}", image_id=image_id)
            if image.persistent and image.owner_id != actor.user_id and not actor.admin:
                # A persistent image is written by its one VM: another user's VM would lock it
                # away from its owner, and write to the owner's data.
                raise CoreError("FORBIDDEN", f"persistent image {image.name} is used only by its owner's VMs",
                                image_id=image_id)
            if image.persistent and (count > 1 or self.env.store.vms.users_of_image(tx, image_id)
                                     or image_ids.count(image_id) > 1):
                raise CoreError("IN_USE", f"persistent image {image.name} is already used", image_id=image_id)
            backend = self.env.store.datastores.require(tx, image.datastore_id).backend
            disks.append({"image_id": image.id, "target": f"vd{chr(97 + index)}", "size_mb": image.size_mb,
                          "persistent": image.persistent, "backend": backend})
        # One system datastore clones all of a VM's images, with its own technology: images kept by
        # two backends could never be placed (the VM would wait PENDING for ever).
        kinds = sorted({d["backend"] for d in disks if not d["persistent"]})
        if len(kinds) > 1:
            raise CoreError("NOT_SUPPORTED", f"the VM's images are kept by {' and '.join(kinds)} datastores; one "
                            "system datastore clones them all, so they must share one backend", field="disks",
                            verb="clone")
        return disks

    def get(self, actor: Actor, ident: int) -> VM:
        with self.env.store.read() as tx:
            return authz.require_read(actor, "vm", self.env.store.vms.get(tx, ident), ident)

    def monitoring(self, actor: Actor, ident: int, since: int, limit: int) -> list[dict]:
        """The VM's usage samples from `since`, oldest first; only for whoever may read the VM."""
        from ..history import samples

        self.get(actor, ident)
        with self.env.store.read() as tx:
            return samples(tx, "vm", ident, since, limit)

    def page(self, actor: Actor, after: int, limit: int, state: str | None = None) -> tuple[list[str], int | None]:
        visible, params = authz.visible_condition(actor)
        condition, values_ = ("state = ?", (state,)) if state else ("state <> ?", (S.DONE,))
        with self.env.store.read() as tx:
            return self.env.store.vms.page(tx, after, limit, f"{condition} AND {visible}", (*values_, *params))

    def flatten(self, actor: Actor, ident: int, disk: int) -> VM:
        """Copy the image's blocks into a VM disk, so it no longer needs its image (which can then be
        deleted). On the backend's own thread of work: the VM may run meanwhile (RBD flattens live)."""
        from ..protocols import DriverError

        with self.env.store.read() as tx:
            vm = authz.require_change(actor, "vm", self.env.store.vms.get(tx, ident), ident)
            if not 0 <= disk < len(vm.disks):
                raise CoreError("VALUE_INVALID", f"VM {ident} has {len(vm.disks)} disk(s); disk {disk} is none of them",
                                field="disk", value=disk)
            entry = vm.disks[disk]
            if entry.get("persistent"):
                raise CoreError("VALUE_INVALID", f"disk {disk} of VM {ident} is a persistent image, not a clone",
                                field="disk", value=disk)
            if not entry.get("path") or vm.datastore_id is None:
                raise CoreError("STATE_INVALID", f"disk {disk} of VM {ident} is not made yet (state {vm.state})",
                                state=vm.state)
            ds = self.env.store.datastores.require(tx, vm.datastore_id)
        backend = self.env.backend_for(ds)
        flatten = getattr(backend, "flatten", None)
        if flatten is None:
            raise CoreError("NOT_SUPPORTED", f"the {ds.backend} backend cannot flatten a disk: its disks do not "
                            "depend on their image, or cannot stop depending on it", field="disk", verb="flatten")
        try:
            flatten(entry["path"])
        except DriverError as exc:
            raise CoreError("STATE_INVALID", f"flattening disk {disk} of VM {ident} failed: {exc}") from None
        # Recorded, so the image no longer counts this VM as a user (it may be deleted). The VM may
        # have moved on meanwhile (the controller works concurrently): compare-and-set, retried.
        for _ in range(20):
            with self.env.store.transaction() as tx:
                vm = self.env.store.vms.require(tx, ident)
                if vm.disks[disk].get("path") != entry["path"]:
                    raise CoreError("STATE_INVALID", f"disk {disk} of VM {ident} changed while it was flattened")
                vm.disks[disk]["flattened"] = True
                if self.env.store.vms.save(tx, vm, f"{actor.name}: flatten disk {disk}", record=True):
                    return vm
        raise CoreError("STATE_INVALID", f"VM {ident} kept changing; its disk {disk} is flattened, try again to "
                        "record it")

    def history(self, actor: Actor, ident: int) -> list[dict[str, Any]]:
        with self.env.store.read() as tx:
            authz.require_read(actor, "vm", self.env.store.vms.get(tx, ident), ident)
            return self.env.store.vms.history(tx, ident)

    def action(self, actor: Actor, ident: int, action: str, host_id: int | None = None,
               datastore_id: int | None = None, how: str | None = None) -> VM:
        """Persist the action's intent (compare-and-set); the controller performs it."""
        if action in authz.ADMIN_VM_ACTIONS and not actor.admin:
            raise CoreError("FORBIDDEN", f"only an administrator may {action} a VM: it picks a host or asserts what "
                            "happened on one", action=action)
        with self.env.store.transaction() as tx:
            vm = authz.require_change(actor, "vm", self.env.store.vms.get(tx, ident), ident)
            if action == "recover":
                self._recoverable(vm, how or "")
                state, intent = recover_target(vm, how or "")
            else:
                state, intent = action_target(vm, action)
            if action in ("deploy", "migrate"):
                if host_id is None:
                    raise CoreError("VALUE_INVALID", f"{action} needs host_id", field="host_id")
                host = self.env.store.hosts.require(tx, host_id)
                if host.state not in (HostState.MONITORED, HostState.DISABLED):
                    raise CoreError("STATE_INVALID", f"host {host.name} is {host.state}", host_id=host_id)
                if action == "migrate" and host_id == vm.host_id:
                    raise CoreError("VALUE_INVALID", "the VM already runs on that host", field="host_id")
                if action == "migrate" and vm.datastore_id is not None:
                    self._require_verbs(tx, vm.datastore_id, ("premigrate", "postmigrate"))
                    for disk in (d for d in vm.disks if d.get("persistent")):  # used in place, on its own datastore
                        image = self.env.store.images.require(tx, disk["image_id"])
                        self._require_verbs(tx, image.datastore_id, ("premigrate", "postmigrate"))
            ds_id = None
            if action == "deploy":
                ds_id = datastore_id if datastore_id is not None else self._default_system_datastore(tx)
                if self.env.store.datastores.require(tx, ds_id).kind != "system":
                    # VM disks live on system datastores; one elsewhere would strand the VM PENDING
                    raise CoreError("VALUE_INVALID", f"datastore {ds_id} is not a system datastore",
                                    field="datastore_id", value=ds_id)
                if any(not d.get("persistent") for d in vm.disks):
                    self._require_verbs(tx, ds_id, ("clone",))
                    self._require_backend(tx, ds_id, vm)
            previous_state = vm.state
            migrating = vm.state == S.MIGRATE or (vm.state == S.FAILED and vm.failed_in == S.MIGRATE)
            enter(vm, state, intent)
            if action == "deploy":
                vm.host_id, vm.datastore_id = host_id, ds_id
            elif action == "migrate":
                vm.target_host_id = host_id
            elif action == "recover" and migrating and how == "success":
                vm.host_id, vm.target_host_id = vm.target_host_id, None
            if vm.state == S.DONE:
                self.env.store.leases.release_vm(tx, vm.id)  # no lease outlives its VM
            if not self.env.store.vms.save(tx, vm, f"{actor.name}: {action}" + (f" --{how}" if how else ""),
                                           record=True):
                raise CoreError("STATE_INVALID", f"VM {ident} changed meanwhile; read it again", vm_id=ident)
        self.env.wake()
        return vm

    def _require_verbs(self, tx: Tx, ds_id: int, verbs: tuple[str, ...]) -> None:
        """NOT_SUPPORTED, before anything changes, when the datastore's backend lacks a verb."""
        ds = self.env.store.datastores.require(tx, ds_id)
        have = getattr(self.env.backend_for(ds), "verbs", None)
        missing = [v for v in verbs if have is not None and v not in have]
        if missing:
            raise CoreError("NOT_SUPPORTED", f"datastore {ds.name}'s {ds.backend} backend cannot "
                            f"{VERB_WORDS[missing[0]]}", datastore_id=ds_id, verb=missing[0])

    def _require_backend(self, tx: Tx, ds_id: int, vm: VM) -> None:
        ds = self.env.store.datastores.require(tx, ds_id)
        other = sorted({d["backend"] for d in vm.disks if not d.get("persistent") and d.get("backend")} - {ds.backend})
        if other:
            raise CoreError("NOT_SUPPORTED", f"datastore {ds.name} ({ds.backend}) cannot clone images kept by the "
                            f"{other[0]} backend; deploy to a {other[0]} system datastore", datastore_id=ds_id,
                            verb="clone")

    def _recoverable(self, vm: VM, how: str) -> None:
        if vm.state in TRANSIENT and self.env.wall() - vm.updated < self.recover_transient_after:
            raise CoreError("STATE_INVALID", f"VM {vm.id} is in {vm.state} and the controller is working on it; "
                            f"recover it only if it stays there {int(self.recover_transient_after)} s",
                            vm_id=vm.id, state=vm.state)
        where = vm.failed_in if vm.state == S.FAILED else vm.state
        if how == "success" and where == S.PROLOG and any(not d.get("path") for d in vm.disks):
            raise CoreError("STATE_INVALID", f"VM {vm.id}'s disks were never prepared, so its PROLOG did not "
                            "succeed; use recover --retry or --failure", vm_id=vm.id)

    def _default_system_datastore(self, tx: Tx) -> int:
        row = tx.execute("SELECT id FROM datastores WHERE kind = ? ORDER BY id LIMIT 1", ("system",)).one()
        if row is None:
            raise CoreError("NOT_FOUND", "there is no system datastore", kind="datastore")
        return row[0]
