"""The SSD cache on a hypervisor host, as the storage backends use it: one nbdkit per image the host
runs VMs from, serving the image through storage/nbdcache.py on a UNIX socket; a VM disk is a qcow2
overlay whose backing file is that socket (nbd+unix://), so every read of the image's blocks goes
through the host's cache and the overlay keeps the VM's own writes on the datastore.

Paths on the host (cache_dir, default /var/cache/appliance/ssd): <key>.sock, .cache (the SSD file,
`budget` bytes), .state.json (policy, map, counters; 0600), .pid, where key names the image
(a hash of its path: one service per image per host, shared by all of its VMs there).

Everything goes through the host's runner: the commands are built here (pure) and golden-tested.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex

from appliance.core.protocols import DriverError
from appliance.core.runner import Runner

DEFAULT_DIR = "/var/cache/appliance/ssd"
_DIR = re.compile(r"(?!.*/\.\.?(/|$))/[A-Za-z0-9._/+-]{1,200}")
START_TIMEOUT = 30.0  # s: nbdkit forks into the background once its socket listens


def plugin_path() -> str:
    """The plugin file as this installation has it (the same path on every host of one release)."""
    from appliance.storage import nbdcache
    return nbdcache.__file__


def key(image: str) -> str:
    return "img-" + hashlib.sha256(image.encode()).hexdigest()[:16]


def paths(cache_dir: str, image: str) -> dict[str, str]:
    if not _DIR.fullmatch(cache_dir):
        raise DriverError(f"cache directory {cache_dir!r} must be an absolute plain path")
    base = f"{cache_dir}/{key(image)}"
    return {s: f"{base}.{s}" for s in ("sock", "cache", "pid", "log", "id", "trace")} | {"state": f"{base}.state.json"}


def uri(cache_dir: str, image: str) -> str:
    """What an overlay names as its backing file: the image through this host's cache."""
    return f"nbd+unix:///?socket={paths(cache_dir, image)['sock']}"


def serve_argv(image: str, cache_dir: str, budget_mb: int, plugin: str, trace: bool = False) -> list[str]:
    """nbdkit in a session of its own (it outlives the command that starts it: a runner may end
    what is left in its session), its errors appended to <key>.log."""
    p = paths(cache_dir, image)
    return ["setsid", "--fork", "sh", "-c", 'exec "$@" 2>>"$0"', p["log"],
            "nbdkit", "--unix", p["sock"], "--pidfile", p["pid"], "python", plugin, f"remote={image}",
            f"cache={p['cache']}", f"state={p['state']}", f"budget={budget_mb * 1024 * 1024}", "readonly=1",
            *([f"trace={p['trace']}"] if trace else [])]


class CacheHost:
    """The cache services of one host (its runner)."""

    def __init__(self, runner: Runner, cache_dir: str = DEFAULT_DIR, budget_mb: int = 1024, plugin: str = "",
                 trace: bool = False):
        self.runner, self.cache_dir, self.budget_mb, self.trace = runner, cache_dir, budget_mb, trace
        self.plugin = plugin or plugin_path()

    def _alive(self, image: str) -> bool:
        """Its nbdkit runs (the pid in the file, with this socket on its command line) and serves the
        file now at `image`: an image deleted and made again at the same path (ids reused after a
        restore) is another file, and the old service must not serve its bytes."""
        p = paths(self.cache_dir, image)
        check = (f"pid=$(cat {shlex.quote(p['pid'])} 2>/dev/null) && [ -n \"$pid\" ] && "
                 f"tr '\\0' ' ' < /proc/$pid/cmdline | grep -qF -- {shlex.quote(p['sock'])} && "
                 f"[ -S {shlex.quote(p['sock'])} ] && "
                 f"[ \"$(stat -L -c %d:%i -- {shlex.quote(image)})\" = \"$(cat {shlex.quote(p['id'])})\" ]")
        return self.runner.run(["sh", "-c", check], check=False, timeout=10).ok

    def ensure(self, image: str) -> str:
        """The image served through this host's cache (started when not running); returns its URI."""
        if not self._alive(image):
            p = paths(self.cache_dir, image)
            self.stop(image)  # one that serves an older file at this path, or lost its socket
            self.runner.run(["mkdir", "-p", "-m", "0700", "--", self.cache_dir], timeout=10)
            self.runner.run(["rm", "-f", "--", p["sock"], p["pid"]], timeout=10)
            # Which file it serves (device:inode), for _alive; the cache file's own lock keeps a
            # second server off the same cache whatever happens to these files.
            self.runner.run(["sh", "-c", f"stat -L -c %d:%i -- {shlex.quote(image)} > {shlex.quote(p['id'])}"],
                            timeout=10)
            result = self.runner.run(serve_argv(image, self.cache_dir, self.budget_mb, self.plugin, self.trace), check=False,
                                     timeout=10)
            sock, log = shlex.quote(p["sock"]), shlex.quote(p["log"])
            running = shlex.quote(f"[n]bdkit --unix {p['sock']}")  # [n]: never this script's own command line
            # Until the socket listens; at once when nbdkit has died saying why (a bad plugin, a full disk).
            waited = self.runner.run(["sh", "-c", f"for i in $(seq {int(START_TIMEOUT * 10)}); do [ -S {sock} ] && "
                                                  f"exit 0; [ -s {log} ] && ! pgrep -f -- {running} >/dev/null && exit 1; "
                                                  "sleep 0.1; done; exit 1"],
                                     check=False, timeout=START_TIMEOUT + 10)
            if not result.ok or not waited.ok or not self._alive(image):
                log = self.runner.run(["tail", "-c", "400", "--", p["log"]], check=False, timeout=10).stdout
                raise DriverError(f"the SSD cache for {image} did not start: {(result.stderr + log).strip()[-400:]}")
        return uri(self.cache_dir, image)

    def stop(self, image: str) -> None:
        """Stop the image's service if its nbdkit runs (it saves the state as it exits) and wait until
        it is gone (it holds the cache file's lock until then); the cache file stays."""
        p = paths(self.cache_dir, image)
        pid, sock = shlex.quote(p["pid"]), shlex.quote(p["sock"])
        script = (f"pid=$(cat {pid} 2>/dev/null) && [ -n \"$pid\" ] && tr '\\0' ' ' < /proc/$pid/cmdline | "
                  f"grep -qF -- {sock} || exit 0; kill $pid; for i in $(seq 100); do kill -0 $pid 2>/dev/null || "
                  "exit 0; sleep 0.1; done; kill -9 $pid")
        self.runner.run(["sh", "-c", script], check=False, timeout=30)

    def held(self, images: dict[str, int]) -> dict[str, float]:
        """{image: fraction of its bytes this host's cache holds} for the `images` given (path ->
        size in bytes), from the counters each service saved last; one command for all of them.
        An image with no service, no state or a size of 0 is left out (nothing known is nothing held)."""
        by_key = {key(image): image for image, size in images.items() if size > 0}
        if not by_key:
            return {}
        if not _DIR.fullmatch(self.cache_dir):
            raise DriverError(f"cache directory {self.cache_dir!r} must be an absolute plain path")
        # One line per state file in the directory (not per image: a datastore may hold thousands):
        # its key and the cached byte count; a state is JSON of up to a few MiB, only "stats" travel.
        script = ("for f in " + shlex.quote(self.cache_dir) + "/img-*.state.json; do [ -r \"$f\" ] || continue; "
                  "python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get(\"stats\", {}); "
                  "print(sys.argv[2], int(s.get(\"cached_blocks\", 0)) * int(s.get(\"block\", 0)))' "
                  "\"$f\" \"$(basename \"$f\" .state.json)\" 2>/dev/null; done; true")
        out = self.runner.run(["sh", "-c", script], check=False, timeout=60).stdout
        held = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in by_key and parts[1].isdigit():
                image = by_key[parts[0]]
                held[image] = min(1.0, int(parts[1]) / images[image])
        return held

    def stats(self, image: str) -> dict:
        """The counters the service saved last (on its last flush or save): {} when there are none."""
        result = self.runner.run(["cat", "--", paths(self.cache_dir, image)["state"]], check=False, timeout=10)
        try:
            return json.loads(result.stdout).get("stats", {}) if result.ok else {}
        except ValueError:
            return {}
