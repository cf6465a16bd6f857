"""The SSD cache server (storage/nbdcache.py): BlockCache directly, then for real as an nbdkit Python
plugin that qemu-io reads and writes over NBD (a UNIX socket), restarted between runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appliance.storage.nbdcache import BlockCache
from tests.conftest import ROOT, require_tool

BLOCK = 4096


def _remote(path: Path, blocks: int) -> bytes:
    data = b"".join(bytes([n % 251]) * BLOCK for n in range(blocks))
    path.write_bytes(data)
    return data


def _cache(tmp_path: Path, budget_blocks: int, **kw) -> BlockCache:
    return BlockCache(str(tmp_path / "remote.raw"), str(tmp_path / "cache.bin"), str(tmp_path / "state.json"),
                      budget_blocks * BLOCK, BLOCK, **kw)


def test_reads_come_from_the_remote_then_from_the_cache_and_the_budget_holds(tmp_path):
    data = _remote(tmp_path / "remote.raw", 64)
    cache = _cache(tmp_path, 8)
    for _ in range(3):
        for n in range(4):  # a hot set that fits
            assert cache.pread(BLOCK, n * BLOCK) == data[n * BLOCK:(n + 1) * BLOCK]
    for n in range(64):  # one scan of the whole disk, each block read once
        assert cache.pread(BLOCK, n * BLOCK) == data[n * BLOCK:(n + 1) * BLOCK]
    assert cache.pread(3 * BLOCK + 100, 5 * BLOCK - 7) == data[5 * BLOCK - 7:8 * BLOCK + 93]  # unaligned
    stats = cache.stats()
    assert stats["hits"] >= 8 and stats["misses"] >= 64
    assert stats["cached_blocks"] <= 8 and os.path.getsize(tmp_path / "cache.bin") == 8 * BLOCK
    for n in range(4):  # the scan did not push the hot blocks out (LFU admission)
        assert n in cache.map
    cache.close()


def test_writes_go_through_to_the_remote_and_update_the_cached_copy(tmp_path):
    data = bytearray(_remote(tmp_path / "remote.raw", 16))
    cache = _cache(tmp_path, 4)
    for _ in range(2):
        cache.pread(BLOCK, 0)
    assert 0 in cache.map
    cache.pwrite(b"X" * 100, 50)
    cache.pwrite(b"Y" * BLOCK, 9 * BLOCK)  # not cached: the remote only
    data[50:150] = b"X" * 100
    data[9 * BLOCK:10 * BLOCK] = b"Y" * BLOCK
    assert (tmp_path / "remote.raw").read_bytes() == bytes(data)  # the remote is complete at once
    assert cache.pread(BLOCK, 0) == bytes(data[:BLOCK])  # and the cached copy is not stale
    assert cache.pread(BLOCK, 9 * BLOCK) == b"Y" * BLOCK
    with pytest.raises(ValueError):
        cache.pwrite(b"Z", 16 * BLOCK)
    cache.close()


def test_the_cache_survives_a_clean_restart(tmp_path):
    data = _remote(tmp_path / "remote.raw", 32)
    cache = _cache(tmp_path, 8)
    for _ in range(3):
        for n in range(6):
            cache.pread(BLOCK, n * BLOCK)
    before = cache.stats()
    cache.close()
    assert json.loads((tmp_path / "state.json").read_text())["clean"] is True
    assert oct(os.stat(tmp_path / "state.json").st_mode & 0o777) == "0o600"
    again = _cache(tmp_path, 8)
    assert again.stats()["hits"] == before["hits"] and again.map == cache.map
    remote_reads = again.bytes_from_remote
    for n in range(6):
        assert again.pread(BLOCK, n * BLOCK) == data[n * BLOCK:(n + 1) * BLOCK]
    assert again.bytes_from_remote == remote_reads  # all six from the local file
    again.close()


@pytest.mark.parametrize("what", ["crash", "remote changed", "other budget", "garbage", "cache file removed",
                                  "cache file cut", "policy too large"])
def test_a_state_it_cannot_trust_starts_an_empty_cache_and_serves_the_remote(tmp_path, what):
    data = bytearray(_remote(tmp_path / "remote.raw", 32))
    cache = _cache(tmp_path, 8)
    for _ in range(3):
        for n in range(6):
            cache.pread(BLOCK, n * BLOCK)
    if what == "crash":  # slots written after the last save, then the process dies (no close)
        cache.save()
        for _ in range(4):
            for n in range(6, 12):
                cache.pread(BLOCK, n * BLOCK)
        os.pwrite(cache.cache_fd, b"\0" * BLOCK, 0)  # whatever a half-done slot write left
        os.close(cache.cache_fd)  # the process dies: the kernel closes its files, its lock goes
        os.close(cache.remote_fd)
    else:
        cache.close()
    if what == "remote changed":  # someone wrote the image while the cache was down
        with open(tmp_path / "remote.raw", "r+b") as f:
            f.write(b"N" * BLOCK)
        data[:BLOCK] = b"N" * BLOCK
        os.utime(tmp_path / "remote.raw", ns=(1, 1))
    if what == "garbage":
        (tmp_path / "state.json").write_text('{"version": 1, "clean": true, "remote": "x"')
    if what == "cache file removed":  # an operator freed the SSD, the clean state stayed
        (tmp_path / "cache.bin").unlink()
    if what == "cache file cut":
        os.truncate(tmp_path / "cache.bin", BLOCK)
    if what == "policy too large":  # a state edited by hand: a policy bigger than the cache's slots
        saved = json.loads((tmp_path / "state.json").read_text())
        saved["policy"]["capacity"] = 10 ** 6
        (tmp_path / "state.json").write_text(json.dumps(saved))
    logged = []
    again = _cache(tmp_path, 4 if what == "other budget" else 8, log=logged.append)
    assert again.map == {} and logged, logged
    for n in range(12):
        assert again.pread(BLOCK, n * BLOCK) == bytes(data[n * BLOCK:(n + 1) * BLOCK])
    again.close()


# -- for real: nbdkit runs the plugin, qemu-io talks NBD to it -----------------------------------------
def _serve(tmp_path: Path, budget: int) -> tuple[subprocess.Popen, str]:
    socket = str(tmp_path / "nbd.sock")
    if os.path.exists(socket):  # the last run's: wait for this run's own
        os.unlink(socket)
    process = subprocess.Popen(
        ["nbdkit", "--foreground", "--unix", socket, "python", str(ROOT / "storage" / "nbdcache.py"),
         f"remote={tmp_path / 'remote.raw'}", f"cache={tmp_path / 'cache.bin'}", f"state={tmp_path / 'state.json'}",
         f"budget={budget}", f"block={BLOCK}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not os.path.exists(socket):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "nbdkit did not listen within 30 s"
        time.sleep(0.05)  # poll interval inside the deadline
    return process, f"nbd+unix:///?socket={socket}"


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # nbdkit unloads the plugin (the state is saved), then dies of it
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def _qemu_io(uri: str, *commands: str) -> str:
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    out = subprocess.run([*argv, uri], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "fail" not in out.stdout.lower() + out.stderr.lower(), out.stdout + out.stderr
    return out.stdout


def test_qemu_reads_and_writes_through_nbdkit_and_a_restart_keeps_the_cache_warm(tmp_path):
    require_tool("nbdkit", "qemu-io")
    _remote(tmp_path / "remote.raw", 64)
    process, uri = _serve(tmp_path, 16 * BLOCK)
    try:
        for _ in range(3):
            _qemu_io(uri, *(f"read -P {n % 251} {n * BLOCK} {BLOCK}" for n in range(8)))
        _qemu_io(uri, f"write -P 0x77 {2 * BLOCK} {BLOCK}")
    finally:
        _stop(process)
    with open(tmp_path / "remote.raw", "rb") as f:
        f.seek(2 * BLOCK)
        assert f.read(BLOCK) == b"\x77" * BLOCK  # written through
    first = json.loads((tmp_path / "state.json").read_text())
    assert first["clean"] and first["stats"]["hits"] >= 8 and first["stats"]["cached_blocks"] <= 16
    assert os.path.getsize(tmp_path / "cache.bin") == 16 * BLOCK

    process, uri = _serve(tmp_path, 16 * BLOCK)
    try:
        _qemu_io(uri, f"read -P 0x77 {2 * BLOCK} {BLOCK}", *(f"read -P {n % 251} {n * BLOCK} {BLOCK}"
                                                            for n in range(8) if n != 2))
    finally:
        _stop(process)
    second = json.loads((tmp_path / "state.json").read_text())["stats"]
    assert second["bytes_from_remote"] == first["stats"]["bytes_from_remote"]  # every read a local hit
    assert second["hits"] >= first["stats"]["hits"] + 8


def test_one_server_per_cache_file_and_a_readonly_image_is_never_written(tmp_path):
    """Two servers on one cache file would overwrite each other's slots: the second is refused.
    An image served read-only (what every VM's overlay reads) cannot be changed through the cache."""
    data = _remote(tmp_path / "remote.raw", 16)
    first = _cache(tmp_path, 4, readonly=True)
    with pytest.raises(RuntimeError, match="in use by another cache server"):
        _cache(tmp_path, 4)
    with pytest.raises(PermissionError):
        first.pwrite(b"X" * 10, 0)
    assert (tmp_path / "remote.raw").read_bytes() == data
    first.close()
    _cache(tmp_path, 4).close()  # free again once the first has gone


def test_the_caches_own_access_log_sizes_it_with_cache_analyze(tmp_path):
    """trace=FILE: every access in the own format `appliance cache analyze` reads."""
    from appliance.storage.traces import read_trace

    _remote(tmp_path / "remote.raw", 32)
    cache = _cache(tmp_path, 8, trace=str(tmp_path / "access.log"))
    reads = [n % 6 for n in range(30)] + list(range(32))
    for n in reads:
        cache.pread(BLOCK, n * BLOCK)
    cache.pwrite(b"W" * 10, 3 * BLOCK)
    cache.close()
    log = (tmp_path / "access.log").read_text().splitlines()
    assert log[0] == f"# appliance-cache-log v1 block_size={BLOCK}" and log[-1].endswith(" w 3")
    trace = read_trace(tmp_path / "access.log")
    assert trace.format == "own" and trace.block_size == BLOCK and list(trace.blocks) == reads + [3]
    assert list(read_trace(tmp_path / "access.log", reads_only=True).blocks) == reads
    assert oct(os.stat(tmp_path / "access.log").st_mode & 0o777) == "0o600"
