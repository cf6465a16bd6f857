"""qcow2 backend safety: imports stay inside their roots, odd sources fail fast, crashes and orphan
sweeps leave recoverable state. Real qemu-img on real files; chain_problems also on hand-made JSON."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.core.protocols import DriverError
from appliance.runner.local import LocalRunner
from appliance.storage import qcow2
from appliance.storage.qcow2 import MAX_CHAIN, Qcow2Backend, chain_problems
from tests.conftest import require_tool

STAMP = "20261129T041500Z"
GUARD = 120  # s: only to turn a hang into a failure, never a duration being measured


def under(root: Path | str):
    real = os.path.realpath(root)
    return lambda path: path == real or path.startswith(real + "/")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def info(path: Path | str) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True,
                                     check=True).stdout)


class Recording:
    """A LocalRunner that remembers every argv and can run a hook before a command."""

    def __init__(self, before=None):
        self.inner = LocalRunner()
        self.host = self.inner.host
        self.calls: list[list[str]] = []
        self.before = before

    def run(self, argv, **kwargs):
        self.calls.append(list(argv))
        if self.before:
            self.before(list(argv))
        return self.inner.run(argv, **kwargs)


@pytest.fixture
def backend():
    require_tool("qemu-img")
    return Qcow2Backend(LocalRunner())


@pytest.fixture
def dirs(tmp_path):
    root, outside, images = tmp_path / "import", tmp_path / "outside", tmp_path / "ds" / "images"
    for d in (root, outside, images):
        d.mkdir(parents=True)
    return root, outside, images


@pytest.fixture
def secret(dirs):
    """A qcow2 outside the import root."""
    path = dirs[1] / "secret.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "4M")
    return path


def refused(backend, source: Path, target: Path, allowed, *, names: str) -> DriverError:
    with pytest.raises(DriverError) as caught:
        backend.import_image(str(source), str(target), allowed)
    assert names in str(caught.value)
    assert not target.exists() and not Path(f"{target}.tmp").exists()
    assert list(target.parent.iterdir()) == []
    return caught.value


# -- import roots ------------------------------------------------------------------------------------
def test_absolute_backing_outside_the_root_is_refused(backend, dirs, secret):
    root, _, images = dirs
    top = root / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(secret), str(top))
    refused(backend, top, images / "1.qcow2", under(root), names=str(secret))


def test_relative_backing_outside_the_root_is_refused(backend, dirs, secret):
    root, _, images = dirs
    top = root / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../outside/secret.qcow2", str(top))
    refused(backend, top, images / "1.qcow2", under(root), names=str(secret))


def test_backing_through_a_symlink_inside_the_root_is_refused(backend, dirs, secret):
    root, _, images = dirs
    (root / "link.qcow2").symlink_to(secret)
    top = root / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "link.qcow2", str(top))
    refused(backend, top, images / "1.qcow2", under(root), names=str(secret))


def test_source_that_is_a_symlink_out_of_the_root_is_refused(backend, dirs, secret):
    root, _, images = dirs
    (root / "innocent.qcow2").symlink_to(secret)
    refused(backend, root / "innocent.qcow2", images / "1.qcow2", under(root), names=str(secret))


def test_source_named_with_dotdot_out_of_the_root_is_refused(backend, dirs, secret):
    root, _, images = dirs
    refused(backend, root / ".." / "outside" / "secret.qcow2", images / "1.qcow2", under(root), names=str(secret))


@pytest.mark.parametrize("backing", ['json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}',
                                     "nbd://127.0.0.1:1/export", "file:%s"])
def test_protocol_or_pseudo_filename_backing_is_refused_before_qemu_opens_it(dirs, secret, backing):
    require_tool("qemu-img")
    root, _, images = dirs
    backing = backing.replace("%s", str(secret))
    top = root / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", backing, str(top), "4M")
    runner = Recording()
    error = refused(Qcow2Backend(runner), top, images / "1.qcow2", lambda path: True, names=backing[:5])
    assert "not a plain file name" in str(error)
    assert not any(backing in argv for argv in runner.calls)  # refused on the name alone


def test_external_data_file_is_refused(backend, dirs):
    root, outside, images = dirs
    for data in (outside / "data.raw", root / "data.raw"):  # inside the root too: never flattened blindly
        top = root / "top.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(top), "4M")
        refused(backend, top, images / "1.qcow2", under(root), names=str(data))
        top.unlink()


def test_vmdk_extent_outside_the_root_is_refused(backend, dirs):
    root, outside, images = dirs
    (outside / "flat.raw").write_bytes(b"\0" * 1024 * 1024)
    (root / "disk.vmdk").write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                                    'createType="monolithicFlat"\n\nRW 2048 FLAT "../outside/flat.raw" 0\n')
    refused(backend, root / "disk.vmdk", images / "1.qcow2", under(root), names=str(outside / "flat.raw"))


def test_overlong_chain_is_refused(backend, dirs):
    root, _, images = dirs
    qemu_img("create", "-q", "-f", "qcow2", str(root / "0.qcow2"), "1M")
    for n in range(1, MAX_CHAIN + 1):  # MAX_CHAIN + 1 images
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", f"{n - 1}.qcow2", str(root / f"{n}.qcow2"))
    refused(backend, root / f"{MAX_CHAIN}.qcow2", images / "1.qcow2", under(root), names=f"more than {MAX_CHAIN}")
    assert backend.import_image(str(root / f"{MAX_CHAIN - 1}.qcow2"), str(images / "2.qcow2"), under(root)) == 1


def test_chain_inside_the_root_is_imported_flat_with_its_content(backend, dirs):
    root, _, images = dirs
    pattern = bytes(range(256)) * 4096 * 8  # 8 MiB
    (root / "sub").mkdir()
    (root / "sub" / "base.raw").write_bytes(pattern)
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "sub/base.raw", str(root / "mid.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(root / "mid.qcow2"), str(root / "top.qcow2"),
             "16M")
    target = images / "3.qcow2"
    assert backend.import_image(str(root / "top.qcow2"), str(target), under(root)) == 16
    made = info(target)
    assert made["format"] == "qcow2" and "backing-filename" not in made
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(target), str(root / "check.raw"))
    content = (root / "check.raw").read_bytes()
    assert content[:len(pattern)] == pattern and content[len(pattern):] == b"\0" * (8 * 1024 * 1024)
    assert not Path(f"{target}.tmp").exists()


def test_convert_is_told_the_checked_format(dirs):
    require_tool("qemu-img")
    root, _, images = dirs
    (root / "disk.raw").write_bytes(b"\0" * 1024 * 1024)
    runner = Recording()
    assert Qcow2Backend(runner).import_image(str(root / "disk.raw"), str(images / "1.qcow2"), under(root)) == 1
    convert = next(argv for argv in runner.calls if argv[:2] == ["qemu-img", "convert"])
    assert convert[2:4] == ["-f", "raw"]
    assert not any("--backing-chain" in argv for argv in runner.calls)


# -- sources that are not regular files ------------------------------------------------------------
def import_in_thread(backend, source: str, target: str, allowed=lambda path: True) -> BaseException | None:
    """Run the import in a thread; fail (not hang) the test when it does not return."""
    outcome: list[BaseException | None] = []

    def work():
        try:
            backend.import_image(source, target, allowed)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), f"import of {source} hung"
    return outcome[0]


def test_fifo_source_is_refused_without_hanging(backend, dirs):
    root, _, images = dirs
    os.mkfifo(root / "pipe.qcow2")
    error = import_in_thread(backend, str(root / "pipe.qcow2"), str(images / "1.qcow2"), under(root))
    assert isinstance(error, DriverError) and "FIFO" in str(error)
    assert list(images.iterdir()) == []


@pytest.mark.parametrize("kind", ["directory", "character device"])
def test_directory_and_device_sources_are_refused(backend, dirs, kind):
    root, _, images = dirs
    source = str(root) if kind == "directory" else "/dev/null"
    with pytest.raises(DriverError, match=kind):
        backend.import_image(source, str(images / "1.qcow2"))
    assert list(images.iterdir()) == []


def test_missing_or_relative_source_is_refused(backend, dirs):
    root, _, images = dirs
    with pytest.raises(DriverError):
        backend.import_image(str(root / "missing.qcow2"), str(images / "1.qcow2"))
    with pytest.raises(DriverError, match="absolute"):
        backend.import_image("top.qcow2", str(images / "1.qcow2"))
    assert list(images.iterdir()) == []


@pytest.mark.parametrize("swap_before", ["info", "convert"])
def test_source_swapped_for_a_fifo_after_the_checks_times_out(dirs, swap_before):
    """The race the stat check cannot close: every qemu-img call has a timeout, so it ends in DriverError."""
    require_tool("qemu-img")
    root, _, images = dirs
    source = root / "disk.raw"
    source.write_bytes(b"\0" * 1024 * 1024)
    swapped = []

    def swap(argv):
        if argv[:2] == ["qemu-img", swap_before] and not swapped:
            source.unlink()
            os.mkfifo(source)
            swapped.append(argv)

    backend = Qcow2Backend(Recording(swap), info_timeout=1, convert_timeout=1)
    error = import_in_thread(backend, str(source), str(images / "1.qcow2"), under(root))
    assert swapped and isinstance(error, DriverError) and "timed out" in str(error)
    assert list(images.iterdir()) == []  # the partial .tmp of a killed convert is removed


# -- chain_problems, pure ----------------------------------------------------------------------------
ROOT = "/nonexistent-appliance-import/root"
INSIDE = under(ROOT)


def layer(filename: str, backing: str | None = None, full: str | None = None, fmt: str = "qcow2", **extra) -> dict:
    entry = {"filename": filename, "format": fmt, "virtual-size": 1 << 20, **extra}
    if backing is not None:
        entry["backing-filename"] = backing
        entry["backing-filename-format"] = "qcow2"
    if full is not None:
        entry["full-backing-filename"] = full
    return entry


def test_chain_problems_accepts_a_clean_chain_as_json_text_or_parsed():
    chain = [layer(f"{ROOT}/top.qcow2", "base.qcow2", f"{ROOT}/base.qcow2"), layer(f"{ROOT}/base.qcow2")]
    assert chain_problems(json.dumps(chain), INSIDE) == []
    assert chain_problems(chain, INSIDE) == []
    assert chain_problems(layer(f"{ROOT}/a:b.raw", fmt="raw"), INSIDE) == []  # ':' after a '/' is a file


def test_chain_problems_names_a_backing_file_outside():
    chain = [layer(f"{ROOT}/top.qcow2", "/srv/secret.qcow2", "/srv/secret.qcow2"), layer("/srv/secret.qcow2")]
    problems = chain_problems(chain, INSIDE)
    assert problems and all("/srv/secret.qcow2" in p for p in problems)


def test_chain_problems_checks_the_next_backing_even_when_the_chain_stops_early():
    assert chain_problems([layer(f"{ROOT}/top.qcow2", "/etc/shadow")], INSIDE)
    # relative, no full-backing-filename: resolved from the image's own directory, as qemu does
    problems = chain_problems([layer(f"{ROOT}/a/top.qcow2", "../../etc/shadow")], INSIDE)
    assert problems and "/nonexistent-appliance-import/etc/shadow" in problems[0]
    assert chain_problems([layer(f"{ROOT}/a/top.qcow2", "../base.qcow2")], INSIDE) == []


@pytest.mark.parametrize("name", ['json:{"file":{"filename":"/etc/shadow"}}', "nbd://h:10809/x", "nbd:unix:/s",
                                  "http://h/x", "https://h/x", "ssh://h/x", "file:/etc/shadow", "gluster+tcp://h/v",
                                  "fat:rw:/etc", "", "top\n.qcow2"])
def test_chain_problems_refuses_protocols_and_pseudo_filenames(name):
    assert chain_problems([layer(f"{ROOT}/top.qcow2", name, name)], lambda path: True)
    assert chain_problems([layer(f"{ROOT}/top.qcow2", name)], lambda path: True)
    assert chain_problems([layer(name)], lambda path: True)


def test_chain_problems_refuses_data_files_odd_formats_and_outside_extents():
    data_file = {"type": "qcow2", "data": {"compat": "1.1", "data-file": f"{ROOT}/data.raw"}}
    assert "data.raw" in chain_problems([layer(f"{ROOT}/a.qcow2", **{"format-specific": data_file})], INSIDE)[0]
    assert chain_problems([layer(f"{ROOT}/a.qed", fmt="qed")], INSIDE)
    assert chain_problems([layer(f"{ROOT}/a.luks", fmt="luks")], INSIDE)
    odd_backing = layer(f"{ROOT}/a.qcow2", "b.qcow", f"{ROOT}/b.qcow")
    odd_backing["backing-filename-format"] = "qcow"
    assert chain_problems([odd_backing], INSIDE)
    extents = {"type": "vmdk", "data": {"extents": [{"filename": f"{ROOT}/a.vmdk"}, {"filename": "/dev/sda"}]}}
    problems = chain_problems([layer(f"{ROOT}/a.vmdk", fmt="vmdk", **{"format-specific": extents})], INSIDE)
    assert len(problems) == 1 and "/dev/sda" in problems[0]


def test_chain_problems_limits_the_chain_length():
    def chain(n: int, more: bool = False) -> list[dict]:
        names = [f"{ROOT}/{i}.qcow2" for i in range(n + 1)]
        return [layer(names[i], names[i + 1], names[i + 1]) if i < n - 1 or more else layer(names[i])
                for i in range(n)]
    assert chain_problems(chain(MAX_CHAIN), INSIDE) == []
    assert chain_problems(chain(MAX_CHAIN + 1), INSIDE)
    assert chain_problems(chain(MAX_CHAIN, more=True), INSIDE)  # would need one more image


@pytest.mark.parametrize("garbage", ["not json", "[]", "[1]", "null", [], [None]])
def test_chain_problems_refuses_what_is_not_an_image_description(garbage):
    assert chain_problems(garbage, lambda path: True)


SEGMENT = st.sampled_from(["a", "b", "..", ".", "root", "nonexistent-appliance-import"])
NAME = st.builds(lambda absolute, segments: ("/" if absolute else "") + "/".join(segments),
                 st.booleans(), st.lists(SEGMENT, min_size=1, max_size=6))
TOP = st.builds(lambda prefix, segments: prefix + "/" + "/".join(segments),
                st.sampled_from(["", ROOT]), st.lists(SEGMENT, min_size=1, max_size=4))


@settings(max_examples=300, deadline=None)
@given(top=TOP, backings=st.lists(NAME, max_size=MAX_CHAIN - 1), with_full=st.booleans(), stop_early=st.booleans())
def test_property_any_file_outside_the_root_is_a_problem(top, backings, with_full, stop_early):
    """Every file the chain would open (each image, each backing name, the one after a short chain)
    outside the root makes a problem; a chain entirely inside makes none."""
    files, chain = [top], []
    for backing in backings:
        full = backing if backing.startswith("/") else os.path.join(os.path.dirname(files[-1]), backing)
        chain.append(layer(files[-1], backing, full if with_full else None))
        files.append(full)
    chain.append(layer(files[-1]))
    if stop_early and len(chain) > 1:
        chain.pop()  # the last backing is named but not described
    outside = [f for f in files if not INSIDE(os.path.realpath(f))]
    problems = chain_problems(chain, INSIDE)
    assert bool(problems) == bool(outside), (outside, problems)


# -- partial files -----------------------------------------------------------------------------------
def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_remove_partial_images_removes_only_numbered_qcow2_tmp_files(backend, tmp_path):
    images = tmp_path / "images"
    partial = [images / "1.qcow2.tmp", images / "23.qcow2.tmp"]
    kept = [images / "1.qcow2", images / "notes.tmp", images / "x1.qcow2.tmp", images / "1.qcow2.tmp.keep",
            images / "7.raw.tmp", images / "sub" / "2.qcow2.tmp", images / " 4.qcow2.tmp", tmp_path / "9.qcow2.tmp",
            tmp_path / "vms" / "3" / "disk.0.qcow2.tmp"]
    touch(*partial, *kept)
    (images / "5.qcow2.tmp").mkdir()
    assert backend.remove_partial_images(str(tmp_path)) == [str(p) for p in partial]
    assert not any(p.exists() for p in partial) and all(p.exists() for p in kept)
    assert (images / "5.qcow2.tmp").is_dir()
    assert backend.remove_partial_images(str(tmp_path)) == []
    assert backend.remove_partial_images(str(tmp_path / "missing")) == []


def test_remove_partial_disks_removes_only_the_exact_pattern(backend, tmp_path):
    vms = tmp_path / "vms"
    partial = [vms / "3" / "disk.0.qcow2.tmp", vms / "3" / "disk.12.qcow2.tmp", vms / "40" / "disk.1.qcow2.tmp"]
    kept = [vms / "3" / "disk.0.qcow2", vms / "3" / "disk.x.qcow2.tmp", vms / "3" / "disk.0.qcow2.tmp.1",
            vms / "abc" / "disk.0.qcow2.tmp", vms / "4" / "sub" / "disk.0.qcow2.tmp", vms / "disk.0.qcow2.tmp",
            tmp_path / "images" / "1.qcow2.tmp", tmp_path / "quarantine" / f"5-{STAMP}" / "disk.0.qcow2.tmp"]
    touch(*partial, *kept)
    assert backend.remove_partial_disks(str(tmp_path)) == sorted(str(p) for p in partial)
    assert not any(p.exists() for p in partial) and all(p.exists() for p in kept)
    assert backend.remove_partial_disks(str(tmp_path / "missing")) == []


# -- quarantine --------------------------------------------------------------------------------------
def test_quarantine_moves_lists_and_hides_from_the_sweep(backend, tmp_path):
    image = str(tmp_path / "images" / "1.qcow2")
    backend.create_image(image, 16)
    disk = backend.disk_path(str(tmp_path), 5, 0)
    backend.clone(image, disk)
    touch(tmp_path / "vms" / "6" / "disk.0.qcow2")
    assert backend.vm_ids_with_disks(str(tmp_path)) == [5, 6]
    moved = backend.quarantine_vm_disks(str(tmp_path), 5, STAMP)
    assert moved == f"{tmp_path}/quarantine/5-{STAMP}"
    assert not (tmp_path / "vms" / "5").exists() and backend.verify(f"{moved}/disk.0.qcow2", image)
    assert (tmp_path / "vms" / "6" / "disk.0.qcow2").exists()
    assert backend.vm_ids_with_disks(str(tmp_path)) == [6]
    assert backend.quarantined(str(tmp_path)) == [(5, STAMP, moved)]
    assert backend.quarantine_vm_disks(str(tmp_path), 5, STAMP) == ""  # nothing left to move


def test_quarantine_never_moves_into_an_existing_entry(backend, tmp_path):
    touch(tmp_path / "vms" / "5" / "disk.0.qcow2")
    first = backend.quarantine_vm_disks(str(tmp_path), 5, STAMP)
    touch(tmp_path / "vms" / "5" / "disk.1.qcow2")
    with pytest.raises(DriverError, match="exists"):
        backend.quarantine_vm_disks(str(tmp_path), 5, STAMP)
    assert (tmp_path / "vms" / "5" / "disk.1.qcow2").exists()
    assert sorted(p.name for p in Path(first).iterdir()) == ["disk.0.qcow2"]
    Path(first, "disk.0.qcow2").unlink()  # an empty directory: rename(2) alone would replace it
    with pytest.raises(DriverError):
        backend.quarantine_vm_disks(str(tmp_path), 5, STAMP)
    assert (tmp_path / "vms" / "5" / "disk.1.qcow2").exists()


@pytest.mark.parametrize("stamp", ["../../etc", "20261129T041500", "2026-11-29T04:15:00Z", "20261329T041500Z",
                                   f"{STAMP}/..", f"{STAMP}\n", "", " " + STAMP, "２0261129T041500Z"])
def test_bad_stamps_are_refused_before_anything_moves(backend, tmp_path, stamp):
    touch(tmp_path / "vms" / "5" / "disk.0.qcow2")
    with pytest.raises(DriverError):
        backend.quarantine_vm_disks(str(tmp_path), 5, stamp)
    with pytest.raises(DriverError):
        backend.purge_quarantine(str(tmp_path), stamp)
    assert (tmp_path / "vms" / "5" / "disk.0.qcow2").exists() and not (tmp_path / "quarantine").exists()


def test_quarantined_parses_names_strictly(backend, tmp_path):
    quarantine = tmp_path / "quarantine"
    for name in ["foo", "5-bad", f"05-{STAMP}", f"5-{STAMP}.bak", f"-{STAMP}", f"x-{STAMP}", f"5-{STAMP}-1"]:
        (quarantine / name).mkdir(parents=True)
    (quarantine / f"7-{STAMP}").mkdir()
    assert backend.quarantined(str(tmp_path)) == [(7, STAMP, f"{quarantine}/7-{STAMP}")]
    assert backend.quarantined(str(tmp_path / "missing")) == []


def test_purge_removes_only_older_entries(backend, tmp_path):
    quarantine = tmp_path / "quarantine"
    old, same, new = "1-20260101T000000Z", f"2-{STAMP}", "3-20261201T000000Z"
    touch(*(quarantine / name / "disk.0.qcow2" for name in (old, same, new)), quarantine / "notes" / "keep",
          tmp_path / "vms" / "1" / "disk.0.qcow2", tmp_path / "images" / "1.qcow2")
    assert backend.purge_quarantine(str(tmp_path), STAMP) == [f"{quarantine}/{old}"]
    assert sorted(p.name for p in quarantine.iterdir()) == sorted([same, new, "notes"])
    assert (tmp_path / "vms" / "1" / "disk.0.qcow2").exists() and (tmp_path / "images" / "1.qcow2").exists()
    assert backend.purge_quarantine(str(tmp_path / "missing"), STAMP) == []


def test_vm_ids_with_disks_takes_only_canonical_numbered_directories(backend, tmp_path):
    vms = tmp_path / "vms"
    for name in ["3", "10", "007", "5 6", "x", "-1", "٣", "0"]:
        (vms / name).mkdir(parents=True)
    touch(vms / "8", tmp_path / "quarantine" / f"9-{STAMP}" / "disk.0.qcow2")
    assert backend.vm_ids_with_disks(str(tmp_path)) == [0, 3, 10]


def test_command_builders_keep_their_shape():
    assert qcow2.convert_cmd("/a", "/b") == ["qemu-img", "convert", "-O", "qcow2", "/a", "/b"]
    assert qcow2.convert_cmd("/a", "/b", "raw") == ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "/a", "/b"]
    assert qcow2.info_cmd("/a", "qcow2")[-3:] == ["-f", "qcow2", "/a"]


@pytest.mark.parametrize("vm_id", ["5", "../5", -1, True, 5.0])
def test_quarantine_takes_only_an_int_vm_id(backend, tmp_path, vm_id):
    touch(tmp_path / "vms" / "5" / "disk.0.qcow2")
    with pytest.raises(DriverError):
        backend.quarantine_vm_disks(str(tmp_path), vm_id, STAMP)
    assert (tmp_path / "vms" / "5" / "disk.0.qcow2").exists() and not (tmp_path / "quarantine").exists()
