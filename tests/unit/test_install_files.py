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


def test_file_states_script_reads_mode_owner_and_digest_of_real_files(tmp_path):
    """The one-command read of a role's files, run by the real sh, stat and sha256sum here."""
    import subprocess

    from appliance.install import FILE_STATES
    from appliance.runner.local import LocalRunner

    present = tmp_path / "with space.conf"
    present.write_bytes(b"content\n")
    present.chmod(0o640)
    specs = (FileSpec(str(present), b"content\n", mode=0o640), FileSpec(str(tmp_path / "missing"), b"x"),
             FileSpec(str(tmp_path), b"a directory is not a file"))
    states = Installer._file_states(LocalRunner(), specs)
    owner = subprocess.run(["stat", "-c", "%U %G", str(present)], capture_output=True, text=True).stdout.split()
    assert states == {str(present): ((0o640, owner[0], owner[1]), hashlib.sha256(b"content\n").hexdigest())}
    assert "\t" not in FILE_STATES  # the tabs are printf's, not literal characters in the argv


def test_a_file_whose_digest_and_mode_match_costs_no_further_command():
    runner = RecordingRunner("cloud-cc01", [])
    digest = hashlib.sha256(WHEEL).hexdigest()
    seen = ((0o644, "root", "root"), digest)
    changed = installer(runner)._file("manager", "cloud-cc01", runner, FileSpec(PATH, WHEEL, by_digest=True), seen)
    runner.assert_done()
    assert not changed
