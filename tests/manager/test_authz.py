"""Authorization, tokens and audit through the HTTP API, on both databases.

The route x role table is generated from the published OpenAPI spec: a new route without a rule in
core/authz.py, or a route that forgets the gate, fails here.
"""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from appliance.core import authz
from appliance.core.actions import Manager, PathPolicy
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM


class Wall:
    """A wall clock the test moves (token expiry)."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cloud(world):
    """An admin, an auditor, alice and carol (group "team") and bob (group "users"), each with a client."""
    wall = Wall()
    world.manager.env.wall = wall
    users = world.manager.users
    users.create_group(SYSTEM, "team")
    tokens = {"admin": users.create(SYSTEM, "root", role="admin")[1],
              "auditor": users.create(SYSTEM, "eve", role="auditor")[1],
              "alice": users.create(SYSTEM, "alice", group="team")[1],
              "carol": users.create(SYSTEM, "carol", group="team")[1],
              "bob": users.create(SYSTEM, "bob")[1]}
    app = create_app(world.manager)
    clients = {}
    for who, token in tokens.items():
        client = TestClient(app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {token}"
        clients[who] = client
    clients["world"], clients["wall"], clients["tokens"] = world, wall, tokens
    return clients


def operations(app) -> list[tuple[str, str, str]]:
    """(method, path, operation id) of every operation in the published spec."""
    spec = TestClient(app).get("/api/v1/openapi.json").json()
    return [(method.upper(), path, op["operationId"]) for path, item in spec["paths"].items()
            for method, op in item.items()]


def test_every_route_has_a_rule_and_every_rule_a_route(world):
    ops = {op for _, _, op in operations(create_app(world.manager))}
    assert ops - authz.PUBLIC <= set(authz.RULES), ops - authz.PUBLIC - set(authz.RULES)
    assert set(authz.RULES) <= ops, set(authz.RULES) - ops  # no stale rules


def test_the_api_refuses_to_start_with_an_unruled_route(world, monkeypatch):
    monkeypatch.delitem(authz.RULES, "list_vms")
    with pytest.raises(RuntimeError, match="list_vms"):
        create_app(world.manager)


@pytest.mark.parametrize("role", ["admin", "auditor", "alice"])
def test_route_by_role_table_from_the_spec(cloud, role):
    """Every operation, called by every role: 403 exactly where the table says the role may not."""
    role_name = {"admin": authz.ADMIN, "auditor": authz.AUDITOR, "alice": authz.USER}[role]
    client = cloud[role]
    checked = 0
    for method, path, operation in operations(client.app):
        if operation in authz.PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "999999", path)
        response = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
        allowed = role_name in authz.RULES[operation].roles
        if allowed:
            assert response.status_code != 403, (role, operation, response.text)
        else:
            assert response.status_code == 403, (role, operation, response.status_code, response.text)
            assert response.json()["error"]["code"] == "FORBIDDEN"
        checked += 1
    assert checked == len(authz.RULES)


def test_public_operations_need_no_token(world):
    client = TestClient(create_app(world.manager))
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/vms").status_code == 401


def _vm(client, image_id, **extra):
    response = client.post("/api/v1/vms", json={"name": "web", "memory": 64, "cpu": 0.1, "disks": [image_id],
                                                **extra})
    assert response.status_code == 201, response.text
    return response.json()["items"][0]


@pytest.fixture
def owned(cloud):
    """alice's private VM and image, alice's group-shared VM; bob's VM."""
    _, images, _, base = cloud["world"].basic()
    alice_image = cloud["alice"].post("/api/v1/images", json={"name": "alice-img", "datastore_id": images.id,
                                                              "size_mb": 1}).json()
    bob_image = cloud["bob"].post("/api/v1/images", json={"name": "bob-img", "datastore_id": images.id,
                                                          "size_mb": 1}).json()
    return {"images": images, "base": base, "alice_image": alice_image,
            "bob_image": bob_image,
            "alice_vm": _vm(cloud["alice"], alice_image["id"]),
            "alice_shared_vm": _vm(cloud["alice"], alice_image["id"], shared=True),
            "bob_vm": _vm(cloud["bob"], bob_image["id"])}


def test_a_user_never_sees_or_changes_another_users_vm(cloud, owned):
    bob, alice_vm = cloud["bob"], owned["alice_vm"]
    assert bob.get(f"/api/v1/vms/{alice_vm['id']}").status_code == 404
    assert bob.get(f"/api/v1/vms/{alice_vm['id']}/history").status_code == 404
    assert {vm["id"] for vm in bob.get("/api/v1/vms").json()["items"]} == {owned["bob_vm"]["id"]}
    for action in ("poweroff", "shutdown", "hold", "delete", "resubmit"):
        assert bob.post(f"/api/v1/vms/{alice_vm['id']}/action", json={"action": action}).status_code == 404
    assert bob.delete(f"/api/v1/vms/{alice_vm['id']}").status_code == 404
    assert cloud["alice"].get(f"/api/v1/vms/{alice_vm['id']}").json()["state"] == alice_vm["state"]
    assert bob.get(f"/api/v1/images/{owned['alice_image']['id']}").status_code == 404
    assert bob.delete(f"/api/v1/images/{owned['alice_image']['id']}").status_code == 404
    refused = bob.post("/api/v1/vms", json={"name": "steal", "disks": [owned["alice_image"]["id"]]})
    assert refused.status_code == 404  # cannot even use it as a disk


def test_a_group_shares_what_its_owner_shares_and_only_reads_it(cloud, owned):
    carol = cloud["carol"]
    visible = {vm["id"] for vm in carol.get("/api/v1/vms").json()["items"]}
    assert visible == {owned["alice_shared_vm"]["id"]}
    assert carol.get(f"/api/v1/vms/{owned['alice_shared_vm']['id']}").status_code == 200
    refused = carol.post(f"/api/v1/vms/{owned['alice_shared_vm']['id']}/action", json={"action": "hold"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert cloud["bob"].get(f"/api/v1/vms/{owned['alice_shared_vm']['id']}").status_code == 404


def test_the_auditor_reads_everything_and_changes_nothing(cloud, owned):
    eve = cloud["auditor"]
    assert len(eve.get("/api/v1/vms").json()["items"]) == 3
    assert eve.get("/api/v1/hosts").status_code == 200
    for method, url, body in (("POST", f"/api/v1/vms/{owned['bob_vm']['id']}/action", {"action": "hold"}),
                              ("DELETE", f"/api/v1/vms/{owned['bob_vm']['id']}", None),
                              ("POST", "/api/v1/vms", {"name": "x"}),
                              ("POST", "/api/v1/hosts", {"name": "h"})):
        assert eve.request(method, url, json=body).status_code == 403
    assert cloud["world"].manager.vms.get(SYSTEM, owned["bob_vm"]["id"]).state == owned["bob_vm"]["state"]


def test_users_may_not_pick_hosts_or_assert_recovery(cloud, owned):
    alice, vm = cloud["alice"], owned["alice_vm"]
    for body in ({"action": "deploy", "host_id": 1}, {"action": "migrate", "host_id": 1},
                 {"action": "recover", "how": "success"}):
        response = alice.post(f"/api/v1/vms/{vm['id']}/action", json=body)
        assert response.status_code == 403, (body, response.text)


def test_users_cannot_touch_infrastructure_or_people(cloud):
    alice = cloud["alice"]
    for method, url, body in (("POST", "/api/v1/hosts", {"name": "h", "uri": "test:///default"}),
                              ("POST", "/api/v1/users", {"name": "mallory", "role": "admin"}),
                              ("POST", "/api/v1/datastores", {"name": "d", "path": "/tmp"}),
                              ("GET", "/api/v1/hosts", None), ("GET", "/api/v1/users", None),
                              ("GET", "/api/v1/audit", None)):
        assert alice.request(method, url, json=body).status_code == 403, (method, url)


# -- tokens ---------------------------------------------------------------------------------------
def test_tokens_are_named_listed_expire_and_are_revoked(cloud):
    alice, wall = cloud["alice"], cloud["wall"]
    made = alice.post("/api/v1/tokens", json={"name": "ci", "expires_in": 3600})
    assert made.status_code == 201
    secret, token = made.json()["secret"], made.json()["token"]
    assert token["expires_at"] == pytest.approx(wall.now + 3600)
    listed = alice.get("/api/v1/tokens").json()["items"]
    assert {t["name"] for t in listed} == {"initial", "ci"} and secret not in str(listed)
    other = TestClient(alice.app, raise_server_exceptions=False)
    other.headers["Authorization"] = f"Bearer {secret}"
    assert other.get("/api/v1/whoami").json()["name"] == "alice"
    wall.now += 3601
    assert other.get("/api/v1/whoami").status_code == 401
    again = cloud["admin"].post("/api/v1/tokens", json={"name": "ci2", "expires_in": 0}).json()
    other.headers["Authorization"] = f"Bearer {again['secret']}"
    wall.now += 20 * 365 * 86400
    assert other.get("/api/v1/whoami").status_code == 200  # 0: never expires (administrators only)
    assert cloud["admin"].delete(f"/api/v1/tokens/{again['token']['id']}").status_code == 204
    assert other.get("/api/v1/whoami").status_code == 401


def test_a_user_cannot_see_revoke_or_mint_other_users_tokens(cloud):
    bob_tokens = cloud["bob"].get("/api/v1/tokens").json()["items"]
    assert cloud["alice"].delete(f"/api/v1/tokens/{bob_tokens[0]['id']}").status_code == 404
    assert cloud["alice"].get(f"/api/v1/tokens?user_id={bob_tokens[0]['user_id']}").status_code == 403
    minted = cloud["alice"].post("/api/v1/tokens", json={"name": "x", "user_id": bob_tokens[0]["user_id"]})
    assert minted.status_code == 403
    assert cloud["bob"].get("/api/v1/whoami").status_code == 200
    assert len(cloud["admin"].get("/api/v1/tokens").json()["items"]) == 5


def test_a_deleted_user_token_stops_working(cloud):
    bob_id = cloud["bob"].get("/api/v1/whoami").json()["id"]
    assert cloud["admin"].delete(f"/api/v1/users/{bob_id}").status_code == 204
    assert cloud["bob"].get("/api/v1/whoami").status_code == 401
    tokens = cloud["admin"].get(f"/api/v1/tokens?user_id={bob_id}").json()["items"]
    assert tokens and all(t["revoked_at"] is not None for t in tokens)


def test_a_token_whose_user_row_vanished_is_refused(cloud):
    """A user row removed behind the API's back (a restored dump): its unrevoked token gets 401, not 500."""
    carol_id = cloud["carol"].get("/api/v1/whoami").json()["id"]
    world = cloud["world"]
    with world.store.transaction() as tx:
        world.store.users.delete(tx, carol_id)
    response = cloud["carol"].get("/api/v1/whoami")
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED"


def test_the_last_administrator_cannot_be_deleted(world):
    admin, _, _ = world.manager.users.create(SYSTEM, "only", role="admin")
    from appliance.core.errors import CoreError

    with pytest.raises(CoreError) as error:
        world.manager.users.delete(SYSTEM, admin.id)
    assert error.value.code == "IN_USE"


# -- audit ----------------------------------------------------------------------------------------
def test_every_change_is_audited_without_secrets(cloud):
    admin, alice = cloud["admin"], cloud["alice"]
    cloud["wall"].now += 100
    since = cloud["wall"].now
    made = admin.post("/api/v1/users", json={"name": "dave"})
    minted = alice.post("/api/v1/tokens", json={"name": "script"})
    alice.post("/api/v1/hosts", json={"name": "h"})  # refused: recorded too
    alice.get("/api/v1/vms")  # a read: not recorded
    records = admin.get(f"/api/v1/audit?since={since}").json()["items"]
    assert [(r["user"], r["operation"], r["status"], r["code"]) for r in records] == [
        ("root", "create_user", 201, "OK"), ("alice", "create_token", 201, "OK"),
        ("alice", "create_host", 403, "FORBIDDEN")]
    assert records[0]["entity"] == "user" and records[0]["entity_id"] == made.json()["user"]["id"]
    text = str(admin.get("/api/v1/audit").json())
    assert made.json()["token"] not in text and minted.json()["secret"] not in text
    for token in cloud["tokens"].values():
        assert token not in text
    assert admin.get(f"/api/v1/audit?since={cloud['wall'].now + 1}").json()["items"] == []


def test_a_request_with_a_bad_token_is_audited_as_unauthorized(cloud):
    client = TestClient(cloud["admin"].app, raise_server_exceptions=False)
    client.post("/api/v1/vms", json={"name": "x"}, headers={"Authorization": "Bearer forged"})
    last = cloud["admin"].get("/api/v1/audit?limit=5000").json()["items"][-1]
    assert (last["user"], last["status"], last["code"]) == ("-", 401, "UNAUTHORIZED")
    assert "forged" not in str(last)


def test_an_administrators_public_image_is_usable_by_everyone_and_only_admins_publish(cloud):
    _, images, _, base = cloud["world"].basic()  # base is public
    for who in ("alice", "bob"):
        assert cloud[who].get(f"/api/v1/images/{base.id}").status_code == 200
        _vm(cloud[who], base.id)
        assert cloud[who].delete(f"/api/v1/images/{base.id}").status_code == 403  # use, never change
    refused = cloud["alice"].post("/api/v1/images", json={"name": "mine", "datastore_id": images.id, "size_mb": 1,
                                                          "public": True})
    assert refused.status_code == 403


# -- found by a hostile-user probe ----------------------------------------------------------------
def test_no_user_copies_another_users_image_or_disk_by_importing_it(cloud, tmp_path):
    """Import roots used to include the datastores: carol imported bob's private image by its path."""
    world = cloud["world"]
    _, images, system, base = world.basic()
    world.manager.env.import_paths = PathPolicy([str(tmp_path)])  # even roots that contain the datastores
    private = cloud["bob"].post("/api/v1/images", json={"name": "bob-secret", "datastore_id": images.id,
                                                        "size_mb": 1}).json()
    bob_vm = _vm(cloud["bob"], base.id)
    world.settle()
    disk = world.manager.vms.get(SYSTEM, bob_vm["id"]).disks[0]["path"]
    for source in (private["path"], disk):
        stolen = cloud["carol"].post("/api/v1/images", json={"name": "stolen", "datastore_id": images.id,
                                                             "source": source})
        assert stolen.status_code == 422 and "datastore" in stolen.json()["error"]["message"], stolen.text


def test_a_user_learns_how_many_vms_use_its_image_not_which(cloud):
    _, images, _, _ = cloud["world"].basic()
    shared = cloud["alice"].post("/api/v1/images", json={"name": "team-img", "datastore_id": images.id,
                                                         "size_mb": 1, "shared": True}).json()
    _vm(cloud["carol"], shared["id"])  # carol, same group, uses it in her private VM
    refused = cloud["alice"].delete(f"/api/v1/images/{shared['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["details"] == {"count": 1}


def test_another_users_shared_persistent_image_cannot_be_taken(cloud):
    _, images, _, _ = cloud["world"].basic()
    mine = cloud["alice"].post("/api/v1/images", json={"name": "alice-data", "datastore_id": images.id,
                                                       "size_mb": 1, "shared": True, "persistent": True}).json()
    taken = cloud["carol"].post("/api/v1/vms", json={"name": "x", "disks": [mine["id"]], "hold": True})
    assert taken.status_code == 403
    _vm(cloud["alice"], mine["id"], hold=True)


def test_user_tokens_expire_within_a_year_and_are_not_flooded(cloud, monkeypatch):
    from appliance.core.actions import users

    assert cloud["alice"].post("/api/v1/tokens", json={"name": "forever", "expires_in": 0}).status_code == 422
    assert cloud["alice"].post("/api/v1/tokens", json={"name": "long", "expires_in": 400 * 86400}).status_code == 422
    assert cloud["admin"].post("/api/v1/tokens", json={"name": "forever", "expires_in": 0}).status_code == 201
    monkeypatch.setattr(users, "MAX_LIVE_TOKENS", 3)
    answers = [cloud["alice"].post("/api/v1/tokens", json={"name": f"t{i}"}).status_code for i in range(4)]
    assert answers == [201, 201, 409, 409]  # she had her initial token already


def test_a_huge_body_is_refused_before_anything_reads_it(cloud):
    from appliance.core.api import BodyLimit

    body = b'{"name": "' + b"x" * (BodyLimit.MAX_BODY + 10) + b'"}'
    client = TestClient(cloud["admin"].app, raise_server_exceptions=False)
    refused = client.post("/api/v1/images", content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 413


def test_a_refused_request_with_an_id_too_large_for_any_column_is_still_audited(cloud):
    """The probe's case: the refusal (422) was answered, but its audit row failed (OverflowError)."""
    answer = cloud["alice"].post("/api/v1/vms/9223372036854775808/disks/0/flatten", json={})
    assert answer.status_code == 422
    last = cloud["admin"].get("/api/v1/audit?limit=5000").json()["items"][-1]
    assert last["path"].startswith("/api/v1/vms/9223372036854775808") and last["status"] == 422


def test_control_characters_in_a_path_cannot_forge_audit_lines(cloud):
    cloud["alice"].post("/api/v1/%0a2026-01-01%20root%20DELETE%20/api/v1/users/2%20204")
    last = cloud["admin"].get("/api/v1/audit?limit=5000").json()["items"][-1]
    assert "\n" not in last["path"] and "\\x0a" in last["path"]
