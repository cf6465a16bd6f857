"""Real tier: the release install script with real venvs and a real pip, under a temporary prefix.

The wheels are tiny hand-made ones (a package "appliance" with the module the script imports), so
the test needs no index and no network; the lab tests install the real wheelhouse on a node.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

from appliance.roles.manager import INSTALL_RELEASE, release_name
from tests.conftest import require_tool


def wheel(directory: Path, version: str, importable: bool = True) -> Path:
    """A minimal valid wheel; `importable=False` leaves out the agent module the script checks."""
    files = {"appliance/__init__.py": f"VERSION = {version!r}\n".encode(),
             "appliance/ha/__init__.py": b""}
    if importable:
        files["appliance/ha/ocf_manager.py"] = b"AGENT = True\n"
    info = f"appliance-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: appliance\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(content)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"appliance-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def install(prefix: Path, releases: Path, built: Path) -> tuple[subprocess.CompletedProcess, str]:
    release = releases / release_name([(built.name, built.read_bytes())], built.name.split("-")[1])
    # No Pacemaker in PATH here: the restart branch must be skipped, not fail the install.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(prefix.parent)}
    done = subprocess.run(["sh", "-c", INSTALL_RELEASE, "sh", str(prefix), str(release), str(built.parent),
                           str(built), "p_manager"], capture_output=True, text=True, timeout=300, env=env)
    return done, str(release)


def version_at(prefix: Path) -> str:
    return subprocess.run([str(prefix / "bin" / "python"), "-c", "import appliance; print(appliance.VERSION)"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()


def test_a_release_is_built_beside_the_running_one_and_switched_by_a_link(tmp_path):
    require_tool("python3")
    prefix, releases = tmp_path / "appliance", tmp_path / "releases"
    houses = [tmp_path / f"house{i}" for i in range(4)]
    for house in houses:
        house.mkdir()

    first, first_release = install(prefix, releases, wheel(houses[0], "1.0"))
    assert first.returncode == 0, first.stderr
    assert os.readlink(prefix) == first_release and version_at(prefix) == "1.0"

    # A broken build (the agent module missing) fails and leaves the running release as it was.
    broken, broken_release = install(prefix, releases, wheel(houses[1], "2.0", importable=False))
    assert broken.returncode != 0 and "ocf_manager" in broken.stderr
    assert os.readlink(prefix) == first_release and version_at(prefix) == "1.0"
    assert not Path(broken_release).exists()  # nothing half-built left behind

    second, second_release = install(prefix, releases, wheel(houses[2], "2.0"))
    assert second.returncode == 0, second.stderr
    assert os.readlink(prefix) == second_release and version_at(prefix) == "2.0"

    # The current release and the one before it are kept (for a rollback), older ones go.
    third, third_release = install(prefix, releases, wheel(houses[3], "3.0"))
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in releases.iterdir()) == sorted([Path(second_release).name,
                                                                 Path(third_release).name])
    assert version_at(prefix) == "3.0" and not (tmp_path / "appliance.new").exists()


def test_a_directory_installed_by_hand_is_replaced_by_the_release_link(tmp_path):
    require_tool("python3")
    prefix, releases, house = tmp_path / "appliance", tmp_path / "releases", tmp_path / "house"
    house.mkdir()
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "appliance").write_text("#!/bin/sh\n")
    done, release = install(prefix, releases, wheel(house, "1.0"))
    assert done.returncode == 0, done.stderr
    assert os.readlink(prefix) == release and (tmp_path / "appliance.before-releases" / "bin" / "appliance").exists()


def test_the_release_name_follows_the_wheels_contents_not_their_order():
    a, b = ("appliance-1.0-py3-none-any.whl", b"one"), ("dep-1-py3-none-any.whl", b"two")
    assert release_name([a, b], "1.0") == release_name([b, a], "1.0")
    assert release_name([a, b], "1.0") != release_name([a, (b[0], b"rebuilt")], "1.0")
    assert release_name([a], "1.0").startswith("1.0-")
