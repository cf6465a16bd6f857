"""The CLI: what an operator and a script see, and the exit codes they can rely on."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from appliance.cli import app
from appliance.core.reports import ExitCode
from appliance.roles.registry import ROLES
from tests.conftest import EXAMPLE

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_install_check_json_lists_every_role_for_both_nodes_and_contacts_nothing(no_contact, secrets_env):
    result = invoke("install", "--check", "-i", str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["contacted"] is False
    assert [r["role"] for r in data["roles"]] == [role.NAME for role in ROLES]
    for role in data["roles"]:
        if role["role"] == "resources":
            assert list(role["nodes"]) == ["cluster"]
        else:
            assert sorted(role["nodes"]) == ["cloud-cc01", "cloud-cc02"], role["role"]


def test_install_check_without_secrets_plans_with_placeholders_and_warns(no_contact, no_secrets_env, tmp_path):
    result = invoke("install", "--check", "-i", str(EXAMPLE), "--secrets", str(tmp_path / "absent.toml"), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["secrets"] == "placeholders"
    assert [w["code"] for w in data["warnings"]] == ["SECRETS_MISSING"]
    assert "placeholder-" not in result.stdout  # placeholders are redacted like real secrets


def test_install_check_diff_shows_file_content_with_secrets_redacted(secrets_env):
    result = invoke("install", "--check", "--diff", "-i", str(EXAMPLE))
    assert result.exit_code == 0
    assert "+++ b/etc/corosync/corosync.conf" in result.stdout
    assert "+    two_node: 1" in result.stdout
    assert 'shared-secret "<secret:drbd_shared_secret>";' in result.stdout
    assert "(binary, 256 bytes: not shown)" in result.stdout  # the corosync authkey
    assert "TestDrbdSecret-4" not in result.stdout


def test_validate_command(secrets_env):
    result = invoke("validate", "-i", str(EXAMPLE))
    assert result.exit_code == 0 and "valid (2 nodes, stack corosync)" in result.stdout


def test_render_without_validation_writes_the_tree_and_manifest(secrets_env, tmp_path):
    out = tmp_path / "out"
    result = invoke("render", "-i", str(EXAMPLE), "-o", str(out), "--no-validate", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == 37
    assert (out / "cloud-cc02" / "etc" / "corosync" / "corosync.conf").exists()
    assert (out / "cluster" / "var" / "lib" / "appliance" / "cib.xml").exists()


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("appliance ")


def test_serve_is_reached_without_loading_the_rest_of_the_command_line():
    # Pacemaker starts `appliance serve` in every failover: the full CLI's imports are outage time.
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['appliance', 'serve', '--help']\n"
            "from appliance.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'appliance.cli' not in sys.modules and 'appliance.actions' not in sys.modules, sorted(sys.modules)\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--config" in result.stdout and result.stdout.endswith("ok\n"), \
        result.stdout + result.stderr


def test_production_install_refuses_without_a_wheel_before_contacting_anyone(tmp_path, secrets_env, no_contact):
    import pytest

    from appliance import actions
    from appliance.core.reports import ReportError
    from tests.conftest import EXAMPLE

    inventory = tmp_path / "two-node.toml"
    inventory.write_text(EXAMPLE.read_text())
    with pytest.raises(ReportError) as error:
        actions.install(inventory, None, check=False)
    assert [(r.code, r.path) for r in error.value.reports] == [("INVENTORY_MISSING_FIELD", "manager.wheelhouse")]


def test_a_wheelhouse_that_is_not_there_is_named_in_the_plan(tmp_path):
    import pytest

    from appliance.core.reports import ReportError
    from appliance.roles.registry import plan_site
    from tests.conftest import EXAMPLE, load_test_site

    inventory = tmp_path / "two-node.toml"
    inventory.write_text(EXAMPLE.read_text().replace("[manager]\n", '[manager]\nwheelhouse = "dist/nope"\n'))
    with pytest.raises(ReportError) as error:
        plan_site(load_test_site(inventory))
    assert [(r.code, r.path, r.value) for r in error.value.reports] == \
        [("INVENTORY_UNREADABLE", "manager.wheelhouse", "dist/nope")]


def test_a_wheelhouse_plans_one_release_for_both_nodes_shipped_by_digest(tmp_path):
    from appliance.roles.registry import plan_site
    from tests.conftest import EXAMPLE, load_test_site

    house = tmp_path / "house"
    house.mkdir()
    (house / "appliance-0.1.0-py3-none-any.whl").write_bytes(b"ours")
    (house / "dep-1.0-py3-none-any.whl").write_bytes(b"theirs")
    inventory = tmp_path / "two-node.toml"
    inventory.write_text(EXAMPLE.read_text().replace("[manager]\n", '[manager]\nwheelhouse = "house"\n'))
    manager = next(p for p in plan_site(load_test_site(inventory)) if p.role == "manager")
    releases = set()
    for node in manager.nodes:
        wheels = [f for f in node.files if f.path.startswith("/var/cache/appliance/")]
        assert sorted(f.path.rsplit("/", 1)[1] for f in wheels) == ["appliance-0.1.0-py3-none-any.whl",
                                                                     "dep-1.0-py3-none-any.whl"]
        assert all(f.by_digest for f in wheels)
        step = next(s for s in node.steps if s.what.startswith("install appliance release"))
        assert not step.after_change  # a run that shipped the wheels and then failed must install next time
        releases.add(step.argv[5])  # sh -c SCRIPT sh PREFIX RELEASE ...
    (release,) = releases
    assert release.startswith("/opt/appliance-releases/0.1.0-")
