"""database: a MariaDB per node in circular replication; the manager writes through the SAN VIP."""
from __future__ import annotations

import ipaddress

from appliance.core.runner import Secret
from appliance.inventory.load import Site
from appliance.templates import render

from . import layout
from .model import Check, FileSpec, RolePlan, Step, detached, node_plans, shell, text, wait_until

NAME = "database"
REQUIRES = ("base",)
CONFIG = "/etc/mysql/mariadb.conf.d/60-appliance-replication.cnf"


def replication_config(site: Site, node_name: str) -> str:
    inv = site.inventory
    node = inv.node(node_name)
    return render("database/replication.cnf.j2", server_id=inv.server_id(node), gtid_domain_id=inv.node_id(node),
                  auto_increment_increment=inv.database.auto_increment_increment,
                  auto_increment_offset=inv.auto_increment_offset(node), port=inv.database.port,
                  report_host=node.name, read_only=node.name != inv.preferred.name)


def _host_pattern(network: str) -> str:
    net = ipaddress.IPv4Network(network)
    return f"{net.network_address}/{net.netmask}"  # MariaDB's address/netmask account host form


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    db = inv.database
    s = site.secrets
    san = _host_pattern(inv.network.san)
    files, steps = {}, {}
    for node in inv.nodes:
        peer = inv.peer(node)
        files[node.name] = [FileSpec(CONFIG, text(replication_config(site, node.name)))]
        sql_users = (f"CREATE DATABASE IF NOT EXISTS `{db.name}`;\n"
                     f"CREATE USER IF NOT EXISTS '{db.user}'@'{san}' IDENTIFIED BY '{s.database_password}';\n"
                     f"GRANT ALL ON `{db.name}`.* TO '{db.user}'@'{san}';\n"
                     f"CREATE USER IF NOT EXISTS '{db.replication_user}'@'{peer.san_ip}' "
                     f"IDENTIFIED BY '{s.replication_password}';\n"
                     f"GRANT REPLICATION SLAVE ON *.* TO '{db.replication_user}'@'{peer.san_ip}';\n")
        sql_source = (f"CHANGE MASTER TO MASTER_HOST='{peer.san_ip}', MASTER_PORT={db.port}, "
                      f"MASTER_USER='{db.replication_user}', MASTER_PASSWORD='{s.replication_password}', "
                      "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=2;\nSTART SLAVE;\n")
        ping = ("mariadb-admin", "--silent", "ping")
        directories = Step("give MariaDB its binlog and socket directories",
                           shell('install -d -o mysql -g adm -m 2750 /var/log/mysql && '
                                 'install -d -o mysql -g root -m 0755 /run/mysqld'),
                           unless=shell('[ "$(stat -c %U /var/log/mysql 2>/dev/null)" = mysql ] && '
                                        '[ "$(stat -c %U /run/mysqld 2>/dev/null)" = mysql ]'))
        if inv.lab.enabled:
            # No systemd in a lab node: our supervisor restarts a crashed server, like
            # mariadb.service's Restart=on-abort (the kill-db drill). mariadb-admin shutdown returns
            # once the server has exited, which also ends the supervisor.
            files[node.name].append(FileSpec(layout.MARIADB_SUPERVISOR, text(render(
                "database/mariadbd-supervise.sh.j2", burst=5, window=60)), mode=0o755, check=Check("shell")))
            server = [
                directories,
                Step("restart MariaDB with the replication settings",
                     shell('mariadb-admin --silent shutdown 2>/dev/null; '
                           'setsid -f "$1" >>/var/log/appliance/mariadbd.log 2>&1 </dev/null',
                           layout.MARIADB_SUPERVISOR),
                     after_change=(CONFIG,), why="the replication settings are read at start"),
                Step("start MariaDB", detached("/var/log/appliance/mariadbd.log", layout.MARIADB_SUPERVISOR),
                     unless=wait_until("mariadb-admin --silent ping", 30)),
            ]
        else:
            server = [directories,
                      Step("restart MariaDB with the replication settings", ("systemctl", "restart", "mariadb"),
                           after_change=(CONFIG,))]
        steps[node.name] = server + [
            Step("wait for MariaDB", wait_until("mariadb-admin --silent ping", 60), unless=ping),
            Step(f"create database {db.name}, user {db.user} and replication user {db.replication_user}",
                 ("mariadb", "--batch"), stdin=Secret(sql_users), once=True,
                 unless=shell('mariadb -N -e "SELECT 1 FROM mysql.user WHERE user = \'$1\'" | grep -q 1',
                              db.replication_user)),
            Step(f"replicate from {peer.name} ({peer.san_ip})", ("mariadb", "--batch"), stdin=Secret(sql_source),
                 once=True, why="circular: each node is the other's replica",
                 unless=shell('mariadb -e "SHOW SLAVE STATUS\\G" | grep -q "Master_Host: $1$"', peer.san_ip)),
            # After the peer came back, a replica may sit out its reconnect interval: restart its IO thread.
            Step(f"make sure replication from {peer.name} runs",
                 ("mariadb", "--batch", "-e", "STOP SLAVE IO_THREAD; START SLAVE"),
                 unless=shell('mariadb -e "SHOW SLAVE STATUS\\G" | grep -q "Slave_IO_Running: Yes"')),
        ]
    names = [n.name for n in inv.nodes]
    offsets = ", ".join(f"{n.name} id {inv.server_id(n)} offset {inv.auto_increment_offset(n)}" for n in inv.nodes)
    return RolePlan(NAME, f"MariaDB circular replication ({offsets}, increment {db.auto_increment_increment}); "
                    f"read_only on {', '.join(n.name for n in inv.nodes if n.name != inv.preferred.name)}",
                    node_plans(names, files, steps))
