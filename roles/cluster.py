"""cluster: membership and quorum. Corosync 3 + Pacemaker, or legacy heartbeat in haresources mode."""
from __future__ import annotations

from appliance.core.runner import Secret
from appliance.ha import cib, corosync, heartbeat
from appliance.inventory.load import Site

from .model import Check, FileSpec, RolePlan, Step, bounded, detached, node_plans, shell, text, wait_until
from .specs import corosync_nodes, link_address

NAME = "cluster"
REQUIRES = ("base",)


def haresources_line(site: Site) -> tuple[str, ...]:
    """Heartbeat starts these left to right; the same order as the Pacemaker group."""
    inv = site.inventory
    first = inv.nodes[0]
    return (
        heartbeat.drbddisk(inv.drbd.cloud.resource),
        heartbeat.drbddisk(inv.drbd.vmdata.resource),
        heartbeat.filesystem(f"/dev/drbd{inv.drbd.cloud.minor}", inv.filesystem.mount, inv.filesystem.fstype),
        "nfs-kernel-server",
        "appliance-aoe",
        heartbeat.ipaddr2(inv.network.san_vip, inv.prefix(inv.network.san), first.san_interface),
        heartbeat.ipaddr2(inv.network.lan_vip, inv.prefix(inv.network.lan), first.lan_interface),
        "appliance-manager",
        "appliance-proxy",
    )


def seed_cib(site: Site) -> str:
    """A CIB with cluster properties only (lab first start); resources follow as a crm_diff patch."""
    inv = site.inventory
    return cib.to_xml(cib.Cib(properties=cib.pairs({"cluster-name": inv.cluster.name, "dc-deadtime": "5s"}),
                              nodes=tuple((str(inv.node_id(n)), n.name) for n in inv.nodes), resources=(),
                              constraints=()))


def seed_cib_cmd() -> tuple[str, ...]:
    return shell('install -d -o hacluster -g haclient -m 0750 /var/lib/pacemaker/cib && '
                 'umask 077 && cat > /var/lib/pacemaker/cib/cib.xml && '
                 'chown hacluster:haclient /var/lib/pacemaker/cib/cib.xml')


# A fresh Debian starts corosync and pacemaker at install with its own one-node cluster ("debian",
# node1 on 127.0.0.1). corosync-cfgtool -R cannot turn that into ours (CS_ERR_INVALID_PARAM: the
# cluster name and nodelist are not reloadable), and its CIB would keep node1 as a member to fence.
# So a running cluster that is not ours is stopped and its CIB moved aside, never deleted, and only
# when that CIB holds no resource: a cluster with resources is someone's, and is refused.
FOREIGN_CLUSTER = r"""
running=$(corosync-cmapctl -g totem.cluster_name 2>/dev/null | sed -n 's/^totem.cluster_name (str) = //p')
[ -n "$running" ] && [ "$running" != "$1" ] || exit 0
if cibadmin --query --scope resources 2>/dev/null | grep -q '<primitive\|<group\|<clone\|<master\|<bundle'; then
    echo "corosync runs the cluster '$running', whose CIB holds resources: it is not appliance's to replace" >&2
    exit 3
fi
systemctl stop pacemaker corosync
aside=$2.before-appliance-$(date -u +%Y%m%dT%H%M%SZ)
mv "$2" "$aside" && install -d -o hacluster -g haclient -m 0750 "$2"
echo "stopped the cluster '$running' (no resources); its CIB is in $aside"
"""


def replace_default_cluster(name: str, cib_dir: str = "/var/lib/pacemaker/cib") -> Step:
    return Step(f"replace a running cluster that is not {name} and holds no resources (Debian's default)",
                shell(FOREIGN_CLUSTER, name, cib_dir),
                why="corosync cannot reload another cluster's name and nodes; its CIB is kept aside",
                unless=shell('n=$(corosync-cmapctl -g totem.cluster_name 2>/dev/null | '
                             "sed -n 's/^totem.cluster_name (str) = //p'); "
                             '[ -z "$n" ] || [ "$n" = "$1" ]', name))


def _corosync(site: Site) -> RolePlan:
    inv = site.inventory
    c = inv.corosync
    conf = corosync.corosync_config(inv.cluster.name, corosync_nodes(inv), tuple(c.links), c.token,
                                    c.crypto_cipher, c.crypto_hash)
    authkey = FileSpec("/etc/corosync/authkey", site.secrets.cluster_authkey, mode=0o400, secret=True)
    files, steps = {}, {}
    for node in inv.nodes:
        check = Check("corosync", (("address", link_address(inv, node.name, c.links[0])),
                                   ("authkey", "/etc/corosync/authkey")))
        files[node.name] = [FileSpec("/etc/corosync/corosync.conf", text(conf), check=check), authkey]
        password = Step("set the hacluster password", ("chpasswd",),
                        stdin=Secret(f"hacluster:{site.secrets.hacluster_password}"),
                        why="pcs and crmsh authenticate as hacluster",
                        after_change=("/etc/corosync/corosync.conf", "/etc/corosync/authkey"))
        quorum = Step("wait for quorum", wait_until("corosync-quorumtool -s", 120),
                      why="two_node with wait_for_all: both nodes must be seen once",
                      unless=bounded("corosync-quorumtool", "-s"))
        dc = Step("wait for a designated controller", wait_until("crmadmin -D -t 2000", 120),
                  unless=bounded("crmadmin", "-D", "-t", "2000"))
        reload = Step("reload corosync.conf into the running corosync", ("corosync-cfgtool", "-R"),
                      after_change=("/etc/corosync/corosync.conf",), why="token and links change at runtime")
        if inv.lab.enabled:
            steps[node.name] = [
                password,
                Step("start corosync", detached("/var/log/corosync/corosync.stdout", "corosync", "-f"),
                     unless=("corosync-cfgtool", "-s")),
                quorum,
                reload,
                Step("seed an empty CIB with a short dc-deadtime", seed_cib_cmd(),
                     stdin=seed_cib(site), unless=("test", "-e", "/var/lib/pacemaker/cib/cib.xml"),
                     why="lab: the DC is elected in 5 s instead of 20"),
                # Ask this node's pacemakerd over its IPC: lab nodes share one PID namespace, so
                # pgrep would see the other node's daemons.
                Step("start pacemaker", detached("/var/log/pacemaker/pacemakerd.stdout", "pacemakerd"),
                     unless=("crmadmin", "--pacemakerd", "-t", "2000")),
                dc,
            ]
        else:
            steps[node.name] = [
                password,
                replace_default_cluster(inv.cluster.name),
                Step("start corosync and pacemaker", ("systemctl", "enable", "--now", "corosync", "pacemaker"),
                     unless=("systemctl", "is-active", "--quiet", "corosync", "pacemaker")),
                quorum,
                reload,
                dc,
            ]
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"corosync 3 (knet, links {'+'.join(c.links)}, token {c.token} ms, two_node) + pacemaker",
                    node_plans(names, files, steps))


def _heartbeat(site: Site) -> RolePlan:
    inv = site.inventory
    h = inv.heartbeat
    interfaces = {"san": inv.nodes[0].san_interface, "lan": inv.nodes[0].lan_interface}
    ucast = tuple((interfaces[link], link_address(inv, n.name, link)) for link in inv.corosync.links
                  for n in inv.nodes)
    ha_cf = heartbeat.ha_cf(tuple(n.name for n in inv.nodes), ucast, h.keepalive, h.warntime, h.deadtime,
                            h.initdead, h.udpport)
    files = [
        FileSpec("/etc/ha.d/ha.cf", text(ha_cf)),
        FileSpec("/etc/ha.d/authkeys", text(heartbeat.authkeys(site.secrets.heartbeat_key)), mode=0o600,
                 secret=True),
        FileSpec("/etc/ha.d/haresources", text(heartbeat.haresources(inv.preferred.name, haresources_line(site)))),
    ]
    steps = [Step("start heartbeat", ("systemctl", "enable", "--now", "heartbeat"))]
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, "heartbeat 3 in haresources mode (legacy: no Pacemaker, no fencing)",
                    node_plans(names, {n: files for n in names}, {n: steps for n in names}),
                    notes=("heartbeat mode has no CIB and no fencing; Pacemaker 2 cannot run on heartbeat",))


def plan(site: Site) -> RolePlan:
    return _corosync(site) if site.inventory.cluster.stack == "corosync" else _heartbeat(site)


