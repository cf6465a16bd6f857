"""How install decides a file is already as wanted: content, mode and owner; large files by digest."""
from __future__ import annotations

import hashlib

from appliance.install import Installer
from appliance.roles.model import FileSpec
from appliance.runner.recording import Expected, RecordingRunner
from tests.conftest import load_test_site

WHEEL = b"PK\x03\x04 not really a wheel" * 1000
PATH = "/var/cache/appliance/appliance-0.1.0-py3-none-any.whl"


def installer(runner) -> Installer:
    return Installer(load_test_site(), {runner.host: runner})


def test_a_large_file_with_the_same_digest_is_not_read_back_nor_sent():
    digest = hashlib.sha256(WHEEL).hexdigest()
    runner = RecordingRunner("cloud-cc01", [Expected(f"sha256sum {PATH}", stdout=f"{digest}  {PATH}\n"),
                                            Expected(f"stat -c '%a %U %G' {PATH}", stdout="644 root root\n")])
    changed = installer(runner)._file("manager", "cloud-cc01", runner, FileSpec(PATH, WHEEL, by_digest=True))
    runner.assert_done()
    assert not changed and PATH not in runner.files


def test_a_large_file_that_differs_or_is_missing_is_sent():
    for listed in (Expected(f"sha256sum {PATH}", stdout=f"{'0' * 64}  {PATH}\n"),
                   Expected(f"sha256sum {PATH}", returncode=1, stderr="No such file or directory")):
        runner = RecordingRunner("cloud-cc01", [listed] + (
            [Expected(f"stat -c '%a %U %G' {PATH}", stdout="644 root root\n")] if listed.returncode == 0 else [])
            + [Expected("install -d -m 0755 /var/cache/appliance")])
        changed = installer(runner)._file("manager", "cloud-cc01", runner, FileSpec(PATH, WHEEL, by_digest=True))
        runner.assert_done()
        assert changed and runner.files[PATH] == WHEEL
