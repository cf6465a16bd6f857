"""The storage contract: the same tests for every backend in storage/registry.py, each against the
real system it drives (qemu-img for qcow2; the dummy keeps descriptors only). A backend joins the
registry only when it passes all of them; a verb it does not declare must answer NotSupported.

Crash safety is tested by killing a process that clones (SIGKILL, at many points in time): what
is left after the start-up sweep is a complete disk or none."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from appliance.core.protocols import VERBS, DiskSource, DriverError, NotSupported, ParamError, check_params
from appliance.drivers.libvirt import qemu_filename
from appliance.runner.local import LocalRunner
from appliance.storage import registry
from tests.conftest import ROOT, require_root_namespaces, require_tool


@dataclass
class Case:
    name: str
    needs: tuple[str, ...]  # programs the real system needs
    holds_data: bool  # qemu opens its disks through the rendered source
    params: Callable[[str], dict] = lambda unique: {}  # per test: `unique` keeps tests apart in a shared pool
    clone_seconds: float = 0.05  # about how long one clone takes: the kill test spreads its kills over 7 of them
    knows_clones: bool = False  # it can see an image's clones itself (qcow2's are in other datastores: the
    # manager refuses, IN_USE, before the backend is asked)


CASES = {c.name: c for c in (
    Case("qcow2", ("qemu-img",), True),
    Case("dummy", (), False, lambda unique: {"size_mb": 4096}),
    Case("rbd", ("ceph-mon", "ceph-osd", "ceph-mgr", "rbd", "qemu-img"), True,
         lambda unique: {"pool": "one", "user": "ds-one", "monitors": CEPH["cluster"].monitors,
                         "conf": str(CEPH["cluster"].conf), "keyring": str(CEPH["keyring"]), "prefix": unique,
                         "secret_uuid": "9ab3c7e2-2d4b-4a0c-8f5e-2c1d0e7f6a51"},
         clone_seconds=0.5, knows_clones=True),
    # Its datastore is a fresh directory in the module's MooseFS mount (_datastore).
    Case("moosefs", ("mfsmaster", "mfschunkserver", "mfsmount", "mfsmakesnapshot", "qemu-img"), True,
         lambda unique: {"goal": 2}, clone_seconds=0.08),
    Case("iscsi", ("tgtd", "tgtadm", "qemu-img"), True,
         lambda unique: {"iqn": "iqn.2026-12.org.example.test", "portal": TGT["target"].portal,
                         "control_port": TGT["target"].control_port, "prefix": unique}),
)}
CEPH: dict = {}  # the module's single-node Ceph, started by the first rbd case
TGT: dict = {}  # the module's tgtd, started by the first iscsi case
# Backends whose real system needs a kernel this machine lacks: their contract runs in the VM lab.
VM_LAB = {"lvm": "tests/vmlab/test_vmlab.py::test_lvm_datastore_clones_an_image_and_the_host_reads_it_over_aoe"}


@pytest.fixture(scope="module")
def moosefs_cluster(tmp_path_factory):
    """A MooseFS (master, two chunkservers, the FUSE mount; in a network namespace of its own) that
    this module starts and stops: appliance.lab.moosefs."""
    from appliance.lab import moosefs

    require_tool(*CASES["moosefs"].needs, "fusermount3", "nsenter")
    require_root_namespaces()
    directory = tmp_path_factory.mktemp("moosefs")
    try:
        yield moosefs.up(directory)
    finally:
        moosefs.down(directory)


@pytest.fixture(scope="module")
def tgt_target(tmp_path_factory):
    """A tgtd of this module's own (its own portal and management channel): appliance.lab.tgt."""
    from appliance.lab import tgt

    require_tool(*CASES["iscsi"].needs)
    directory = tmp_path_factory.mktemp("tgt")
    try:
        TGT["target"] = tgt.up(directory)
        yield TGT["target"]
    finally:
        TGT.clear()
        tgt.down(directory)


@pytest.fixture(scope="module")
def ceph_cluster(tmp_path_factory):
    """A single-node Ceph (cephx on) that this module starts and stops: appliance.lab.ceph."""
    from appliance.lab import ceph

    require_tool(*CASES["rbd"].needs)
    directory = tmp_path_factory.mktemp("ceph")
    cluster = ceph.up(directory)
    try:
        cluster.pool("one")
        CEPH.update(cluster=cluster, keyring=cluster.user("ds-one", "one"))
        yield cluster
    finally:
        CEPH.clear()
        ceph.down(directory)


def exists(backend, name: str) -> bool:
    if backend.name == "rbd":
        return backend._info(name) is not None
    return Path(name).exists()


def partials(backend, ds: str) -> list:
    if backend.name == "rbd":
        return [n for n in backend._names() if n.endswith(".tmp")]
    return list(Path(ds).rglob("*.tmp"))


def backend_params(request, name: str) -> dict:
    """The case's parameters; an RBD prefix of its own per test (they share one pool)."""
    return CASES[name].params(f"t{zlib.crc32(request.node.nodeid.encode()):08x}-")


def _datastore(name: str, directory: Path, request) -> str:
    """The test's datastore directory: `directory`, or for moosefs a new one in the MooseFS mount."""
    if name == "moosefs":
        mount = request.getfixturevalue("moosefs_cluster").mount
        directory = mount / f"t{zlib.crc32(request.node.nodeid.encode()):08x}"
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory)


def _build(name: str, runner, ds: str, request) -> tuple:
    if name == "rbd":
        request.getfixturevalue("ceph_cluster")
    elif name == "iscsi":
        request.getfixturevalue("tgt_target")
    elif name == "moosefs":
        request.getfixturevalue("moosefs_cluster")
    else:
        require_tool(*CASES[name].needs)
    params = backend_params(request, name)
    return registry.build(name, runner, ds, params), params


def test_every_registered_backend_is_under_contract():
    assert set(CASES) | set(VM_LAB) == set(registry.TYPES), \
        "a backend in the registry has no contract case (or the reverse)"
    for test in VM_LAB.values():  # and the VM lab test it names exists
        path, function = test.split("::")
        assert f"def {function}(" in (ROOT / path).read_text(), test


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    datastore = _datastore(request.param, tmp_path / "ds", request)
    backend, params = _build(request.param, LocalRunner(), datastore, request)
    return CASES[request.param], backend, datastore


def _open_with_qemu(source: DiskSource) -> dict:
    conf = str(CEPH["cluster"].conf) if source.kind == "rbd" else ""
    out = subprocess.run(["qemu-img", "info", "--output=json", "--force-share", qemu_filename(source, conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_declares_its_verbs_and_refuses_the_others(case):
    c, backend, ds = case
    assert backend.name == c.name and backend.verbs <= set(VERBS)
    assert registry.TYPES[c.name].verbs >= backend.verbs
    calls: dict[str, Callable[[], object]] = {
        "mkimage": lambda: backend.create_image(backend.image_path(ds, 90), 1),
        "resize": lambda: backend.resize(backend.image_path(ds, 90), 2),
        "snap_create": lambda: backend.snapshot_create(backend.image_path(ds, 90), "s"),
        "snap_revert": lambda: backend.snapshot_revert(backend.image_path(ds, 90), "s"),
        "snap_delete": lambda: backend.snapshot_delete(backend.image_path(ds, 90), "s"),
        "premigrate": lambda: backend.premigrate(backend.disk_path(ds, 1, 0), "a", "b"),
        "postmigrate": lambda: backend.postmigrate(backend.disk_path(ds, 1, 0), "a", "b"),
    }
    for verb, call in calls.items():
        if verb not in backend.verbs:
            with pytest.raises(NotSupported):
                call()


def test_a_backend_without_a_verb_answers_not_supported_before_touching_anything(tmp_path):
    backend = registry.build("dummy", LocalRunner(), str(tmp_path), {"verbs": "capacity,clone"})
    image = backend.image_path(str(tmp_path), 1)
    with pytest.raises(NotSupported) as caught:
        backend.create_image(image, 1)
    assert caught.value.verb == "mkimage" and "cannot create a blank image" in str(caught.value)
    assert not any(tmp_path.rglob("*")), "a refused verb wrote something"


def test_image_clone_verify_source_and_delete(case):
    c, backend, ds = case
    image = backend.image_path(ds, 1)
    backend.create_image(image, 16)
    disk = backend.disk_path(ds, 7, 0)
    assert not backend.verify(disk, image)
    backend.clone(image, disk, host="hv01")
    assert backend.verify(disk, image) and not backend.verify(disk, backend.image_path(ds, 2))
    source = backend.disk_source(disk, "hv01")
    assert source.kind in ("file", "block", "rbd", "iscsi", "nbd")
    if c.holds_data:
        info = _open_with_qemu(source)
        assert info["virtual-size"] == 16 * 1024 * 1024
    assert backend.vm_ids_with_disks(ds) == [7]
    backend.delete_vm_disks(ds, 7)
    assert backend.vm_ids_with_disks(ds) == [] and not backend.verify(disk, image)
    backend.delete_image(image)


@pytest.mark.parametrize("name", [n for n, c in sorted(CASES.items()) if c.knows_clones])
def test_deleting_an_image_with_clones_is_refused_and_changes_nothing(name, tmp_path, request):
    ds = str(tmp_path)
    backend, _ = _build(name, LocalRunner(), ds, request)
    image = backend.image_path(ds, 6)
    backend.create_image(image, 8)
    disk = backend.disk_path(ds, 9, 0)
    backend.clone(image, disk, host="hv01")
    with pytest.raises(DriverError, match="clone"):
        backend.delete_image(image)
    assert exists(backend, image) and backend.verify(disk, image)
    backend.delete_vm_disks(ds, 9)
    backend.delete_image(image)
    assert not exists(backend, image)


def test_resize_grows_and_refuses_to_shrink(case):
    c, backend, ds = case
    image = backend.image_path(ds, 3)
    backend.create_image(image, 16)
    backend.resize(image, 32)
    with pytest.raises(DriverError, match="would lose data"):
        backend.resize(image, 8)
    if c.holds_data:
        assert _open_with_qemu(backend.disk_source(image, "hv01"))["virtual-size"] == 32 * 1024 * 1024


def test_snapshots_round_trip_and_bad_names_are_refused(case):
    _, backend, ds = case
    image = backend.image_path(ds, 4)
    backend.create_image(image, 8)
    if "snap_create" not in backend.verbs:  # refused, and the image is as it was
        with pytest.raises(NotSupported):
            backend.snapshot_create(image, "before-upgrade")
        assert backend.snapshots(image) == [] and exists(backend, image)
        return
    backend.snapshot_create(image, "before-upgrade")
    assert backend.snapshots(image) == ["before-upgrade"]
    backend.snapshot_revert(image, "before-upgrade")
    backend.snapshot_delete(image, "before-upgrade")
    assert backend.snapshots(image) == []
    for bad in ("", "a b", "x" * 65, "../x", "bad name; rm -rf /"):
        with pytest.raises(DriverError):
            backend.snapshot_create(image, bad)
    assert backend.snapshots(image) == []


def test_a_full_datastore_refuses_a_blank_image_and_leaves_nothing(case):
    _, backend, ds = case
    total, free = backend.capacity(ds)
    assert 0 <= free <= total
    image = backend.image_path(ds, 5)
    with pytest.raises(DriverError, match="full"):
        backend.create_image(image, free + 1)
    assert not exists(backend, image) and not exists(backend, image + ".tmp")


def test_a_clone_of_a_missing_image_leaves_no_disk(case):
    _, backend, ds = case
    disk = backend.disk_path(ds, 8, 0)
    with pytest.raises(DriverError):
        backend.clone(backend.image_path(ds, 404), disk, host="hv01")
    assert not backend.verify(disk, backend.image_path(ds, 404))
    assert backend.remove_partial_disks(ds) == [] and not exists(backend, disk)


CLONER = """
import json, sys
from appliance.runner.local import LocalRunner
from appliance.storage import registry
name, ds, params, first = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
backend = registry.build(name, LocalRunner(), ds, params)
image = backend.image_path(ds, 1)
print("ready", flush=True)
for vm in range(first, first + 500):
    backend.clone(image, backend.disk_path(ds, vm, 0), host="hv01")
"""


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started, frozen first so nothing new starts meanwhile:
    a node losing power, or systemd killing a unit's cgroup. (LocalRunner gives each command a
    session of its own, so the process group alone would miss a qemu-img writing its .tmp.)"""
    os.kill(pid, signal.SIGSTOP)
    tree, found = {pid}, True
    while found:
        found = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in tree:
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent in tree:
                os.kill(int(entry.name), signal.SIGSTOP)
                tree.add(int(entry.name))
                found = True
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _sweep(backend, ds: str) -> None:
    """The start-up sweep, repeated while a partial disk is left: RBD keeps a killed client's watch
    on its half-made image for 30 s, and the sweep leaves a watched image for the next one."""
    deadline = time.monotonic() + 90
    backend.remove_partial_disks(ds)
    while partials(backend, ds) and time.monotonic() < deadline:
        time.sleep(2)  # a poll inside the deadline: Ceph's watch timeout is what we wait for
        backend.remove_partial_disks(ds)


def test_a_clone_killed_at_any_point_leaves_a_complete_disk_or_none(case, request):
    """kill -9 of the service that clones, after a different delay each time, each time on new VM
    ids: after the start-up sweep (remove_partial_disks), every disk that exists verifies as a child
    of its image, and no partial file is left."""
    c, backend, ds = case
    image = backend.image_path(ds, 1)
    backend.create_image(image, 16)
    # One clone first: what a first clone of an image sets up (RBD's protected snapshot) is not
    # what this test kills; a client killed inside `rbd snap create` leaves a watch that stalls
    # the image's next snapshot change for Ceph's watch timeout (30 s).
    backend.clone(image, backend.disk_path(ds, 1, 0), host="hv01")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = 0
    for attempt, delay in enumerate([0.02 + c.clone_seconds * 0.6 * i for i in range(12)]):
        first = 1000 * (attempt + 1)
        argv = [sys.executable, "-c", CLONER, c.name, ds, json.dumps(backend_params(request, c.name)), str(first)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        _kill_tree(process.pid)
        process.wait(timeout=30)
        _sweep(backend, ds)
        for vm in (v for v in backend.vm_ids_with_disks(ds) if first <= v < first + 1000):
            disk = backend.disk_path(ds, vm, 0)
            assert not exists(backend, disk) or backend.verify(disk, image), f"VM {vm}'s disk is half made"
            finished += exists(backend, disk)
        assert not partials(backend, ds), "the start-up sweep left a partial disk"
    assert finished, "no clone finished: the kills came too early to test anything"


@pytest.mark.parametrize("name", sorted(registry.TYPES))
def test_parameters_are_checked_against_the_declarations(name):
    declared = registry.TYPES[name]
    with pytest.raises(ParamError) as caught:
        check_params(declared, {"no_such_parameter": 1})
    for param in (p for p in declared.params if p.required):
        with pytest.raises(ParamError) as missing:
            check_params(declared, {p.name: p.example for p in declared.params if p.required and p is not param})
        assert missing.value.field == f"params.{param.name}"
    assert caught.value.field == "params.no_such_parameter"
    valid = {p.name: p.example for p in declared.params if p.required}
    assert None not in valid.values(), "a required parameter without an example"
    check_params(declared, valid)
    for param in declared.params:
        wrong = "not-a-number" if param.kind == "int" else 12345 if param.kind == "str" else "maybe"
        with pytest.raises(ParamError) as caught:
            check_params(declared, {**valid, param.name: wrong})
        assert caught.value.field == f"params.{param.name}"


def test_the_dummys_verbs_parameter_names_only_verbs():
    with pytest.raises(ParamError, match="'fly' is not a verb"):
        registry.params_for("dummy", {"verbs": "clone,fly"})


class PowerCut(BaseException):
    """Not an Exception: no `except DriverError` cleanup runs, as when the node loses power."""


class CutAfter:
    """A runner that runs the first `n` commands for real, then the power goes."""

    def __init__(self, n: int):
        self.inner, self.left = LocalRunner(), n

    def run(self, argv, **kwargs):
        if self.left == 0:
            raise PowerCut()
        self.left -= 1
        return self.inner.run(argv, **kwargs)


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n != "dummy"])
def test_a_clone_cut_between_any_two_commands_leaves_a_complete_disk_or_none(name, tmp_path, request):
    """The deterministic half of the crash test: the power goes after each command of a clone in
    turn (the kill test above covers the middle of one)."""
    ds = _datastore(name, tmp_path, request)
    backend, params = _build(name, LocalRunner(), ds, request)
    image = backend.image_path(ds, 1)
    backend.create_image(image, 16)
    cut = 0
    while True:
        runner = CutAfter(cut)
        victim = registry.build(name, runner, ds, params)
        disk = victim.disk_path(ds, 100 + cut, 0)
        try:
            victim.clone(image, disk, host="hv01")
        except PowerCut:
            pass
        else:
            assert backend.verify(disk, image)
            break
        _sweep(backend, ds)
        assert not exists(backend, disk) or backend.verify(disk, image), f"cut after {cut} commands: half a disk"
        assert not partials(backend, ds)
        cut += 1
    assert cut >= 1


def test_an_rbd_disk_named_like_ours_but_not_made_by_us_is_never_swept_or_deleted(request, tmp_path):
    """Names alone prove nothing (another install, an operator's disk): only the owner mark does."""
    backend, params = _build("rbd", LocalRunner(), str(tmp_path), request)
    cluster = CEPH["cluster"]
    foreign = f"one/{params['prefix']}vm-5-disk-0"
    subprocess.run(["rbd", "-c", str(cluster.conf), "create", "--size", "4M", foreign], check=True)
    assert backend.vm_ids_with_disks(str(tmp_path)) == []
    assert backend.quarantine_vm_disks(str(tmp_path), 5, "20261207T120000Z") == ""
    with pytest.raises(DriverError, match="did not make it"):
        backend.delete_vm_disks(str(tmp_path), 5)
    assert exists(backend, foreign)
    image = backend.image_path(str(tmp_path), 1)
    backend.create_image(image, 4)
    backend.clone(image, backend.disk_path(str(tmp_path), 6, 0), host="hv01")
    assert backend.vm_ids_with_disks(str(tmp_path)) == [6]  # its own disks it does find


class Answers:
    """A runner whose every command fails as `rbd` does when Ceph cannot answer."""

    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr, self.argvs = returncode, stderr, []

    def run(self, argv, check=True, **kwargs):
        from appliance.core.runner import CommandFailed, Result
        self.argvs.append(argv)
        result = Result(" ".join(argv), self.returncode, "", self.stderr, "localhost")
        if check:
            raise CommandFailed(result)
        return result


@pytest.mark.parametrize("returncode,stderr", [(124, ""), (2, "rbd: couldn't connect to the cluster!"),
                                               (1, "failed to fetch mon config (--no-mon-config to skip)")])
def test_rbd_never_takes_a_cluster_that_does_not_answer_for_an_image_that_is_gone(returncode, stderr):
    runner = Answers(returncode, stderr)
    backend = registry.build("rbd", runner, "/srv", {p.name: p.example for p in registry.TYPES["rbd"].params
                                                     if p.required})
    with pytest.raises(DriverError):
        backend.delete_image(backend.image_path("/srv", 3))
    assert all(a[a.index("--id") + 2] in ("info", "image-meta") for a in runner.argvs), runner.argvs
