"""manager: the core manager's config and init script; Pacemaker runs it through ocf:appliance:manager."""
from __future__ import annotations

from appliance.ha import lsb, ocf_manager
from appliance.inventory.load import Site
from appliance.reports import Report, ReportError
from appliance.templates import render

from . import layout
from .model import Check, FileSpec, RolePlan, Step, node_plans, shell, text

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


def _package_steps(site: Site, files: list) -> list[Step]:
    """The operator's own wheelhouse, shipped and installed into /opt/appliance with no index: nothing
    is fetched by name (whatever an index calls "appliance" is not this), and the nodes need no
    Internet access."""
    m = site.inventory.manager
    if not m.wheelhouse:  # `appliance install` refuses to apply without one (actions.require_wheelhouse)
        return [Step("install the appliance package (needs [manager] wheelhouse)", ("false",),
                     unless=("test", "-x", layout.MANAGER_BIN))]
    local = site.base_dir / m.wheelhouse
    wheels = sorted(local.glob("*.whl")) if local.is_dir() else []
    ours = [w for w in wheels if w.name.startswith("appliance-")]
    if len(ours) != 1:
        raise ReportError([Report(
            "INVENTORY_UNREADABLE", f"{local} is not a wheelhouse with one appliance wheel "
            f"(found {[w.name for w in ours]})", path="manager.wheelhouse", value=m.wheelhouse,
            fix="run `make wheelhouse` and give the directory it wrote (dist/wheelhouse)")])
    version = ours[0].name.split("-")[1]
    for wheel in wheels:
        files.append(FileSpec(f"{layout.WHEEL_DIR}/{wheel.name}", wheel.read_bytes(), by_digest=True))
    remote = [f"{layout.WHEEL_DIR}/{w.name}" for w in wheels]
    return [Step(f"install appliance {version} into {layout.INSTALL_PREFIX} from the wheelhouse", shell(
        'prefix=$1; wheels=$2; wheel=$3; [ -L "$prefix" ] && rm -f "$prefix"; '
        '[ -x "$prefix/bin/pip" ] || python3 -m venv "$prefix"; '
        '"$prefix/bin/pip" install --quiet --no-index --find-links "$wheels" --upgrade "$wheel"',
        layout.INSTALL_PREFIX, layout.WHEEL_DIR, f"{layout.WHEEL_DIR}/{ours[0].name}"),
        unless=shell('[ ! -L "$1" ] && [ "$("$1/bin/appliance" --version 2>/dev/null)" = "appliance $2" ]',
                     layout.INSTALL_PREFIX, version),
        after_change=tuple(remote), why="no package index: every dependency comes from the wheelhouse")]


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    m = inv.manager
    files = [
        FileSpec(m.config, text(manager_config(site)), mode=0o600, owner=m.user, group=m.user, secret=True),
        FileSpec(INIT_SCRIPT, text(init_script(site)), mode=0o755, check=Check("shell")),
    ]
    python = f"{layout.INSTALL_PREFIX}/bin/python"
    files.append(FileSpec(layout.OCF_AGENT, text(ocf_manager.shim(python)), mode=0o755, check=Check("shell")))
    steps = [
        Step("create the state directory", ("install", "-d", "-o", m.user, "-g", m.user, "-m", "0750", m.state_dir),
             unless=("test", "-d", m.state_dir)),
    ]
    if inv.lab.enabled and site.installer_prefix and not m.wheelhouse:
        # Lab nodes see the installer's filesystem: the manager runs from the installer's own venv.
        # Link the environment itself: Python finds pyvenv.cfg next to the path it was started
        # from, so a link to the interpreter alone would run without the venv's packages.
        steps.append(Step("link the installer's environment as /opt/appliance",
                          shell('[ -L "$1" ] || rm -rf "$1"; ln -sfn "$2" "$1"',
                                layout.INSTALL_PREFIX, site.installer_prefix),
                          unless=shell('"$1/bin/python" -c "import appliance.ha.ocf_manager"', layout.INSTALL_PREFIX)))
    else:
        steps += _package_steps(site, files)
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"manager API on 127.0.0.1:{m.port}, database {inv.database.name} via {inv.network.san_vip}",
                    node_plans(names, {n: files for n in names}, {n: steps for n in names}))
