"""CLI commands that talk to the manager's API: host, datastore, image, vnet, cluster, vm, serve.

Each parses flags, makes one API call (or a few), and prints a table or, with --json, the API's
own JSON. The URL comes from --url or APPLIANCE_URL; the token from APPLIANCE_TOKEN_FILE or the
admin.token `appliance serve` wrote.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from appliance.client import Client
from appliance.output import run_action
from appliance.reports import Report, ReportError

UrlOpt = typer.Option(None, "--url", help="Manager API (default $APPLIANCE_URL or http://127.0.0.1:2633).")
JsonOpt = typer.Option(False, "--json", help="Print the API's JSON.")

COLUMNS = {
    "host": ("id", "name", "state", "driver", "cpu_total", "mem_total", "uri"),
    "datastore": ("id", "name", "kind", "backend", "total_mb", "free_mb", "path"),
    "image": ("id", "name", "state", "datastore_id", "size_mb", "persistent", "path"),
    "vnet": ("id", "name", "bridge", "ranges"),
    "cluster": ("id", "name"),
    "vm": ("id", "name", "state", "host_id", "cpu", "memory", "error"),
}


def _attrs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ReportError([Report("API_REFUSED", f"{pair!r} is not KEY=VALUE", value=pair)])
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def _show(kind: str, items: list[dict[str, Any]], as_json: bool, document: Any = None) -> None:
    if as_json:
        print(json.dumps(items if document is None else document, indent=2, sort_keys=True))
        return
    columns = COLUMNS[kind]
    rows = [[_cell(item.get(c)) for c in columns] for item in items]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(f"{r['first']}+{r['size']}" if isinstance(r, dict) and "first" in r else str(r) for r in value)
    return str(value)


def _call(as_json: bool, kind: str, function: Callable[[], Any], many: bool = False) -> None:
    result = run_action(as_json, function)
    if result is None:
        return
    items = result if many else [result]
    _show(kind, items, as_json, None if many else result)


def _crud(kind: str, app: typer.Typer) -> None:
    """list / show / delete, the same for every kind."""
    @app.command("list")
    def list_(url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
        """List every one (follows pagination)."""
        _call(as_json, kind, lambda: list(Client(url).all(f"{kind}s")), many=True)

    @app.command("show")
    def show(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
        """Show one by id."""
        _call(as_json, kind, lambda: Client(url).get(f"/{kind}s/{ident}"))

    @app.command("delete")
    def delete(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
        """Delete one (VMs: terminate and clean up)."""
        _call(as_json, kind, lambda: Client(url).delete(f"/{kind}s/{ident}"))


host = typer.Typer(no_args_is_help=True, help="Hypervisor hosts.")
datastore = typer.Typer(no_args_is_help=True, help="Datastores (qcow2 directories).")
image = typer.Typer(no_args_is_help=True, help="Disk images.")
vnet = typer.Typer(no_args_is_help=True, help="Virtual networks and their leases.")
cluster = typer.Typer(no_args_is_help=True, help="Clusters of hosts.")
vm = typer.Typer(no_args_is_help=True, help="Virtual machines and their lifecycle.")
for _kind, _app in (("host", host), ("datastore", datastore), ("image", image), ("vnet", vnet),
                    ("cluster", cluster), ("vm", vm)):
    _crud(_kind, _app)


@host.command("create")
def host_create(name: str, driver: str = typer.Option("libvirt", help="libvirt or fake"),
                uri: str = typer.Option("test:///default", help="libvirt URI"),
                cluster_id: Optional[int] = typer.Option(None, "--cluster"),
                attr: list[str] = typer.Option([], "--attr", help="KEY=VALUE, repeatable (used in requirements)"),
                url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Register a host; the manager monitors it at once."""
    _call(as_json, "host", lambda: Client(url).post("/hosts", {"name": name, "driver": driver, "uri": uri,
                                                               "cluster_id": cluster_id, "attributes": _attrs(attr)}))


def _host_action(action: str) -> None:
    @host.command(action)
    def command(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
        _call(as_json, "host", lambda: Client(url).post(f"/hosts/{ident}/action", {"action": action}))
    command.__doc__ = {"enable": "Take new VMs again.", "disable": "Keep monitoring, take no new VMs.",
                       "offline": "Stop monitoring (the host must be empty)."}[action]


for _action in ("enable", "disable", "offline"):
    _host_action(_action)


@datastore.command("create")
def datastore_create(name: str, path: str = typer.Option(..., help="An existing directory"),
                     kind: str = typer.Option("system", help="system (VM disks) or image"),
                     attr: list[str] = typer.Option([], "--attr", help="KEY=VALUE tags, e.g. SPEED=fast"),
                     cluster_ids: list[int] = typer.Option([], "--cluster"),
                     url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Register a qcow2 datastore on a directory."""
    _call(as_json, "datastore", lambda: Client(url).post("/datastores", {
        "name": name, "path": path, "kind": kind, "cluster_ids": cluster_ids, "attributes": _attrs(attr)}))


@image.command("create")
def image_create(name: str, datastore_id: int = typer.Option(..., "--datastore"),
                 source: Optional[str] = typer.Option(None, help="A disk image file to import (any qemu format)"),
                 size: Optional[int] = typer.Option(None, help="Size in MiB of a blank image"),
                 persistent: bool = typer.Option(False, help="VMs write to the image itself (one VM at a time)"),
                 url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Import a disk image, or create a blank one."""
    body = {"name": name, "datastore_id": datastore_id, "persistent": persistent}
    if source is not None:
        body["source"] = str(Path(source).absolute())
    if size is not None:
        body["size_mb"] = size
    _call(as_json, "image", lambda: Client(url).post("/images", body))


@vnet.command("create")
def vnet_create(name: str, bridge: str = typer.Option(...),
                ranges: list[str] = typer.Option(..., "--range", help="FIRST+SIZE, e.g. 10.0.0.100+50"),
                mac_prefix: str = typer.Option("02:00"), url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Create a virtual network with address ranges."""
    def parse(text: str) -> dict[str, Any]:
        first, sep, size = text.partition("+")
        if not sep or not size.isdigit():
            raise ReportError([Report("API_REFUSED", f"range {text!r} is not FIRST+SIZE", value=text)])
        return {"first": first, "size": int(size)}
    _call(as_json, "vnet", lambda: Client(url).post("/vnets", {"name": name, "bridge": bridge, "mac_prefix": mac_prefix,
                                                               "ranges": [parse(r) for r in ranges]}))


@vnet.command("leases")
def vnet_leases(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Addresses handed out on a network."""
    leases = run_action(as_json, lambda: Client(url).get(f"/vnets/{ident}/leases"))
    if as_json:
        print(json.dumps(leases, indent=2))
    else:
        for lease in leases:
            print(f"{lease['ip']}  vm {lease['vm_id']}")


@cluster.command("create")
def cluster_create(name: str, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Create a cluster."""
    _call(as_json, "cluster", lambda: Client(url).post("/clusters", {"name": name}))


@vm.command("create")
def vm_create(name: str, cpu: float = typer.Option(1.0, help="Physical CPU share reserved"),
              vcpu: int = typer.Option(1), memory: int = typer.Option(512, help="MiB"),
              disk: list[int] = typer.Option([], "--disk", help="Image id, repeatable"),
              nic: list[int] = typer.Option([], "--nic", help="Network id, repeatable"),
              requirements: str = typer.Option("", help='e.g. FREE_CPU > 60 & HYPERVISOR = "kvm"'),
              rank: str = typer.Option("", help="e.g. FREE_MEM"),
              ds_requirements: str = typer.Option("", help='e.g. SPEED = "fast"'),
              context: list[str] = typer.Option([], "--context", help="KEY=VALUE, repeatable"),
              hold: bool = typer.Option(False, help="Create on hold (not scheduled until released)"),
              count: int = typer.Option(1, help="How many (names get -0, -1, ...)"),
              url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Create VMs; the scheduler places them."""
    body = {"name": name, "cpu": cpu, "vcpu": vcpu, "memory": memory, "disks": disk, "nics": nic,
            "requirements": requirements, "rank": rank, "ds_requirements": ds_requirements,
            "context": {k: str(v) for k, v in _attrs(context).items()}, "hold": hold, "count": count}
    result = run_action(as_json, lambda: Client(url).post("/vms", body))
    _show("vm", result["items"], as_json, result)


@vm.command("list")
def vm_list(state: Optional[str] = typer.Option(None, help="Only this state (DONE VMs are listed only so)"),
            url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """List VMs."""
    _call(as_json, "vm", lambda: list(Client(url).all("vms", state=state or "")), many=True)


@vm.command("history")
def vm_history(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Every state a VM went through, and why."""
    rows = run_action(as_json, lambda: Client(url).get(f"/vms/{ident}/history"))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['at']))}  {row['from']:>9} -> "
                  f"{row['to']:<9} {row['reason']}")


def _vm_action(action: str, doc: str) -> None:
    @vm.command(action)
    def command(ident: int, url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
        _call(as_json, "vm", lambda: Client(url).post(f"/vms/{ident}/action", {"action": action}))
    command.__doc__ = doc


for _action, _doc in (("hold", "Keep a pending VM from being scheduled."), ("release", "Let a held VM be scheduled."),
                      ("shutdown", "Shut down and delete the disks (ends in DONE)."),
                      ("poweroff", "Power off, keep host and disks."), ("suspend", "Pause in memory."),
                      ("resume", "Start a powered-off, suspended, stopped or unknown VM again."),
                      ("stop", "Power off and release the host, keep the disks."),
                      ("resubmit", "Clean up and schedule again from scratch.")):
    _vm_action(_action, _doc)


@vm.command("deploy")
def vm_deploy(ident: int, host_id: int = typer.Option(..., "--host"),
              datastore_id: Optional[int] = typer.Option(None, "--datastore"),
              url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Place a pending or held VM on a host yourself."""
    _call(as_json, "vm", lambda: Client(url).post(f"/vms/{ident}/action", {
        "action": "deploy", "host_id": host_id, "datastore_id": datastore_id}))


@vm.command("migrate")
def vm_migrate(ident: int, host_id: int = typer.Option(..., "--host"), url: Optional[str] = UrlOpt,
               as_json: bool = JsonOpt) -> None:
    """Move a running VM to another host."""
    _call(as_json, "vm", lambda: Client(url).post(f"/vms/{ident}/action", {"action": "migrate", "host_id": host_id}))


@vm.command("recover")
def vm_recover(ident: int, success: bool = typer.Option(False, "--success", help="The step did happen"),
               failure: bool = typer.Option(False, "--failure", help="The step did not happen"),
               retry: bool = typer.Option(False, "--retry", help="Run the step again"),
               url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Settle a FAILED, UNKNOWN or stuck VM: say how its last step ended."""
    chosen = [how for how, on in (("success", success), ("failure", failure), ("retry", retry)) if on]

    def call() -> Any:
        if len(chosen) != 1:
            raise ReportError([Report("API_REFUSED", "give exactly one of --success, --failure, --retry")])
        return Client(url).post(f"/vms/{ident}/action", {"action": "recover", "how": chosen[0]})
    _call(as_json, "vm", call)


@vm.command("wait")
def vm_wait(idents: list[int], state: str = typer.Option("RUNNING"), timeout: float = typer.Option(60.0),
            url: Optional[str] = UrlOpt, as_json: bool = JsonOpt) -> None:
    """Wait until every VM named is in STATE (exit 5 after TIMEOUT seconds, or when one FAILED)."""
    def wait() -> list[dict[str, Any]]:
        client = Client(url)
        deadline = time.monotonic() + timeout
        while True:
            current = [client.get(f"/vms/{i}") for i in idents]
            if all(v["state"] == state for v in current):
                return current
            failed = [v for v in current if v["state"] == "FAILED" and state != "FAILED"]
            if failed or time.monotonic() > deadline:
                late = [f"{v['id']}:{v['state']}" for v in current if v["state"] != state]
                raise ReportError([Report("WAIT_TIMEOUT", f"not {state}: {', '.join(late)}", value=late)])
            time.sleep(0.2)  # poll interval inside the deadline loop
    _call(as_json, "vm", wait, many=True)
