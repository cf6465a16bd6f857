"""The SSD cache in the deploy path: a qcow2 datastore with cache_mb makes each VM disk an overlay
whose backing file is its image served by the host's nbdkit cache (storage/cachehost.py); qemu
reads the image through it, a second VM of the same image on the host shares the warm cache, and a
migration starts the service on the target first."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from appliance.runner.local import LocalRunner
from appliance.storage import cachehost
from appliance.storage.cachehost import CacheHost
from appliance.storage.qcow2 import Qcow2Backend
from tests.conftest import GOLDEN, require_tool


@pytest.fixture
def cache_dir():
    # Short: the socket lives here and a UNIX socket path has 107 bytes at most.
    directory = tempfile.mkdtemp(prefix="apl-c-", dir="/tmp")
    try:
        yield directory
    finally:
        host = CacheHost(LocalRunner(), directory)
        for pid in Path(directory).glob("*.pid"):
            subprocess.run(["sh", "-c", f"kill $(cat {pid}) 2>/dev/null; true"])
        del host
        shutil.rmtree(directory, ignore_errors=True)


def _image(ds: Path) -> str:
    image = ds / "images" / "1.qcow2"
    image.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 8M", str(image)], check=True, capture_output=True)
    return str(image)


def _read(disk: str, pattern: int, length: str = "8M") -> None:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} 0 {length}", disk], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "fail" not in out.stdout.lower(), out.stdout + out.stderr


def _stop_all(cache_dir: str) -> None:
    for pid in Path(cache_dir).glob("*.pid"):
        subprocess.run(["sh", "-c", f"kill $(cat {pid}); while kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.05; done"],
                       timeout=30)


def test_vm_disks_read_their_image_through_the_hosts_cache(tmp_path, cache_dir):
    require_tool("nbdkit", "qemu-img", "qemu-io")
    ds = tmp_path / "ds"
    image = _image(ds)
    backend = Qcow2Backend(LocalRunner(), cache_mb=16, cache_dir=cache_dir, cache_trace=True)
    first, second = backend.disk_path(str(ds), 1, 0), backend.disk_path(str(ds), 2, 0)
    backend.clone(image, first, host="hv01")
    backend.clone(image, second, host="hv01")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", first], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == cachehost.uri(cache_dir, image) and info["virtual-size"] == 64 * 1024 ** 2
    assert backend.verify(first, image) and not backend.verify(first, image + ".other")
    assert len(list(Path(cache_dir).glob("*.pid"))) == 1  # one service per image per host, shared
    _read(first, 0x3c)  # the first VM warms the cache
    _read(second, 0x3c)  # the second reads the same blocks: from the SSD file
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", first], check=True, capture_output=True)
    _read(second, 0x3c, "1M")  # a VM's writes stay in its own overlay
    _read(image, 0x3c)
    _stop_all(cache_dir)
    stats = CacheHost(LocalRunner(), cache_dir).stats(image)
    assert stats["hits"] > 0 and stats["misses"] > 0 and stats["bytes_from_cache"] >= 8 * 1024 ** 2
    assert stats["cached_blocks"] * stats["block"] <= 16 * 1024 ** 2  # the budget
    from appliance.storage.traces import read_trace
    trace = read_trace(Path(cachehost.paths(cache_dir, image)["trace"]))  # cache_trace: the access log
    assert trace.format == "own" and len(trace.blocks) == stats["hits"] + stats["misses"]


def test_a_migration_starts_the_image_service_on_the_target_first(tmp_path, cache_dir):
    require_tool("nbdkit", "qemu-img", "qemu-io")
    ds = tmp_path / "ds"
    image = _image(ds)
    started = []

    class Host(LocalRunner):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def run(self, argv, **kw):
            if "nbdkit" in argv:
                started.append(self.name)
            return super().run(argv, **kw)
    hosts = {"hv01": Host("hv01"), "hv02": Host("hv02")}
    backend = Qcow2Backend(LocalRunner(), cache_mb=8, cache_dir=cache_dir, host_runner=hosts.__getitem__)
    disk = backend.disk_path(str(ds), 3, 0)
    backend.clone(image, disk, host="hv01")
    assert started == ["hv01"]
    _stop_all(cache_dir)  # as if the target (another machine) had no service yet
    backend.premigrate(disk, "hv01", "hv02")
    assert started == ["hv01", "hv02"]
    _read(disk, 0x3c)  # the disk reads on the target through its own service


def test_a_service_that_cannot_start_is_a_driver_error_and_no_disk_is_left(tmp_path, cache_dir):
    require_tool("nbdkit", "qemu-img")
    from appliance.core.protocols import DriverError

    ds = tmp_path / "ds"
    image = _image(ds)
    backend = Qcow2Backend(LocalRunner(), cache_mb=8, cache_dir=cache_dir)
    backend._cache = lambda host: CacheHost(LocalRunner(), cache_dir, 8, plugin=str(tmp_path / "no-such-plugin.py"))
    disk = backend.disk_path(str(ds), 4, 0)
    with pytest.raises(DriverError, match="did not start"):
        backend.clone(image, disk, host="hv01")
    assert not Path(disk).exists() and not Path(disk + ".tmp").exists()


def test_commands_match_golden(update_golden):
    image = "/srv/one/images/7.qcow2"
    text = (" ".join(cachehost.serve_argv(image, "/var/cache/appliance/ssd", 2048, "/opt/appliance/nbdcache.py"))
            + "\n" + cachehost.uri("/var/cache/appliance/ssd", image) + "\n")
    golden = GOLDEN / "storage" / "cache-commands.txt"
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text()


def test_storage_runbook_a_cache_reset_by_hand_loses_nothing(tmp_path, cache_dir):
    """docs/runbooks/storage.md: stop the image's service, remove its .cache and .state.json; the
    next deploy starts it again, empty, and every VM still reads its image and its own writes."""
    require_tool("nbdkit", "qemu-img", "qemu-io")
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "runbooks" / "storage.md").read_text()
    assert "kill $(cat <cache_dir>/img-<key>.pid)" in text and "`.state.json`" in text
    ds = tmp_path / "ds"
    image = _image(ds)
    backend = Qcow2Backend(LocalRunner(), cache_mb=16, cache_dir=cache_dir)
    disk = backend.disk_path(str(ds), 5, 0)
    backend.clone(image, disk, host="hv01")
    _read(disk, 0x3c)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 64k", disk], check=True, capture_output=True)
    key = cachehost.key(image)
    _stop_all(cache_dir)  # the runbook's kill
    for suffix in (".cache", ".state.json"):  # the runbook's rm
        (Path(cache_dir) / f"{key}{suffix}").unlink()
    backend.clone(image, backend.disk_path(str(ds), 6, 0), host="hv01")  # the next deploy
    _read(backend.disk_path(str(ds), 6, 0), 0x3c)
    _read(disk, 0x22, "64k")  # the VM's own write, in its overlay
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x3c 64k 1M", disk], capture_output=True, text=True)
    assert out.returncode == 0 and "fail" not in out.stdout.lower(), out.stdout
    _stop_all(cache_dir)
    assert CacheHost(LocalRunner(), cache_dir).stats(image)["misses"] > 0  # it started cold


def test_an_image_made_again_at_the_same_path_is_never_served_from_the_old_file(tmp_path, cache_dir):
    """Image ids come back after a database restore: a service still holding the deleted file must
    not serve its bytes to the new image's VMs."""
    require_tool("nbdkit", "qemu-img", "qemu-io")
    ds = tmp_path / "ds"
    image = _image(ds)  # 0x3c
    host = CacheHost(LocalRunner(), cache_dir, 8)
    uri = host.ensure(image)
    Path(image).unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 1M", image], check=True, capture_output=True)
    assert host.ensure(image) == uri
    out = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x77 0 1M", uri], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "fail" not in out.stdout.lower(), out.stdout + out.stderr
    write = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x41 0 512", uri], capture_output=True, text=True,
                           timeout=60)
    assert write.returncode != 0 or "fail" in (write.stdout + write.stderr).lower()  # read-only: the image is safe
    _stop_all(cache_dir)


class _EmptyHost:
    """A host whose cache directory holds nothing: every command answers with nothing."""

    def run(self, argv, **kwargs):
        from appliance.core.runner import Result
        return Result(" ".join(argv), 0, "", "", "hv02")


def test_monitoring_reports_what_each_hosts_cache_holds_and_cached_ranks_by_it(world, cache_dir):
    """The producer of the scheduler's CACHED: each monitoring pass asks every cached image
    datastore what the host's SSD cache holds of each image (the counters its service saved) and
    keeps it as the host's CACHE attribute; a VM with rank CACHED then goes to the warm host."""
    require_tool("nbdkit", "qemu-img", "qemu-io")
    from appliance.core.actions.vms import VmSpec
    from appliance.core.authz import SYSTEM

    empty = _EmptyHost()
    world.backend = Qcow2Backend(LocalRunner(), cache_mb=16, cache_dir=cache_dir,
                                 host_runner=lambda host: empty if host == "hv02" else LocalRunner())
    for name in ("hv01", "hv02"):
        world.manager.hosts.create(SYSTEM, name, driver="fake")
    for kind in ("images", "system"):
        (world.tmp / kind).mkdir()
    # (The world's one backend serves both datastores: the cached qcow2 above.)
    images = world.manager.datastores.create(SYSTEM, "images", str(world.tmp / "images"), kind="image")
    world.manager.datastores.create(SYSTEM, "system", str(world.tmp / "system"))
    image = world.manager.images.create(SYSTEM, "base", images.id, size_mb=64, public=True)
    world.controller.monitor_hosts(force=True)
    hosts = {h.name: h for h in (world.manager.hosts.get(SYSTEM, i) for i in (1, 2))}
    assert hosts["hv01"].attributes.get("CACHE") == {} and hosts["hv02"].attributes.get("CACHE") == {}
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 8M", image.path], check=True, capture_output=True)
    disk = world.backend.disk_path(str(world.tmp / "system"), 99, 0)
    world.backend.clone(image.path, disk, host="hv01")  # a VM of this image ran on hv01 and read it
    _read(disk, 0x3c, "8M")
    _stop_all(cache_dir)  # the service saves its counters as it stops
    world.clock.sleep(60)  # the next monitoring pass is due
    world.controller.monitor_hosts()
    hosts = {h.name: h for h in (world.manager.hosts.get(SYSTEM, i) for i in (1, 2))}
    held = hosts["hv01"].attributes["CACHE"]
    assert list(held) == [str(image.id)] and 0.125 <= held[str(image.id)] <= 0.2  # 8 of its 64 MiB, and metadata
    assert hosts["hv02"].attributes["CACHE"] == {}
    vm = world.manager.vms.create(SYSTEM, VmSpec("warm", cpu=0.1, memory=64, disks=[image.id], rank="CACHED"))[0]
    world.settle()
    assert world.manager.hosts.get(SYSTEM, world.vm(vm.id).host_id).name == "hv01"


def test_a_cache_report_keeps_only_known_images_and_whole_numbers():
    """What a host answers is data, not trust: lines for images not asked, garbage and counts above
    the image's size are dropped or capped; an image of size 0 is never asked."""
    from appliance.core.runner import Result

    a, b = "/ds/images/1.qcow2", "/ds/images/2.qcow2"

    class Host:
        def run(self, argv, **kwargs):
            lines = [f"{cachehost.key(a)} 1048576", f"{cachehost.key(b)} 999999999999", "img-ffff 5",
                     f"{cachehost.key(a)} -3", "rm -rf /", ""]
            return Result(" ".join(argv), 0, "\n".join(lines), "", "hv01")

    held = CacheHost(Host(), "/var/cache/apl").held({a: 4 * 1048576, b: 1048576, "/ds/images/3.qcow2": 0})
    assert held == {a: 0.25, b: 1.0}
    assert CacheHost(Host(), "/var/cache/apl").held({"/ds/images/3.qcow2": 0}) == {}
