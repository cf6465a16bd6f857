"""schemathesis against the published OpenAPI spec of a running manager, as each role: no request may get a 5xx.

One `appliance serve` per database. Before fuzzing, the admin seeds a host, datastores, a network, an
image, a user and an auditor (their tokens come from POST /users); the user makes an image and a VM of
its own. Then schemathesis runs as the user, the auditor and the admin, in that order (the admin's run
deletes things). Each run is checked through its JSON report, not just its exit code:

- no failure and no error, every selected operation tested, test cases generated;
- from the recorded exchanges (HAR): every operation core/authz.py allows the role got past the gate
  (an answer other than 401/403) at least once, every operation it forbids got 403 and never a 2xx,
  and the token stayed valid to the end;
- a few operations each role may call were accepted (2xx) at least once.

Revoking tokens and deleting users would revoke the run's own token (an admin may also delete itself
once the run made a second admin): those two operations get a short admin run of their own, last.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from appliance.core import authz
from tests.conftest import require_tool
from tests.manager.test_serve_real import Serve, serve  # noqa: F401  (the fixture)

SELF_DESTRUCTIVE = ("revoke_token", "delete_user")
# Operations each role must get a 2xx from at least once (the run reached the actions behind the gate).
MUST_ACCEPT = {
    "user": {"GET /api/v1/vms", "GET /api/v1/images", "POST /api/v1/vms", "POST /api/v1/tokens"},
    "auditor": {"GET /api/v1/vms", "GET /api/v1/hosts", "GET /api/v1/audit", "GET /api/v1/users"},
    "admin": {"GET /api/v1/vms", "GET /api/v1/hosts", "POST /api/v1/vms", "POST /api/v1/clusters",
              "POST /api/v1/users"},
}


def api(serve: Serve, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{serve.port}/api/v1{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def made(serve: Serve, path: str, token: str, body: dict) -> dict:
    status, answer = api(serve, "POST", path, token, body)
    assert status == 201, (path, body, status, answer)
    return answer


def seed(serve: Serve, tmp: Path, admin: str) -> dict[str, str]:
    """Entities for the runs to find, and a token per role."""
    (tmp / "images").mkdir()
    (tmp / "system").mkdir()
    made(serve, "/hosts", admin, {"name": "hv1", "driver": "fake"})
    images = made(serve, "/datastores", admin, {"name": "images", "path": str(tmp / "images"), "kind": "image"})
    made(serve, "/datastores", admin, {"name": "system", "path": str(tmp / "system")})
    net = made(serve, "/vnets", admin, {"name": "net", "bridge": "br0", "ranges": [{"first": "10.0.0.1",
                                                                                     "size": 64}]})
    made(serve, "/images", admin, {"name": "base", "datastore_id": images["id"], "size_mb": 1})
    tokens = {"admin": admin}
    for role in ("user", "auditor"):
        tokens[role] = made(serve, "/users", admin, {"name": f"fuzz-{role}", "role": role})["token"]
    mine = made(serve, "/images", tokens["user"], {"name": "mine", "datastore_id": images["id"], "size_mb": 1,
                                                   "shared": True})
    made(serve, "/vms", tokens["user"], {"name": "mine", "cpu": 0.1, "memory": 16, "disks": [mine["id"]],
                                         "nics": [net["id"]]})
    return tokens


def operations(serve: Serve, token: str) -> dict[str, str]:
    """'METHOD /path' (as schemathesis names it) -> operation id, from the published spec."""
    status, spec = api(serve, "GET", "/openapi.json", token)
    assert status == 200
    return {f"{method.upper()} {path}": op["operationId"] for path, item in spec["paths"].items()
            for method, op in item.items()}


def statuses(har: Path, ops: dict[str, str]) -> dict[str, list[int]]:
    """'METHOD /path' -> the status of every recorded answer to it."""
    templates = []
    for name in ops:
        method, path = name.split(" ", 1)
        templates.append((method, re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path))), name))
    found: dict[str, list[int]] = {name: [] for name in ops}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, path = entry["request"]["method"], urlsplit(entry["request"]["url"]).path
        for name in (n for m, pattern, n in templates if m == method and pattern.fullmatch(path)):
            found[name].append(entry["response"]["status"])
            break
    return found


def schemathesis_run(serve: Serve, tmp: Path, label: str, token: str, *options: str) -> dict:
    """One schemathesis run; its JSON report (with the HAR's path), after the checks every run must pass."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    report, har = tmp / f"schemathesis-{label}.json", tmp / f"schemathesis-{label}.har"
    result = subprocess.run(
        [str(schemathesis), "run", f"http://127.0.0.1:{serve.port}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
         "--generation-deterministic", "--no-color", "--report", "json,har",
         "--report-json-path", str(report), "--report-har-path", str(har), *options],
        capture_output=True, text=True, timeout=600, cwd=tmp)
    summary = f"{label} run:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert result.returncode == 0, summary
    data = json.loads(report.read_text())
    assert data["complete"] and data["stop_reason"] == "completed", summary
    assert data["failures"] == [] and data["errors"] == [], summary
    cases = data["test_cases"]
    assert cases["generated"] > 0 and cases["with_failures"] == 0 and cases["errored"] == 0, (cases, summary)
    ops = data["operations"]
    assert ops["selected"] > 0 and ops["tested"] == ops["selected"] and ops["errored"] == 0, (ops, summary)
    data["har"] = har
    return data


def accepted(data: dict) -> set[str]:
    return {op for op, phases in data["valid_rates"].items() if sum(p["accepted"] for p in phases.values())}


def test_no_generated_request_gets_a_server_error(serve, tmp_path):  # noqa: F811
    require_tool("qemu-img")
    require_tool(str(Path(sys.executable).with_name("schemathesis")))
    admin = (serve.home / "admin.token").read_text().strip()
    tokens = seed(serve, tmp_path, admin)
    ops = operations(serve, admin)
    runs = {"user": ("--max-examples", "10", "--phases", "fuzzing,stateful"),
            "auditor": ("--max-examples", "10", "--phases", "fuzzing,stateful"),
            "admin": ("--max-examples", "15")}
    for role, options in runs.items():
        excluded = SELF_DESTRUCTIVE if role == "admin" else SELF_DESTRUCTIVE[:1]
        data = schemathesis_run(serve, tmp_path, role, tokens[role], *options,
                                *(f"--exclude-operation-id={op}" for op in excluded))
        assert data["operations"]["selected"] == len(ops) - len(excluded), data["operations"]
        answers = statuses(data["har"], ops)
        forbidden = {name for name, op in ops.items() if op in authz.RULES and role not in authz.RULES[op].roles}
        for name, op in ops.items():
            if op in excluded:
                assert not answers[name], (role, name)
            elif name in forbidden:
                assert 403 in answers[name] and not any(200 <= s < 300 for s in answers[name]), \
                    (role, name, sorted(set(answers[name])))
            else:
                assert any(s not in (401, 403) for s in answers[name]), (role, name, sorted(set(answers[name])))
        assert set(data["warnings"]["missing_auth"]) <= forbidden, (role, data["warnings"]["missing_auth"])
        assert MUST_ACCEPT[role] <= accepted(data), (role, MUST_ACCEPT[role] - accepted(data))
        status, me = api(serve, "GET", "/whoami", tokens[role])
        assert status == 200 and me["role"] == role, (role, status, me)
    # Last: the two operations that can take the run's own token away.
    data = schemathesis_run(serve, tmp_path, "admin-destructive", admin, "--max-examples", "10",
                            *(f"--include-operation-id={op}" for op in SELF_DESTRUCTIVE))
    assert data["operations"]["selected"] == len(SELF_DESTRUCTIVE), data["operations"]
