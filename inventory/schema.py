"""The site inventory: two frontends and everything the HA pair needs, as typed data.

Defaults follow the seed guide (cloud-cc01/cloud-cc02, one-disk/data-disk, AoE e0.1, MySQL offsets)
where it is sound, and fix it where it is not: fencing is on, corosync `two_node` replaces
`no-quorum-policy=ignore`, replication passwords never land in a my.cnf, TLS has no snakeoil default.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .types import (AbsPath, Domain, Duration, FenceAgent, HostName, Identifier, Interface, IPv4,
                    IPv4Network, NfsOption, ParamKey, SafeText, Size, UserName)


class _Model(BaseModel):
    # strict: TOML is typed, so "22" for a port is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Ssh(_Model):
    user: Identifier = "root"
    port: int = Field(22, ge=1, le=65535)
    key: SafeText | None = None  # private key on the operator's machine; relative to the inventory
    address: IPv4 | None = None  # where to connect; the node's lan_ip when unset
    known_hosts: SafeText | None = None  # relative to the inventory; ~/.ssh/known_hosts when unset


class Disks(_Model):
    metadata: AbsPath  # external DRBD metadata (seed: /dev/sda3, indexed [0], [1])
    cloud: AbsPath  # DRBD backing disk for /srv/cloud/one (seed: /dev/sda5)
    vmdata: AbsPath  # DRBD backing disk for the VM data volume group (seed: /dev/sda6)


class NodeDatabase(_Model):
    server_id: int | None = Field(None, ge=1, le=4294967295)
    auto_increment_offset: int | None = Field(None, ge=1, le=65535)


class Node(_Model):
    name: HostName
    lan_ip: IPv4
    san_ip: IPv4
    lan_interface: Interface = "eth2"
    san_interface: Interface = "bond0"
    ssh: Ssh = Ssh()
    disks: Disks
    database: NodeDatabase = NodeDatabase()


class Network(_Model):
    lan: IPv4Network
    san: IPv4Network
    lan_vip: IPv4
    san_vip: IPv4
    lan_domain: Domain = "lan.local"
    san_domain: Domain = "san.local"


class Cluster(_Model):
    # A host name: /etc/hosts gives it to the floating addresses, and the generated certificate to the API.
    name: HostName = "cloud-cc"
    stack: Literal["corosync", "heartbeat"] = "corosync"
    preferred_node: HostName | None = None  # where resources start first; the first node when unset
    stickiness: int = Field(1000, ge=0, le=1000000)
    # Every resource operation's timeout is multiplied by this: slow machines (the VM lab's TCG
    # emulation runs about ten times slower than hardware) must not turn a slow monitor into a failure.
    timeout_scale: int = Field(1, ge=1, le=20)
    # Pacemaker's load-threshold in percent (its default, 80, when unset): above it a node's controller
    # runs fewer actions at once, down to one. Emulated nodes are always "loaded"; hardware rarely is.
    load_threshold: int | None = Field(None, ge=10, le=10000)


class Corosync(_Model):
    links: list[Literal["san", "lan"]] = Field(default_factory=lambda: ["san", "lan"], min_length=1, max_length=2)
    token: int = Field(3000, ge=500, le=60000)  # ms; 1000 fails over in ~2.3 s on the lab, 3000 in ~7.7 s
    crypto_cipher: Literal["aes256", "aes192", "aes128", "none"] = "aes256"
    crypto_hash: Literal["sha512", "sha384", "sha256", "sha1", "none"] = "sha256"


class Heartbeat(_Model):
    keepalive: int = Field(1, ge=1, le=60)
    warntime: int = Field(5, ge=1, le=600)
    deadtime: int = Field(10, ge=2, le=600)
    initdead: int = Field(60, ge=2, le=3600)
    udpport: int = Field(694, ge=1, le=65535)


class DrbdVolume(_Model):
    resource: Identifier
    minor: int = Field(ge=0, le=1048575)
    port: int = Field(ge=1, le=65535)
    meta_index: int = Field(ge=0, le=127)


class Drbd(_Model):
    version: Literal["9", "8.4"] = "9"
    resync_rate: Size = "100M"  # per second; no unit means K (KiB/s); DRBD takes 1K..4G (checks.py)
    cloud: DrbdVolume = DrbdVolume(resource="one-disk", minor=1, port=7789, meta_index=0)
    vmdata: DrbdVolume = DrbdVolume(resource="data-disk", minor=2, port=7790, meta_index=1)


class Filesystem(_Model):
    mount: AbsPath = "/srv/cloud/one"
    fstype: Literal["ext4", "xfs"] = "ext4"


class Lvm(_Model):
    volume_group: Identifier = "one-data"
    extra_accept: list[AbsPath] = Field(default_factory=list)  # local PVs LVM must still see (root VG)


class Aoe(_Model):
    shelf: int = Field(0, ge=0, le=65534)
    slot: int = Field(1, ge=0, le=254)


class Nfs(_Model):
    export: AbsPath = "/srv/cloud/one"
    clients: list[IPv4Network] | None = None  # the SAN network when unset
    options: list[NfsOption] = Field(default_factory=lambda: ["rw", "sync", "no_subtree_check", "no_root_squash"])
    fsid: int = Field(1, ge=1, le=65535)
    idmap_domain: Domain | None = None  # network.lan_domain when unset


class Database(_Model):
    name: Identifier = "appliance"
    user: Identifier = "appliance"
    replication_user: Identifier = "replicator"
    port: int = Field(3306, ge=1, le=65535)
    auto_increment_increment: int = Field(10, ge=2, le=65535)


class Manager(_Model):
    port: int = Field(2633, ge=1, le=65535)
    user: UserName = "appliance"  # a system user `useradd` creates
    config: AbsPath = "/etc/appliance/manager.toml"  # inside /etc/appliance or /var/lib/appliance (checks.py)
    state_dir: AbsPath = "/srv/cloud/one/var"
    # A directory of wheels, the appliance's and all its dependencies' (`make wheelhouse`), relative
    # to the inventory. The nodes install from it into /opt/appliance with no package index at all.
    wheelhouse: SafeText | None = None
    # pull: the manager asks each host's libvirt; push: each host's agent reports over UDP to the
    # collector on the SAN floating address (docs/monitoring.md; needs secrets' monitoring_secret).
    monitoring: Literal["pull", "push"] = "pull"
    monitoring_port: int = Field(4124, ge=1, le=65535)
    monitoring_interval: int = Field(30, ge=1, le=3600)


class Tls(_Model):
    certificate: AbsPath | None = None
    key: AbsPath | None = None
    generate: bool = False


class Proxy(_Model):
    port: int = Field(443, ge=1, le=65535)
    redirect_http: bool = True
    hsts_max_age: int = Field(31536000, ge=0, le=63072000)
    tls: Tls = Tls()


class FenceDevice(_Model):
    name: Identifier
    agent: FenceAgent
    node: HostName  # the node this device fences (it runs on the other one)
    params: dict[ParamKey, SafeText | int | bool] = Field(default_factory=dict)


class Fencing(_Model):
    enabled: bool = True
    # Off by default: it makes the node running the services win a split-brain fence race, but it
    # also delays fencing a node that really died by exactly this much (measured: 15s -> 24.7 s failover).
    priority_fencing_delay: Duration = "0s"
    devices: list[FenceDevice] = Field(default_factory=list)


class Host(_Model):
    name: HostName
    address: IPv4  # on the SAN: AoE is layer 2
    hypervisor: Literal["kvm", "xen", "qemu"] = "kvm"


class Lab(_Model):
    """This inventory describes `appliance lab`: namespaces on one machine, without the kernel's DRBD,
    device-mapper or NFS server. DRBD and LVM are planned and validated but not run; the replicated
    directory is a plain directory on each node. Nothing else is faked."""

    enabled: bool = False
    # `appliance lab up --kind vm`: QEMU machines with Debian's kernel. Nothing is skipped (this is
    # the production path); it only allows the lab's power switch agent, fence_vmlab.
    vm: bool = False


class Inventory(_Model):
    cluster: Cluster = Cluster()
    nodes: list[Node]
    network: Network
    corosync: Corosync = Corosync()
    heartbeat: Heartbeat = Heartbeat()
    drbd: Drbd = Drbd()
    filesystem: Filesystem = Filesystem()
    lvm: Lvm = Lvm()
    aoe: Aoe = Aoe()
    nfs: Nfs = Nfs()
    database: Database = Database()
    manager: Manager = Manager()
    proxy: Proxy = Proxy()
    fencing: Fencing = Fencing()
    hosts: list[Host] = Field(default_factory=list)
    lab: Lab = Lab()
    secrets_file: SafeText | None = None  # relative to the inventory file

    # Derived views used by every renderer, so no renderer re-derives them differently.
    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def preferred(self) -> Node:
        name = self.cluster.preferred_node or self.nodes[0].name
        return self.node(name)

    @property
    def nfs_clients(self) -> list[str]:
        return list(self.nfs.clients) if self.nfs.clients is not None else [self.network.san]

    @property
    def idmap_domain(self) -> str:
        return self.nfs.idmap_domain or self.network.lan_domain

    def server_id(self, node: Node) -> int:
        return node.database.server_id or 10 * (self.nodes.index(node) + 1)

    def auto_increment_offset(self, node: Node) -> int:
        return node.database.auto_increment_offset or self.nodes.index(node) + 1

    def node_id(self, node: Node) -> int:
        return self.nodes.index(node) + 1

    def peer(self, node: Node) -> Node:
        return next(n for n in self.nodes if n.name != node.name)

    def prefix(self, network: str) -> int:
        return int(network.split("/")[1])
