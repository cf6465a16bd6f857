"""Random sequences of API calls by five users of three roles, on both databases (hypothesis, stateful).

An admin, an auditor, alice and carol (group "team") and bob (group "users") create, share, act on
and delete VMs and images, mint and revoke tokens and read everything, through the HTTP API (a
fastapi TestClient), while controller passes, host faults and time passing interleave. The test
keeps its own model of who owns what, what is shared and what is public, and checks:

- no answer is a 5xx, and no error names a VM the caller may not see;
- authorization, after every step: each user's listings show exactly what it owns, its group shares
  and (images) what is public; on every call, a non-owner gets 404 (cannot see) or 403 (sees through
  its group or because it is public, may not change), an auditor 403 on every change, a user 403 on
  deploy, migrate and recover, and a refused change leaves the entity as it was in the database;
- lifecycle: an owner's action is accepted exactly from the states core/lifecycle.py lists, and
  lands in the state it names; recover --success of a migration leaves the VM on the target;
- invariants read straight from the database after every step: no RUNNING VM with a disk missing on
  disk, no lease of a DONE or vanished VM, no LOCKED image, no live VM on a deleted image or with its
  disks outside a system datastore, no step that raised inside the controller, owners, groups,
  shared and public flags as created (bodies and the columns listings filter on), and nothing
  persisted by a refused request.

Each example starts from empty tables (the `world` database is wiped), so a failing sequence that
hypothesis prints replays on its own. Settings are deterministic (derandomized, no example database).
Sequences the machine found are replayed at the end of this file, one test each.
"""
from __future__ import annotations

import itertools
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule, \
    run_state_machine_as_test

from appliance.core import lifecycle
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM
from appliance.core.entities import TRANSIENT, HostState, VmState as S

ACTORS = ("admin", "auditor", "alice", "carol", "bob")
# The model's own view of roles and groups (not read back from the manager).
ROLE = {"admin": "admin", "auditor": "auditor", "alice": "user", "carol": "user", "bob": "user"}
GROUP = {"admin": "admins", "auditor": "users", "alice": "team", "carol": "team", "bob": "users", "system": None}
NAME = {"admin": "root", "auditor": "eve", "alice": "alice", "carol": "carol", "bob": "bob"}
USER_ACTIONS = ("hold", "release", "shutdown", "poweroff", "resume", "suspend", "stop", "resubmit", "delete")
ADMIN_ACTIONS = ("deploy", "migrate", "recover")
FAULTS = ("host_info", "ensure_running", "ensure_stopped", "ensure_paused", "ensure_absent", "migrate")
BOGUS = 2 ** 62  # a valid id that never exists
VNET_SIZE = 8
RECOVER_AFTER = 300.0  # core.actions.vms.RECOVER_TRANSIENT_AFTER
TABLES = ("leases", "vm_history", "vms", "images", "vnets", "datastores", "hosts", "clusters", "tokens", "users",
          "user_groups", "audit")

SETTINGS = settings(max_examples=12, stateful_step_count=50, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


@dataclass
class Owned:
    owner: str  # actor key, or "system"
    shared: bool
    persistent: bool = False
    public: bool = False  # images only: every user reads and uses it
    deleted: bool = False


@dataclass
class Token:
    owner: str
    secret: str
    expires_at: float | None
    revoked: bool = False


class Context:
    """What lives as long as the test (one database): the app, a client, the wall clock, the wipe."""

    def __init__(self, world):
        self.world = world
        self.offset = 0.0  # the manager's wall clock runs this far ahead of time.time()
        world.manager.env.wall = self.wall
        self.client = TestClient(create_app(world.manager), raise_server_exceptions=False)
        self.examples = itertools.count()
        self.current: Any = None

    def wall(self) -> float:
        return time.time() + self.offset

    def wipe(self) -> Any:
        world = self.world
        with world.store.transaction() as tx:
            for table in TABLES:
                tx.execute(f"DELETE FROM {table}")
        world.hypervisors.clear()
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
        self.current = world.tmp / f"example-{next(self.examples)}"
        (self.current / "images").mkdir(parents=True)
        (self.current / "system").mkdir()
        return self.current


class ApiMachine(RuleBasedStateMachine):
    """VMs are picked by index (`vm=3`: the fourth VM made, modulo; -1: a VM that does not exist);
    images from a bundle (deleted ones stay in it)."""

    images = Bundle("images")

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        self.world = world = ctx.world
        manager = world.manager
        where = ctx.wipe()
        manager.users.create_group(SYSTEM, "team")
        self.uid: dict[str, int] = {}
        self.gid: dict[str, int] = {"system": 0}
        self.tokens: dict[int, Token] = {}
        for actor in ACTORS:
            user, secret, token_id = manager.users.create(SYSTEM, NAME[actor], role=ROLE[actor],
                                                          group="team" if GROUP[actor] == "team" else None)
            self.uid[actor], self.gid[actor] = user.id, user.group_id
            self.tokens[token_id] = Token(actor, secret, None)
        assert len({self.gid[a] for a in ACTORS}) == len(set(GROUP.values()) - {None}), self.gid
        assert self.gid["alice"] == self.gid["carol"] and self.gid["bob"] == self.gid["auditor"], self.gid
        self.hosts = {h.name: h.id for h in (manager.hosts.create(SYSTEM, f"host{i}", driver="fake")
                                            for i in (1, 2))}
        self.image_ds = manager.datastores.create(SYSTEM, "images", str(where / "images"), kind="image").id
        self.system_ds = manager.datastores.create(SYSTEM, "system", str(where / "system"), kind="system").id
        self.base = manager.images.create(SYSTEM, "base", self.image_ds, size_mb=4, public=True).id
        self.vnet = manager.vnets.create(SYSTEM, "net", "br0", [{"first": "10.0.0.1", "size": VNET_SIZE}]).id
        world.controller.monitor_hosts(force=True)
        self.model_vms: dict[int, Owned] = {}
        self.model_images: dict[int, Owned] = {self.base: Owned("system", False, public=True)}
        self.names = itertools.count()

    # -- plumbing --------------------------------------------------------------------------------
    def token_valid(self, token: Token) -> bool:
        return not token.revoked and (token.expires_at is None or token.expires_at > self.ctx.wall())

    def secret_of(self, actor: str) -> str:
        """A working token of the actor; an operator mints one when the actor revoked all of its own."""
        for token in reversed(list(self.tokens.values())):
            if token.owner == actor and self.token_valid(token):
                return token.secret
        row, secret = self.world.manager.users.create_token(SYSTEM, "spare", 0, self.uid[actor])
        self.tokens[row["id"]] = Token(actor, secret, None)
        return secret

    def call(self, actor: str | None, method: str, url: str, body: Any = None, secret: str | None = None):
        secret = secret or self.secret_of(actor)
        response = self.ctx.client.request(method, f"/api/v1{url}", json=body,
                                           headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code < 500, f"{method} {url} as {actor}: {response.status_code} {response.text}"
        if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
            # An error names no VM the actor may not see (a user learns nothing of those).
            named = response.json()["error"].get("details", {}).get("vms") or []
            hidden = [i for i in named if i not in self.model_vms or not self.may_read(actor, self.model_vms[i])]
            assert not hidden, f"{method} {url} as {actor}: the error names VMs {hidden} it may not see: " \
                f"{response.text}"
        return response

    def expect(self, response, status: int, what: str, code: str | None = None) -> None:
        assert response.status_code == status, \
            f"{what}: expected {status}, got {response.status_code} {response.text}"
        if code is not None:
            assert response.json()["error"]["code"] == code, f"{what}: {response.text}"

    def may_read(self, actor: str, entity: Owned) -> bool:
        if ROLE[actor] in ("admin", "auditor") or entity.owner == actor or entity.public:
            return True
        group = GROUP[entity.owner]
        return entity.shared and group is not None and group == GROUP[actor]

    def may_change(self, actor: str, entity: Owned) -> bool:
        return ROLE[actor] == "admin" or (ROLE[actor] == "user" and entity.owner == actor)

    def db_vm(self, vm_id: int):
        with self.world.store.read() as tx:
            return self.world.store.vms.get(tx, vm_id)

    def db_image(self, image_id: int):
        with self.world.store.read() as tx:
            return self.world.store.images.get(tx, image_id)

    def counts(self) -> tuple[int, int, int]:
        with self.world.store.read() as tx:
            return tuple(tx.execute(f"SELECT COUNT(*) FROM {t}").one()[0] for t in ("vms", "images", "leases"))

    def free_addresses(self) -> int:
        with self.world.store.read() as tx:
            return VNET_SIZE - self.world.store.leases.count(tx, self.vnet)

    def users_of_image(self, image_id: int) -> list[int]:
        """VMs not DONE with a disk of the image (read here, not through the pool's own query)."""
        with self.world.store.read() as tx:
            vms = self.world.store.vms.where(tx, "state <> ?", (S.DONE,))
        return [vm.id for vm in vms if any(d.get("image_id") == image_id for d in vm.disks)]

    def check_owned_body(self, body: dict, entity: Owned, what: str) -> None:
        assert (body["owner_id"], body["group_id"], body["shared"], body.get("public", False)) == \
            (self.uid.get(entity.owner, 0), self.gid[entity.owner], entity.shared, entity.public), (what, body)

    def pick_vm(self, vm: int) -> int:
        ids = sorted(self.model_vms)
        return BOGUS if vm < 0 or not ids else ids[vm % len(ids)]

    @initialize(target=images, shared=st.tuples(*[st.booleans()] * 4), persistent=st.tuples(*[st.booleans()] * 4),
                vm_shared=st.tuples(*[st.booleans()] * 4), hold=st.tuples(*[st.booleans()] * 4))
    def start(self, shared, persistent, vm_shared, hold):
        """The public base image; an image of each user and the admin, and a VM with a NIC on it."""
        made = []
        for index, actor in enumerate(("admin", "alice", "carol", "bob")):
            image = self.make_image(actor, shared[index], persistent[index], 1, "image", False)
            self.make_vms(actor, vm_shared[index], 1, [image], ["net"], hold[index], "", False)
            made.append(image)
        return multiple(self.base, *made)

    # -- images ----------------------------------------------------------------------------------
    @rule(target=images, actor=st.sampled_from(ACTORS), shared=st.booleans(), persistent=st.booleans(),
          size_mb=st.integers(1, 3), datastore=st.sampled_from(("image", "image", "image", "system", "missing")),
          public=st.sampled_from((False, False, True)))
    def create_image(self, actor, shared, persistent, size_mb, datastore, public):
        made = self.make_image(actor, shared, persistent, size_mb, datastore, public)
        return multiple() if made is None else made

    def make_image(self, actor: str, shared: bool, persistent: bool, size_mb: int, datastore: str,
                   public: bool) -> int | None:
        ds_id = {"image": self.image_ds, "system": self.system_ds, "missing": BOGUS}[datastore]
        before = self.counts()
        response = self.call(actor, "POST", "/images", {"name": f"img{next(self.names)}", "datastore_id": ds_id,
                                                        "size_mb": size_mb, "shared": shared,
                                                        "persistent": persistent, "public": public})
        what = f"{actor} creates an image on the {datastore} datastore" + (" for everyone" if public else "")
        if ROLE[actor] == "auditor" or (public and ROLE[actor] != "admin"):
            self.expect(response, 403, what, "FORBIDDEN")
        elif datastore == "missing":
            self.expect(response, 404, what, "NOT_FOUND")
        elif datastore == "system":
            self.expect(response, 422, what, "VALUE_INVALID")
        else:
            self.expect(response, 201, what)
        if response.status_code != 201:
            assert self.counts() == before, f"{what}: refused, yet something was persisted"
            return None
        body = response.json()
        entity = Owned(actor, shared, persistent, public)
        self.check_owned_body(body, entity, what)
        image = self.db_image(body["id"])
        assert image.state == "READY" and image.size_mb == size_mb and os.path.exists(image.path), image
        self.model_images[body["id"]] = entity
        return body["id"]

    @rule(image_id=images)
    def owner_deletes_image(self, image_id):
        """The owner (an administrator for the system's images) deletes it: refused while VMs use it."""
        owner = self.model_images[image_id].owner
        self.delete_image("admin" if owner == "system" else owner, image_id)

    @rule(actor=st.sampled_from(ACTORS), image_id=images)
    def delete_image(self, actor, image_id):
        entity = self.model_images[image_id]
        before = self.db_image(image_id)
        users = self.users_of_image(image_id)
        response = self.call(actor, "DELETE", f"/images/{image_id}")
        what = f"{actor} deletes image {image_id} of {entity.owner}"
        if ROLE[actor] == "auditor":
            self.expect(response, 403, what, "FORBIDDEN")
        elif entity.deleted or not self.may_read(actor, entity):
            self.expect(response, 404, what, "NOT_FOUND")
        elif not self.may_change(actor, entity):
            self.expect(response, 403, what, "FORBIDDEN")
        elif users:
            self.expect(response, 409, what, "IN_USE")
        else:
            self.expect(response, 204, what)
        if response.status_code == 204:
            entity.deleted = True
            assert self.db_image(image_id) is None and not os.path.exists(before.path), what
        else:
            assert self.db_image(image_id) == before, f"{what}: refused, yet the image changed"

    # -- VMs -------------------------------------------------------------------------------------
    @rule(actor=st.sampled_from(ACTORS), shared=st.booleans(), count=st.integers(1, 3),
          disks=st.lists(images, max_size=2), nics=st.lists(st.sampled_from(("net", "net", "missing")), max_size=2),
          hold=st.booleans(), requirements=st.sampled_from(("", "", 'NAME = "host1"', 'NAME = "nowhere"')),
          steal=st.sampled_from((False, False, False, True)))
    def create_vms(self, actor, shared, count, disks, nics, hold, requirements, steal):
        """Disks from images the actor can see; now and then (steal) from any image, deleted ones too."""
        self.make_vms(actor, shared, count, disks, nics, hold, requirements, steal)

    def make_vms(self, actor: str, shared: bool, count: int, disks: list[int], nics: list[str], hold: bool,
                 requirements: str, steal: bool) -> list[int]:
        if not steal:
            disks = [i for i in disks if not self.model_images[i].deleted
                     and self.may_read(actor, self.model_images[i])]
        nic_ids = [self.vnet if n == "net" else BOGUS for n in nics]
        before = self.counts()
        what = f"{actor} creates {count} VM(s) with disks {disks} and nics {nics}"
        expected, code = 201, None
        if ROLE[actor] == "auditor":
            expected, code = 403, "FORBIDDEN"
        else:
            for image_id in disks:
                entity = self.model_images[image_id]
                if entity.deleted or not self.may_read(actor, entity):
                    expected, code = 404, "NOT_FOUND"
                    break
                if entity.persistent and entity.owner != actor and ROLE[actor] != "admin":
                    expected, code = 403, "FORBIDDEN"  # written by its one VM: its owner's data
                    break
                if entity.persistent and (count > 1 or disks.count(image_id) > 1 or self.users_of_image(image_id)):
                    expected, code = 409, "IN_USE"
                    break
            else:
                if BOGUS in nic_ids:
                    expected, code = 404, "NOT_FOUND"
                elif count * len(nic_ids) > self.free_addresses():
                    expected, code = 409, "NO_ADDRESS"
        response = self.call(actor, "POST", "/vms", {
            "name": f"vm{next(self.names)}", "cpu": 0.1, "memory": 64, "disks": disks, "nics": nic_ids,
            "shared": shared, "count": count, "hold": hold, "requirements": requirements})
        self.expect(response, expected, what, code)
        if expected != 201:
            assert self.counts() == before, f"{what}: refused, yet something was persisted"
            return []
        items = response.json()["items"]
        assert len(items) == count, what
        created = []
        for body in items:
            entity = Owned(actor, shared)
            self.check_owned_body(body, entity, what)
            assert body["state"] == (S.HOLD if hold else S.PENDING), body
            assert [d["image_id"] for d in body["disks"]] == disks and len(body["nics"]) == len(nic_ids), body
            self.model_vms[body["id"]] = entity
            created.append(body["id"])
        after = self.counts()
        assert after == (before[0] + count, before[1], before[2] + count * len(nic_ids)), (what, before, after)
        return created

    def expected_action(self, actor: str, vm, action: str, host_id: int | None, how: str | None,
                        datastore_id: int | None) -> tuple[int, str | None]:
        """What the manager must answer to an owner (or an administrator) acting on the VM as it is."""
        if action == "recover":
            if vm.state in TRANSIENT and self.ctx.wall() - vm.updated < RECOVER_AFTER:
                return 409, "STATE_INVALID"
            where = vm.failed_in if vm.state == S.FAILED else vm.state
            if how == "success" and where == S.PROLOG and any(not d.get("path") for d in vm.disks):
                return 409, "STATE_INVALID"
            if how not in lifecycle.RECOVER_HOW:
                return 422, "VALUE_INVALID"
            if vm.state not in lifecycle.RECOVER_FROM:
                return 409, "STATE_INVALID"
            return 200, None
        if vm.state not in lifecycle.ACTIONS[action]:
            return 409, "STATE_INVALID"
        if action in ("deploy", "migrate"):
            if host_id is None:
                return 422, "VALUE_INVALID"
            host = self.world.manager.hosts.get(SYSTEM, host_id) if host_id != BOGUS else None
            if host is None:
                return 404, "NOT_FOUND"
            if host.state not in (HostState.MONITORED, HostState.DISABLED):
                return 409, "STATE_INVALID"
            if action == "migrate" and host_id == vm.host_id:
                return 422, "VALUE_INVALID"
        if action == "deploy" and datastore_id == BOGUS:
            return 404, "NOT_FOUND"
        if action == "deploy" and datastore_id not in (None, self.system_ds):
            return 422, "VALUE_INVALID"  # VM disks live on system datastores
        return 200, None

    def act(self, actor: str, vm_id: int, action: str, host: str | None = None, datastore: str | None = None,
            how: str | None = None, via_delete: bool = False) -> None:
        entity = self.model_vms.get(vm_id)
        before = self.db_vm(vm_id)
        host_id = None if host is None else self.hosts.get(host, BOGUS)
        datastore_id = {None: None, "system": self.system_ds, "image": self.image_ds, "missing": BOGUS}[datastore]
        body: dict[str, Any] = {"action": action}
        if action in ("deploy", "migrate") and host_id is not None:
            body["host_id"] = host_id
        if action == "deploy" and datastore_id is not None:
            body["datastore_id"] = datastore_id
        if action == "recover" and how is not None:
            body["how"] = how
        if action == "delete" and via_delete:
            response = self.call(actor, "DELETE", f"/vms/{vm_id}")
        else:
            response = self.call(actor, "POST", f"/vms/{vm_id}/action", body)
        owner = entity.owner if entity else "nobody"
        what = f"{actor} does {body} to VM {vm_id} of {owner} in {before.state if before else 'nowhere'}"
        if ROLE[actor] == "auditor" or (action in ADMIN_ACTIONS and ROLE[actor] != "admin"):
            self.expect(response, 403, what, "FORBIDDEN")
        elif entity is None or not self.may_read(actor, entity):
            self.expect(response, 404, what, "NOT_FOUND")
        elif not self.may_change(actor, entity):
            self.expect(response, 403, what, "FORBIDDEN")
        else:
            status, code = self.expected_action(actor, before, action, body.get("host_id"), body.get("how"),
                                                body.get("datastore_id"))
            self.expect(response, status, what, code)
        after = self.db_vm(vm_id)
        if response.status_code != 200:
            assert after == before, f"{what}: refused, yet the VM changed from {before} to {after}"
            return
        assert response.json()["state"] == after.state, (what, response.json(), after)
        if action != "recover":
            assert after.state == lifecycle.ACTIONS[action][before.state][0], (what, after.state)
        elif (before.failed_in if before.state == S.FAILED else before.state) == S.MIGRATE and how == "success":
            # The administrator asserts the migration happened: the VM runs on the target now.
            assert (after.host_id, after.target_host_id) == (before.target_host_id, None), \
                f"{what}: the VM is on host {after.host_id} (target {after.target_host_id}), " \
                f"not on the migration's target {before.target_host_id}"

    @rule(actor=st.sampled_from(ACTORS), vm=st.integers(-1, 99), action=st.sampled_from(USER_ACTIONS + ADMIN_ACTIONS),
          host=st.sampled_from(("host1", "host2", "missing", None)),
          datastore=st.sampled_from((None, None, "system", "image", "missing")),
          how=st.sampled_from(("success", "failure", "retry", None)), via_delete=st.booleans())
    def anyone_acts(self, actor, vm, action, host, datastore, how, via_delete):
        """Any user, any action, any VM (or one that does not exist)."""
        self.act(actor, self.pick_vm(vm), action, host, datastore, how, via_delete)

    @rule(vm=st.integers(0, 99), action=st.sampled_from(USER_ACTIONS), via_delete=st.booleans())
    def owner_acts(self, vm, action, via_delete):
        """The owner drives its VM through the lifecycle."""
        vm_id = self.pick_vm(vm)
        self.act(self.model_vms[vm_id].owner, vm_id, action, via_delete=via_delete)

    @rule(actor=st.sampled_from(("alice", "carol", "bob")), vm=st.integers(0, 99),
          action=st.sampled_from(ADMIN_ACTIONS), how=st.sampled_from(("success", "failure", "retry")))
    def user_tries_an_admin_action(self, actor, vm, action, how):
        """Deploy, migrate and recover are for administrators, even on one's own VM."""
        self.act(actor, self.pick_vm(vm), action, "host1", None, how)

    @rule(vm=st.integers(0, 99), action=st.sampled_from(ADMIN_ACTIONS), host=st.sampled_from(("host1", "host2")),
          datastore=st.sampled_from((None, None, None, "system", "image")),
          how=st.sampled_from(("success", "failure", "retry")))
    def admin_acts(self, vm, action, host, datastore, how):
        """An administrator places, moves or recovers a VM."""
        self.act("admin", self.pick_vm(vm), action, host, datastore, how)

    # -- the controller, time and faults ---------------------------------------------------------
    @rule(passes=st.sampled_from((1, 1, 2, 3, 10)))
    def controller_passes(self, passes):
        for _ in range(passes):
            if not self.world.controller.run_once():
                break

    @rule()
    def time_passes(self):
        """Monitoring falls due, transient VMs become recoverable, short-lived tokens expire."""
        self.world.clock.sleep(15)
        self.ctx.offset += RECOVER_AFTER + 1
        self.world.controller.run_once()

    @rule(host=st.sampled_from(("host1", "host2")), operation=st.sampled_from(FAULTS + (None,)))
    def host_fault(self, host, operation):
        """A hypervisor operation starts failing (None: the host heals). A host whose monitoring fails
        stays dark through enough monitoring rounds to be in ERROR."""
        hypervisor = self.world.hypervisor_for(self.world.manager.hosts.get(SYSTEM, self.hosts[host]))
        if operation is None:
            hypervisor.fail.clear()
            return
        hypervisor.fail[operation] = f"injected {operation} failure"
        if operation == "host_info":
            for _ in range(3):
                self.world.clock.sleep(15)
                self.world.controller.run_once()

    # -- tokens ----------------------------------------------------------------------------------
    @rule(actor=st.sampled_from(ACTORS), owner=st.sampled_from(ACTORS + (None,)),
          expires_in=st.sampled_from((None, 0, 150)))
    def create_token(self, actor, owner, expires_in):
        body: dict[str, Any] = {"name": f"tok{next(self.names)}"}
        if owner is not None:
            body["user_id"] = self.uid[owner]
        if expires_in is not None:
            body["expires_in"] = expires_in
        response = self.call(actor, "POST", "/tokens", body)
        what = f"{actor} makes a token for {owner or 'itself'}"
        target = owner or actor
        if target != actor and ROLE[actor] != "admin":
            self.expect(response, 403, what, "FORBIDDEN")
            return
        if expires_in == 0 and ROLE[actor] != "admin":
            self.expect(response, 422, what, "VALUE_INVALID")  # only administrators make tokens that never expire
            return
        self.expect(response, 201, what)
        made = response.json()
        assert made["token"]["user_id"] == self.uid[target], (what, made)
        self.tokens[made["token"]["id"]] = Token(target, made["secret"], made["token"]["expires_at"])
        me = self.call(target, "GET", "/whoami", secret=made["secret"])
        self.expect(me, 200, f"{what}: whoami with it")
        assert me.json()["name"] == NAME[target], me.json()

    @rule(actor=st.sampled_from(ACTORS), owner=st.sampled_from(ACTORS), pick=st.integers(0, 5))
    def revoke_token(self, actor, owner, pick):
        theirs = [i for i, t in self.tokens.items() if t.owner == owner]
        token_id = theirs[pick % len(theirs)]
        token = self.tokens[token_id]
        response = self.call(actor, "DELETE", f"/tokens/{token_id}")
        what = f"{actor} revokes token {token_id} of {owner}"
        if actor == owner or ROLE[actor] == "admin":
            self.expect(response, 204, what)
            token.revoked = True
        else:
            self.expect(response, 404, what, "NOT_FOUND")
        with self.world.store.read() as tx:
            row = self.world.store.tokens.get(tx, token_id)
        assert (row["revoked_at"] is not None) == token.revoked, (what, row)
        me = self.call(owner, "GET", "/whoami", secret=token.secret)
        self.expect(me, 200 if self.token_valid(token) else 401, f"{what}: whoami with it")

    @rule(actor=st.sampled_from(ACTORS), owner=st.sampled_from(ACTORS + (None,)), pick=st.integers(0, 50))
    def read_tokens(self, actor, owner, pick):
        """Listings show one's own tokens (everyone's to admins and auditors), never a secret; every
        token works while valid, revoked and expired ones get 401."""
        query = f"?limit=5000&user_id={self.uid[owner]}" if owner else "?limit=5000"
        response = self.call(actor, "GET", f"/tokens{query}")
        what = f"{actor} lists the tokens of {owner or 'everyone'}"
        sees_all = ROLE[actor] in ("admin", "auditor")
        if owner not in (None, actor) and not sees_all:
            self.expect(response, 403, what, "FORBIDDEN")
        else:
            self.expect(response, 200, what)
            whose = owner or (None if sees_all else actor)
            expected = {i for i, t in self.tokens.items() if whose is None or t.owner == whose}
            assert {t["id"] for t in response.json()["items"]} == expected, what
            assert not any(t.secret in response.text for t in self.tokens.values()), f"{what}: a secret is listed"
        token_id = sorted(self.tokens)[pick % len(self.tokens)]
        token = self.tokens[token_id]
        me = self.call(token.owner, "GET", "/whoami", secret=token.secret)
        self.expect(me, 200 if self.token_valid(token) else 401, f"whoami with token {token_id} of {token.owner}")

    # -- reading ---------------------------------------------------------------------------------
    @rule(actor=st.sampled_from(ACTORS), vm=st.integers(-1, 99), history=st.booleans())
    def read_vm(self, actor, vm, history):
        vm_id = self.pick_vm(vm)
        entity = self.model_vms.get(vm_id)
        response = self.call(actor, "GET", f"/vms/{vm_id}" + ("/history" if history else ""))
        what = f"{actor} reads VM {vm_id}" + (" history" if history else "")
        if entity is None or not self.may_read(actor, entity):
            self.expect(response, 404, what, "NOT_FOUND")
            return
        self.expect(response, 200, what)
        if not history:
            self.check_owned_body(response.json(), entity, what)

    @rule(actor=st.sampled_from(ACTORS), image_id=st.one_of(images, images, images, st.just(BOGUS)))
    def read_image(self, actor, image_id):
        entity = self.model_images.get(image_id)
        response = self.call(actor, "GET", f"/images/{image_id}")
        what = f"{actor} reads image {image_id}"
        if entity is None or entity.deleted or not self.may_read(actor, entity):
            self.expect(response, 404, what, "NOT_FOUND")
            return
        self.expect(response, 200, what)
        self.check_owned_body(response.json(), entity, what)

    def walk(self, actor: str, url: str, limit: int) -> list[dict]:
        """Every page of a listing, following `next`."""
        items: list[dict] = []
        after = 0
        for _ in range(1000):
            sep = "&" if "?" in url else "?"
            response = self.call(actor, "GET", f"{url}{sep}limit={limit}&after={after}")
            self.expect(response, 200, f"{actor} lists {url}")
            page = response.json()
            assert len(page["items"]) <= limit, page
            items += page["items"]
            if page["next"] is None:
                return items
            assert page["items"] and page["next"] == page["items"][-1]["id"], page
            after = page["next"]
        raise AssertionError(f"{url}: pagination never ends")

    def expected_vm_ids(self, actor: str, done: bool) -> set[int]:
        with self.world.store.read() as tx:
            states = {r[0]: r[1] for r in tx.execute("SELECT id, state FROM vms").all()}
        return {i for i, e in self.model_vms.items() if self.may_read(actor, e) and (states[i] == S.DONE) == done}

    def expected_image_ids(self, actor: str) -> set[int]:
        return {i for i, e in self.model_images.items() if not e.deleted and self.may_read(actor, e)}

    @rule(actor=st.sampled_from(ACTORS), limit=st.integers(1, 3), done=st.booleans())
    def page_through(self, actor, limit, done):
        vms = self.walk(actor, "/vms" + ("?state=DONE" if done else ""), limit)
        assert [v["id"] for v in vms] == sorted(self.expected_vm_ids(actor, done)), (actor, "vms", done)
        images = self.walk(actor, "/images", limit)
        assert [i["id"] for i in images] == sorted(self.expected_image_ids(actor)), (actor, "images")

    # -- after every step ------------------------------------------------------------------------
    @invariant()
    def every_user_lists_exactly_what_it_may_see(self):
        for actor in ACTORS:
            for url, expected, model in (("/vms", self.expected_vm_ids(actor, False), self.model_vms),
                                         ("/images", self.expected_image_ids(actor), self.model_images)):
                response = self.call(actor, "GET", f"{url}?limit=5000")
                self.expect(response, 200, f"{actor} lists {url}")
                listed = response.json()["items"]
                assert {item["id"] for item in listed} == expected, \
                    f"{actor} lists {url}: got {sorted(i['id'] for i in listed)}, may see {sorted(expected)}"
                for item in listed:
                    self.check_owned_body(item, model[item["id"]], f"{actor} lists {url}")

    @invariant()
    def the_database_holds_what_was_made_and_no_broken_state(self):
        store = self.world.store
        with store.read() as tx:
            vms = {vm.id: vm for vm in store.vms.where(tx)}
            vm_columns = {r[0]: r[1:] for r in tx.execute("SELECT id, owner_id, group_id, shared FROM vms").all()}
            images = {i.id: i for i in store.images.where(tx)}
            image_columns = {r[0]: r[1:] for r in tx.execute("SELECT id, owner_id, group_id, shared, public, state "
                                                             "FROM images").all()}
            orphans = store.leases.orphans(tx)
        # Nothing persisted that no request made; owners, groups, shared flags as created (body and columns).
        assert set(vms) == set(self.model_vms), (sorted(vms), sorted(self.model_vms))
        assert set(images) == {i for i, e in self.model_images.items() if not e.deleted}, sorted(images)
        for ident, entity in self.model_vms.items():
            owned = (self.uid.get(entity.owner, 0), self.gid[entity.owner], int(entity.shared))
            assert (vms[ident].owner_id, vms[ident].group_id, int(vms[ident].shared)) == owned, vms[ident]
            assert tuple(int(v) for v in vm_columns[ident]) == owned, (ident, vm_columns[ident])
        for ident, image in images.items():
            entity = self.model_images[ident]
            owned = (self.uid.get(entity.owner, 0), self.gid[entity.owner], int(entity.shared), int(entity.public))
            assert (image.owner_id, image.group_id, int(image.shared), int(image.public)) == owned, image
            assert tuple(int(v) for v in image_columns[ident][:4]) == owned, (ident, image_columns[ident])
            assert image.state == "READY" and image_columns[ident][4] == "READY", f"image {ident} is {image.state}"
            assert os.path.exists(image.path), f"image {ident}: {image.path} is missing"
        assert orphans == [], f"leases of DONE or vanished VMs: {orphans}"
        system = {self.system_ds}
        for vm in vms.values():
            assert not vm.error.startswith("internal error"), f"VM {vm.id}: {vm.error}"
            # Disks of VMs live on system datastores: the scheduler places a VM that keeps its disks
            # (stopped, resumed) only there, so one elsewhere would stay PENDING for good.
            assert vm.datastore_id in (None, *system), \
                f"VM {vm.id} in {vm.state} has its disks on datastore {vm.datastore_id}, not a system one"
            if vm.state != S.DONE:
                gone = [d["image_id"] for d in vm.disks if d["image_id"] not in images]
                assert not gone, f"VM {vm.id} in {vm.state} uses deleted image(s) {gone}"
            if vm.state == S.RUNNING:
                for disk in vm.disks:
                    assert disk.get("path") and os.path.exists(disk["path"]), \
                        f"VM {vm.id} is RUNNING but its disk {disk} is not on disk"


def test_random_api_sequences_keep_authorization_and_invariants(world):
    ctx = Context(world)
    with ctx.client:  # one event loop for every request, not one per request
        run_state_machine_as_test(lambda: ApiMachine(ctx), settings=SETTINGS)


# -- sequences the machine found, replayed as hypothesis printed them -----------------------------
@contextmanager
def machine(world):
    ctx = Context(world)
    with ctx.client:
        yield ApiMachine(ctx)


def step(state: ApiMachine, rule: str, **arguments: Any) -> Any:
    result = getattr(state, rule)(**arguments)
    state.every_user_lists_exactly_what_it_may_see()
    state.the_database_holds_what_was_made_and_no_broken_state()
    return result


NONE_OF_FOUR = (False, False, False, False)


# Was a manager bug: DELETE /images/{id} answered 409 IN_USE with details.vms naming VMs of other
# users the caller gets 404 for (core/actions/images.py).
def test_found_deleting_a_shared_image_names_vms_the_owner_may_not_see(world):
    with machine(world) as state:
        images = step(state, "start", shared=(False, True, False, False), persistent=NONE_OF_FOUR,
                      vm_shared=NONE_OF_FOUR, hold=(True, True, True, True)).values
        alices = images[2]  # the base image, then the admin's, alice's, carol's and bob's
        step(state, "create_vms", actor="carol", shared=False, count=1, disks=[alices], nics=[], hold=True,
             requirements="", steal=False)
        step(state, "owner_deletes_image", image_id=alices)


# Was a manager bug: the deploy action accepted an image datastore; the VM's disks went there, and
# once stopped and resumed it stayed PENDING for good (core/actions/vms.py checks the kind now).
def test_found_deploy_onto_an_image_datastore(world):
    with machine(world) as state:
        step(state, "start", shared=NONE_OF_FOUR, persistent=NONE_OF_FOUR, vm_shared=NONE_OF_FOUR,
             hold=NONE_OF_FOUR)
        step(state, "admin_acts", action="deploy", datastore="image", host="host1", how="success", vm=0)


# Was a manager bug: recover --success of a FAILED migration left the VM on its source host with a
# stale target (the transient MIGRATE case moved it to the target).
def test_found_recover_success_of_a_failed_migration(world):
    with machine(world) as state:
        step(state, "start", shared=NONE_OF_FOUR, persistent=NONE_OF_FOUR, vm_shared=NONE_OF_FOUR,
             hold=NONE_OF_FOUR)
        step(state, "controller_passes", passes=10)
        step(state, "host_fault", host="host1", operation="migrate")
        step(state, "host_fault", host="host2", operation="migrate")
        for host in ("host2", "host1"):  # whichever host the VM is not on
            step(state, "admin_acts", action="migrate", datastore=None, host=host, how="success", vm=0)
        step(state, "controller_passes", passes=1)
        step(state, "admin_acts", action="recover", datastore=None, host="host1", how="success", vm=0)
