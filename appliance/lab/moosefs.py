"""A MooseFS for the storage tests: one master, two chunkservers and a FUSE mount, all inside a
private network namespace, because a chunkserver refuses a master on 127/8. The mount is visible on
the host (mounts are not per network namespace); the MooseFS tools (mfsgetgoal, mfsmakesnapshot,
...) reach the master through mfsmount's proxy on 127.0.0.1 *inside* the namespace, so a bridge
listens on the same port on the host and relays into it. Everything lives in one directory; `down`
stops the processes by the pids recorded there. Not for production: both chunkservers share one disk.

    python -m appliance.lab.moosefs up DIR      # prints the mount point
    python -m appliance.lab.moosefs down DIR
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.runner.atomic import atomic_write

# The namespace is private, so this address and the ports below exist nowhere else: two labs at
# once each have their own.
ADDRESS = "10.213.0.1"
MASTER_PORTS = {"MATOML": 9419, "MATOCS": 9420, "MATOCL": 9421}
CHUNKSERVERS = {"cs1": 9422, "cs2": 9423}  # name: port
EMPTY_METADATA = Path("/var/lib/mfs/metadata.mfs.empty")
MARKER = "moosefs-lab"
READY_SECONDS = 30.0  # each step of `up`; on this machine the whole `up` takes about 3 s
STOP_SECONDS = 10.0  # for a process to die on SIGKILL
PROCESSES = ("holder", "master", *CHUNKSERVERS, "mount", "bridge")  # start order; `down` stops in reverse


# -- pure builders -----------------------------------------------------------------------------------
def master_config(directory: Path, address: str = ADDRESS) -> str:
    d = str(directory)
    lines = ["WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {d}/master",
             f"EXPORTS_FILENAME = {d}/mfsexports.cfg", f"TOPOLOGY_FILENAME = {d}/mfstopology.cfg"]
    for module, port in MASTER_PORTS.items():
        lines += [f"{module}_LISTEN_HOST = {address}", f"{module}_LISTEN_PORT = {port}"]
    # Replicate at once: a test that sets goal 2 sees both copies without the default 5 min delay.
    lines += ["NICE_LEVEL = 0", "DISABLE_OOM_KILLER = 0", "REPLICATIONS_DELAY_INIT = 0"]
    return "\n".join(lines) + "\n"


def exports_config(address: str = ADDRESS) -> str:
    # The mount connects from the namespace's only non-loopback address; root stays root (the
    # backend's files belong to root, as on a real host).
    return f"{address}\t/\trw,alldirs,admin,maproot=0:0\n{address}\t.\trw\n"


def chunkserver_config(directory: Path, name: str, address: str = ADDRESS) -> str:
    d = f"{directory}/{name}"
    # HDD_TEST_SPEED 0: no background chunk checksum tests, which only cost CPU in a throwaway lab.
    return "\n".join([
        "WORKING_USER = root", "WORKING_GROUP = root", f"DATA_PATH = {d}/data", f"HDD_CONF_FILENAME = {d}/mfshdd.cfg",
        "HDD_LEAVE_SPACE_DEFAULT = 64MiB", "HDD_TEST_SPEED = 0", f"MASTER_HOST = {address}",
        f"MASTER_PORT = {MASTER_PORTS['MATOCS']}", f"BIND_HOST = {address}", f"CSSERV_LISTEN_HOST = {address}",
        f"CSSERV_LISTEN_PORT = {CHUNKSERVERS[name]}", "NICE_LEVEL = 0", "DISABLE_OOM_KILLER = 0", ""])


def in_namespace(holder_pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/proc/{int(holder_pid)}/ns/net", *argv]


def holder_argv() -> list[str]:
    # The namespace lives as long as this process (and whatever entered it) does.
    return ["unshare", "--net", "--", "sleep", "infinity"]


def master_argv(directory: Path) -> list[str]:
    return ["mfsmaster", "-f", "-c", f"{directory}/mfsmaster.cfg"]


def chunkserver_argv(directory: Path, name: str) -> list[str]:
    return ["mfschunkserver", "-f", "-c", f"{directory}/{name}/mfschunkserver.cfg"]


def mount_argv(directory: Path, address: str = ADDRESS) -> list[str]:
    return ["mfsmount", "-f", f"{directory}/mnt", "-H", address, "-P", str(MASTER_PORTS["MATOCL"])]


def bridge_argv(listen_fd: int, port: int) -> list[str]:
    return [sys.executable, "-m", "appliance.lab.moosefs", "bridge", str(int(listen_fd)), str(int(port))]


def proxy_port(masterinfo: bytes) -> int:
    """The port of mfsmount's master proxy, from the mount's .masterinfo (ip:4, port:2, ...)."""
    if len(masterinfo) < 6:
        raise RuntimeError(f"moosefs lab: .masterinfo is {len(masterinfo)} bytes, expected at least 6")
    return int.from_bytes(masterinfo[4:6], "big")


@dataclass(frozen=True)
class Cluster:
    directory: Path
    started_in: float = 0.0  # seconds `up` took

    @property
    def mount(self) -> Path:
        return self.directory / "mnt"

    @property
    def chunk_dirs(self) -> tuple[Path, ...]:
        """Where the chunkservers keep chunks: what MooseFS really stores is here."""
        return tuple(self.directory / name / "hdd" for name in CHUNKSERVERS)


# -- processes ---------------------------------------------------------------------------------------
def log_path(directory: Path, name: str) -> Path:
    return directory / "log" / f"{name}.log"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process even
    after the pid is reused. None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str) -> bool:
    """The recorded process still runs (a zombie is gone: it only waits for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    if fields[19].decode() != started:
        return False  # the pid now names another process
    if fields[0] == b"Z":
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is ours (`up` ran in this process)
        except ChildProcessError:
            pass
        return False
    return True


def _spawn(directory: Path, name: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> int:
    """Start `name` in a session of its own, output to its log; record pid and start time."""
    with open(log_path(directory, name), "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, pass_fds=pass_fds)
    started = _start_time(process.pid) or "?"
    (directory / "pids").mkdir(exist_ok=True)
    (directory / "pids" / f"{name}.pid").write_text(f"{process.pid} {started}\n")
    return process.pid


def _recorded(directory: Path, name: str) -> tuple[int, str] | None:
    try:
        pid, started = (directory / "pids" / f"{name}.pid").read_text().split()
        return int(pid), started
    except (OSError, ValueError):
        return None


def _kill(directory: Path, names: tuple[str, ...]) -> None:
    """SIGKILL each named process that still runs (its whole session) and wait until all are gone,
    up to STOP_SECONDS: one stuck in the kernel (a hung FUSE request) is named, not waited for."""
    targets = [(name, r) for name in names if (r := _recorded(directory, name)) and _alive(*r)]
    for _, (pid, _) in targets:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_SECONDS
    while any(_alive(*r) for _, r in targets) and time.monotonic() < deadline:
        time.sleep(0.02)  # poll interval inside the deadline
    stuck = [f"{name} (pid {r[0]})" for name, r in targets if _alive(*r)]
    if stuck:
        raise RuntimeError(f"moosefs lab: {', '.join(stuck)} did not die on SIGKILL in {STOP_SECONDS:g} s")
    for name in names:
        (directory / "pids" / f"{name}.pid").unlink(missing_ok=True)


def _signal(pid: int, sig: int) -> None:
    for send in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        try:
            send()
        except (ProcessLookupError, PermissionError):
            pass


def _run(argv: list[str], timeout: float = 30) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"moosefs lab: `{' '.join(argv)}` failed ({result.returncode}): "
                           f"{result.stderr.strip()[-800:]}")
    return result.stdout


def _wait(directory: Path, what: str, check, watched: tuple[str, ...], log: str, seconds: float = READY_SECONDS):
    """Poll `check` until it is true; fail at once when a watched process has exited, and after
    `seconds` otherwise, naming the log to read."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return
        for name in watched:
            record = _recorded(directory, name)
            if record is None or not _alive(*record):
                raise RuntimeError(f"moosefs lab: {name} exited before {what}; see {log_path(directory, name)}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"moosefs lab: {what} did not happen in {seconds:g} s; see {log_path(directory, log)}")
        time.sleep(0.05)  # poll interval inside the deadline


def _listening(holder: int, port: int) -> bool:
    out = subprocess.run(in_namespace(holder, ["ss", "-Hltn"]), capture_output=True, text=True, timeout=10).stdout
    return f"{ADDRESS}:{port} " in out


def _registered(directory: Path) -> bool:
    """Both chunkservers connected to the master, and their space visible through the mount."""
    for name in CHUNKSERVERS:
        try:
            if "connected to Master" not in log_path(directory, name).read_text(errors="replace"):
                return False
        except OSError:
            return False
    return os.statvfs(directory / "mnt").f_bavail > 0


def _tools_answer(mount: Path) -> bool:
    # mfsgetgoal talks to the master through the proxy, so it proves the bridge end to end.
    return subprocess.run(["mfsgetgoal", str(mount)], capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL).returncode == 0


def _ours(directory: Path) -> bool:
    """A directory `up` made: its marker names this very directory."""
    try:
        return (directory / MARKER).read_text() == _marker_text(directory)
    except OSError:
        return False


def _marker_text(directory: Path) -> str:
    return f"appliance moosefs lab in {directory}\n"


# -- up and down -------------------------------------------------------------------------------------
def up(directory: Path) -> Cluster:
    """A fresh MooseFS in `directory` (an earlier lab there is stopped first); refuses a directory
    holding files it did not make. On any failure everything it started is stopped again."""
    started = time.monotonic()
    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()) and not _ours(directory):
        raise RuntimeError(f"moosefs lab: {directory} holds files this lab did not make; give an empty or new "
                           "directory")
    if not EMPTY_METADATA.is_file():
        raise RuntimeError(f"moosefs lab: {EMPTY_METADATA} is missing; install moosefs-master (make deps)")
    down(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / MARKER, _marker_text(directory).encode(), 0o644)  # first: `down` knows it from now
    try:
        _start(directory)
    except BaseException:
        down(directory)
        raise
    return Cluster(directory, round(time.monotonic() - started, 2))


def _start(directory: Path) -> None:
    for sub in ("master", "log", "pids", "mnt", *(f"{n}/{s}" for n in CHUNKSERVERS for s in ("data", "hdd"))):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "mfsmaster.cfg", master_config(directory).encode(), 0o644)
    atomic_write(directory / "mfsexports.cfg", exports_config().encode(), 0o644)
    atomic_write(directory / "mfstopology.cfg", b"", 0o644)
    for name in CHUNKSERVERS:
        atomic_write(directory / name / "mfshdd.cfg", f"{directory}/{name}/hdd\n".encode(), 0o644)
        atomic_write(directory / name / "mfschunkserver.cfg", chunkserver_config(directory, name).encode(), 0o644)
    shutil.copyfile(EMPTY_METADATA, directory / "master" / "metadata.mfs")

    holder = _spawn(directory, "holder", holder_argv())
    ours = os.readlink("/proc/self/ns/net")

    def separate() -> bool:
        try:
            return os.readlink(f"/proc/{holder}/ns/net") != ours
        except OSError:
            return False
    _wait(directory, "the network namespace", separate, ("holder",), "holder")
    _run(in_namespace(holder, ["ip", "link", "set", "lo", "up"]))
    _run(in_namespace(holder, ["ip", "address", "add", f"{ADDRESS}/32", "dev", "lo"]))

    _spawn(directory, "master", in_namespace(holder, master_argv(directory)))
    _wait(directory, "the master listening", lambda: _listening(holder, MASTER_PORTS["MATOCL"]), ("master",),
          "master")
    for name in CHUNKSERVERS:
        _spawn(directory, name, in_namespace(holder, chunkserver_argv(directory, name)))
    _spawn(directory, "mount", in_namespace(holder, mount_argv(directory)))
    mount = directory / "mnt"
    _wait(directory, f"{mount} mounted", lambda: os.path.ismount(mount), ("master", "mount"), "mount")
    _wait(directory, "both chunkservers registered with space", lambda: _registered(directory),
          ("master", *CHUNKSERVERS, "mount"), "master")
    _start_bridge(directory, holder)


def _start_bridge(directory: Path, holder: int) -> None:
    """Listen on the host's 127.0.0.1 at the port of mfsmount's proxy and relay into the namespace,
    where a bridge process that inherits the listening socket connects to the proxy."""
    mount = directory / "mnt"
    port = proxy_port((mount / ".masterinfo").read_bytes())
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            listener.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"moosefs lab: port {port} (mfsmount's proxy) is taken on this host ({exc}); run "
                               "up again: the next mount picks another") from None
        listener.listen(64)
        _spawn(directory, "bridge", in_namespace(holder, bridge_argv(listener.fileno(), port)),
               pass_fds=(listener.fileno(),))
    finally:
        listener.close()  # the bridge holds its own copy
    _wait(directory, "the MooseFS tools answering on the host", lambda: _tools_answer(mount), ("bridge", "mount"),
          "bridge")


def down(directory: Path) -> float:
    """Unmount, stop every process `up` recorded in `directory` (the namespace goes with the last
    one) and remove the lab's files; returns the seconds it took. A directory `up` did not make is
    left alone."""
    started = time.monotonic()
    directory = Path(directory).resolve()
    if not directory.exists() or not _ours(directory):
        return 0.0
    mount = directory / "mnt"
    _kill(directory, ("bridge",))
    _unmount(mount)  # first: it closes every file, so what was written has reached the chunkservers
    # SIGKILL: the lab's data goes with it, and a master on SIGTERM spends 3 s saving metadata.
    _kill(directory, tuple(reversed(PROCESSES)))
    _unmount(mount)  # a mount whose mfsmount died before `down` stays until unmounted
    if os.path.ismount(mount):
        raise RuntimeError(f"moosefs lab: {mount} is still mounted; unmount it (fusermount3 -u -z {mount}) and "
                           "run down again")
    # --one-file-system: never into a mount, whatever happened above.
    subprocess.run(["rm", "-rf", "--one-file-system", "--", *[str(p) for p in directory.iterdir()]], check=False)
    return round(time.monotonic() - started, 2)


def _unmount(mount: Path) -> None:
    if not os.path.ismount(mount):
        return
    # -z when busy (a shell or test still inside): detached now, gone when the last user leaves.
    for argv in (["fusermount3", "-u", str(mount)], ["fusermount3", "-u", "-z", str(mount)]):
        if subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL).returncode == 0:
            return


# -- the bridge (runs inside the namespace) ----------------------------------------------------------
def bridge(listen_fd: int, port: int) -> None:
    """Accept on the inherited host-side socket; relay each connection to 127.0.0.1:port here."""
    listener = socket.socket(fileno=listen_fd)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, port), daemon=True).start()


def _relay(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)  # pass the end on, so the other direction ends too
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "bridge":
        bridge(int(argv[2]), int(argv[3]))
        return 0
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "up":
        cluster = up(Path(argv[2]))
        print(cluster.mount)
        print(f"up in {cluster.started_in:g} s", file=sys.stderr)
    else:
        print(f"down in {down(Path(argv[2])):g} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
