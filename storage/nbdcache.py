"""The SSD cache of a hypervisor host: an nbdkit Python plugin that serves a remote disk (a raw image on
the shared datastore) through a local cache file, block by block.

    nbdkit --unix SOCK python storage/nbdcache.py remote=IMAGE cache=FILE state=FILE budget=BYTES [block=BYTES]

qemu opens it as an nbd source. A read of a cached block comes from the local file; a miss is read
from the remote and admitted or not by the LFU-with-aging policy (storage/cachepolicy.py), which
may evict a colder block: the cache file never grows past `budget` (it is budget // block slots).
Writes are write-through: the remote gets them first, and a cached copy is updated in place, so
the remote is always complete and the cache is never the only copy.

The cache survives a restart: the policy, the block-to-slot map and the counters are saved (temp
file and rename) on flush, on exit and every SAVE_EVERY admissions. A crash can leave slots that
the saved map does not describe, so the state file says "clean": false from the first change after
a save until the next save; an unclean state, a remote that changed meanwhile (size, inode, mtime)
or another block size or budget starts with an empty cache instead.

BlockCache is plain Python (tests/manager/test_nbdcache.py drives it directly); the functions at the
bottom are nbdkit's plugin API. The plugin runs in nbdkit's own Python, so it imports its policy as
a sibling file, not through the appliance package.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cachepolicy import CacheStateError, LfuAging  # noqa: E402  (a sibling file: see above)

STATE_VERSION = 1
SAVE_EVERY = 4096  # admissions between two saves of the state (a crash costs at most this much warmth)
DEFAULT_BLOCK = 64 * 1024


def _stat_key(fd: int) -> dict:
    st = os.fstat(fd)
    return {"size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}


class BlockCache:
    def __init__(self, remote: str, cache: str, state: str, budget: int, block: int = DEFAULT_BLOCK,
                 log=lambda message: None, readonly: bool = False, trace: str = ""):
        if block < 4096 or block & (block - 1):
            raise ValueError(f"block={block}: a power of two of at least 4096 bytes")
        if budget < block:
            raise ValueError(f"budget={budget}: at least one block ({block} bytes)")
        self.block, self.slots = block, budget // block
        self.state_path, self.log, self.readonly = state, log, readonly
        # readonly: an image many overlays read (their writes stay in the overlays); nothing that
        # reaches the socket may change it.
        self.remote_fd = os.open(remote, os.O_RDONLY if readonly else os.O_RDWR)
        self.size = os.fstat(self.remote_fd).st_size
        self.cache_fd = os.open(cache, os.O_RDWR | os.O_CREAT, 0o600)
        try:  # one server per cache file: a second one would overwrite the first one's slots
            fcntl.flock(self.cache_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.cache_fd)
            os.close(self.remote_fd)
            raise RuntimeError(f"cache file {cache} is in use by another cache server") from None
        st = os.fstat(self.cache_fd)
        # The file the state describes: a deleted, replaced or truncated cache file must not be
        # read as if it held the blocks the map names (it would serve zeros).
        self.cache_id = {"dev": st.st_dev, "ino": st.st_ino}
        self._found_size = st.st_size
        os.ftruncate(self.cache_fd, self.slots * block)  # the budget, whatever was there before
        self.lock = threading.Lock()
        # trace: append every block access to this file in `appliance cache analyze`'s own format
        # (storage/traces.py), to size the cache from what the VMs really read.
        self.trace = None
        if trace:
            new = not os.path.exists(trace) or os.path.getsize(trace) == 0
            self.trace = io.open(os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", buffering=1 << 16)
            if new:
                self.trace.write(f"# appliance-cache-log v1 block_size={block}\n")
        self.bytes_from_cache = self.bytes_from_remote = 0
        self.map: dict[int, int] = {}
        self.policy = LfuAging(self.slots)
        self._load()
        self.free = sorted(set(range(self.slots)) - set(self.map.values()), reverse=True)
        self._clean_on_disk = False
        self._since_save = 0
        self.save()

    # -- state -------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            with io.open(self.state_path) as f:  # io.open: this module's open() is nbdkit's
                saved = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log(f"cache state {self.state_path} unreadable ({exc}): starting empty")
            return
        why = ""
        if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
            why = "another version"
        elif not saved.get("clean"):
            why = "the cache was not closed cleanly"
        elif saved.get("remote") != _stat_key(self.remote_fd):
            why = "the remote disk changed"
        elif (saved.get("block"), saved.get("slots")) != (self.block, self.slots):
            why = "another block size or budget"
        elif saved.get("cache_file") != self.cache_id or self._found_size != self.slots * self.block:
            why = "the cache file was replaced, removed or cut short"
        if why:
            self.log(f"cache state {self.state_path}: {why}: starting empty")
            return
        try:
            width = saved["policy"]["sketch_width"]
            if saved["policy"]["capacity"] != self.slots or not isinstance(width, int) or \
                    width > 4 * max(64, 1 << (self.slots - 1).bit_length()):
                raise ValueError("its policy is not sized for this cache")
            policy = LfuAging.from_state(saved["policy"])
            mapping = {int(k): int(v) for k, v in saved["map"].items()}
            from_cache, from_remote = int(saved.get("bytes_from_cache", 0)), int(saved.get("bytes_from_remote", 0))
        except (CacheStateError, KeyError, TypeError, ValueError, AttributeError, MemoryError) as exc:
            self.log(f"cache state {self.state_path}: {exc}: starting empty")
            return
        if (set(mapping) != {k for k in mapping if k in policy} or len(set(mapping.values())) != len(mapping)
                or any(not 0 <= s < self.slots for s in mapping.values()) or len(mapping) != len(policy)):
            self.log(f"cache state {self.state_path}: the map does not match the policy: starting empty")
            return
        self.policy, self.map = policy, mapping
        self.bytes_from_cache, self.bytes_from_remote = from_cache, from_remote

    def stats(self) -> dict:
        return {"hits": self.policy.hits, "misses": self.policy.misses, "evictions": self.policy.evictions,
                "bytes_from_cache": self.bytes_from_cache, "bytes_from_remote": self.bytes_from_remote,
                "cached_blocks": len(self.map), "capacity_blocks": self.slots, "block": self.block}

    def _write_state(self, clean: bool) -> None:
        document = {"version": STATE_VERSION, "clean": clean, "remote": _stat_key(self.remote_fd),
                    "cache_file": self.cache_id, "block": self.block, "slots": self.slots, "stats": self.stats()}
        if clean:
            document.update(policy=self.policy.state(), map={str(k): v for k, v in self.map.items()},
                            bytes_from_cache=self.bytes_from_cache, bytes_from_remote=self.bytes_from_remote)
        tmp = f"{self.state_path}.tmp"
        with io.open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(document, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def save(self) -> None:
        """The whole state, marked clean: the cache file's slots hold what the map says."""
        if self.trace is not None:
            self.trace.flush()
        os.fsync(self.cache_fd)
        if not self.readonly:
            os.fsync(self.remote_fd)
        self._write_state(clean=True)
        self._clean_on_disk, self._since_save = True, 0

    def _changing(self) -> None:
        """Before the first slot write after a save: a crash from here on must not trust the map."""
        if self._clean_on_disk:
            self._write_state(clean=False)
            self._clean_on_disk = False

    # -- I/O ---------------------------------------------------------------------------------------
    def _remote_block(self, number: int) -> bytes:
        data = os.pread(self.remote_fd, self.block, number * self.block)
        return data + bytes(self.block - len(data))  # the last block of a disk may be short

    def _read_block(self, number: int) -> bytes:
        if self.trace is not None:
            self.trace.write(f"{time.time():.3f} r {number}\n")
        outcome = self.policy.request(number)
        if outcome.hit:
            self.bytes_from_cache += self.block
            return os.pread(self.cache_fd, self.block, self.map[number] * self.block)
        data = self._remote_block(number)
        self.bytes_from_remote += self.block
        if outcome.admitted:
            self._changing()
            for victim in outcome.evicted:  # their slots are free for this block
                self.free.append(self.map.pop(victim))
            slot = self.free.pop()
            os.pwrite(self.cache_fd, data, slot * self.block)
            self.map[number] = slot
            self._since_save += 1
            if self._since_save >= SAVE_EVERY:
                self.save()
        return data

    def pread(self, count: int, offset: int) -> bytes:
        if offset < 0 or count < 0 or offset + count > self.size:
            raise ValueError(f"read of {count} bytes at {offset} is outside the {self.size}-byte disk")
        out = bytearray()
        with self.lock:
            position = offset
            while position < offset + count:
                number, inner = divmod(position, self.block)
                take = min(self.block - inner, offset + count - position)
                out += self._read_block(number)[inner:inner + take]
                position += take
        return bytes(out)

    def pwrite(self, data: bytes, offset: int) -> None:
        """Write-through: the remote first; then any cached copy of the blocks it touches."""
        if self.readonly:
            raise PermissionError("this cache serves its image read-only")
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} is outside the {self.size}-byte disk")
        with self.lock:
            written = 0
            while written < len(data):
                written += os.pwrite(self.remote_fd, data[written:], offset + written)
            position = offset
            while position < offset + len(data):
                number, inner = divmod(position, self.block)
                take = min(self.block - inner, offset + len(data) - position)
                if self.trace is not None:
                    self.trace.write(f"{time.time():.3f} w {number}\n")
                slot = self.map.get(number)
                if slot is not None:
                    self._changing()
                    os.pwrite(self.cache_fd, data[position - offset:position - offset + take],
                              slot * self.block + inner)
                position += take

    def flush(self) -> None:
        with self.lock:
            self.save()

    def close(self) -> None:
        with self.lock:
            self.save()
            if self.trace is not None:
                self.trace.close()
            os.close(self.cache_fd)
            os.close(self.remote_fd)


# -- nbdkit's plugin API (nbdkit python storage/nbdcache.py key=value ...) ---------------------------
API_VERSION = 2
_CONFIG: dict[str, str] = {}
_CACHE: list[BlockCache] = []


def thread_model():
    import nbdkit
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def config(key, value):
    if key not in ("remote", "cache", "state", "budget", "block", "readonly", "trace"):
        raise RuntimeError(f"unknown parameter {key}: remote=, cache=, state=, budget=, block=, readonly= and "
                           "trace= are known")
    _CONFIG[key] = value


def config_complete():
    import nbdkit
    missing = [k for k in ("remote", "cache", "state", "budget") if k not in _CONFIG]
    if missing:
        raise RuntimeError(f"missing parameter(s): {', '.join(missing)}")
    _CACHE.append(BlockCache(_CONFIG["remote"], _CONFIG["cache"], _CONFIG["state"], int(_CONFIG["budget"]),
                             int(_CONFIG.get("block", DEFAULT_BLOCK)), log=nbdkit.debug,
                             readonly=_CONFIG.get("readonly", "0") == "1", trace=_CONFIG.get("trace", "")))


def unload():
    if _CACHE:
        _CACHE.pop().close()


def open(readonly):  # noqa: A001 (nbdkit's name)
    return 1


def close(h):
    """A client disconnected (a VM stopped, a qemu-img ended): save, so a restart finds the cache warm
    even when nbdkit is then killed without unloading the plugin."""
    if _CACHE:
        _CACHE[0].flush()


def get_size(h):
    return _CACHE[0].size


def can_write(h):
    return not _CACHE[0].readonly


def can_flush(h):
    return True


def pread(h, buf, offset, flags):
    buf[:] = _CACHE[0].pread(len(buf), offset)


def pwrite(h, buf, offset, flags):
    _CACHE[0].pwrite(bytes(buf), offset)


def flush(h, flags):
    _CACHE[0].flush()
