"""The runbooks' procedures, done as an operator would, on both databases."""
from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from appliance.core.actions.vms import VmSpec
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM
from appliance.core.entities import VmState as S

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"


def test_orphan_disks_runbook_a_quarantined_vm_disk_is_put_back(world):
    """orphan-disks.md: the database went back to an older dump; the sweep moved a live VM's disks
    away; `mv` puts them back and the VM runs on them."""
    assert "mv <datastore>/quarantine/" in (RUNBOOKS / "orphan-disks.md").read_text()
    _, _, system, image = world.basic()
    vm = world.manager.vms.create(SYSTEM, VmSpec("db", cpu=0.5, memory=256, disks=[image.id]))[0]
    world.settle()
    disk = Path(world.vm(vm.id).disks[0]["path"])
    disk.write_bytes(disk.read_bytes() + b"")  # the VM's data lives here
    with world.store.transaction() as tx:  # the restored dump had the VM already deleted
        tx.execute("UPDATE vms SET state = ? WHERE id = ?", (S.DONE, vm.id))
    decisions = world.controller.sweep_orphans()
    moved = [d for d in decisions if d.startswith(f"moved orphan disks of VM {vm.id}")]
    assert moved and not disk.exists()
    quarantined = Path(moved[0].rsplit(" to ", 1)[1])
    shutil.move(str(quarantined), str(disk.parent))  # the runbook's mv
    with world.store.transaction() as tx:  # the right dump brings the VM back
        tx.execute("UPDATE vms SET state = ? WHERE id = ?", (S.RUNNING, vm.id))
    assert disk.exists() and world.backend.verify(str(disk), image.path)
    world.controller.sweep_orphans()
    assert disk.exists()


def test_access_runbook_a_leaked_token_is_found_revoked_and_its_use_audited(world):
    """access.md: list the user's tokens, revoke the leaked one, read what it did."""
    users = world.manager.users
    _, admin_token, _ = users.create(SYSTEM, "root", role="admin")
    _, alice_token, _ = users.create(SYSTEM, "alice")
    app = create_app(world.manager)
    admin = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {admin_token}"})
    alice = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {alice_token}"})
    leaked = alice.post("/api/v1/tokens", json={"name": "ci-job", "expires_in": 86400}).json()
    thief = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {leaked['secret']}"})
    assert thief.post("/api/v1/vms", json={"name": "miner", "hold": True}).status_code == 201
    alice_id = alice.get("/api/v1/whoami").json()["id"]
    listed = admin.get(f"/api/v1/tokens?user_id={alice_id}").json()["items"]  # step 1
    token_id = next(t["id"] for t in listed if t["name"] == "ci-job")
    assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204  # step 2
    assert thief.get("/api/v1/vms").status_code == 401
    assert alice.get("/api/v1/whoami").status_code == 200  # her other tokens still work
    done = [r for r in admin.get("/api/v1/audit").json()["items"] if r["user"] == "alice"]  # step 3
    assert ("create_vms", 201) in [(r["operation"], r["status"]) for r in done]
    vm_id = alice.get("/api/v1/vms").json()["items"][0]["id"]
    assert alice.delete(f"/api/v1/vms/{vm_id}").status_code == 200
    history = alice.get(f"/api/v1/vms/{vm_id}/history").json()
    assert history[-1]["reason"] == "alice: delete"


def test_access_runbook_a_person_who_leaves_is_removed_with_their_tokens(world):
    _, _, _, image = world.basic()
    user, token, _ = world.manager.users.create(SYSTEM, "bob")
    bob = world.manager.users.authenticate(token)
    vm = world.manager.vms.create(bob, VmSpec("x", cpu=0.5, memory=256, disks=[image.id], hold=True))[0]
    admin_token = world.manager.users.create(SYSTEM, "root", role="admin")[1]
    admin = TestClient(create_app(world.manager), raise_server_exceptions=False,
                       headers={"Authorization": f"Bearer {admin_token}"})
    refused = admin.delete(f"/api/v1/users/{user.id}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "IN_USE"
    admin.delete(f"/api/v1/vms/{vm.id}")
    world.settle()
    assert world.vm(vm.id).state == S.DONE
    assert admin.delete(f"/api/v1/users/{user.id}").status_code == 204
    assert world.manager.users.authenticate(token) is None
