"""qcow2 datastores on a directory: images are base files, VM disks are copy-on-write overlays.

Layout (storage/layout.py): <datastore>/images/<image id>.qcow2 and <datastore>/vms/<vm id>/disk.<n>.qcow2.
Every write goes to a temporary name first and is renamed into place, so a crash leaves a
complete file or no file, never a half-made overlay that looks valid.
"""
from __future__ import annotations

import json
import os
import re
import stat
from typing import Any, Callable

from appliance.core.protocols import VERBS, DriverError
from appliance.core.runner import Runner
from appliance.storage.layout import DirectoryLayout

SNAPSHOT = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Import safety. Formats that qemu-img may probe and that we accept; anything else (qcow, qed, luks,
# dmg, parallels, ...) is refused rather than audited for ways to reference other files.
IMPORT_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx"})
MAX_CHAIN = 16  # images in a backing chain, the top one included
INFO_TIMEOUT = 60.0  # s, one qemu-img info or stat: metadata only, generous for slow NFS
CONVERT_TIMEOUT = 6 * 3600.0  # s, copying a large image; bounds a hang, not a normal import


# -- pure command builders -------------------------------------------------------------------------
def overlay_cmd(backing: str, target: str) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, target]


def blank_cmd(target: str, size_mb: int) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", target, f"{size_mb}M"]


def convert_cmd(source: str, target: str, source_format: str | None = None) -> list[str]:
    # -f: the format the safety check saw, so qemu-img does not probe again (and maybe differently).
    fmt = ["-f", source_format] if source_format else []
    return ["qemu-img", "convert", *fmt, "-O", "qcow2", source, target]


def info_cmd(path: str, fmt: str | None = None) -> list[str]:
    return ["qemu-img", "info", "--output=json", "--force-share", *(["-f", fmt] if fmt else []), path]


def stat_mode_cmd(path: str) -> list[str]:
    # %f: the raw st_mode in hex, which unlike %F does not depend on the locale.
    return ["stat", "-L", "--format=%f", "--", path]


def resize_cmd(path: str, size_mb: int) -> list[str]:
    return ["qemu-img", "resize", "-q", path, f"{size_mb}M"]


def snapshot_cmd(flag: str, name: str, path: str) -> list[str]:
    if flag not in ("-c", "-a", "-d"):
        raise ValueError(flag)
    if not SNAPSHOT.fullmatch(name):
        raise DriverError(f"snapshot name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return ["qemu-img", "snapshot", flag, name, path]


def capacity_cmd(path: str) -> list[str]:
    return ["df", "--block-size=1M", "--output=size,avail", path]


# -- pure checks ------------------------------------------------------------------------------------
def file_kind(mode: int) -> str:
    """What st_mode describes, in words for an error message."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def plain_name(name: Any) -> bool:
    """True for a name qemu takes as a plain file: not a protocol (nbd:, http:, ssh:, file:, ...) nor a
    json: pseudo-filename, which qemu recognises by a ':' before the first '/'; no control characters."""
    return isinstance(name, str) and bool(name) and ":" not in name.split("/", 1)[0] and \
        not any(ord(c) < 32 or ord(c) == 127 for c in name)


def path_problems(name: Any, what: str, allowed: Callable[[str], bool]) -> list[str]:
    """Why qemu-img must not open `name` as a file for an import: not a plain_name, or a path whose
    real location (symlinks and '..' resolved) `allowed` rejects."""
    if not plain_name(name):
        return [f"{what} {name!r} is not a plain file name (a protocol or pseudo-filename?)"]
    real = os.path.realpath(name)
    if not allowed(real):
        shown = name if real == name else f"{name} (really {real})"
        return [f"{what} {shown} is outside the allowed import directories"]
    return []


def chain_problems(chain_json: str | list | dict, allowed: Callable[[str], bool]) -> list[str]:
    """Why an image whose backing chain is `chain_json` (qemu-img info --backing-chain --output=json,
    as text or parsed; a single image's dict will do) must not be imported; [] when it may be.

    Every file qemu-img would read for it must be a plain path that `allowed` accepts after
    os.path.realpath: each image, each backing name (also when the chain stops before it), each vmdk
    extent. External qcow2 data files, unknown formats and chains over MAX_CHAIN images are refused.
    Relative names resolve against the current directory, as qemu-img run here would resolve them."""
    try:
        chain = json.loads(chain_json) if isinstance(chain_json, (str, bytes)) else chain_json
    except ValueError:
        return ["qemu-img info did not give JSON"]
    if isinstance(chain, dict):
        chain = [chain]
    if not isinstance(chain, list) or not chain or not all(isinstance(e, dict) for e in chain):
        return ["qemu-img info did not describe an image"]
    problems: list[str] = []
    last = chain[-1]
    length = len(chain) + (1 if last.get("backing-filename") or last.get("full-backing-filename") else 0)
    if length > MAX_CHAIN:
        problems.append(f"backing chain has more than {MAX_CHAIN} images")
    for depth, entry in enumerate(chain):
        name = entry.get("filename")
        what = "image" if depth == 0 else "backing file"
        problems += path_problems(name, what, allowed)
        label = name if isinstance(name, str) else what
        fmt = entry.get("format")
        if fmt not in IMPORT_FORMATS:
            problems.append(f"{what} {label} has format {fmt!r}; importable: {', '.join(sorted(IMPORT_FORMATS))}")
        specific = entry.get("format-specific")
        data = specific.get("data") if isinstance(specific, dict) else None
        data = data if isinstance(data, dict) else {}
        if "data-file" in data:
            problems.append(f"{what} {label} keeps its data in an external file {data['data-file']}")
        for extent in data.get("extents") or []:
            extent_name = extent.get("filename") if isinstance(extent, dict) else None
            problems += path_problems(extent_name, f"extent of {label}", allowed)
        backing, full = entry.get("backing-filename"), entry.get("full-backing-filename")
        if backing is None and full is None:
            continue
        bad = [n for n in (backing, full) if n is not None and not plain_name(n)]
        if bad:
            problems.append(f"backing file {bad[0]!r} of {label} is not a plain file name "
                            "(a protocol or pseudo-filename?)")
        else:
            if not full:  # qemu names a relative backing file relative to the image that refers to it
                full = backing if backing.startswith("/") or not isinstance(name, str) else \
                    os.path.join(os.path.dirname(name), backing)
            problems += path_problems(full, f"backing file of {label}:", allowed)
        backing_fmt = entry.get("backing-filename-format")
        if backing_fmt is not None and backing_fmt not in IMPORT_FORMATS:
            problems.append(f"backing file of {label} has format {backing_fmt!r}")
    return list(dict.fromkeys(problems))  # one message per problem, in order


class Qcow2Backend(DirectoryLayout):
    """Every verb, on a directory every host mounts (NFS from the frontend, or local): migration
    moves nothing, so premigrate and postmigrate do nothing."""

    name = "qcow2"
    suffix = "qcow2"
    verbs = frozenset(VERBS)

    def __init__(self, runner: Runner, info_timeout: float = INFO_TIMEOUT, convert_timeout: float = CONVERT_TIMEOUT,
                 cache_mb: int = 0, cache_dir: str = "", host_runner: Callable[[str], Runner] | None = None,
                 cache_trace: bool = False):
        super().__init__(runner)
        self.info_timeout = info_timeout
        self.convert_timeout = convert_timeout
        # cache_mb > 0: a VM reads its image through its host's SSD cache (storage/cachehost.py).
        self.cache_mb, self.cache_dir, self.cache_trace = cache_mb, cache_dir, cache_trace
        self.host_runner = host_runner or (lambda host: self.runner)

    def _cache(self, host: str):
        from appliance.storage.cachehost import DEFAULT_DIR, CacheHost
        return CacheHost(self.host_runner(host), self.cache_dir or DEFAULT_DIR, self.cache_mb, trace=self.cache_trace)

    def cached_images(self, host: str, images: dict[str, int]) -> dict[str, float]:
        """What `host`'s SSD cache holds of each image (path -> size in bytes): the fraction of its
        bytes, for the scheduler's CACHED. {} without a cache."""
        if not self.cache_mb:
            return {}
        return self._cache(host).held(images)

    def _cached_backing(self, image: str) -> str:
        from appliance.storage.cachehost import DEFAULT_DIR, uri
        return uri(self.cache_dir or DEFAULT_DIR, image)

    def _into_place(self, build: list[str], tmp: str, target: str, timeout: float | None = None) -> None:
        self._run(["mkdir", "-p", target.rsplit("/", 1)[0]])
        try:
            self._run(build, timeout=timeout)
            self._run(["mv", "-f", "--", tmp, target])
        except DriverError:
            self.runner.run(["rm", "-f", "--", tmp], check=False)
            raise

    def info(self, path: str, timeout: float | None = None) -> dict | None:
        result = self.runner.run(info_cmd(path), check=False, timeout=timeout)
        if not result.ok:
            return None
        return json.loads(result.stdout)

    def clone(self, image: str, disk: str, host: str = "") -> None:
        tmp = f"{disk}.tmp"
        if not self.cache_mb:
            self._into_place(overlay_cmd(image, tmp), tmp, disk)
            return
        # Through the cache: the overlay's backing file is the image as the host's nbdkit serves it.
        # -u: the backing is a socket on the VM's host, not here; the size comes from the image.
        size = self.virtual_size_mb(image, timeout=self.info_timeout)
        backing = self._cache(host).ensure(image)
        self._run(["mkdir", "-p", "--", disk.rsplit("/", 1)[0]])
        # Which image the overlay reads, for premigrate on another host (the URI names only a socket).
        self._run(["sh", "-c", 'printf %s "$1" > "$2.new" && mv -f "$2.new" "$2"', "-", image, f"{disk}.image"])
        self._into_place(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", backing, tmp,
                          f"{size}M"], tmp, disk)

    def verify(self, disk: str, image: str) -> bool:
        info = self.info(disk)
        backing = info.get("backing-filename") if info is not None else None
        return backing == image or (bool(self.cache_mb) and backing == self._cached_backing(image))

    # -- import ----------------------------------------------------------------------------------------
    def _require_regular_file(self, path: str, what: str) -> None:
        # Before qemu-img opens it: opening a FIFO blocks until a writer comes, a device reads the host.
        out = self._run(stat_mode_cmd(path), timeout=self.info_timeout).strip()
        try:
            mode = int(out, 16)
        except ValueError:
            raise DriverError(f"cannot tell what {what} {path} is (stat said {out!r})") from None
        if not stat.S_ISREG(mode):
            raise DriverError(f"{what} {path} is a {file_kind(mode)}, not a regular file")

    def _layer(self, path: str, fmt: str | None) -> dict:
        out = self._run(info_cmd(path, fmt), timeout=self.info_timeout)
        try:
            layer = json.loads(out)
        except ValueError:
            raise DriverError(f"qemu-img info gave no JSON for {path}") from None
        if not isinstance(layer, dict):
            raise DriverError(f"qemu-img info did not describe {path}")
        return layer

    def checked_chain(self, source: str, allowed: Callable[[str], bool] = lambda path: True) -> list[dict]:
        """The backing chain of `source` (as qemu-img info --backing-chain lists it), checked with
        chain_problems; DriverError naming the offending file when any check fails.

        Walks one image at a time without --backing-chain: that option makes qemu-img open every
        backing file before we see its name, so it would read outside files, connect to nbd:/http:
        backing "files" and hang on a FIFO. Here each name is checked before anything opens it."""
        problems = path_problems(source, "image", allowed)
        if not problems and not source.startswith("/"):
            problems = [f"image {source!r} must be an absolute path"]  # else qemu-img may take it for an option
        if problems:
            raise DriverError(f"refusing to import {source}: {'; '.join(problems)}")
        chain: list[dict] = []
        path, fmt = source, None
        while True:
            self._require_regular_file(path, "image" if not chain else "backing file")
            chain.append(self._layer(path, fmt))
            problems = chain_problems(chain, allowed)
            if problems:
                raise DriverError(f"refusing to import {source}: {'; '.join(problems)}")
            top = chain[-1]
            if not (top.get("backing-filename") or top.get("full-backing-filename")):
                return chain
            path = top.get("full-backing-filename") or top["backing-filename"]
            fmt = top.get("backing-filename-format")  # what qemu-img convert will use; probes when absent

    def import_image(self, source: str, target: str, allowed: Callable[[str], bool] = lambda path: True) -> int:
        """Copy (flatten) `source` into `target` as qcow2; returns the virtual size in MiB.

        `allowed(real_path)` says which files the import may read; every file of the source's chain
        must pass it (see checked_chain). Every command has a timeout, so a file swapped for a FIFO
        after the checks ends in DriverError, not a hung request."""
        chain = self.checked_chain(source, allowed)
        tmp = f"{target}.tmp"
        self._into_place(convert_cmd(source, tmp, chain[0].get("format")), tmp, target, timeout=self.convert_timeout)
        return self.virtual_size_mb(target, timeout=self.info_timeout)

    def virtual_size_mb(self, path: str, timeout: float | None = None) -> int:
        info = self.info(path, timeout=timeout)
        if info is None:
            raise DriverError(f"{path} is not a readable disk image")
        return int(info["virtual-size"]) // (1024 * 1024)

    def create_image(self, target: str, size_mb: int) -> None:
        if not 1 <= size_mb <= 64 * 1024 * 1024:
            raise DriverError("size_mb must be 1 MiB to 64 TiB")
        # A blank image is sparse, but the guest will fill it: one larger than the free space would
        # fail writes inside a running VM later (the datastore directory is images/..).
        _, free = self.capacity(target.rsplit("/", 2)[0])
        if size_mb > free:
            raise DriverError(f"the datastore is full: a {size_mb} MiB image asked, {free} MiB free")
        tmp = f"{target}.tmp"
        self._into_place(blank_cmd(tmp, size_mb), tmp, target)

    def delete_image(self, path: str) -> None:
        self._run(["rm", "-f", "--", path])

    def resize(self, disk: str, size_mb: int) -> None:
        # Shrinking cuts off whatever the guest keeps at the end of its disk: refused, never attempted.
        current = self.virtual_size_mb(disk, timeout=self.info_timeout)
        if size_mb < current:
            raise DriverError(f"{disk} is {current} MiB; shrinking it to {size_mb} MiB would lose data")
        self._run(resize_cmd(disk, size_mb))

    def premigrate(self, disk: str, source_host: str, target_host: str) -> None:
        # Shared directory: the target already sees the disk; through the cache, its image must be
        # served on the target too (at the same socket path) before the VM moves.
        if self.cache_mb:
            image = self._run(["cat", "--", f"{disk}.image"]).strip()
            if image:
                self._cache(target_host).ensure(image)

    def postmigrate(self, disk: str, source_host: str, target_host: str) -> None:
        pass

    def snapshot_create(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-c", name, disk))

    def snapshot_revert(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-a", name, disk))

    def snapshot_delete(self, disk: str, name: str) -> None:
        self._run(snapshot_cmd("-d", name, disk))

    def snapshots(self, disk: str) -> list[str]:
        info = self.info(disk)
        if info is None:
            raise DriverError(f"{disk} is not a readable disk image")
        return [s["name"] for s in info.get("snapshots", [])]

    def capacity(self, datastore_path: str) -> tuple[int, int]:
        lines = self._run(capacity_cmd(datastore_path)).split("\n")
        size, avail = lines[1].split()
        return int(size), int(avail)
