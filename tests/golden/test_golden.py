"""Every rendered file compared byte for byte with tests/golden/. `pytest --update-golden` rewrites them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.lab.lab import inventory_text as lab_inventory_text
from appliance.plan import plan_data, plan_text
from appliance.inventory.secrets import Redactor
from appliance.roles.registry import plan_site
from tests.conftest import EXAMPLE, GOLDEN, ROOT, load_test_site

VARIANTS = {
    "two-node": lambda text: text,
    "drbd84": lambda text: text.replace('version = "9"', 'version = "8.4"'),
    "heartbeat": lambda text: text.replace('stack = "corosync"', 'stack = "heartbeat"'),
    # What `appliance lab up` writes: the files the lab really installs (no DRBD, a supervisor, ...).
    "lab": lambda text: lab_inventory_text(Path("/tmp/appliance-lab")),
}


def variant_site(name: str, tmp_path: Path):
    path = tmp_path / "two-node.toml"
    path.write_text(VARIANTS[name](EXAMPLE.read_text()))
    return load_test_site(path)


def rendered(site) -> dict[str, bytes]:
    return {f"{node.node}{spec.path}": spec.content for plan in plan_site(site) for node in plan.nodes
            for spec in node.files}


def compare(actual: dict[str, bytes], directory: Path, update: bool) -> None:
    if update:
        for rel, content in actual.items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        for existing in directory.rglob("*"):
            if existing.is_file() and str(existing.relative_to(directory)) not in actual:
                existing.unlink()
        return
    expected = {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    assert sorted(actual) == sorted(expected), "files added or removed: run pytest --update-golden and review"
    for rel in sorted(actual):
        assert actual[rel] == expected[rel], f"{rel} differs from {directory / rel}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_files_match_golden(variant, tmp_path, update_golden):
    compare(rendered(variant_site(variant, tmp_path)), GOLDEN / "files" / variant, update_golden)


def test_variants_differ_where_they_should(tmp_path):
    base = rendered(variant_site("two-node", tmp_path))
    old = rendered(variant_site("drbd84", tmp_path))
    hb = rendered(variant_site("heartbeat", tmp_path))
    changed = {k for k in base if base[k] != old.get(k)}
    assert changed == {"cloud-cc01/etc/drbd.d/global_common.conf", "cloud-cc02/etc/drbd.d/global_common.conf",
                       "cloud-cc01/etc/drbd.d/one-disk.res", "cloud-cc02/etc/drbd.d/one-disk.res",
                       "cloud-cc01/etc/drbd.d/data-disk.res", "cloud-cc02/etc/drbd.d/data-disk.res"}
    assert "cluster/var/lib/appliance/cib.xml" not in hb and "cloud-cc01/etc/ha.d/haresources" in hb


def test_install_check_text_matches_golden(update_golden, monkeypatch):
    monkeypatch.chdir(ROOT)
    site = load_test_site(Path("examples/two-node.toml"))
    text = plan_text(plan_data(site, plan_site(site), Redactor(site.secrets)))
    golden = GOLDEN / "plan" / "two-node.txt"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
