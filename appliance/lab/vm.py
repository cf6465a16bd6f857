"""`appliance lab up --kind vm`: two frontends and a hypervisor host as QEMU machines on Debian's own kernel.

The namespace lab shares this machine's kernel, which has no DRBD, device-mapper, AoE or nfsd; these
machines boot Debian 12's kernel under QEMU (TCG: no KVM needed), so DRBD, LVM, AoE and kernel NFS run
for real. Same contract as the namespace lab: the lab directory holds lab.toml (an inventory without
`[lab] enabled`: nothing is skipped), lab.secrets.toml (0600), known_hosts and a client key, so
`install`, `status` and `drill` work unchanged.

Network: the same bridges as the namespace lab (apl-lan 10.251.0.0/24, apl-san 10.250.0.0/24, the
host at .254 on each), one tap device per machine and network. The two labs cannot run at once.
Machine N has lan0/san0 at .N (the hypervisor host at .11), renamed by MAC at boot by the seed.
Disks of a frontend: vda the root (a qcow2 overlay over the cached image), vdb DRBD's external
metadata, vdc and vdd the two DRBD backing disks, then the seed disk.
Power: each machine's QEMU has a monitor socket; the lab's power switch (appliance.lab.pdu) on
10.251.0.254:1623 switches machines off (SIGKILL of QEMU: a power cut) and on (QEMU started again
with the same disks), asked by the fence agent fence_vmlab inside the machines.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.core.reports import Report, ReportError
from appliance.inventory.secrets import new_secrets_text, write_secrets_file
from appliance.lab import lab as netns_lab
from appliance.lab import vmimage
from appliance.runner.atomic import atomic_write

LAN, SAN = netns_lab.LAN, netns_lab.SAN
PDU_ADDRESS, PDU_PORT = f"{LAN}.254", 1623
KIND_FILE = "kind"  # in the lab directory: "vm"
FRONTEND_MEMORY = int(os.environ.get("APPLIANCE_VMLAB_MEMORY", "1024"))  # MiB; MariaDB + Pacemaker + DRBD
HYPERVISOR_MEMORY = 512
# Sparse files: DRBD 8.4's indexed external metadata takes 128 MiB per index (two resources).
FRONTEND_DISKS = (("meta", "288M"), ("cloud", "128M"), ("vmdata", "256M"))
BOOT_TIMEOUT = float(os.environ.get("APPLIANCE_VMLAB_BOOT_TIMEOUT", "300"))  # two TCG boots on 2 cores: ~40-90 s


@dataclass(frozen=True)
class Machine:
    name: str
    index: int
    role: str  # "frontend" or "hypervisor"

    @property
    def lan_ip(self) -> str:
        return f"{LAN}.{self.index}"

    @property
    def san_ip(self) -> str:
        return f"{SAN}.{self.index}"

    def tap(self, net: str) -> str:
        return f"apl-v{self.index:02d}-{net[0]}"  # 11 characters: under IFNAMSIZ

    def mac(self, net: str) -> str:
        return f"52:54:00:fb:{self.index:02x}:{0 if net == 'lan' else 1:02x}"

    @property
    def memory(self) -> int:
        return FRONTEND_MEMORY if self.role == "frontend" else HYPERVISOR_MEMORY

    @property
    def disks(self) -> tuple[tuple[str, str], ...]:
        return FRONTEND_DISKS if self.role == "frontend" else ()


MACHINES = (Machine("cloud-cc01", 1, "frontend"), Machine("cloud-cc02", 2, "frontend"),
            Machine("cloud-hv01", 11, "hypervisor"))
FRONTENDS = tuple(m for m in MACHINES if m.role == "frontend")


def machine(name: str) -> Machine:
    for m in MACHINES:
        if m.name == name:
            return m
    raise ReportError([Report("LAB_UNKNOWN_MACHINE", f"{name!r} is not a VM lab machine", value=name,
                              fix="one of " + ", ".join(m.name for m in MACHINES))])


# -- pure builders -------------------------------------------------------------------------------

def qemu_argv(m: Machine, directory: Path, image: vmimage.Image) -> list[str]:
    """The machine's QEMU command line. Daemonized; the monitor socket is the power switch's handle."""
    argv = ["qemu-system-x86_64", "-name", m.name, "-accel", "tcg", "-m", str(m.memory), "-smp", "1",
            "-nodefaults", "-display", "none", "-daemonize", "-pidfile", str(directory / "qemu.pid"),
            "-serial", f"file:{directory / 'console.log'}",
            "-monitor", f"unix:{directory / 'monitor.sock'},server=on,wait=off",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", "console=ttyS0 root=/dev/vda rw quiet panic=5",
            "-object", "rng-random,filename=/dev/urandom,id=rng0", "-device", "virtio-rng-pci,rng=rng0",
            "-drive", f"file={directory / 'root.qcow2'},format=qcow2,if=virtio"]
    for disk, _ in m.disks:
        argv += ["-drive", f"file={directory / (disk + '.img')},format=raw,if=virtio"]
    argv += ["-drive", f"file={directory / 'seed.img'},format=raw,if=virtio,readonly=on"]
    for net in ("lan", "san"):
        argv += ["-netdev", f"tap,id={net},ifname={m.tap(net)},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev={net},mac={m.mac(net)}"]
    return argv


def seed_files(m: Machine, lab: Path) -> dict[str, tuple[bytes, int]]:
    """What the machine's seed disk holds: its identity, and the fence agent for every boot."""
    directory = lab / m.name
    interfaces = "".join(f"{m.mac(net)} {net}0 {address}/24\n"
                         for net, address in (("lan", m.lan_ip), ("san", m.san_ip)))
    agent = (Path(__file__).with_name("fence_vmlab.py")).read_bytes()
    files = {"hostname": (f"{m.name}\n".encode(), 0o644),
            "interfaces": (interfaces.encode(), 0o644),
            "ssh_host_ed25519_key": ((directory / "ssh_host_ed25519_key").read_bytes(), 0o600),
            "ssh_host_ed25519_key.pub": ((directory / "ssh_host_ed25519_key.pub").read_bytes(), 0o644),
            "authorized_keys": ((lab / "client_key.pub").read_bytes(), 0o600),
            "fence_vmlab": (agent, 0o755),
            "install.list": (b"0755 /usr/sbin/fence_vmlab fence_vmlab\n", 0o644)}
    if m.role == "hypervisor":
        files["masked"] = ("".join(f"{unit}\n" for unit in vmimage.FRONTEND_SERVICES).encode(), 0o644)
    return files


def inventory_text(lab: Path, token: int = 3000) -> str:
    nodes = "\n".join(f"""
[[nodes]]
name = "{m.name}"
lan_ip = "{m.lan_ip}"
san_ip = "{m.san_ip}"
lan_interface = "lan0"
san_interface = "san0"
ssh = {{ user = "root", port = 22, key = "client_key", known_hosts = "known_hosts" }}
disks = {{ metadata = "/dev/vdb", cloud = "/dev/vdc", vmdata = "/dev/vdd" }}
""" for m in FRONTENDS)
    devices = "\n".join(f"""
[[fencing.devices]]
name = "switch-cc{m.index:02d}"
agent = "fence_vmlab"
node = "{m.name}"
params = {{ ip = "{PDU_ADDRESS}", ipport = {PDU_PORT}, plug = "{m.name}" }}
""" for m in FRONTENDS)
    hosts = "\n".join(f"""
[[hosts]]
name = "{m.name}"
address = "{m.san_ip}"
""" for m in MACHINES if m.role == "hypervisor")
    return f"""# Written by `appliance lab up --kind vm`: QEMU machines with Debian's kernel, as an inventory.
secrets_file = "lab.secrets.toml"

[cluster]
name = "cloud-cc"
timeout_scale = 4  # TCG runs about ten times slower than hardware: a 20 s monitor timed out under load
load_threshold = 400  # an emulated vCPU is always "loaded": at 80 % Pacemaker ran one action at a time

[network]
lan = "{LAN}.0/24"
san = "{SAN}.0/24"
lan_vip = "{LAN}.100"
san_vip = "{SAN}.100"
{nodes}
[corosync]
links = ["san", "lan"]
token = {token}

[drbd]
version = "8.4"  # the kernel's module: Debian 12's linux-image ships DRBD 8.4.11
resync_rate = "40M"

[manager]
wheelhouse = "wheelhouse"  # built by `lab up` from this checkout: the machines have no package index

[proxy]
tls = {{ generate = true }}

[lab]
vm = true
{devices}{hosts}"""


# -- side effects --------------------------------------------------------------------------------

def _require_root() -> None:
    if os.geteuid() != 0:
        raise ReportError([Report("LAB_NOT_ROOT", "the VM lab creates tap devices and bridges: run as root")])


def network_up() -> None:
    """The namespace lab's bridges, and a tap per machine and network on them. Idempotent."""
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        links = {link.get_attr("IFLA_IFNAME") for link in ip.get_links()}
        for bridge, address in netns_lab.BRIDGES.items():
            if bridge not in links:
                ip.link("add", ifname=bridge, kind="bridge")
            index = ip.link_lookup(ifname=bridge)[0]
            if address not in [a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index)]:
                ip.addr("add", index=index, address=address, prefixlen=24)
            ip.link("set", index=index, state="up")
        for m in MACHINES:
            for net, bridge in (("lan", "apl-lan"), ("san", "apl-san")):
                if m.tap(net) not in links:
                    ip.link("add", ifname=m.tap(net), kind="tuntap", mode="tap")
                ip.link("set", index=ip.link_lookup(ifname=m.tap(net))[0],
                        master=ip.link_lookup(ifname=bridge)[0], state="up")


def network_down() -> list[str]:
    from pyroute2 import IPRoute

    removed = []
    with IPRoute() as ip:
        for name in [m.tap(net) for m in MACHINES for net in ("lan", "san")] + list(netns_lab.BRIDGES):
            for index in ip.link_lookup(ifname=name):
                ip.link("del", index=index)
                removed.append(name)
    return removed


def qemu_pid(directory: Path) -> int | None:
    """The machine's QEMU, if it runs: the pid file's process, and it must be our QEMU."""
    try:
        pid = int((directory / "qemu.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, ValueError, IndexError):
        return None
    if state == "Z" or str(directory / "qemu.pid").encode() not in cmdline:
        return None  # a recycled pid, or a dead QEMU not yet reaped
    return pid


def prepare_machine(lab: Path, m: Machine, image: vmimage.Image) -> None:
    """The machine's disks and seed. Existing disks are kept: they are the machine's state."""
    directory = lab / m.name
    directory.mkdir(exist_ok=True, mode=0o700)
    netns_lab._keygen(directory / "ssh_host_ed25519_key")
    root = directory / "root.qcow2"
    if not root.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.disk),
                        str(root)], check=True)
    for disk, size in m.disks:
        path = directory / f"{disk}.img"
        if not path.exists():
            subprocess.run(["truncate", "-s", size, str(path)], check=True)  # sparse, and blank
    vmimage.seed_image(directory / "seed.img", seed_files(m, lab))
    atomic_write(directory / "qemu.json", json.dumps(qemu_argv(m, directory, image)).encode(), 0o600)


# What prepare_machine creates for a machine: a replacement removes exactly these, nothing else of
# the machine's directory (its console log and fence record stay: the history of the old server).
REPLACED = ("root.qcow2", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "seed.img", "qemu.json")


def replace_machine(lab: Path, m: Machine, image: vmimage.Image | None = None) -> dict:
    """A new server in the same rack slot: a fresh system from the image, blank DRBD disks and a new
    SSH host key; the same name, addresses and disk paths. For practising docs/runbooks/replace-node.md.

    Refused while the machine runs (a live disk is never pulled). known_hosts keeps the old key, as an
    operator's would: the install then refuses the new one (HOST_KEY_CHANGED) until the runbook's
    fingerprint check."""
    directory = lab / m.name
    if not (lab / KIND_FILE).exists() or not directory.is_dir():
        raise ReportError([Report("LAB_NOT_FOUND", f"no VM lab machine {m.name} in {lab}", host=m.name,
                                  value=str(lab), fix="`appliance lab up --kind vm` first")])
    if qemu_pid(directory):
        raise ReportError([Report("LAB_MACHINE_ON", f"{m.name} is on: its disks are in use", host=m.name,
                                  value=m.name, fix=f"`appliance lab power {m.name} off` first (a power cut)")])
    image = image or vmimage.build(progress=lambda message: None)
    old_key = (directory / "ssh_host_ed25519_key.pub").read_text().split()[1] \
        if (directory / "ssh_host_ed25519_key.pub").exists() else None
    removed = []
    for name in REPLACED + tuple(f"{disk}.img" for disk, _ in m.disks):
        path = directory / name
        if path.exists():
            path.unlink()
            removed.append(name)
    prepare_machine(lab, m, image)
    new_key = (directory / "ssh_host_ed25519_key.pub").read_text().split()[1]
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(directory / "ssh_host_ed25519_key.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    return {"machine": m.name, "replaced": sorted(removed), "new_host_key": new_key != old_key,
            "host_key_fingerprint": fingerprint, "power": "off"}


def power_on(lab: Path, m: Machine) -> bool:
    """Start the machine's QEMU unless it runs. True when it was started."""
    directory = lab / m.name
    if qemu_pid(directory):
        return False
    argv = json.loads((directory / "qemu.json").read_text())
    (directory / "qemu.pid").unlink(missing_ok=True)
    (directory / "monitor.sock").unlink(missing_ok=True)
    with open(directory / "console.log", "ab") as console:
        console.write(f"\n==== power on {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ====\n".encode())
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError([Report("LAB_START_FAILED", f"QEMU of {m.name} did not start: "
                                  f"{result.stderr.strip()[-300:]}", host=m.name, value=m.name)])
    return True


def power_off(lab: Path, m: Machine, timeout: float = 30.0) -> bool:
    """A power cut: SIGKILL the machine's QEMU and wait until it is gone. True when it was on."""
    directory = lab / m.name
    pid = qemu_pid(directory)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while qemu_pid(directory) == pid and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval inside the deadline loop: the kernel reaps it
    if qemu_pid(directory) == pid:
        raise ReportError([Report("LAB_STOP_FAILED", f"QEMU of {m.name} (pid {pid}) survived SIGKILL",
                                  host=m.name, value=str(pid))])
    return True


def _until_prompt(sock: socket.socket) -> bytes:
    buffer = b""
    while not buffer.endswith(b"(qemu) "):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buffer += chunk
    return buffer


def monitor(lab: Path, m: Machine, command: str, timeout: float = 10.0) -> str:
    """One human-monitor command (e.g. `set_link lan off`); returns what QEMU printed."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(lab / m.name / "monitor.sock"))
        _until_prompt(sock)  # the banner
        sock.sendall(command.encode() + b"\n")
        buffer = _until_prompt(sock)
    lines = buffer.decode(errors="replace").replace("\r", "").splitlines()
    return "\n".join(line for line in lines[1:] if not line.startswith("(qemu)")).strip()


def set_link(lab: Path, m: Machine, net: str, up: bool) -> None:
    """Pull or plug a machine's cable: the guest sees the carrier go and come back."""
    said = monitor(lab, m, f"set_link {net} {'on' if up else 'off'}")
    if said:  # QEMU prints nothing on success: anything else (no such link) means the cable did not move
        raise ReportError([Report("LAB_START_FAILED", f"QEMU of {m.name} refused set_link {net}: {said}",
                                  host=m.name, value=net)])


def wait_for_ssh(m: Machine, timeout: float = BOOT_TIMEOUT, progress=lambda message: None) -> float:
    """Seconds until the machine's sshd answers on its LAN address."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((m.lan_ip, 22), timeout=1) as s:
                s.settimeout(5)
                if s.recv(4) == b"SSH-":
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.5)  # poll interval inside the deadline loop
    raise ReportError([Report("HOST_UNREACHABLE", f"VM lab machine {m.name} did not start sshd within "
                              f"{timeout:g} s", host=m.name, value=m.lan_ip,
                              fix="read its console log in the lab directory (console.log)")])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class VmPower:
    """The power switch's view of the lab (appliance.lab.pdu.Power)."""

    def __init__(self, lab: Path):
        self.lab = lab

    def plugs(self) -> list[str]:
        return [m.name for m in MACHINES]

    def state(self, plug: str) -> str:
        return "on" if qemu_pid(self.lab / machine(plug).name) else "off"

    def off(self, plug: str) -> None:
        power_off(self.lab, machine(plug))

    def on(self, plug: str) -> None:
        power_on(self.lab, machine(plug))

    def machine_dir(self, plug: str) -> Path:
        return self.lab / machine(plug).name


def _pdu_pid(lab: Path) -> int | None:
    try:
        pid = int((lab / "pdu.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"appliance.lab.pdu" in cmdline and str(lab).encode() in cmdline else None


def start_pdu(lab: Path) -> None:
    if _pdu_pid(lab):
        return
    subprocess.run(["setsid", "-f", sys.executable, "-m", "appliance.lab.pdu", "--lab-dir", str(lab),
                    "--address", PDU_ADDRESS, "--port", str(PDU_PORT)],
                   stdin=subprocess.DEVNULL, stdout=open(lab / "pdu.log", "ab"), stderr=subprocess.STDOUT, check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((PDU_ADDRESS, PDU_PORT), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)  # poll interval inside the deadline loop
    raise ReportError([Report("LAB_START_FAILED", "the lab's power switch did not start",
                              fix=f"read {lab / 'pdu.log'}")])


def _refuse_other_lab(lab: Path) -> None:
    """The namespace lab uses the same bridges and addresses: one lab at a time."""
    from pyroute2 import netns

    running = [n.netns for n in netns_lab.NODES if n.netns in netns.listnetns()]
    if running:
        raise ReportError([Report("LAB_BUSY", "a namespace lab is up (" + ", ".join(running) + "): it uses the "
                                  "same bridges and addresses", fix="`appliance lab down` it first")])
    kind = lab / KIND_FILE
    if lab.exists() and any(lab.iterdir()) and (not kind.exists() or kind.read_text().strip() != "vm"):
        raise ReportError([Report("OUTPUT_NOT_EMPTY", f"{lab} holds something that is not a VM lab", value=str(lab),
                                  fix="choose another --dir, or `appliance lab down` the lab there")])


def up(lab: Path, token: int = 3000, progress=print) -> dict:
    """Create (or complete) the VM lab and wait until every machine answers on SSH. Idempotent:
    running machines are left alone, stopped ones are powered on with the disks they had."""
    _require_root()
    _refuse_other_lab(lab)
    image = vmimage.build(progress=progress)
    lab.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(lab / KIND_FILE, b"vm\n", 0o644)
    netns_lab._keygen(lab / "client_key")
    if not (lab / "pdu.key").exists():
        atomic_write(lab / "pdu.key", (secrets.token_urlsafe(24) + "\n").encode(), 0o600)
    network_up()
    known = []
    started_at = time.monotonic()
    started = []
    for m in MACHINES:
        prepare_machine(lab, m, image)
        key = (lab / m.name / "ssh_host_ed25519_key.pub").read_text().split()
        known += [f"{address} {key[0]} {key[1]}" for address in (m.lan_ip, m.san_ip)]
        if power_on(lab, m):
            started.append(m.name)
    atomic_write(lab / "known_hosts", ("\n".join(known) + "\n").encode(), 0o600)
    if not (lab / "lab.toml").exists():
        atomic_write(lab / "lab.toml", inventory_text(lab, token).encode(), 0o644)
    if not (lab / "lab.secrets.toml").exists():
        _write_secrets(lab)
    start_pdu(lab)
    build_wheelhouse(lab, progress)
    if started:
        progress(f"vm lab: booting {', '.join(started)} (TCG: about a minute)")
    boot = {m.name: round(wait_for_ssh(m), 1) for m in MACHINES}
    result = status(lab)
    result["started"] = started
    result["seconds_until_ssh"] = boot  # per machine, from the end of the wait for the previous one
    result["seconds_total"] = round(time.monotonic() - started_at, 1)
    return result


def build_wheelhouse(lab: Path, progress=print) -> None:
    """The appliance's wheel and its dependencies' for the machines (`make wheelhouse`, into the lab)."""
    target = lab / "wheelhouse"
    if target.is_dir() and any(target.glob("appliance-*.whl")):
        return  # a lab kept up (APPLIANCE_VMLAB_KEEP) keeps the release it was built with
    project = Path(__file__).resolve().parents[2]
    if not (project / "pyproject.toml").exists():
        raise ReportError([Report("LAB_TOOL_MISSING", "the VM lab builds its wheelhouse from a source checkout, "
                                  f"and {project} is not one", fix="run the lab from the project's checkout")])
    progress("vm lab: building the wheelhouse (pip wheel)")
    partial = lab / ".wheelhouse"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(partial), str(project)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError([Report("LAB_START_FAILED", "pip wheel failed: " + result.stderr.strip()[-300:])])
    os.replace(partial, target)


def _write_secrets(lab: Path) -> None:
    """Fresh secrets, plus the power switch's password for each fence device."""
    from appliance.inventory.load import read_inventory

    inventory, _ = read_inventory(lab / "lab.toml")
    text = new_secrets_text(inventory)
    password = (lab / "pdu.key").read_text().strip()
    for device in inventory.fencing.devices:
        marker = f"[fence.{device.name}]\n"
        text = text.replace(marker, marker + f'password = "{password}"\n')
    write_secrets_file(lab / "lab.secrets.toml", text)


def down(lab: Path) -> list[str]:
    """Power every machine off, stop the switch, remove taps, bridges and the lab directory."""
    _require_root()
    removed = []
    for m in MACHINES:
        if lab.exists() and power_off(lab, m):
            removed.append(f"QEMU of {m.name}")
    pdu = _pdu_pid(lab) if lab.exists() else None
    if pdu:
        os.kill(pdu, signal.SIGTERM)
        removed.append("the power switch")
    removed += network_down()
    if lab.exists():
        shutil.rmtree(lab)
        removed.append(str(lab))
    return removed


def status(lab: Path) -> dict:
    links = netns_lab._links()
    machines = []
    for m in MACHINES:
        pid = qemu_pid(lab / m.name)
        machines.append({"name": m.name, "role": m.role, "lan_ip": m.lan_ip, "san_ip": m.san_ip,
                         "power": "on" if pid else "off", "qemu_pid": pid,
                         "rss_mib": round(rss_mib(pid)) if pid else 0,
                         "taps": {net: m.tap(net) in links for net in ("lan", "san")}})
    return {"kind": "vm", "lab_dir": str(lab),
            "inventory": str(lab / "lab.toml") if (lab / "lab.toml").exists() else None,
            "bridges": {b: b in links for b in netns_lab.BRIDGES}, "power_switch": bool(_pdu_pid(lab)),
            "machines": machines}
