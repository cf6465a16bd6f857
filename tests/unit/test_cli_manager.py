"""The manager's CLI (host, vm, user, group, audit, ...): flags, requests, output, coded errors.

A small fake manager on 127.0.0.1 answers what each test scripts and records every request, so the
tests see exactly what the CLI sends and how it renders the answer; nothing else is contacted.
"""
from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from typer.testing import CliRunner

from appliance.cli import app
from appliance.cli_manager import VM_STATES
from appliance.core.reports import ExitCode

runner = CliRunner()
SECRET = "test-token-0123456789"
T0 = int(datetime.datetime(2025, 11, 29, 10, tzinfo=datetime.timezone.utc).timestamp())  # 2025-11-29T10:00:00Z


class FakeManager:
    """Answers scripted per (method, path); everything else is the manager's 404 envelope."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append({"method": self.command, "path": parts.path, "query": dict(parse_qsl(parts.query)),
                                      "body": json.loads(raw) if raw else None,
                                      "auth": self.headers.get("Authorization")})
                queue = fake.answers.get((self.command, parts.path.removeprefix("/api/v1")))
                status, body = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else \
                    (404, {"error": {"code": "NOT_FOUND", "message": "no such route", "details": {}}})
                payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        """Script an answer; several for the same route are given in turn (the last one repeats)."""
        self.answers.setdefault((method, path), []).append((status, body))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def manager(monkeypatch, token_file):
    fake = FakeManager()
    for name in ("APPLIANCE_CA", "APPLIANCE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APPLIANCE_URL", fake.url)
    monkeypatch.setenv("APPLIANCE_TOKEN_FILE", str(token_file))
    yield fake
    fake.stop()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def reports(result) -> list[dict[str, Any]]:
    document = json.loads(result.stdout)
    assert document["ok"] is False
    return document["reports"]


def error(code: str, message: str = "refused", **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# -- 1. a KEY=VALUE flag without '=' is a coded usage error, not a traceback ------------------------------------
def test_context_without_equals_is_a_coded_error_naming_flag_value_and_fix(manager):
    result = invoke("vm", "create", "x", "--context", "FOO")
    assert result.exit_code == ExitCode.USAGE
    assert "Traceback" not in result.output
    assert "--context: 'FOO' has no '='" in result.stderr and "[FLAG_INVALID]" in result.stderr
    assert "fix: write it as --context FOO=VALUE" in result.stderr
    assert manager.requests == []  # refused before anything was sent


def test_context_error_in_json_and_every_bad_pair_reported_at_once(manager):
    result = invoke("vm", "create", "x", "--context", "FOO", "--context", "1BAD=x", "--context", "OK=1", "--json")
    assert result.exit_code == ExitCode.USAGE
    found = reports(result)
    assert [(r["code"], r["path"], r["value"]) for r in found] == [("FLAG_INVALID", "--context", "FOO"),
                                                                  ("FLAG_INVALID", "--context", "1BAD=x")]
    assert all(r["fix"] for r in found)


# -- 2. attribute values stay strings unless typed -------------------------------------------------------------
def test_attr_values_stay_strings(manager):
    manager.answer("POST", "/hosts", 201, {"id": 1, "name": "kvm1"})
    result = invoke("host", "create", "kvm1", "--attr", "VERSION=1.10", "--attr", "ZONE=007", "--attr", "MAC=1e3")
    assert result.exit_code == 0, result.output
    assert manager.requests[0]["body"]["attributes"] == {"VERSION": "1.10", "ZONE": "007", "MAC": "1e3"}


def test_attr_explicit_types(manager):
    manager.answer("POST", "/datastores", 201, {"id": 1, "name": "fast"})
    result = invoke("datastore", "create", "fast", "--path", "/srv/ds", "--attr", "CORES:int=8",
                    "--attr", "LOAD:float=1.5", "--attr", "GPU:bool=true", "--attr", "OLD:bool=no",
                    "--attr", "TAG:str=42", "--attr", "EMPTY=")
    assert result.exit_code == 0, result.output
    assert manager.requests[0]["body"]["attributes"] == {"CORES": 8, "LOAD": 1.5, "GPU": True, "OLD": False,
                                                         "TAG": "42", "EMPTY": ""}


def test_datastore_params_are_typed_by_the_backends_declarations(manager):
    manager.answer("POST", "/datastores", 201, {"id": 1, "name": "d"})
    result = invoke("datastore", "create", "d", "--path", "/srv/d", "--backend", "dummy", "--param", "size_mb=2048",
                    "--param", "verbs=clone,capacity")
    assert result.exit_code == 0, result.output
    body = manager.requests[0]["body"]
    assert (body["backend"], body["params"]) == ("dummy", {"size_mb": 2048, "verbs": "clone,capacity"})


def test_a_datastore_param_of_the_wrong_type_is_refused_before_any_request(manager):
    result = invoke("datastore", "create", "d", "--path", "/srv/d", "--backend", "dummy", "--param", "size_mb=lots",
                    "--json")
    assert result.exit_code == ExitCode.USAGE
    (report,) = reports(result)
    assert (report["code"], report["path"], report["value"]) == ("FLAG_INVALID", "--param", "size_mb=lots")
    assert manager.requests == []


def test_datastore_backends_lists_verbs_and_parameters(manager):
    manager.answer("GET", "/datastore-backends", 200, {"items": [
        {"name": "dummy", "summary": "descriptors only", "verbs": ["clone", "delete"], "source": "file",
         "params": [{"name": "size_mb", "type": "int", "required": False, "default": 1, "help": ""}]}]})
    result = invoke("datastore", "backends")
    assert result.exit_code == 0, result.output
    assert "dummy" in result.output and "clone,delete" in result.output and "size_mb:int" in result.output


@pytest.mark.parametrize("pair", ["CORES:int=eight", "LOAD:float=nan", "GPU:bool=maybe", "MAC:hex=1e3",
                                  "=5", "ZONE", "1X=1"])
def test_attr_bad_values_are_coded_errors(manager, pair):
    result = invoke("host", "create", "kvm1", "--attr", pair, "--json")
    assert result.exit_code == ExitCode.USAGE
    (report,) = reports(result)
    assert (report["code"], report["path"], report["value"]) == ("FLAG_INVALID", "--attr", pair)
    assert manager.requests == []


def test_attr_given_twice(manager):
    result = invoke("host", "create", "kvm1", "--attr", "ZONE=1", "--attr", "ZONE:int=2", "--json")
    assert result.exit_code == ExitCode.USAGE
    assert [r["value"] for r in reports(result)] == ["ZONE:int=2"] and manager.requests == []


def test_string_attributes_still_compare_as_numbers_in_requirements():
    from appliance.core.expr import compile_requirement

    host = {"FREE_CPU": "80", "ZONE": "007", "VERSION": "1.10"}
    assert compile_requirement("FREE_CPU > 60 & ZONE > 5")(host) is True
    assert compile_requirement('VERSION = "1.10"')(host) is True  # a float would have made this 1.1


# -- 3. --state is one of the VM states ------------------------------------------------------------------------
def test_vm_list_bogus_state_is_a_usage_error_listing_the_states(manager):
    result = invoke("vm", "list", "--state", "BOGUS")
    assert result.exit_code == ExitCode.USAGE
    assert "BOGUS" in result.stderr and all(state in result.stderr for state in VM_STATES)
    assert manager.requests == []


def test_vm_list_state_is_case_insensitive_and_sent_upper_case(manager):
    manager.answer("GET", "/vms", 200, {"items": [{"id": 1, "name": "web", "state": "RUNNING"}], "next": None})
    result = invoke("vm", "list", "--state", "running")
    assert result.exit_code == 0, result.output
    assert manager.requests[0]["query"]["state"] == "RUNNING"
    assert "web" in result.stdout


def test_vm_wait_state_is_validated_too(manager):
    result = invoke("vm", "wait", "1", "--state", "UP")
    assert result.exit_code == ExitCode.USAGE and manager.requests == []


# -- 4. DELETE of a cluster, and a 405 from any server ---------------------------------------------------------
def test_cluster_delete(manager):
    manager.answer("DELETE", "/clusters/3", 204)
    result = invoke("cluster", "delete", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted cluster 3\n"
    assert [(r["method"], r["path"]) for r in manager.requests] == [("DELETE", "/api/v1/clusters/3")]


@pytest.mark.parametrize("body", [error("METHOD_NOT_ALLOWED", "Method Not Allowed"), {"detail": "Method Not Allowed"},
                                  b"<html>405</html>"])
def test_a_405_is_a_clear_error(manager, body):
    manager.answer("DELETE", "/clusters/3", 405, body)
    result = invoke("cluster", "delete", "3")
    assert result.exit_code == ExitCode.NOT_AVAILABLE
    assert "[API_NOT_SUPPORTED]" in result.stderr
    assert "does not offer DELETE /clusters/{id}" in result.stderr and "upgrade the manager" in result.stderr
    assert "Traceback" not in result.output


# -- 5. the fix fits the manager's error code ------------------------------------------------------------------
@pytest.mark.parametrize("args,method,path,status,body,exit_code,fix", [
    (("vm", "show", "9"), "GET", "/vms/9", 404, error("NOT_FOUND", "vm 9 does not exist", kind="vm", id=9),
     ExitCode.INVALID_INPUT, "check the id with `appliance vm list`"),
    (("host", "delete", "2"), "DELETE", "/hosts/2", 409, error("IN_USE", "host kvm1 has VMs", vms=[4, 5]),
     ExitCode.INVALID_INPUT, "remove what depends on it first (see details): vms: 4, 5"),
    (("vm", "suspend", "7"), "POST", "/vms/7/action", 409,
     error("STATE_INVALID", "cannot suspend VM 7 in state HOLD", state="HOLD", allowed_from=["RUNNING"]),
     ExitCode.INVALID_INPUT, "check its state with `appliance vm show 7`"),
    (("host", "list"), "GET", "/hosts", 403, error("FORBIDDEN", "hosts are infrastructure"),
     ExitCode.INVALID_INPUT, "ask an administrator, or use a token of a user who owns it"),
    (("whoami",), "GET", "/whoami", 401, error("UNAUTHORIZED", "the token is not valid"),
     ExitCode.INVALID_INPUT, "the token is missing, expired or revoked: create one with `appliance user token create`"),
    (("cluster", "create", "c1"), "POST", "/clusters", 409, error("NAME_TAKEN", "a cluster named 'c1' exists"),
     ExitCode.INVALID_INPUT, "choose another name (`appliance cluster list` shows the names in use)"),
    (("vm", "create", "x"), "POST", "/vms", 409, error("NO_ADDRESS", "network lan has no free address", vnet_id=4),
     ExitCode.INVALID_INPUT,
     "every address of the network is leased: free some (`appliance vnet leases 4` lists them), "
     "or use another network"),
    (("vm", "create", "x"), "POST", "/vms", 422,
     error("REQUEST_INVALID", "the request is not valid",
           errors=[{"field": "body.memory", "problem": "Input should be greater than or equal to 1"},
                   {"field": "body.name", "problem": "String should match pattern"}]),
     ExitCode.INVALID_INPUT,
     "correct each field:\n    memory: Input should be greater than or equal to 1\n"
     "    name: String should match pattern"),
    (("host", "create", "kvm1", "--driver", "xen"), "POST", "/hosts", 422,
     error("VALUE_INVALID", "driver 'xen' is not one of ('libvirt', 'fake')", field="driver"),
     ExitCode.INVALID_INPUT, "give a valid driver"),
    (("vm", "create", "x", "--requirements", "FREE_CPU >> 6"), "POST", "/vms", 422,
     error("EXPRESSION_INVALID", "requirements: unexpected '>' at position 10", field="requirements",
           value="FREE_CPU >> 6", position=10),
     ExitCode.INVALID_INPUT, "correct requirements at position 10:\n    FREE_CPU >> 6\n              ^"),
    (("vm", "show", "1"), "GET", "/vms/1", 500, error("INTERNAL", "KeyError"),
     ExitCode.STEP_FAILED, "a bug in the manager: see its log"),
])
def test_each_manager_error_code_gets_its_own_fix(manager, args, method, path, status, body, exit_code, fix):
    manager.answer(method, path, status, body)
    result = invoke(*args)
    assert result.exit_code == exit_code, result.output
    assert f"fix: {fix}" in result.stderr
    code = body["error"]["code"]
    assert f"{code}: {body['error']['message']}" in result.stderr
    as_json = invoke(*args, "--json")
    (report,) = reports(as_json)
    assert report["fix"] == fix
    assert report["payload"]["code"] == code and report["payload"]["status"] == status
    assert report["payload"]["details"] == body["error"]["details"]


def test_not_found_names_the_missing_entity_and_tells_a_missing_route_apart(manager):
    manager.answer("POST", "/vms", 404, error("NOT_FOUND", "image 5 does not exist", kind="image", id=5))
    result = invoke("vm", "create", "x", "--disk", "5")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "fix: check the id with `appliance image list`" in result.stderr
    # An older manager without the route: FastAPI's bare 404 (no kind, no id) is not a wrong id.
    result = invoke("user", "token", "list")  # the fake's default answer: a 404 without details
    assert result.exit_code == ExitCode.NOT_AVAILABLE and "does not offer GET /tokens" in result.stderr
    result = invoke("user", "show", "3")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "check the id with `appliance user list` (or upgrade the manager" in result.stderr


def test_fixes_differ_between_the_managers_codes():
    from appliance.core.reports import CATALOGUE

    manager_fixes = [entry.fix for entry in CATALOGUE.values() if entry.http is not None]
    assert len(manager_fixes) >= 13 and len(set(manager_fixes)) == len(manager_fixes)


def test_token_file_flag_and_bearer(manager, tmp_path):
    other = tmp_path / "other.token"
    other.write_text("other-secret\n")
    manager.answer("GET", "/whoami", 200, {"id": 2, "name": "alice", "role": "user", "group_id": 1})
    assert invoke("whoami").exit_code == 0
    assert invoke("whoami", "--token-file", str(other)).exit_code == 0
    assert [r["auth"] for r in manager.requests] == [f"Bearer {SECRET}", "Bearer other-secret"]


def test_missing_token_file(manager, tmp_path):
    result = invoke("vm", "list", "--token-file", str(tmp_path / "absent"), "--json")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert [r["code"] for r in reports(result)] == ["API_TOKEN_MISSING"] and manager.requests == []


# -- 6. TLS with a private CA; unreachable managers ------------------------------------------------------------
def _pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "appliance test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_manager(monkeypatch, token_file, tmp_path):
    ca, cert, key = _pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeManager(tls=context)
    monkeypatch.delenv("APPLIANCE_CA", raising=False)
    monkeypatch.setenv("APPLIANCE_URL", fake.url)
    monkeypatch.setenv("APPLIANCE_TOKEN_FILE", str(token_file))
    fake.answer("GET", "/whoami", 200, {"id": 1, "name": "admin", "role": "admin", "group_id": 1})
    fake.ca = ca
    yield fake
    fake.stop()


def test_tls_is_verified_by_default_and_the_failure_says_why(tls_manager):
    result = invoke("whoami", "--json")
    assert result.exit_code == ExitCode.UNREACHABLE
    (report,) = reports(result)
    assert report["code"] == "API_UNREACHABLE" and "certificate" in report["message"].lower()
    assert "--ca" in report["fix"]
    assert tls_manager.requests == []


def test_tls_with_the_ca_flag_or_variable(tls_manager, monkeypatch):
    result = invoke("whoami", "--ca", str(tls_manager.ca))
    assert result.exit_code == 0, result.output
    assert "admin" in result.stdout
    monkeypatch.setenv("APPLIANCE_CA", str(tls_manager.ca))
    assert invoke("whoami").exit_code == 0
    assert len(tls_manager.requests) == 2


def test_an_unreadable_ca_is_a_flag_error(tls_manager, tmp_path):
    result = invoke("whoami", "--ca", str(tmp_path / "absent.pem"), "--json")
    assert result.exit_code == ExitCode.USAGE
    assert [(r["code"], r["path"]) for r in reports(result)] == [("FLAG_INVALID", "--ca")]


def test_unreachable_manager_names_the_reason(monkeypatch, token_file):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = invoke("vm", "list", "--url", f"http://127.0.0.1:{port}", "--token-file", str(token_file), "--json")
    assert result.exit_code == ExitCode.UNREACHABLE
    (report,) = reports(result)
    assert report["code"] == "API_UNREACHABLE" and "refused" in report["message"].lower()


def test_an_answer_that_is_not_json(manager):
    manager.answer("GET", "/whoami", 200, b"<html>a proxy</html>")
    result = invoke("whoami")
    assert result.exit_code == ExitCode.STEP_FAILED and "[API_ERROR]" in result.stderr


# -- 7. shell completion ---------------------------------------------------------------------------------------
def test_shell_completion_is_offered():
    result = invoke("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_completion_script_is_shown(monkeypatch):
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell, do not detect it
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="appliance")
    assert result.exit_code == 0, result.output
    assert "_APPLIANCE_COMPLETE=complete_bash" in result.stdout


def test_completion_completes_the_manager_nouns(monkeypatch):
    monkeypatch.setenv("_APPLIANCE_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "appliance v")
    monkeypatch.setenv("COMP_CWORD", "1")
    result = runner.invoke(app, [], prog_name="appliance")
    assert sorted(result.stdout.split()) == ["validate", "vm", "vnet"]


def test_completion_completes_vm_states(monkeypatch):
    monkeypatch.setenv("_APPLIANCE_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "appliance vm list --state RUN")
    monkeypatch.setenv("COMP_CWORD", "4")
    result = runner.invoke(app, [], prog_name="appliance")
    assert result.stdout.split() == ["RUNNING"]


# -- 8. flags are shown as flags -------------------------------------------------------------------------------
def _every_command(command, path=()):
    yield path, command
    if hasattr(command, "list_commands"):  # a group (the root builds the manager's nouns when asked)
        for name in command.list_commands(None):
            yield from _every_command(command.get_command(None, name), path + (name,))


def test_no_help_shows_a_flag_as_taking_a_value():
    from typer.main import get_command

    root = get_command(app)
    checked = 0
    for path, command in _every_command(root):
        context = command.make_context(" ".join(("appliance",) + path), [], resilient_parsing=True)
        text = command.get_help(context)
        assert "<bool>" not in text, (path, text)
        checked += 1
    assert checked > 70  # every command and group, the lazily built ones too
    install = runner.invoke(app, ["install", "--help"]).stdout
    assert any(line.strip().startswith("--check ") and "Print the plan" in line for line in install.splitlines())


# -- 9. start-up: the CLI loads nothing heavy (timings: bench/cli_start.py) -------------------------------------
HEAVY = ("fabric", "paramiko", "fastapi", "starlette", "jinja2", "libvirt", "pydantic", "httpx", "rich",
         "appliance.serve", "appliance.actions", "appliance.core.api", "appliance.inventory.schema")


def _loaded_after(code: str) -> list[str]:
    probe = (code + "\nimport sys, json\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_cli_loads_nothing_heavy():
    assert _loaded_after("import appliance.main, appliance.cli, appliance.cli_manager, appliance.client") == []


def test_version_loads_nothing_heavy():
    code = ("import sys; sys.argv = ['appliance', '--version']\nfrom appliance.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) == []


def test_a_command_loads_only_what_it_needs():
    # typer itself imports pydantic to coerce option values, so it is not counted here.
    code = ("import sys; sys.argv = ['appliance', 'vm', 'list', '--help']\nfrom appliance.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert [m for m in _loaded_after(code) if m != "pydantic"] == []


# -- new commands: users, tokens, groups, whoami, audit, --shared ----------------------------------------------
def test_user_create_prints_the_token_once_alone_on_stdout(manager):
    manager.answer("POST", "/users", 201, {"user": {"id": 3, "name": "alice", "role": "auditor", "group_id": 2},
                                           "token": "s3cret", "token_id": 7})
    result = invoke("user", "create", "alice", "--role", "AUDITOR", "--group", "ops")
    assert result.exit_code == 0, result.output
    assert result.stdout == "s3cret\n"
    assert "will not be shown again" in result.stderr and "token id 7" in result.stderr
    assert manager.requests[0]["body"] == {"name": "alice", "role": "auditor", "group": "ops"}


def test_user_create_json_and_defaults(manager):
    document = {"user": {"id": 3, "name": "bob", "role": "user", "group_id": 1}, "token": "s3cret", "token_id": 8}
    manager.answer("POST", "/users", 201, document)
    result = invoke("user", "create", "bob", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == document
    assert manager.requests[0]["body"] == {"name": "bob", "role": "user"}  # the manager's default group


def test_user_create_refuses_an_unknown_role(manager):
    result = invoke("user", "create", "bob", "--role", "root")
    assert result.exit_code == ExitCode.USAGE and manager.requests == []


def test_user_list_show_delete(manager):
    manager.answer("GET", "/users", 200, {"items": [{"id": 1, "name": "admin", "role": "admin", "group_id": 1}],
                                          "next": 1})
    manager.answer("GET", "/users", 200, {"items": [{"id": 2, "name": "alice", "role": "user", "group_id": 2}],
                                          "next": None})
    result = invoke("user", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["ID", "NAME", "ROLE", "GROUP_ID"]
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == ["admin", "alice"]
    assert [r["query"]["after"] for r in manager.requests] == ["0", "1"]
    manager.answer("DELETE", "/users/2", 204)
    assert invoke("user", "delete", "2").stdout == "deleted user 2\n"


def test_token_create_expiry(manager):
    made = {"token": {"id": 5, "user_id": 1, "name": "ci", "created_at": T0, "expires_at": T0 + 43200,
                      "revoked_at": None, "last_used_at": None}, "secret": "tok-secret"}
    manager.answer("POST", "/tokens", 201, made)
    result = invoke("user", "token", "create", "ci", "--expires", "12h")
    assert result.exit_code == 0, result.output
    assert result.stdout == "tok-secret\n" and "expires 2025-11-29T22:00:00Z" in result.stderr
    assert invoke("user", "token", "create", "ci", "--expires", "never").exit_code == 0
    assert invoke("user", "token", "create", "ci", "--user", "4").exit_code == 0
    assert [r["body"] for r in manager.requests] == [{"name": "ci", "expires_in": 43200},
                                                    {"name": "ci", "expires_in": 0},
                                                    {"name": "ci", "user_id": 4}]


@pytest.mark.parametrize("expires", ["tomorrow", "0s", "0d", "-1h", "12"])
def test_token_create_bad_expiry(manager, expires):
    result = invoke("user", "token", "create", "ci", "--expires", expires, "--json")
    assert result.exit_code == ExitCode.USAGE
    assert [(r["code"], r["path"], r["value"]) for r in reports(result)] == [("FLAG_INVALID", "--expires", expires)]
    assert manager.requests == []  # 0 would have meant "never" to the manager


def test_token_list_prints_utc_times_and_state(manager):
    later = int(time.time()) + 86400
    manager.answer("GET", "/tokens", 200, {"items": [
        {"id": 1, "user_id": 2, "name": "old", "created_at": T0, "expires_at": T0 + 60,
         "revoked_at": None, "last_used_at": T0 + 30},
        {"id": 2, "user_id": 2, "name": "gone", "created_at": T0, "expires_at": None,
         "revoked_at": T0 + 100, "last_used_at": None},
        {"id": 3, "user_id": 2, "name": "live", "created_at": T0, "expires_at": later,
         "revoked_at": None, "last_used_at": None},
        {"id": 4, "user_id": 2, "name": "forever", "created_at": T0, "expires_at": None,
         "revoked_at": None, "last_used_at": None}], "next": None})
    result = invoke("user", "token", "list", "--user", "2")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[3] for row in rows] == ["expired", "revoked", "active", "active"]
    assert rows[0][4:] == ["2025-11-29T10:00:00Z", "2025-11-29T10:01:00Z", "-", "2025-11-29T10:00:30Z"]
    assert rows[3][5] == "never"
    assert manager.requests[0]["query"]["user_id"] == "2"
    as_json = invoke("user", "token", "list", "--json")
    assert json.loads(as_json.stdout)[0]["created_at"] == T0  # the API's JSON, untouched


def test_token_revoke(manager):
    manager.answer("DELETE", "/tokens/5", 204)
    result = invoke("user", "token", "revoke", "5")
    assert result.exit_code == 0 and result.stdout == "revoked token 5\n"


def test_groups(manager):
    manager.answer("POST", "/groups", 201, {"id": 2, "name": "ops"})
    manager.answer("GET", "/groups", 200, {"items": [{"id": 1, "name": "users"}, {"id": 2, "name": "ops"}],
                                           "next": None})
    manager.answer("DELETE", "/groups/2", 204)
    assert invoke("group", "create", "ops").exit_code == 0
    assert invoke("group", "list").stdout.split() == ["ID", "NAME", "1", "users", "2", "ops"]
    assert invoke("group", "delete", "2").exit_code == 0
    assert [(r["method"], r["path"], r["body"]) for r in manager.requests] == [
        ("POST", "/api/v1/groups", {"name": "ops"}), ("GET", "/api/v1/groups", None),
        ("DELETE", "/api/v1/groups/2", None)]


def test_whoami(manager):
    me = {"id": 2, "name": "alice", "role": "user", "group_id": 2}
    manager.answer("GET", "/whoami", 200, me)
    assert invoke("whoami").stdout.split() == ["ID", "NAME", "ROLE", "GROUP_ID", "2", "alice", "user", "2"]
    assert json.loads(invoke("whoami", "--json").stdout) == me


AUDIT = [{"id": i, "at": T0 + i, "user_id": 1, "user": "admin", "method": "POST", "path": "/api/v1/vms",
          "operation": "create_vms", "status": 201, "code": None, "entity": "vm", "entity_id": i} for i in range(1, 6)]


def test_audit_since_a_time_and_utc_output(manager):
    manager.answer("GET", "/audit", 200, {"items": AUDIT[:2], "next": 2})
    manager.answer("GET", "/audit", 200, {"items": AUDIT[2:], "next": None})
    result = invoke("audit", "--since", "2025-11-29T10:00:00Z")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and lines[1].split()[:4] == ["1", "2025-11-29T10:00:01Z", "admin", "POST"]
    assert [r["query"] for r in manager.requests] == [{"since": str(T0), "after": "0", "limit": "100"},
                                                     {"since": str(T0), "after": "2", "limit": "98"}]
    assert invoke("audit", "--since", "2025-11-29T11:00:00+01:00").exit_code == 0
    assert invoke("audit", "--since", "2025-11-29T10:00:00").exit_code == 0  # no offset: UTC
    assert [r["query"]["since"] for r in manager.requests[2:]] == [str(T0), str(T0)]


def test_audit_since_a_duration_and_limit(manager):
    manager.answer("GET", "/audit", 200, {"items": AUDIT[:3], "next": 3})
    before = int(time.time())
    result = invoke("audit", "--since", "2h", "--limit", "3", "--json")
    after = int(time.time())
    assert result.exit_code == 0, result.output
    assert [e["id"] for e in json.loads(result.stdout)] == [1, 2, 3]
    since = int(manager.requests[0]["query"]["since"])
    assert before - 7200 <= since <= after - 7200
    assert len(manager.requests) == 1  # --limit reached: no further page


def test_audit_bad_since(manager):
    result = invoke("audit", "--since", "yesterday", "--json")
    assert result.exit_code == ExitCode.USAGE
    assert [(r["code"], r["path"]) for r in reports(result)] == [("FLAG_INVALID", "--since")]


def test_shared_on_vm_and_image_create(manager):
    manager.answer("POST", "/vms", 201, {"items": [{"id": 1, "name": "web", "state": "PENDING", "shared": True}],
                                         "next": None})
    manager.answer("POST", "/images", 201, {"id": 1, "name": "base", "shared": True})
    assert invoke("vm", "create", "web", "--shared", "--context", "ROLE=web").exit_code == 0
    assert invoke("vm", "create", "web").exit_code == 0
    assert invoke("image", "create", "base", "--datastore", "1", "--size", "10", "--shared").exit_code == 0
    bodies = [r["body"] for r in manager.requests]
    assert bodies[0]["shared"] is True and bodies[0]["context"] == {"ROLE": "web"}
    assert "shared" not in bodies[1]  # not sent unless asked: older managers refuse unknown fields
    assert bodies[2]["shared"] is True
