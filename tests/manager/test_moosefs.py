"""What only the MooseFS backend does, against a real MooseFS (appliance.lab.moosefs): a goal per
datastore, clones that share the image's chunks, and disks that outlive their image. The verbs every
backend answers are in test_backend_contract.py."""
from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pytest

from appliance.core.protocols import DriverError
from appliance.runner.local import LocalRunner
from appliance.storage import registry
from appliance.storage.moosefs import MoosefsBackend, parse_goal
from tests.conftest import require_root_namespaces, require_tool

NEEDS = ("mfsmaster", "mfschunkserver", "mfsmount", "mfsmakesnapshot", "mfsgetgoal", "qemu-img", "qemu-io",
         "fusermount3", "nsenter")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from appliance.lab import moosefs

    require_tool(*NEEDS)
    require_root_namespaces()
    directory = tmp_path_factory.mktemp("moosefs")
    try:
        yield moosefs.up(directory)
    finally:
        moosefs.down(directory)


@pytest.fixture
def datastore(cluster, request) -> str:
    path = cluster.mount / f"t{zlib.crc32(request.node.nodeid.encode()):08x}"
    path.mkdir()
    return str(path)


class Recording:
    """LocalRunner, and the argv of every command it ran."""

    def __init__(self):
        self.inner, self.argvs = LocalRunner(), []

    def run(self, argv, **kwargs):
        self.argvs.append(list(argv))
        return self.inner.run(argv, **kwargs)


class NoCommands:
    def run(self, argv, **kwargs):
        raise AssertionError(f"ran {argv} before checking its arguments")


def goal_of(path: str) -> int:
    out = subprocess.run(["mfsgetgoal", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return parse_goal(out.stdout, path)


def chunk_bytes(cluster) -> int:
    """What the chunkservers really store (allocated blocks of every chunk file)."""
    return sum(os.lstat(os.path.join(root, name)).st_blocks * 512
               for directory in cluster.chunk_dirs for root, _, names in os.walk(directory) for name in names)


def qemu_io(path: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, path], capture_output=True, text=True, timeout=120)


# -- goal -------------------------------------------------------------------------------------------
def test_each_datastore_keeps_its_own_goal_and_mfsgetgoal_reads_it_back(cluster, datastore):
    root_goal = goal_of(str(cluster.mount))
    one, three = Path(datastore, "one"), Path(datastore, "three")
    one.mkdir()
    three.mkdir()
    for path, goal in ((one, 1), (three, 3)):
        assert goal != root_goal  # so the backend had to set it
        backend = registry.build("moosefs", LocalRunner(), str(path), {"goal": goal})
        image = backend.image_path(str(path), 1)
        backend.create_image(image, 8)
        assert goal_of(str(path)) == goal and goal_of(image) == goal
    assert goal_of(str(cluster.mount)) == root_goal and goal_of(datastore) == root_goal  # only its own directory


def test_the_goal_is_read_first_and_set_only_when_different(datastore):
    runner = Recording()
    backend = registry.build("moosefs", runner, datastore, {"goal": 1})
    backend.create_image(backend.image_path(datastore, 1), 8)
    backend.clone(backend.image_path(datastore, 1), backend.disk_path(datastore, 5, 0))
    tools = [a for a in runner.argvs if a[0].startswith("mfs") and a[0] != "mfsmakesnapshot"]
    assert tools == [["mfsgetgoal", datastore], ["mfssetgoal", "-r", "1", datastore]]  # once per backend
    again = Recording()
    registry.build("moosefs", again, datastore, {"goal": 1}).create_image(backend.image_path(datastore, 2), 8)
    assert [a for a in again.argvs if a[0].startswith("mfs")] == [["mfsgetgoal", datastore]]


def test_a_directory_outside_moosefs_is_refused_with_the_fix(tmp_path):
    require_tool("mfsgetgoal", "qemu-img")
    backend = registry.build("moosefs", LocalRunner(), str(tmp_path), {})
    with pytest.raises(DriverError, match="not a directory on a MooseFS mount.*mount MooseFS with mfsmount"):
        backend.create_image(backend.image_path(str(tmp_path), 1), 8)
    assert list(tmp_path.iterdir()) == []


def test_goals_paths_and_sizes_are_checked_before_any_command():
    for goal in (0, 10, True, "2", 2.0):
        with pytest.raises(DriverError, match="goal"):
            MoosefsBackend(NoCommands(), "/srv/mfs/ds", goal=goal)
    for path in ("srv/ds", "/srv/../etc", "/srv/./ds", "/srv/a b", "/srv/ds;x", "-rf", "/srv//ds"):
        with pytest.raises(DriverError, match="absolute path"):
            MoosefsBackend(NoCommands(), path)
    backend = MoosefsBackend(NoCommands(), "/srv/mfs/ds")
    with pytest.raises(DriverError, match="outside the datastore"):
        backend.clone("/srv/mfs/ds/images/1.qcow2", "/srv/mfs/other/vms/1/disk.0.qcow2")
    with pytest.raises(DriverError, match="outside the datastore"):
        backend.create_image("/srv/mfs/dsx/images/1.qcow2", 8)  # a sibling sharing the name's start
    with pytest.raises(DriverError, match="absolute path"):
        backend.clone("/srv/mfs/ds/images/../../x", "/srv/mfs/ds/vms/1/disk.0.qcow2")
    with pytest.raises(DriverError, match="size_mb"):
        backend.resize("/srv/mfs/ds/vms/1/disk.0.qcow2", "64")


def test_parse_goal_reads_mfsgetgoal_and_refuses_what_is_not_a_goal():
    assert parse_goal("/mnt/mfs/ds: 2\n", "/mnt/mfs/ds") == 2
    for output in ("/mnt/mfs/ds: 'ssd_class'\n", "", "/mnt/mfs/other: 2\n", "/mnt/mfs/ds: 12\n"):
        with pytest.raises(DriverError, match="not a goal"):
            parse_goal(output, "/mnt/mfs/ds")


# -- clones -------------------------------------------------------------------------------------------
def test_a_clone_shares_the_images_chunks_until_it_writes(cluster, datastore):
    """A 10 GiB image with 64 MiB written: a plain copy stores those 64 MiB again (per goal copy),
    the clone stores nothing new; its first write copies only the chunk it touches, and the image
    keeps its data."""
    backend = registry.build("moosefs", LocalRunner(), datastore, {"goal": 2})
    image = backend.image_path(datastore, 1)
    backend.create_image(image, 10 * 1024)
    assert qemu_io(image, "write -P 0x5a 0 64M").returncode == 0

    before = chunk_bytes(cluster)
    subprocess.run(["cp", image, f"{datastore}/plain-copy"], check=True, timeout=120)
    copied = chunk_bytes(cluster) - before
    assert copied >= 2 * 64 * MiB, "the measure does not see a real copy"

    before = chunk_bytes(cluster)
    disk = backend.disk_path(datastore, 7, 0)
    backend.clone(image, disk, host="hv01")
    assert chunk_bytes(cluster) - before < 4 * MiB
    assert backend.verify(disk, image)
    info = subprocess.run(["qemu-img", "info", "--output=json", disk], capture_output=True, text=True, check=True)
    assert '"virtual-size": 10737418240' in info.stdout and "backing-filename" not in info.stdout

    assert qemu_io(disk, "write -P 0x11 0 1M").returncode == 0
    assert qemu_io(disk, "read -P 0x11 0 1M").returncode == 0
    assert qemu_io(image, "read -P 0x5a 0 64M").returncode == 0, "a write to the clone reached the image"


def test_a_disk_still_opens_after_its_image_is_deleted(datastore):
    backend = registry.build("moosefs", LocalRunner(), datastore, {})
    image = backend.image_path(datastore, 2)
    backend.create_image(image, 32)
    assert qemu_io(image, "write -P 0x33 0 4M").returncode == 0
    disk = backend.disk_path(datastore, 8, 0)
    backend.clone(image, disk, host="hv01")
    backend.delete_image(image)  # no refusal: the clone is a file of its own
    assert not Path(image).exists()
    assert qemu_io(disk, "read -P 0x33 0 4M").returncode == 0
    assert backend.virtual_size_mb(disk) == 32
    assert not backend.verify(disk, image)  # nothing ties it to a deleted image any more


def test_a_clone_never_replaces_an_existing_disk_and_a_grown_disk_still_verifies(datastore):
    backend = registry.build("moosefs", LocalRunner(), datastore, {})
    image, other = backend.image_path(datastore, 1), backend.image_path(datastore, 2)
    backend.create_image(image, 16)
    backend.create_image(other, 64)
    disk = backend.disk_path(datastore, 4, 0)
    backend.clone(image, disk, host="hv01")
    assert qemu_io(disk, "write -P 0x44 0 1M").returncode == 0  # the VM's data
    backend.resize(disk, 32)
    assert backend.verify(disk, image)  # grown, still this image's copy: the manager will not clone again
    with pytest.raises(DriverError, match="exists already"):
        backend.clone(other, disk, host="hv01")
    assert qemu_io(disk, "read -P 0x44 0 1M").returncode == 0 and backend.virtual_size_mb(disk) == 32
    assert not os.path.lexists(disk + ".tmp")


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_clone_of_anything_but_a_regular_file_is_refused_and_leaves_nothing(datastore, kind):
    backend = registry.build("moosefs", LocalRunner(), datastore, {})
    real = backend.image_path(datastore, 1)
    backend.create_image(real, 8)
    image = backend.image_path(datastore, 2)
    if kind == "symlink":
        os.symlink(real, image)  # a copied link would make the VM write into the image
    else:
        os.mkdir(image)
    disk = backend.disk_path(datastore, 9, 0)
    with pytest.raises(DriverError, match="not a regular file"):
        backend.clone(image, disk, host="hv01")
    assert not os.path.lexists(disk) and not os.path.lexists(disk + ".tmp")


def test_capacity_is_the_mounts_space_divided_by_the_goal(cluster, datastore):
    df = subprocess.run(["df", "--block-size=1M", "--output=size", datastore], capture_output=True, text=True,
                        check=True).stdout.split()
    raw_total = int(df[1])
    for goal in (1, 2, 3):
        total, free = registry.build("moosefs", LocalRunner(), datastore, {"goal": goal}).capacity(datastore)
        assert total == raw_total // goal and 0 <= free <= total
