"""The MooseFS lab removes only what it made and leaves nothing running: `up` and `down` on a
directory of someone else's files touch nothing (no MooseFS needed: both refuse before any
command), and an `up` that fails half-way stops every process it started and unmounts."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliance.lab import moosefs
from tests.conftest import require_root_namespaces, require_tool

NEEDS = ("mfsmaster", "mfschunkserver", "mfsmount", "mfsgetgoal", "fusermount3", "nsenter", "unshare")


def test_up_refuses_and_down_ignores_a_directory_the_lab_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("an operator's file\n")
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "master.pid").write_text(f"{os.getpid()} 1\n")  # a pid file alone proves nothing
    with pytest.raises(RuntimeError, match="did not make"):
        moosefs.up(tmp_path)
    moosefs.down(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["notes.txt", "pids",
                                                                                  "pids/master.pid"]


def test_a_marker_copied_from_another_lab_does_not_make_a_directory_ours(tmp_path):
    (tmp_path / moosefs.MARKER).write_text(moosefs._marker_text(tmp_path / "elsewhere"))
    (tmp_path / "notes.txt").write_text("kept\n")
    with pytest.raises(RuntimeError, match="did not make"):
        moosefs.up(tmp_path)
    moosefs.down(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "kept\n"


def test_down_kills_no_process_whose_pid_was_reused(tmp_path):
    """A pid file names a process by pid and start time: our own pid with another start time is a
    reused pid, and `down` leaves that process (this test) alone."""
    (tmp_path / moosefs.MARKER).write_text(moosefs._marker_text(tmp_path))
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "master.pid").write_text(f"{os.getpid()} 1\n")
    (tmp_path / "log").mkdir()
    moosefs.down(tmp_path)
    assert list(tmp_path.iterdir()) == []  # and this test still runs


def test_the_configs_name_only_the_namespace_address(tmp_path):
    master = moosefs.master_config(tmp_path)
    chunkserver = moosefs.chunkserver_config(tmp_path, "cs1")
    for text in (master, chunkserver):
        assert "127." not in text and f"= {moosefs.ADDRESS}" in text
    assert f"DATA_PATH = {tmp_path}/master" in master and f"DATA_PATH = {tmp_path}/cs1/data" in chunkserver
    assert moosefs.exports_config().startswith(f"{moosefs.ADDRESS}\t/\t")
    assert moosefs.proxy_port(bytes([127, 0, 0, 1, 0x85, 0xe5, 0, 0, 0, 1, 0, 3, 0, 0xea])) == 34277
    with pytest.raises(RuntimeError, match="expected at least 6"):
        moosefs.proxy_port(b"\x7f\x00")


def _recording_spawns(monkeypatch) -> list[int]:
    spawned: list[int] = []
    real = moosefs._spawn

    def spawn(*args, **kwargs):
        pid = real(*args, **kwargs)
        spawned.append(pid)
        return pid
    monkeypatch.setattr(moosefs, "_spawn", spawn)
    return spawned


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def _mounted_under(directory: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(directory) in line]


def _require_lab() -> None:
    require_tool(*NEEDS)
    require_root_namespaces()


def test_up_then_down_leaves_no_process_mount_or_namespace(tmp_path, monkeypatch):
    _require_lab()
    spawned = _recording_spawns(monkeypatch)
    cluster = moosefs.up(tmp_path / "lab")
    try:
        assert os.path.ismount(cluster.mount)
        # The tools answer on the host, through the bridge into the namespace.
        out = subprocess.run(["mfsgetgoal", str(cluster.mount)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert len(spawned) == len(moosefs.PROCESSES) and all(map(_running, spawned))
        holder_ns = os.readlink(f"/proc/{spawned[0]}/ns/net")
        assert holder_ns != os.readlink("/proc/self/ns/net")
    finally:
        moosefs.down(tmp_path / "lab")
    assert [pid for pid in spawned if _running(pid)] == []
    assert _mounted_under(tmp_path) == []
    assert list((tmp_path / "lab").iterdir()) == []


def test_an_up_that_fails_half_way_stops_everything_it_started(tmp_path, monkeypatch):
    """Everything runs and is mounted when the last step fails: all of it goes again."""
    _require_lab()
    spawned = _recording_spawns(monkeypatch)

    def fail(directory, holder):
        raise RuntimeError("moosefs lab: the bridge failed (injected)")
    monkeypatch.setattr(moosefs, "_start_bridge", fail)
    with pytest.raises(RuntimeError, match="injected"):
        moosefs.up(tmp_path / "lab")
    assert len(spawned) == len(moosefs.PROCESSES) - 1  # all but the bridge had started
    assert [pid for pid in spawned if _running(pid)] == []
    assert _mounted_under(tmp_path) == []
    assert list((tmp_path / "lab").iterdir()) == []
    moosefs.down(tmp_path / "lab")  # and a later down has nothing to do


def test_a_master_that_cannot_start_is_named_with_its_log_and_nothing_is_left(tmp_path, monkeypatch):
    _require_lab()
    spawned = _recording_spawns(monkeypatch)
    real = moosefs.master_config
    # An address the namespace does not have: the master cannot listen and exits.
    monkeypatch.setattr(moosefs, "master_config", lambda directory: real(directory, "10.213.0.99"))
    with pytest.raises(RuntimeError, match=r"master exited before the master listening; see .*/log/master\.log"):
        moosefs.up(tmp_path / "lab")
    assert [pid for pid in spawned if _running(pid)] == []
    assert _mounted_under(tmp_path) == []
