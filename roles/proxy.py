"""proxy: lighttpd terminating TLS on the LAN floating address in front of the manager API."""
from __future__ import annotations

from appliance.ha import lsb, ocf_proxy
from appliance.inventory.load import Site
from appliance.templates import render

from . import layout
from .model import Check, FileSpec, RolePlan, Step, node_plans, restart_where_running, shell, text
from .specs import certificate_paths

NAME = "proxy"
REQUIRES = ("manager",)
PROXY_RESOURCE = "p_proxy"  # ha.frontend names it so


def proxy_config(site: Site, certificate: str | None = None, key: str | None = None) -> str:
    """The lighttpd config; certificate/key override the inventory's paths (for a checker's scratch copy)."""
    inv = site.inventory
    cert_path, key_path = certificate_paths(inv)
    return render("proxy/lighttpd.conf.j2", bind=inv.network.lan_vip, port=inv.proxy.port,
                  certificate=certificate or cert_path, key=key or key_path,
                  hsts_max_age=inv.proxy.hsts_max_age, backend_port=inv.manager.port,
                  redirect_http=inv.proxy.redirect_http)


def plan(site: Site) -> RolePlan:
    inv = site.inventory
    files = [
        FileSpec(layout.PROXY_CONFIG, text(proxy_config(site)), check=Check("lighttpd")),
        FileSpec("/etc/init.d/appliance-proxy", text(lsb.init_script(
            "appliance-proxy", "TLS proxy for the appliance API", "/usr/sbin/lighttpd",
            ("-D", "-f", layout.PROXY_CONFIG), layout.PROXY_PIDFILE, f"{layout.LOG_DIR}/proxy.log")),
            mode=0o755, check=Check("shell")),
        FileSpec(layout.OCF_PROXY_AGENT, text(ocf_proxy.shim(f"{layout.INSTALL_PREFIX}/bin/python")), mode=0o755,
                 check=Check("shell")),
    ]
    steps = {n.name: [Step("keep init from starting the distro lighttpd", ("systemctl", "disable", "--now",
                                                                          "lighttpd"),
                           why="our proxy binds the floating address and runs only where it is",
                           unless=shell("! systemctl is-enabled --quiet lighttpd"))] for n in inv.nodes}
    if inv.proxy.tls.generate:
        # Made once by `appliance secrets init` and kept in the 0600 secrets file: both nodes present
        # the same certificate on the floating address, and a second install changes nothing.
        files += [FileSpec(layout.GENERATED_CERTIFICATE, text(site.secrets.tls_certificate or ""), mode=0o644),
                  FileSpec(layout.GENERATED_KEY, text(site.secrets.tls_key or ""), mode=0o600, secret=True)]
    if inv.lab.enabled:
        steps = {n.name: [] for n in inv.nodes}  # no distro lighttpd service runs in a lab node
    # lighttpd opens its logs after dropping to www-data.
    for name in steps:
        steps[name].insert(0, Step("give the proxy a log directory it can write",
                                   ("install", "-d", "-o", "www-data", "-g", "adm", "-m", "0750",
                                    f"{layout.LOG_DIR}/proxy"), unless=("test", "-d", f"{layout.LOG_DIR}/proxy")))
    cert, key = certificate_paths(inv)
    for name in steps:
        steps[name].append(restart_where_running(PROXY_RESOURCE, "restart the proxy where it runs if its "
                                                 "configuration changed", (layout.PROXY_CONFIG, cert, key)))
    names = [n.name for n in inv.nodes]
    return RolePlan(NAME, f"https://{inv.network.lan_vip}:{inv.proxy.port} -> 127.0.0.1:{inv.manager.port} "
                    f"(TLS 1.2+, HSTS, certificate {cert})",
                    node_plans(names, {n: files for n in names}, steps))


