"""The HTTP API over both databases: auth, pagination, and bad input that persists nothing."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from appliance.core.actions import Manager, PathPolicy
from appliance.core.api import create_app
from appliance.core.authz import SYSTEM


@pytest.fixture
def api(world):
    _, admin_token = world.manager.users.create(SYSTEM, "admin", role="admin")[:2]
    _, user_token = world.manager.users.create(SYSTEM, "alice")[:2]
    client = TestClient(create_app(world.manager), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    client.user_token = user_token
    client.world = world
    return client


def count_vms(api) -> int:
    return len(api.get("/api/v1/vms?limit=5000").json()["items"])


def test_requests_without_a_valid_token_are_refused(api):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        response = api.get("/api/v1/hosts", headers={**headers} if headers else {"Authorization": ""})
        assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED"


def test_only_an_admin_creates_users_and_the_token_works_once_shown(api):
    refused = api.post("/api/v1/users", json={"name": "bob"}, headers={"Authorization": f"Bearer {api.user_token}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    created = api.post("/api/v1/users", json={"name": "bob"}).json()
    assert api.get("/api/v1/datastores", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 200
    assert "token" not in api.get("/api/v1/hosts").text


def test_create_and_page_through_vms(api):
    _, _, _, image = api.world.basic()
    created = api.post("/api/v1/vms", json={"name": "web", "memory": 64, "cpu": 0.1, "disks": [image.id],
                                            "count": 25})
    assert created.status_code == 201 and len(created.json()["items"]) == 25
    seen, after = [], 0
    while True:
        page = api.get(f"/api/v1/vms?after={after}&limit=10").json()
        seen += [vm["name"] for vm in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"web-{i}" for i in range(25)]


@pytest.mark.parametrize("method,path,body,status,code", [
    ("post", "/api/v1/vms", {"name": "x", "requirements": "FREE_CPU >"}, 422, "EXPRESSION_INVALID"),
    ("post", "/api/v1/vms", {"name": "x", "disks": [999]}, 404, "NOT_FOUND"),
    ("post", "/api/v1/vms", {"name": "x", "bogus": 1}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vms", {"name": "bad\nname"}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vms", {"name": "x", "memory": "512"}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vms", {"name": "x", "cpu": -1}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vms", {"name": "x", "count": 100000}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vms/1/action", {"action": "reboot"}, 422, "REQUEST_INVALID"),
    ("get", f"/api/v1/vms/{2 ** 70}", None, 422, "REQUEST_INVALID"),
    ("get", "/api/v1/vms/1", None, 404, "NOT_FOUND"),
    ("get", "/api/v1/nothing-here", None, 404, "NOT_FOUND"),
    ("post", "/api/v1/datastores", {"name": "d", "path": "/no/such/dir"}, 422, "VALUE_INVALID"),
    ("post", "/api/v1/datastores", {"name": "d", "path": "relative/dir"}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/hosts", {"name": "h", "uri": "test:///default; rm -rf /"}, 422, "REQUEST_INVALID"),
    ("post", "/api/v1/vnets", {"name": "n", "bridge": "br0", "ranges": [{"first": "10.0.0.999", "size": 2}]},
     422, "VALUE_INVALID"),
])
def test_bad_input_is_a_coded_4xx_and_persists_nothing(api, method, path, body, status, code):
    before = (count_vms(api), api.get("/api/v1/datastores").json(), api.get("/api/v1/hosts").json(),
              api.get("/api/v1/vnets").json())
    response = getattr(api, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    after = (count_vms(api), api.get("/api/v1/datastores").json(), api.get("/api/v1/hosts").json(),
             api.get("/api/v1/vnets").json())
    assert after == before


def test_an_action_from_the_wrong_state_is_a_409_naming_the_allowed_states(api):
    _, _, _, image = api.world.basic()
    vm = api.post("/api/v1/vms", json={"name": "x", "disks": [image.id], "hold": True}).json()["items"][0]
    response = api.post(f"/api/v1/vms/{vm['id']}/action", json={"action": "shutdown"})
    assert response.status_code == 409
    assert response.json()["error"]["details"]["allowed_from"] == ["RUNNING"]


def test_duplicate_names_are_a_409(api):
    api.world.basic()
    response = api.post("/api/v1/hosts", json={"name": "host1", "driver": "fake"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "NAME_TAKEN"


def test_openapi_spec_is_published(api):
    spec = api.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "appliance manager"
    assert {"/api/v1/vms", "/api/v1/vms/{ident}/action", "/api/v1/hosts"} <= set(spec["paths"])


def test_datastores_and_imports_only_from_allowed_directories(world, tmp_path):
    from appliance.core.errors import CoreError

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape").symlink_to("/etc")
    policy = PathPolicy([str(allowed)])
    world.manager.env.datastore_paths = world.manager.env.import_paths = policy
    for path in ("/", "/etc", str(allowed / "escape")):
        with pytest.raises(CoreError) as error:
            world.manager.datastores.create(SYSTEM, "bad", path)
        assert error.value.code == "VALUE_INVALID" and error.value.details["allowed"] == [str(allowed)]
    (allowed / "images").mkdir()
    images = world.manager.datastores.create(SYSTEM, "images", str(allowed / "images"), kind="image")
    with pytest.raises(CoreError):
        world.manager.images.create(SYSTEM, "shadow", images.id, source="/etc/shadow")
    assert world.manager.images.page(SYSTEM, 0, 10) == ([], None)


def test_an_upgrade_killed_at_any_step_keeps_every_user_and_token(request, tmp_path, monkeypatch):
    """Migration 2 (roles, tokens, owners) on a version-1 database, killed after each of its steps:
    MySQL commits each DDL statement by itself, so the next start must resume, not fail or lose."""
    import hashlib
    import json

    from appliance.core import db as dbmod
    from appliance.core.db import SqliteDatabase, migrate
    from appliance.core.pools import Store

    class Killed(Exception):
        pass

    every = list(dbmod.MIGRATIONS)
    version_two = len(every[1][1])
    for kind in ("sqlite", "mariadb"):
        for crash_at in range(version_two):
            db = SqliteDatabase(str(tmp_path / f"m{crash_at}.db")) if kind == "sqlite" else \
                request.getfixturevalue("mariadb").database()
            monkeypatch.setattr(dbmod, "MIGRATIONS", every[:1])
            migrate(db)
            with db.transaction() as tx:  # what release 1 wrote
                for name, admin in (("root", 1), ("alice", 0)):
                    tx.execute("INSERT INTO users (name, token_hash, admin, body) VALUES (?, ?, ?, ?)",
                               (name, hashlib.sha256(f"{name}-token".encode()).hexdigest(), admin, "{}"))
                    ident = tx.lastrowid
                    tx.execute("UPDATE users SET body = ? WHERE id = ?",
                               (json.dumps({"id": ident, "name": name, "admin": bool(admin)}), ident))
            monkeypatch.setattr(dbmod, "MIGRATIONS", every)

            def crash(version, index, at=crash_at):
                if version == 2 and index == at:
                    raise Killed()
            with pytest.raises(Killed):
                migrate(db, after_step=crash)
            db.close()
            assert migrate(db) == len(every) - 1, (kind, crash_at)  # 2, resumed, and any after it
            manager = Manager(Store(db), lambda ds: None)
            root, alice = manager.users.authenticate("root-token"), manager.users.authenticate("alice-token")
            assert (root.role, alice.role) == ("admin", "user"), (kind, crash_at)
            assert json.loads(manager.users.get(SYSTEM, alice.user_id).body())["role"] == "user"
            db.close()
