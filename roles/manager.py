"""manager: the core manager's config and init script; Pacemaker runs it through ocf:appliance:manager."""
from __future__ import annotations

import hashlib

from appliance.ha import lsb, ocf_manager
from appliance.inventory.load import Site
from appliance.core.reports import Report, ReportError
from appliance.templates import render

from . import layout
from .model import (RESTART_TIMEOUT, RUNNING_HERE, Check, FileSpec, RolePlan, Step, node_plans, restart_where_running,
                    shell, text)

NAME = "manager"
REQUIRES = ("database",)
INIT_SCRIPT = "/etc/init.d/appliance-manager"
MANAGER_RESOURCE = "p_manager"  # ha.frontend names it so


def manager_config(site: Site) -> str:
    inv = site.inventory
    m, db = inv.manager, inv.database
    return render("manager/manager.toml.j2", user=m.user, db_host=inv.network.san_vip, db_port=db.port,
                  db_name=db.name, db_user=db.user, db_password=site.secrets.database_password, port=m.port,
                  state_dir=m.state_dir, monitoring=m.monitoring, collector=f"{inv.network.san_vip}:{m.monitoring_port}",
                  monitoring_port=m.monitoring_port, monitoring_interval=m.monitoring_interval,
                  monitoring_secret_file=monitoring_secret_file(m.config))


def monitoring_secret_file(config: str) -> str:
    """Beside the config: the same secret on both frontends, so a failover keeps every host heard."""
    return f"{config.rsplit('/', 1)[0]}/monitoring.secret"


def init_script(site: Site) -> str:
    m = site.inventory.manager
    return lsb.init_script("appliance-manager", "appliance core manager", layout.MANAGER_BIN,
                           ("serve", "--config", m.config), f"{layout.RUN_DIR}/manager.pid",
                           f"{layout.LOG_DIR}/manager.log", user=m.user)


# Build the release's venv in its own directory, check it imports, then swap the /opt/appliance link
# with a rename: a failed build leaves the running release untouched (a node without an agent gets
# fenced). A venv cannot be moved once built (its scripts name their interpreter by absolute path),
# so it is built where it stays. The node's own pip configuration is ignored: no index, ever.
INSTALL_RELEASE = """set -e
prefix=$1; release=$2; wheels=$3; wheel=$4; resource=$5
old=$(readlink "$prefix" || true)
built=
trap '[ -n "$built" ] || rm -rf "$release"' EXIT
rm -rf "$release"
mkdir -p "$(dirname "$release")"
python3 -m venv "$release"
PIP_CONFIG_FILE=/dev/null "$release/bin/pip" install --quiet --no-index --no-input --disable-pip-version-check \\
    --find-links "$wheels" "$wheel"
(cd / && "$release/bin/python" -c "import appliance.ha.ocf_manager")  # not a checkout in the cwd
built=1
if [ -e "$prefix" ] && [ ! -L "$prefix" ]; then mv -T "$prefix" "$prefix.before-releases"; fi
ln -sfn "$release" "$prefix.new"
mv -T "$prefix.new" "$prefix"
for d in "$(dirname "$release")"/*; do
    [ "$d" = "$release" ] || [ "$d" = "$old" ] || rm -rf "$d"
done
# The manager running here still has the old code loaded: have Pacemaker restart it on the new one.
running_here() { @RUNNING_HERE@; }
if [ -n "$old" ] && [ "$old" != "$release" ] && running_here "$resource"; then
    crm_resource --restart --resource "$resource" --timeout @TIMEOUT@ >/dev/null
fi
""".replace("@RUNNING_HERE@", RUNNING_HERE).replace("@TIMEOUT@", RESTART_TIMEOUT)


def release_name(wheels: list[tuple[str, bytes]], version: str) -> str:
    """The same wheelhouse gives the same release on every node and every run; a rebuilt one does not."""
    digest = hashlib.sha256()
    for name, content in sorted(wheels):
        digest.update(f"{name} {hashlib.sha256(content).hexdigest()}\n".encode())
    return f"{version}-{digest.hexdigest()[:12]}"


def install_release(release: str, wheel: str) -> Step:
    path = f"{layout.RELEASES_DIR}/{release}"
    return Step(f"install appliance release {release} as {layout.INSTALL_PREFIX}",
                shell(INSTALL_RELEASE, layout.INSTALL_PREFIX, path, layout.WHEEL_DIR, f"{layout.WHEEL_DIR}/{wheel}",
                      MANAGER_RESOURCE),
                unless=shell('[ "$(readlink "$1")" = "$2" ] && cd / && "$1/bin/python" -c "import appliance.ha.ocf_manager"',
                             layout.INSTALL_PREFIX, path),
                why="built beside the running release and switched by renaming a link; no package index")


def _package_steps(site: Site, files: list) -> list[Step]:
    """The operator's own wheelhouse, shipped and installed as a release with no index: nothing is
    fetched by name (whatever an index calls "appliance" is not this), and the nodes need no
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
    contents = [(wheel.name, wheel.read_bytes()) for wheel in wheels]
    for name, content in contents:
        files.append(FileSpec(f"{layout.WHEEL_DIR}/{name}", content, by_digest=True))
    # No after_change on the wheels: a run that shipped them and then failed must still install.
    return [install_release(release_name(contents, ours[0].name.split("-")[1]), ours[0].name)]


def ceph_keyring(config: str, user: str) -> str:
    """Where the keyring of cephx user `user` goes: the `keyring` parameter of its RBD datastore."""
    return f"{config.rsplit('/', 1)[0]}/ceph.client.{user}.keyring"


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    m = inv.manager
    files = [
        FileSpec(m.config, text(manager_config(site)), mode=0o600, owner=m.user, group=m.user, secret=True),
        FileSpec(INIT_SCRIPT, text(init_script(site)), mode=0o755, check=Check("shell")),
    ]
    for user, key in sorted(site.secrets.ceph_keys.items()) if site.secrets else ():
        # An RBD datastore's own cephx user: its keyring beside the config, readable by the manager only.
        files.append(FileSpec(ceph_keyring(m.config, user), text(f"[client.{user}]\n\tkey = {key}\n"), mode=0o600,
                              owner=m.user, group=m.user, secret=True))
    if m.monitoring == "push" and site.secrets and site.secrets.monitoring_secret:
        files.append(FileSpec(monitoring_secret_file(m.config), text(site.secrets.monitoring_secret + "\n"),
                              mode=0o600, owner=m.user, group=m.user, secret=True))
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
    steps.append(restart_where_running(MANAGER_RESOURCE, "restart the manager where it runs if its configuration "
                                       "changed", (m.config,) + ((monitoring_secret_file(m.config),)
                                                                 if m.monitoring == "push" else ())))
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"manager API on 127.0.0.1:{m.port}, database {inv.database.name} via {inv.network.san_vip}",
                    node_plans(names, {n: files for n in names}, {n: steps for n in names}))
