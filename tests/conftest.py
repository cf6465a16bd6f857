"""Shared fixtures. Real-tier tests call require_tool(): in CI a missing tool fails the test."""
from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "two-node.toml"
GOLDEN = ROOT / "tests" / "golden"

# Fixed, recognisable test secrets: golden files stay stable and leaks are easy to grep for.
TEST_SECRETS = {
    "APPLIANCE_SECRET_CLUSTER_AUTHKEY": base64.b64encode(bytes(range(256))).decode(),
    "APPLIANCE_SECRET_HACLUSTER_PASSWORD": "TestHaclusterPw-1",
    "APPLIANCE_SECRET_REPLICATION_PASSWORD": "TestReplicationPw-2",
    "APPLIANCE_SECRET_DATABASE_PASSWORD": "TestDatabasePw-3",
    "APPLIANCE_SECRET_DRBD_SHARED_SECRET": "TestDrbdSecret-4",
    "APPLIANCE_SECRET_FENCE_IPMI_CC01_PASSWORD": "TestFenceCc01-5",
    "APPLIANCE_SECRET_FENCE_IPMI_CC02_PASSWORD": "TestFenceCc02-6",
    # A fixed, test-only pair (tests/data): golden files stay stable.
    "APPLIANCE_SECRET_TLS_CERTIFICATE": (Path(__file__).parent / "data" / "test-only-tls.crt").read_text(),
    "APPLIANCE_SECRET_TLS_KEY": (Path(__file__).parent / "data" / "test-only-tls.key").read_text(),
}
SECRET_VALUES = [v for k, v in TEST_SECRETS.items()
                 if k not in ("APPLIANCE_SECRET_CLUSTER_AUTHKEY", "APPLIANCE_SECRET_TLS_CERTIFICATE")] + \
    [TEST_SECRETS["APPLIANCE_SECRET_CLUSTER_AUTHKEY"], bytes(range(64)).hex()]


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(*tools: str) -> None:
    """Real tier: the test needs these programs. Missing in CI is a failure, elsewhere a skip."""
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if not missing:
        return
    message = f"missing real component(s): {', '.join(missing)} (run `make deps`)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str):
    """Real tier: the test needs this Python module (e.g. libvirt). Missing in CI fails."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"missing Python module {name} (run `make deps`)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def require_root_namespaces() -> None:
    ok = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True).returncode == 0
    if not ok:
        message = "cannot create network/UTS namespaces here (needs root or user namespaces)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def secrets_env(monkeypatch) -> dict[str, str]:
    for key in [k for k in os.environ if k.startswith("APPLIANCE_SECRET_")]:
        monkeypatch.delenv(key)
    for key, value in TEST_SECRETS.items():
        monkeypatch.setenv(key, value)
    return dict(TEST_SECRETS)


@pytest.fixture
def no_secrets_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("APPLIANCE_SECRET_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def no_contact(monkeypatch):
    """Fail the test if the code under test opens a network connection or starts a process."""
    def refuse(*args, **kwargs):
        raise AssertionError("contacted the outside world during an offline action")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def example_text() -> str:
    return EXAMPLE.read_text()


@pytest.fixture
def make_inventory(tmp_path):
    """Write an inventory (example text, with edits) to tmp; no secrets file beside it."""
    def make(text: str | None = None, name: str = "site.toml") -> Path:
        path = tmp_path / name
        path.write_text(example_text() if text is None else text)
        return path
    return make


def load_test_site(path: Path = EXAMPLE, **kwargs):
    from appliance.inventory.load import load_site

    return load_site(path, Path("/nonexistent/secrets.toml"), env=TEST_SECRETS, **kwargs)
