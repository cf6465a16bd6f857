"""base: packages, name resolution and directories every other role relies on."""
from __future__ import annotations

from appliance.inventory.load import Site

from . import layout
from .exports import init_nfs_server_steps
from .model import FileSpec, RolePlan, Step, all_directories, all_packages_installed, node_plans, text

NAME = "base"
REQUIRES: tuple[str, ...] = ()

# --no-install-recommends: name every package the roles use (lighttpd's TLS module is separate).
PACKAGES_COMMON = ("drbd-utils", "lvm2", "vblade", "nfs-kernel-server", "mariadb-server", "lighttpd",
                   "lighttpd-mod-openssl", "resource-agents", "python3-venv", "openssl")
PACKAGES_STACK = {
    "corosync": ("corosync", "pacemaker", "pacemaker-cli-utils", "fence-agents", "crmsh"),
    "heartbeat": ("heartbeat",),
}


def hosts_block(site: Site) -> str:
    """The managed block of /etc/hosts: floating names, both nodes on both networks, hypervisors."""
    inv = site.inventory
    net = inv.network
    name = inv.cluster.name
    rows = [(net.lan_vip, f"{name}.{net.lan_domain}"), (net.san_vip, f"{name}.{net.san_domain} {name}")]
    for n in inv.nodes:
        rows += [(n.lan_ip, f"{n.name}.{net.lan_domain}"), (n.san_ip, f"{n.name}.{net.san_domain} {n.name}")]
    rows += [(h.address, f"{h.name}.{net.san_domain} {h.name}") for h in inv.hosts]
    width = max(len(address) for address, _ in rows)
    return "".join(f"{address.ljust(width)}  {names}\n" for address, names in rows)


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    packages = PACKAGES_COMMON + PACKAGES_STACK[inv.cluster.stack]
    hosts = FileSpec("/etc/hosts", text(hosts_block(site)), block=True)
    directories = (layout.ETC, layout.LIB, layout.LOG_DIR, layout.STATE, inv.filesystem.mount)
    user = inv.manager.user
    node_steps = [Step("create directories", ("install", "-d", "-m", "0755", *directories),
                       unless=all_directories(directories)),
                  # Before any role writes a file this user owns (the manager's 0600 config).
                  Step(f"create the system user {user}", ("useradd", "--system", "--no-create-home", "--shell",
                                                          "/usr/sbin/nologin", user), once=True,
                       unless=("id", "-u", user))]
    notes: tuple[str, ...] = ()
    if inv.lab.enabled:
        # Lab nodes share the host's /usr: they use the packages `make deps` installed there.
        notes = ("lab: packages come from the host (make deps), not apt-get inside the nodes",)
    else:
        node_steps.insert(0, Step("install packages", ("apt-get", "install", "--yes", "--no-install-recommends",
                                                       *packages),
                                  why="everything the roles below run; installed packages are left alone",
                                  unless=all_packages_installed(packages)))
        node_steps[1:1] = init_nfs_server_steps()  # right after the packages that start it
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"{len(packages)} packages, /etc/hosts block, directories",
                    node_plans(names, {n: [hosts] for n in names}, {n: node_steps for n in names}), notes=notes)
