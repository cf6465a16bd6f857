"""manager: the core manager's config and init script; Pacemaker runs it through ocf:appliance:manager."""
from __future__ import annotations

from appliance.ha import lsb
from appliance.inventory.load import Site
from appliance.templates import render

from . import layout
from .model import Check, FileSpec, RolePlan, Step, node_plans, text

NAME = "manager"
REQUIRES = ("database",)
INIT_SCRIPT = "/etc/init.d/appliance-manager"


def manager_config(site: Site) -> str:
    inv = site.inventory
    m, db = inv.manager, inv.database
    return render("manager/manager.toml.j2", user=m.user, db_host=inv.network.san_vip, db_port=db.port,
                  db_name=db.name, db_user=db.user, db_password=site.secrets.database_password, port=m.port,
                  state_dir=m.state_dir)


def init_script(site: Site) -> str:
    m = site.inventory.manager
    return lsb.init_script("appliance-manager", "appliance core manager", layout.MANAGER_BIN,
                           ("serve", "--config", m.config), f"{layout.RUN_DIR}/manager.pid",
                           f"{layout.LOG_DIR}/manager.log", user=m.user)


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    m = inv.manager
    files = [
        FileSpec(m.config, text(manager_config(site)), mode=0o600, owner=m.user, group=m.user, secret=True),
        FileSpec(INIT_SCRIPT, text(init_script(site)), mode=0o755, check=Check("shell")),
    ]
    steps = [
        Step(f"create the system user {m.user}", ("useradd", "--system", "--home-dir", m.state_dir, "--shell",
                                                  "/usr/sbin/nologin", m.user), once=True),
        Step("install the appliance package", ("python3", "-m", "venv", layout.INSTALL_PREFIX), once=True),
    ]
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"manager API on 127.0.0.1:{m.port}, database {inv.database.name} via {inv.network.san_vip}",
                    node_plans(names, {n: files for n in names}, {n: steps for n in names}))
