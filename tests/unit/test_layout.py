"""The architecture, enforced: dependency direction, one namespace, templates carry the header."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appliance.templates import render, template_names
from tests.conftest import ROOT

FOLDERS = {"appliance": "appliance", "core": "appliance.core", "drivers": "appliance.drivers",
           "storage": "appliance.storage", "ha": "appliance.ha", "roles": "appliance.roles",
           "inventory": "appliance.inventory"}

# What each layer may import from the project (besides itself). DESIGN.md: appliance -> roles ->
# ha, storage, drivers -> core. Leaves (templates, the runner protocol in core) are shared.
ALLOWED = {
    "core": {"appliance.core"},
    "inventory": {"appliance.core"},
    "drivers": {"appliance.core", "appliance.templates"},
    "storage": {"appliance.core", "appliance.templates"},
    "ha": {"appliance.core", "appliance.templates"},
    "roles": {"appliance.core", "appliance.templates", "appliance.ha", "appliance.storage", "appliance.drivers",
              "appliance.inventory"},
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n == "appliance" or n.startswith("appliance.")}


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_layer_imports_only_inward(folder):
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in project_imports(path):
            own = FOLDERS[folder]
            if name == own or name.startswith(own + "."):
                continue
            if not any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED[folder]):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []


def test_core_touches_no_subprocess_or_network():
    forbidden = {"subprocess", "socket", "paramiko", "fabric"}
    offences = []
    for path in (ROOT / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offences += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offences == []


def test_no_top_level_core_or_ha_module_is_installed(tmp_path):
    # Run from elsewhere: inside the checkout the current directory would shadow the install.
    probe = ("import importlib.util as u, json; print(json.dumps({n: u.find_spec(n) is not None for n in "
             "('core', 'ha', 'roles', 'storage', 'drivers', 'templates', 'appliance.ha.cib', 'appliance.core')}))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                                      check=True).stdout)
    assert found == {"core": False, "ha": False, "roles": False, "storage": False, "drivers": False,
                     "templates": False, "appliance.ha.cib": True, "appliance.core": True}


def test_every_package_folder_is_declared_in_pyproject():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in {**FOLDERS, "templates": "appliance.templates"}.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found <= declared, f"packages missing from pyproject: {sorted(found - declared)}"


@pytest.mark.parametrize("template", template_names())
def test_every_template_prints_the_managed_by_header(template):
    source = (ROOT / "templates" / template).read_text()
    assert "{{ managed_by }}" in source


def test_missing_template_variable_is_an_error_not_an_empty_string():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render("heartbeat/authkeys.j2")


def test_a_missing_real_component_fails_in_ci_and_skips_elsewhere(monkeypatch):
    from tests.conftest import require_tool

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_tool("appliance-no-such-tool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_tool("appliance-no-such-tool")
    require_tool("sh")  # present: returns quietly


def test_the_import_linter_contracts_hold(tmp_path):
    """lint-imports on a copy laid out as installed: grimp reads one folder per package."""
    import shutil

    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        from tests.conftest import require_tool

        require_tool(str(lint))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "appliance", tmp_path / "appliance", ignore=ignore)
    for folder, package in {**FOLDERS, "inventory": "appliance.inventory", "templates": "appliance.templates"}.items():
        if folder != "appliance":
            shutil.copytree(ROOT / folder, tmp_path / "appliance" / package.split(".", 1)[1], ignore=ignore)
    result = subprocess.run([str(lint), str(ROOT / ".importlinter"), "--no-cache"], cwd=tmp_path,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout
