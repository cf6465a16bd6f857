"""`appliance lab up|down|status`: the two frontends as network namespaces on this machine.

Topology: bridges apl-lan (10.251.0.0/24) and apl-san (10.250.0.0/24) in the root namespace, which
holds .254 on each, so the installer reaches every node and floating address. Node N is the
namespace appliance-cloud-cc0N with interfaces lan0 and san0 (.N on each network), a private
mount and UTS namespace (see anchor.py) and its own sshd on port 22 with its own host key.
`up` writes lab.toml (an inventory), lab.secrets.toml (0600), known_hosts and a client key into
the lab directory. Everything it creates carries the `apl-`/`appliance-` prefix or lives in the
lab directory; `down` removes exactly that.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.inventory.secrets import new_secrets_text, write_secrets_file
from appliance.core.reports import Report, ReportError
from appliance.runner.atomic import atomic_write

DEFAULT_DIR = Path(os.environ.get("APPLIANCE_LAB_DIR", "/tmp/appliance-lab"))
LAN, SAN = "10.251.0", "10.250.0"
BRIDGES = {"apl-lan": f"{LAN}.254", "apl-san": f"{SAN}.254"}
# The lab's power switch (appliance.lab.fence), where Pacemaker's fenced looks for agents.
FENCE_AGENT = Path("/usr/sbin/fence_lab")
FENCE_AGENT_HEADER = "# Managed by appliance lab: the lab's power switch (appliance.lab.fence)."


@dataclass(frozen=True)
class LabNode:
    index: int

    @property
    def name(self) -> str:
        return f"cloud-cc{self.index:02d}"

    @property
    def netns(self) -> str:
        return f"appliance-{self.name}"

    @property
    def lan_ip(self) -> str:
        return f"{LAN}.{self.index}"

    @property
    def san_ip(self) -> str:
        return f"{SAN}.{self.index}"

    def veth(self, net: str) -> str:
        return f"apl-cc{self.index:02d}-{net[0]}"  # host side, 15 characters at most


NODES = (LabNode(1), LabNode(2))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ReportError([Report("LAB_NOT_ROOT", "the lab creates network namespaces and mounts: run as root")])


def _links() -> dict[str, int]:
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ip.get_links()}


def network_up() -> None:
    """Bridges, namespaces, veth pairs and addresses. Idempotent: what exists is kept."""
    from pyroute2 import IPRoute, NetNS, netns

    existing_ns = set(netns.listnetns())
    with IPRoute() as ip:
        links = {link.get_attr("IFLA_IFNAME") for link in ip.get_links()}
        for bridge, address in BRIDGES.items():
            if bridge not in links:
                ip.link("add", ifname=bridge, kind="bridge")
            index = ip.link_lookup(ifname=bridge)[0]
            if address not in [a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index)]:
                ip.addr("add", index=index, address=address, prefixlen=24)
            ip.link("set", index=index, state="up")
        for node in NODES:
            if node.netns not in existing_ns:
                netns.create(node.netns)
            for net, inner, bridge in (("lan", "lan0", "apl-lan"), ("san", "san0", "apl-san")):
                if node.veth(net) not in links:
                    ip.link("add", ifname=node.veth(net), kind="veth", peer={"ifname": inner, "net_ns_fd": node.netns})
                ip.link("set", index=ip.link_lookup(ifname=node.veth(net))[0],
                        master=ip.link_lookup(ifname=bridge)[0], state="up")
            with NetNS(node.netns) as ns:
                for inner, address in (("lan0", node.lan_ip), ("san0", node.san_ip)):
                    index = ns.link_lookup(ifname=inner)[0]
                    if address not in [a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=index)]:
                        ns.addr("add", index=index, address=address, prefixlen=24)
                    ns.link("set", index=index, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def network_down() -> list[str]:
    from pyroute2 import IPRoute, netns

    removed = []
    with IPRoute() as ip:
        for node in NODES:
            for net in ("lan", "san"):
                for index in ip.link_lookup(ifname=node.veth(net)):
                    ip.link("del", index=index)
                    removed.append(node.veth(net))
        for bridge in BRIDGES:
            for index in ip.link_lookup(ifname=bridge):
                ip.link("del", index=index)
                removed.append(bridge)
    for node in NODES:
        if node.netns in netns.listnetns():
            netns.remove(node.netns)
            removed.append(node.netns)
    return removed


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)


def _sshd_config(lab: Path, node_dir: Path) -> str:
    return "\n".join([
        "# Managed by appliance lab: one sshd per lab node, inside its namespaces.",
        "Port 22", "ListenAddress 0.0.0.0", f"HostKey {node_dir}/ssh_host_ed25519_key",
        "PidFile /run/sshd.pid", f"AuthorizedKeysFile {lab}/authorized_keys", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "Subsystem sftp internal-sftp", ""])


def _anchor_pid(node_dir: Path) -> int | None:
    try:
        pid = int((node_dir / "anchor.pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state == "Z" else pid  # a killed anchor lingers as a zombie: it is not alive


def enter(lab: Path, node: LabNode) -> list[str]:
    """The argv prefix that runs a command inside a node, as its own processes see the machine.

    `-r -w` take the node's root and working directory too: entering a mount namespace otherwise
    resets the root to the namespace's, which is not the same place when the lab itself runs in a
    chroot (tools/fresh-debian-check.sh does)."""
    return ["nsenter", "-t", (lab / node.name / "anchor.pid").read_text().strip(), "-n", "-m", "-u", "-r", "-w"]


def node_pids(node: LabNode) -> list[int]:
    """Every process in the node's network namespace (its daemons included)."""
    result = subprocess.run(["ip", "netns", "pids", node.netns], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []


def start_node(lab: Path, node: LabNode) -> None:
    node_dir = lab / node.name
    if _anchor_pid(node_dir):
        return
    (node_dir / "anchor.pid").unlink(missing_ok=True)
    # setsid -f: the anchor's parent is init, not us, so a killed node never lingers as our zombie.
    subprocess.run(["setsid", "-f", "ip", "netns", "exec", node.netns, "unshare", "--mount", "--uts", "--propagation",
                    "private", sys.executable, "-m", "appliance.lab.anchor", str(node_dir)],
                   stdin=subprocess.DEVNULL, stdout=open(node_dir / "anchor.log", "ab"), stderr=subprocess.STDOUT,
                   check=True)


def wait_for_ssh(node: LabNode, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((node.lan_ip, 22), timeout=0.5) as s:
                if s.recv(4) == b"SSH-":
                    return
        except OSError:
            time.sleep(0.1)  # poll interval inside the deadline loop
    raise ReportError([Report("HOST_UNREACHABLE", f"lab node {node.name} did not start sshd", host=node.name,
                              value=node.lan_ip)])


def inventory_text(lab: Path, token: int = 3000) -> str:
    nodes = "\n".join(f"""
[[nodes]]
name = "{n.name}"
lan_ip = "{n.lan_ip}"
san_ip = "{n.san_ip}"
lan_interface = "lan0"
san_interface = "san0"
ssh = {{ user = "root", port = 22, key = "client_key", known_hosts = "known_hosts" }}
disks = {{ metadata = "/dev/lab-meta", cloud = "/dev/lab-cloud", vmdata = "/dev/lab-vmdata" }}
""" for n in NODES)
    devices = "\n".join(f"""
[[fencing.devices]]
name = "switch-cc{n.index:02d}"
agent = "fence_lab"
node = "{n.name}"
params = {{ lab_dir = "{lab}", pdu = "{LAN}.254" }}
""" for n in NODES)
    return f"""# Written by `appliance lab up`: the local lab as an inventory.
secrets_file = "lab.secrets.toml"

[cluster]
name = "cloud-cc"

[network]
lan = "{LAN}.0/24"
san = "{SAN}.0/24"
lan_vip = "{LAN}.100"
san_vip = "{SAN}.100"
{nodes}
[corosync]
links = ["san", "lan"]
token = {token}

[proxy]
tls = {{ generate = true }}

[lab]
enabled = true
{devices}"""


def _install_fence_agent() -> None:
    if FENCE_AGENT.exists() and FENCE_AGENT_HEADER not in FENCE_AGENT.read_text(errors="replace"):
        raise ReportError([Report("OUTPUT_NOT_EMPTY", f"{FENCE_AGENT} exists and is not the lab's", value=str(FENCE_AGENT),
                                  fix="move it away: the lab installs its own fence agent under that name")])
    from appliance.lab.fence import metadata

    # Meta-data is answered here, without Python: Pacemaker's controller asks as hacluster, who
    # may not reach the installer's interpreter. Options arrive on stdin; the shim passes them on.
    shim = (f"#!/bin/sh\n{FENCE_AGENT_HEADER}\n"
            'if [ -t 0 ]; then input=""; else input=$(cat); fi\n'
            'case " $* " in *" metadata "*|*"=metadata "*) asked=1 ;; *) asked=0 ;; esac\n'
            'if [ "$asked" = 1 ] || printf "%s\\n" "$input" | grep -qx "action=metadata"; then\n'
            f"    cat <<'FENCE_LAB_METADATA_END'\n{metadata()}FENCE_LAB_METADATA_END\n    exit 0\nfi\n"
            f'printf "%s\\n" "$input" | exec {sys.executable} -m appliance.lab.fence "$@"\n')
    atomic_write(FENCE_AGENT, shim.encode(), 0o755)


def _netns_id(node: LabNode) -> str:
    """What /proc/PID/ns/net reads for the node's processes: how fence_lab finds them."""
    return f"net:[{os.stat(f'/run/netns/{node.netns}').st_ino}]"


def up(lab: Path = DEFAULT_DIR, token: int = 3000) -> dict:
    """Create (or complete) the lab. Idempotent."""
    _require_root()
    lab.mkdir(parents=True, exist_ok=True, mode=0o700)
    _keygen(lab / "client_key")
    shutil.copyfile(lab / "client_key.pub", lab / "authorized_keys")
    network_up()
    _install_fence_agent()
    known = []
    for node in NODES:
        node_dir = lab / node.name
        node_dir.mkdir(exist_ok=True)
        (node_dir / "hostname").write_text(node.name + "\n")
        (node_dir / "netns.id").write_text(_netns_id(node) + "\n")
        _keygen(node_dir / "ssh_host_ed25519_key")
        atomic_write(node_dir / "sshd_config", _sshd_config(lab, node_dir).encode(), 0o600)
        key = (node_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known += [f"{address} {key[0]} {key[1]}" for address in (node.lan_ip, node.san_ip)]
        start_node(lab, node)
    atomic_write(lab / "known_hosts", ("\n".join(known) + "\n").encode(), 0o600)
    if not (lab / "lab.toml").exists():
        atomic_write(lab / "lab.toml", inventory_text(lab, token).encode(), 0o644)
    if not (lab / "lab.secrets.toml").exists():
        from appliance.inventory.load import read_inventory

        inventory, _ = read_inventory(lab / "lab.toml")
        write_secrets_file(lab / "lab.secrets.toml", new_secrets_text(inventory))
    for node in NODES:
        wait_for_ssh(node)
    return status(lab)


def down(lab: Path = DEFAULT_DIR) -> list[str]:
    """Stop every process in the lab's namespaces, remove its links, namespaces and directory."""
    _require_root()
    removed = []
    for node in NODES:
        pids = node_pids(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            removed.append(f"{len(pids)} processes of {node.name}")
        anchor = _anchor_pid(lab / node.name)
        if anchor:
            os.kill(anchor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(node_pids(n) for n in NODES) and time.monotonic() < deadline:
        time.sleep(0.1)  # poll interval inside the deadline loop: the kernel reaps them
    removed += network_down()
    if FENCE_AGENT.exists() and FENCE_AGENT_HEADER in FENCE_AGENT.read_text(errors="replace"):
        FENCE_AGENT.unlink()
        removed.append(str(FENCE_AGENT))
    if lab.exists():
        shutil.rmtree(lab)
        removed.append(str(lab))
    return removed


def status(lab: Path = DEFAULT_DIR) -> dict:
    links = _links()
    try:
        from pyroute2 import netns

        namespaces = set(netns.listnetns())
    except Exception:  # pyroute2 missing or no permission: report what we can
        namespaces = set()
    nodes = []
    for node in NODES:
        nodes.append({"name": node.name, "netns": node.netns in namespaces, "lan_ip": node.lan_ip,
                      "san_ip": node.san_ip, "anchor": _anchor_pid(lab / node.name),
                      "processes": len(node_pids(node)) if node.netns in namespaces else 0})
    return {"lab_dir": str(lab), "inventory": str(lab / "lab.toml") if (lab / "lab.toml").exists() else None,
            "bridges": {b: b in links for b in BRIDGES}, "nodes": nodes}
