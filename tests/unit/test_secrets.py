"""Secrets stay secret: 0600 files only, never in output, never in a file others can read."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from appliance.actions import init_secrets, plan_install
from appliance.inventory.load import load_site
from appliance.inventory.secrets import Redactor, load_secrets
from appliance.plan import plan_text, secret_leaks
from appliance.core.reports import ReportError
from appliance.roles.model import FileSpec, NodePlan, RolePlan
from appliance.roles.registry import plan_site
from tests.conftest import EXAMPLE, SECRET_VALUES, TEST_SECRETS, load_test_site


def test_plan_output_never_contains_a_secret(secrets_env):
    data = plan_install(EXAMPLE, EXAMPLE.parent / "no-such-secrets.toml", diff=True)
    shown = json.dumps(data) + plan_text(data, diff=True)
    assert data["secrets"] == "loaded"
    for value in SECRET_VALUES:
        assert value not in shown
    assert "<secret:drbd_shared_secret>" in shown  # redacted, not dropped: the operator sees where it goes


def test_every_file_holding_a_secret_is_owner_only():
    site = load_test_site()
    redactor = Redactor(site.secrets)
    holding = [(n.node, f) for plan in plan_site(site) for n in plan.nodes for f in n.files
               if redactor.contains_secret(f.content) or f.secret]
    paths = {f.path for _, f in holding}
    assert {"/etc/corosync/authkey", "/etc/drbd.d/global_common.conf", "/etc/appliance/manager.toml",
            "/var/lib/appliance/cib.xml"} <= paths
    for node, spec in holding:
        assert spec.mode & 0o077 == 0, f"{node}:{spec.path} is {spec.mode:04o}"


def test_leak_guard_catches_a_role_that_forgets_the_mode():
    site = load_test_site()
    leaky = RolePlan("oops", "", (NodePlan("cloud-cc01", (FileSpec("/etc/x", b"pw=TestDatabasePw-3"),)),))
    assert secret_leaks([leaky], Redactor(site.secrets).contains_secret) == ["cloud-cc01:/etc/x (mode 0644)"]


def test_heartbeat_authkeys_is_0600_and_holds_the_derived_key(make_inventory):
    path = make_inventory(EXAMPLE.read_text().replace('stack = "corosync"', 'stack = "heartbeat"'))
    site = load_site(path, path.parent / "none.toml", env=TEST_SECRETS)
    files = {f.path: f for p in plan_site(site) for n in p.nodes for f in n.files}
    authkeys = files["/etc/ha.d/authkeys"]
    assert authkeys.mode == 0o600
    assert bytes(range(64)).hex().encode() in authkeys.content


def test_environment_overrides_the_file(tmp_path):
    secrets = tmp_path / "s.toml"
    secrets.write_text("\n".join(f'{k.removeprefix("APPLIANCE_SECRET_").lower()} = "{v}"'
                                 for k, v in TEST_SECRETS.items() if "FENCE" not in k and "TLS" not in k) + "\n")
    secrets.chmod(0o600)
    loaded, reports = load_secrets(secrets, [], env={"APPLIANCE_SECRET_DATABASE_PASSWORD": "FromEnvironment-9"})
    assert reports == [] and loaded.database_password == "FromEnvironment-9"
    assert loaded.replication_password == TEST_SECRETS["APPLIANCE_SECRET_REPLICATION_PASSWORD"]


@pytest.mark.parametrize("name,value,problem", [
    ("APPLIANCE_SECRET_DATABASE_PASSWORD", "short", "12-128"),
    ("APPLIANCE_SECRET_DATABASE_PASSWORD", "has'quote'andmore", "no quotes"),
    ("APPLIANCE_SECRET_CLUSTER_AUTHKEY", "not base64!!", "base64"),
    ("APPLIANCE_SECRET_CLUSTER_AUTHKEY", "YWJj", "bytes"),
])
def test_bad_secret_values_are_refused_without_echoing_them(name, value, problem):
    loaded, reports = load_secrets(None, [], env={**TEST_SECRETS, name: value})
    assert loaded is None
    assert [r.code for r in reports] == ["SECRETS_INVALID"]
    assert problem in reports[0].message and value not in reports[0].message


def test_missing_secrets_are_an_error_for_render_and_a_warning_for_check(no_secrets_env, tmp_path):
    with pytest.raises(ReportError) as error:
        load_site(EXAMPLE, tmp_path / "absent.toml", require_secrets=True)
    assert {r.code for r in error.value.reports} == {"SECRETS_MISSING"}
    site = load_site(EXAMPLE, tmp_path / "absent.toml", require_secrets=False)
    assert site.secrets.placeholder and [w.code for w in site.warnings] == ["SECRETS_MISSING"]


def test_secrets_init_writes_0600_and_never_replaces(tmp_path):
    inventory = tmp_path / "site.toml"
    inventory.write_text(EXAMPLE.read_text())
    path = init_secrets(inventory, None)
    assert path == tmp_path / "two-node.secrets.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded, reports = load_secrets(path, ["ipmi-cc01", "ipmi-cc02"], env={})
    assert reports == [] and len(loaded.cluster_authkey) == 256
    before = path.read_bytes()
    with pytest.raises(ReportError) as error:
        init_secrets(inventory, None)
    assert [r.code for r in error.value.reports] == ["SECRETS_EXISTS"]
    assert path.read_bytes() == before


def test_verbose_log_masks_secret_stdin(tmp_path):
    # The chpasswd step feeds the password on stdin; the plan shows only that there is secret input.
    data = plan_install(EXAMPLE, tmp_path / "absent.toml", diff=False)
    commands = [s["command"] for r in data["roles"] for n in r["nodes"].values() for s in n["steps"]]
    assert "chpasswd < (secret input)" in commands


# A cephx key's shape (base64 of 28 bytes), made here: no real key in the repository.
CEPH_KEY = __import__("base64").b64encode(b"\x01\x00" + bytes(range(26))).decode()


def _secrets_file(tmp_path, extra: str):
    path = tmp_path / "secrets.toml"
    path.write_text("\n".join(f'{k.removeprefix("APPLIANCE_SECRET_").lower()} = "{v}"'
                              for k, v in TEST_SECRETS.items() if "FENCE" not in k and "TLS" not in k)
                    + "\n" + extra)
    path.chmod(0o600)
    return path


def test_an_rbd_datastores_cephx_key_goes_from_the_secrets_file_to_an_owner_only_keyring(tmp_path):
    path = _secrets_file(tmp_path, f'[ceph.ds-one]\nkey = "{CEPH_KEY}"\n')
    site = load_site(EXAMPLE, path, env={k: v for k, v in TEST_SECRETS.items() if "FENCE" in k or "TLS" in k})
    assert site.secrets.ceph_keys == {"ds-one": CEPH_KEY}
    files = {(n.node, f.path): f for p in plan_site(site) for n in p.nodes for f in n.files}
    for node in ("cloud-cc01", "cloud-cc02"):
        keyring = files[(node, "/etc/appliance/ceph.client.ds-one.keyring")]
        assert keyring.content == f"[client.ds-one]\n\tkey = {CEPH_KEY}\n".encode()
        assert keyring.mode == 0o600 and keyring.secret and keyring.owner == site.inventory.manager.user
    shown = Redactor(site.secrets)(f"key = {CEPH_KEY}")
    assert CEPH_KEY not in shown and "<secret:ceph.ds-one.key>" in shown


@pytest.mark.parametrize("table,problem,path", [
    ('[ceph.ds-one]\nkey = "not a key"\n', "is not a cephx key", "ceph.ds-one.key"),
    ('[ceph.ds-one]\nkey = "YWJj"\n', "is not a cephx key", "ceph.ds-one.key"),
    (f'[ceph.admin]\nkey = "{CEPH_KEY}"\n', "never admin", "ceph.admin"),
    (f'[ceph.ds-one]\nkey = "{CEPH_KEY}"\nkeyring = "/tmp/x"\n', "exactly one field", "ceph.ds-one"),
    ('ceph = "x"\n', "table of user tables", "ceph"),
])
def test_a_bad_cephx_entry_is_refused_naming_the_field_and_never_the_key(tmp_path, table, problem, path):
    loaded, reports = load_secrets(_secrets_file(tmp_path, table), [])
    assert loaded is None
    assert [(r.code, r.path) for r in reports] == [("SECRETS_INVALID", path)]
    assert problem in reports[0].message
    assert CEPH_KEY not in str(vars(reports[0]))


MONITORING_SECRET = "5e" * 32


def _push_inventory(tmp_path):
    from tests.conftest import example_text

    inventory = tmp_path / "site.toml"
    inventory.write_text(example_text().replace("[manager]\n", '[manager]\nmonitoring = "push"\n', 1))
    return inventory


def test_push_monitoring_puts_one_secret_on_both_frontends_owner_only_and_the_config_loads(tmp_path):
    from appliance.serve import load_config

    path = _secrets_file(tmp_path, f'monitoring_secret = "{MONITORING_SECRET}"\n')
    site = load_site(_push_inventory(tmp_path), path,
                     env={k: v for k, v in TEST_SECRETS.items() if "FENCE" in k or "TLS" in k})
    files = {(n.node, f.path): f for p in plan_site(site) for n in p.nodes for f in n.files}
    for node in ("cloud-cc01", "cloud-cc02"):
        secret = files[(node, "/etc/appliance/monitoring.secret")]
        assert secret.content == f"{MONITORING_SECRET}\n".encode()  # the same on both: a failover keeps hosts heard
        assert secret.mode == 0o600 and secret.secret and secret.owner == site.inventory.manager.user
        rendered = tmp_path / f"{node}.toml"
        rendered.write_bytes(files[(node, "/etc/appliance/manager.toml")].content)
        config = load_config(rendered)  # what the manager itself will read
        assert config.monitoring.mode == "push" and config.monitoring.secret_file == "/etc/appliance/monitoring.secret"
        assert config.monitoring.collector == f"{site.inventory.network.san_vip}:4124"
    shown = Redactor(site.secrets)(f"secret {MONITORING_SECRET}")
    assert MONITORING_SECRET not in shown and "<secret:monitoring_secret>" in shown


@pytest.mark.parametrize("line,code", [("", "SECRETS_MISSING"), ('monitoring_secret = "xyz"\n', "SECRETS_INVALID"),
                                       (f'monitoring_secret = "{MONITORING_SECRET[:30]}"\n', "SECRETS_INVALID")])
def test_push_monitoring_without_a_good_secret_is_refused_naming_the_field(tmp_path, line, code):
    loaded, reports = load_secrets(_secrets_file(tmp_path, line), [], env={}, need_monitoring=True)
    assert loaded is None and [(r.code, r.path) for r in reports] == [(code, "monitoring_secret")]
    assert "openssl rand -hex 32" in reports[0].fix and MONITORING_SECRET[:30] not in str(vars(reports[0]))


def test_new_secrets_carry_a_monitoring_secret_and_pull_needs_none(tmp_path):
    from appliance.inventory.load import read_inventory
    from appliance.inventory.secrets import new_secrets_text

    inventory, _ = read_inventory(_push_inventory(tmp_path))
    path = tmp_path / "new.toml"
    path.write_text(new_secrets_text(inventory))
    path.chmod(0o600)
    devices = [d.name for d in inventory.fencing.devices]
    loaded, reports = load_secrets(path, devices, env={f"APPLIANCE_SECRET_FENCE_{d.upper().replace('-', '_')}_PASSWORD":
                                                       "fence-password-123" for d in devices}, need_monitoring=True)
    assert reports == [] and len(bytes.fromhex(loaded.monitoring_secret)) == 32
    loaded, reports = load_secrets(_secrets_file(tmp_path, ""), [], env={})  # pull: an old secrets file still loads
    assert reports == [] and loaded.monitoring_secret is None
