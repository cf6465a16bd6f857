"""CLI commands that talk to the manager's API: host, datastore, image, vnet, cluster, vm, user, group,
whoami, audit.

Each parses flags, makes one API call (or a few), and prints a table or, with --json, the API's
own JSON. Every command takes the connection flags: --url (or APPLIANCE_URL), --ca (or
APPLIANCE_CA, for an https URL whose certificate a private CA signed) and --token-file (or
APPLIANCE_TOKEN_FILE; default: the admin.token `appliance serve` wrote). Bad flag values are coded
FLAG_INVALID reports, never a traceback.

Start-up time matters (every command, and shell completion, runs this): import nothing heavy here.
"""
from __future__ import annotations

import enum
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from appliance.client import Client
from appliance.output import run_action
from appliance.core.reports import Report, ReportError

Url = Annotated[Optional[str], typer.Option(
    "--url", help="Manager API (default $APPLIANCE_URL or http://127.0.0.1:2633).")]
Ca = Annotated[Optional[Path], typer.Option(
    "--ca", dir_okay=False, help="PEM file of the CA that signed the manager's TLS certificate, for an https "
                                 "--url (default $APPLIANCE_CA; else the system's CAs).")]
TokenFile = Annotated[Optional[Path], typer.Option(
    "--token-file", dir_okay=False, help="File holding the API token (default $APPLIANCE_TOKEN_FILE, else the "
                                         "admin.token `appliance serve` wrote).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]

ATTR_HELP = ("KEY=VALUE, repeatable. Values are strings unless typed: KEY:int=5, KEY:float=1.5, KEY:bool=true "
             "(KEY:str=... is a string too). Requirements compare numeric strings as numbers.")


# The manager's VM states (appliance.core.entities.VmState; not imported: it is not needed to start).
VM_STATES = ("PENDING", "HOLD", "PROLOG", "BOOT", "RUNNING", "SHUTDOWN", "EPILOG", "MIGRATE", "POWEROFF",
             "SUSPENDED", "STOPPED", "DONE", "FAILED", "UNKNOWN")


def _vm_state(value: Optional[str]) -> Optional[str]:
    """--state: one of VM_STATES, any case; anything else is a usage error listing them."""
    if value is None:
        return None
    if value.strip().upper() not in VM_STATES:
        raise typer.BadParameter(f"{value!r} is not a VM state; valid states: {' '.join(VM_STATES)}")
    return value.strip().upper()


def _complete_state(incomplete: str) -> list[str]:
    return [s for s in VM_STATES if s.startswith(incomplete.upper())]


class Role(str, enum.Enum):
    USER = "user"
    ADMIN = "admin"
    AUDITOR = "auditor"


COLUMNS = {
    "host": ("id", "name", "state", "driver", "cpu_total", "mem_total", "uri"),
    "host_samples": ("at", "span", "cpu", "mem_mb", "domains"),
    "vm_samples": ("at", "span", "cpu", "mem_kb", "net_rx", "net_tx"),
    "datastore": ("id", "name", "kind", "backend", "total_mb", "free_mb", "path"),
    "image": ("id", "name", "state", "datastore_id", "size_mb", "persistent", "owner_id", "shared", "path"),
    "vnet": ("id", "name", "bridge", "ranges"),
    "cluster": ("id", "name"),
    "vm": ("id", "name", "state", "host_id", "cpu", "memory", "owner_id", "error"),
    "user": ("id", "name", "role", "group_id"),
    "group": ("id", "name"),
    "token": ("id", "user_id", "name", "state", "created_at", "expires_at", "revoked_at", "last_used_at"),
    "audit": ("id", "at", "user", "method", "path", "status", "code", "entity", "entity_id"),
    "backend": ("name", "verbs", "params", "summary"),
}
TIMES = frozenset({"at", "created_at", "expires_at", "revoked_at", "last_used_at"})


# -- flag parsing: every problem is a FLAG_INVALID report naming the flag, the value and the fix ---------------
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _bad(flag: str, value: str, message: str, fix: str) -> Report:
    return Report("FLAG_INVALID", f"{value!r} {message}", path=flag, value=value, fix=fix)


def _pairs(flag: str, pairs: list[str], typed: bool) -> dict[str, Any]:
    """KEY=VALUE flags as a dict; with `typed`, KEY:int=, KEY:float=, KEY:bool= give numbers and booleans."""
    out: dict[str, Any] = {}
    problems: list[Report] = []
    form = "KEY=VALUE or KEY:TYPE=VALUE (TYPE: int, float, bool, str)" if typed else "KEY=VALUE"
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, colon, kind = key.partition(":") if typed else (key, "", "")
        if not sep:
            problems.append(_bad(flag, pair, f"has no '=': {flag} takes {form}",
                                 f"write it as {flag} {pair or 'KEY'}=VALUE"))
            continue
        if not KEY.match(name):
            problems.append(_bad(flag, pair, f"has a bad key: {name!r} is not 1-64 letters, digits or '_' "
                                             "starting with a letter or '_'",
                                 f"name the key like FREE_CPU or ZONE: {flag} {form}"))
            continue
        if name in out:
            problems.append(_bad(flag, pair, f"gives {name} a second time", f"give each key once in {flag}"))
            continue
        try:
            out[name] = _typed(kind.strip().lower() if colon else "str", value)
        except ValueError as exc:
            problems.append(_bad(flag, pair, f"has a bad value: {exc}", f"give {form}; e.g. {flag} {name}:int=5, "
                                                                        f"{flag} {name}=5 (the string \"5\")"))
    if problems:
        raise ReportError(problems)
    return out


def _typed(kind: str, value: str) -> Any:
    if kind == "str":
        return value
    if kind == "int":
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if kind == "bool":
        if value.strip().lower() in TRUE:
            return True
        if value.strip().lower() in FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")
    raise ValueError(f"unknown type {kind!r}")


def _duration(flag: str, text: str) -> int:
    match = DURATION.match(text)
    if not match:
        raise ReportError([_bad(flag, text, "is not a duration", "give a number and a unit: 90m, 12h, 30d "
                                "(s, m, h, d, w)" + (", or never" if flag == "--expires" else ""))])
    return int(match.group(1)) * SECONDS[match.group(2)]


def _lifetime(text: str) -> int:
    """--expires: a duration above zero (0 would ask the manager for a token that never expires)."""
    seconds = _duration("--expires", text)
    if seconds <= 0:
        raise ReportError([_bad("--expires", text, "is no lifetime", "give a duration above zero such as 12h, or "
                                "never for a token that does not expire")])
    return seconds


def _since(text: str) -> int:
    """--since: a duration back from now (1h, 30m, 2d) or a time (2026-11-29T10:00:00Z; UTC if no offset)."""
    if DURATION.match(text):
        return int(time.time()) - _duration("--since", text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError([_bad("--since", text, "is neither a duration nor an ISO 8601 time",
                                "give 30m, 1h, 2d, or a time such as 2026-11-29T10:00:00Z")]) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def iso(epoch: Any) -> str:
    """UTC ISO 8601 of epoch seconds: 2026-11-29T10:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))


# -- output ---------------------------------------------------------------------------------------------------
def _show(kind: str, items: list[dict[str, Any]], as_json: bool, document: Any = None) -> None:
    if as_json:
        print(json.dumps(items if document is None else document, indent=2, sort_keys=True))
        return
    columns = COLUMNS[kind]
    rows = [[_cell(item, c) for c in columns] for item in items]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(item: dict[str, Any], column: str) -> str:
    if column == "state" and "revoked_at" in item:  # tokens: derived, not in the API's JSON
        expires = item.get("expires_at")
        return "revoked" if item.get("revoked_at") is not None else \
            "expired" if expires is not None and expires <= time.time() else "active"
    value = item.get(column)
    if value is None:
        return "never" if column == "expires_at" and "expires_at" in item else "-"
    if column in TIMES and isinstance(value, (int, float)):
        return iso(value)
    if isinstance(value, list):
        return ",".join(f"{r['first']}+{r['size']}" if isinstance(r, dict) and "first" in r else str(r) for r in value)
    return str(value)


def _api(url: Optional[str], ca: Optional[Path], token_file: Optional[Path]) -> Client:
    return Client(url, ca=ca, token_file=token_file)


def _run(as_json: bool, api: Client, call: Callable[[Client], Any]) -> Any:
    def action() -> Any:
        with api:
            return call(api)
    return run_action(as_json, action)


def _call(as_json: bool, kind: str, api: Client, call: Callable[[Client], Any], many: bool = False) -> None:
    result = _run(as_json, api, call)
    if result is None:
        return
    items = result if many else [result]
    _show(kind, items, as_json, None if many else result)


def _deleted(as_json: bool, kind: str, ident: int, api: Client, path: str, verb: str = "deleted") -> None:
    result = _run(as_json, api, lambda c: c.delete(path))
    if result is not None:  # VMs answer with the VM (now on its way to DONE)
        _show(kind, [result], as_json, result)
    elif not as_json:
        print(f"{verb} {kind} {ident}")


def _crud(kind: str, app: typer.Typer, verbs: tuple[str, ...] = ("list", "show", "delete")) -> None:
    """list / show / delete, the same for every kind."""
    collection = f"{kind}s"
    if "list" in verbs:
        @app.command("list")
        def list_(url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
            """List every one (follows pagination)."""
            _call(as_json, kind, _api(url, ca, token_file), lambda c: list(c.all(collection)), many=True)

    if "show" in verbs and kind in ("host", "vm"):
        @app.command("show")
        def show_monitored(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                           as_json: AsJson = False,
                           history: Annotated[bool, typer.Option("--history", help="also its usage samples")] = False,
                           since: Annotated[float, typer.Option("--since", min=1, max=400 * 86400,
                                                                help="history of the last SECONDS")] = 3600) -> None:
            """Show one by id; --history adds its monitoring samples (raw, then 5-minute and hourly rows)."""
            api = _api(url, ca, token_file)
            if not history:
                _call(as_json, kind, api, lambda c: c.get(f"/{collection}/{ident}"))
                return

            def both(c: Client) -> dict:
                return {kind: c.get(f"/{collection}/{ident}"),
                        "history": c.get(f"/{collection}/{ident}/monitoring", since=int(time.time() - since),
                                         limit=10000)}
            result = _run(as_json, api, both)
            if result is None:
                return
            if as_json:
                print(json.dumps(result, indent=2, sort_keys=True))
                return
            _show(kind, [result[kind]], False)
            print()
            _show(f"{kind}_samples", result["history"], False)
    elif "show" in verbs:
        @app.command("show")
        def show(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                 as_json: AsJson = False) -> None:
            """Show one by id."""
            _call(as_json, kind, _api(url, ca, token_file), lambda c: c.get(f"/{collection}/{ident}"))

    if "delete" in verbs:
        @app.command("delete")
        def delete(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                   as_json: AsJson = False) -> None:
            """Delete one (VMs: terminate and clean up)."""
            _deleted(as_json, kind, ident, _api(url, ca, token_file), f"/{collection}/{ident}")


def _noun(help: str) -> typer.Typer:
    # Plain help, like the rest of the CLI: typer's rich help shows flags as `--json <bool>`.
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help)


host = _noun("Hypervisor hosts.")
datastore = _noun("Datastores (qcow2 directories).")
image = _noun("Disk images.")
vnet = _noun("Virtual networks and their leases.")
cluster = _noun("Clusters of hosts.")
vm = _noun("Virtual machines and their lifecycle.")
user = _noun("Users of the API, and their tokens.")
token = _noun("API tokens (bearer secrets), yours or, as an administrator, anyone's.")
group = _noun("Groups: members may use what a member shares (--shared).")
user.add_typer(token, name="token")
for _kind, _app in (("host", host), ("datastore", datastore), ("image", image), ("vnet", vnet),
                    ("cluster", cluster), ("vm", vm), ("user", user)):
    _crud(_kind, _app)
_crud("group", group, ("list", "delete"))

# What appliance.cli registers: sub-apps by name (built only when named), and top-level commands (below).
SUBAPPS = {"host": host, "datastore": datastore, "image": image, "vnet": vnet, "cluster": cluster, "vm": vm,
           "user": user, "group": group}


@host.command("create")
def host_create(name: str, driver: str = typer.Option("libvirt", help="libvirt or fake"),
                uri: str = typer.Option("test:///default", help="libvirt URI"),
                cluster_id: Optional[int] = typer.Option(None, "--cluster"),
                attr: list[str] = typer.Option([], "--attr", metavar="KEY=VALUE",
                                               help=ATTR_HELP + " Used in requirements."),
                url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Register a host; the manager monitors it at once."""
    _call(as_json, "host", _api(url, ca, token_file), lambda c: c.post("/hosts", {
        "name": name, "driver": driver, "uri": uri, "cluster_id": cluster_id,
        "attributes": _pairs("--attr", attr, typed=True)}))


def _host_action(action: str) -> None:
    @host.command(action)
    def command(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                as_json: AsJson = False) -> None:
        _call(as_json, "host", _api(url, ca, token_file),
              lambda c: c.post(f"/hosts/{ident}/action", {"action": action}))
    command.__doc__ = {"enable": "Take new VMs again.", "disable": "Keep monitoring, take no new VMs.",
                       "offline": "Stop monitoring (the host must be empty)."}[action]


for _action in ("enable", "disable", "offline"):
    _host_action(_action)


@datastore.command("create")
def datastore_create(name: str, path: str = typer.Option(..., help="An existing directory"),
                     kind: str = typer.Option("system", help="system (VM disks) or image"),
                     backend: str = typer.Option("qcow2", help="`appliance datastore backends` lists them"),
                     param: list[str] = typer.Option([], "--param", metavar="KEY=VALUE",
                                                     help="A parameter of the backend, repeatable"),
                     attr: list[str] = typer.Option([], "--attr", metavar="KEY=VALUE",
                                                    help=ATTR_HELP + " E.g. SPEED=fast."),
                     cluster_ids: list[int] = typer.Option([], "--cluster", metavar="ID",
                                                           help="Cluster id, repeatable"),
                     url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Register a datastore: a directory (or pool) that one storage backend manages."""
    _call(as_json, "datastore", _api(url, ca, token_file), lambda c: c.post("/datastores", {
        "name": name, "path": path, "kind": kind, "backend": backend,
        "params": _backend_params(backend, _pairs("--param", param, typed=False)),
        "cluster_ids": cluster_ids, "attributes": _pairs("--attr", attr, typed=True)}))


def _backend_params(backend: str, given: dict[str, str]) -> dict[str, Any]:
    """--param values typed by the backend's declarations (int, bool), so `--param size_mb=1024`
    reads as the number; the manager checks them again. Unknown names go through as given: the
    manager's refusal names the parameters the backend takes."""
    from appliance.storage.registry import TYPES

    kinds = {p.name: p.kind for p in TYPES[backend].params} if backend in TYPES else {}
    out: dict[str, Any] = {}
    problems = []
    for name, value in given.items():
        try:
            out[name] = _typed(kinds.get(name) if kinds.get(name) in ("int", "bool") else "str", value)
        except ValueError as exc:
            problems.append(_bad("--param", f"{name}={value}", f"has a bad value: {exc}",
                                 f"give {name} as a {kinds.get(name)}, e.g. --param {name}=1"))
    if problems:
        raise ReportError(problems)
    return out


@datastore.command("backends")
def datastore_backends(url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """The storage backends this manager offers: their verbs and parameters."""
    result = _run(as_json, _api(url, ca, token_file), lambda c: c.get("/datastore-backends"))
    if result is None:
        return
    items = [{**b, "verbs": ",".join(b["verbs"]), "params": ",".join(
        f"{p['name']}:{p['type']}{'!' if p['required'] else ''}" for p in b["params"]) or "-"} for b in result["items"]]
    _show("backend", items, as_json, result)


@image.command("create")
def image_create(name: str, datastore_id: int = typer.Option(..., "--datastore"),
                 source: Optional[str] = typer.Option(None, help="A disk image file to import (any qemu format)"),
                 size: Optional[int] = typer.Option(None, help="Size in MiB of a blank image"),
                 persistent: bool = typer.Option(False, help="VMs write to the image itself (one VM at a time)"),
                 shared: bool = typer.Option(False, "--shared", help="Members of your group may read and use it"),
                 url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Import a disk image, or create a blank one."""
    body: dict[str, Any] = {"name": name, "datastore_id": datastore_id, "persistent": persistent}
    if source is not None:
        body["source"] = str(Path(source).absolute())
    if size is not None:
        body["size_mb"] = size
    if shared:  # only when asked: a manager without groups refuses the field
        body["shared"] = True
    _call(as_json, "image", _api(url, ca, token_file), lambda c: c.post("/images", body))


@vnet.command("create")
def vnet_create(name: str, bridge: str = typer.Option(...),
                ranges: list[str] = typer.Option(..., "--range", metavar="FIRST+SIZE",
                                                 help="FIRST+SIZE, e.g. 10.0.0.100+50"),
                mac_prefix: str = typer.Option("02:00"),
                url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Create a virtual network with address ranges."""
    def parse() -> list[dict[str, Any]]:
        out, problems = [], []
        for text in ranges:
            first, sep, size = text.partition("+")
            if not sep or not size.isdigit() or not first:
                problems.append(_bad("--range", text, "is not FIRST+SIZE",
                                     "give the first address and how many, e.g. --range 10.0.0.100+50"))
            else:
                out.append({"first": first, "size": int(size)})
        if problems:
            raise ReportError(problems)
        return out
    _call(as_json, "vnet", _api(url, ca, token_file), lambda c: c.post("/vnets", {
        "name": name, "bridge": bridge, "mac_prefix": mac_prefix, "ranges": parse()}))


@vnet.command("leases")
def vnet_leases(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                as_json: AsJson = False) -> None:
    """Addresses handed out on a network."""
    leases = _run(as_json, _api(url, ca, token_file), lambda c: c.get(f"/vnets/{ident}/leases"))
    if as_json:
        print(json.dumps(leases, indent=2))
    else:
        for lease in leases:
            print(f"{lease['ip']}  vm {lease['vm_id']}")


@cluster.command("create")
def cluster_create(name: str, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                   as_json: AsJson = False) -> None:
    """Create a cluster."""
    _call(as_json, "cluster", _api(url, ca, token_file), lambda c: c.post("/clusters", {"name": name}))


@vm.command("create")
def vm_create(name: str, cpu: float = typer.Option(1.0, help="Physical CPU share reserved"),
              vcpu: int = typer.Option(1), memory: int = typer.Option(512, help="MiB"),
              disk: list[int] = typer.Option([], "--disk", metavar="ID", help="Image id, repeatable"),
              nic: list[int] = typer.Option([], "--nic", metavar="ID", help="Network id, repeatable"),
              requirements: str = typer.Option("", help='e.g. FREE_CPU > 60 & HYPERVISOR = "kvm"'),
              rank: str = typer.Option("", help="e.g. FREE_MEM"),
              ds_requirements: str = typer.Option("", help='e.g. SPEED = "fast"'),
              context: list[str] = typer.Option([], "--context", metavar="KEY=VALUE",
                                                help="KEY=VALUE, repeatable (values are strings)"),
              hold: bool = typer.Option(False, help="Create on hold (not scheduled until released)"),
              shared: bool = typer.Option(False, "--shared", help="Members of your group may read and use it"),
              count: int = typer.Option(1, help="How many (names get -0, -1, ...)"),
              url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Create VMs; the scheduler places them."""
    def create(c: Client) -> Any:
        body: dict[str, Any] = {
            "name": name, "cpu": cpu, "vcpu": vcpu, "memory": memory, "disks": disk, "nics": nic,
            "requirements": requirements, "rank": rank, "ds_requirements": ds_requirements,
            "context": _pairs("--context", context, typed=False), "hold": hold, "count": count}
        if shared:  # only when asked: a manager without groups refuses the field
            body["shared"] = True
        return c.post("/vms", body)
    result = _run(as_json, _api(url, ca, token_file), create)
    _show("vm", result["items"], as_json, result)


STATE_HELP = f"One of {', '.join(VM_STATES)} (any case)"


@vm.command("list")
def vm_list(state: Optional[str] = typer.Option(None, "--state", metavar="STATE", callback=_vm_state,
                                                autocompletion=_complete_state,
                                                help=f"Only VMs in this state (DONE VMs are listed only so). "
                                                     f"{STATE_HELP}."),
            url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """List VMs."""
    _call(as_json, "vm", _api(url, ca, token_file), lambda c: list(c.all("vms", state=state)), many=True)


@vm.command("history")
def vm_history(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
               as_json: AsJson = False) -> None:
    """Every state a VM went through, and why (times in UTC)."""
    rows = _run(as_json, _api(url, ca, token_file), lambda c: c.get(f"/vms/{ident}/history"))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{iso(row['at'])}  {row['from']:>9} -> {row['to']:<9} {row['reason']}")


def _vm_action(action: str, doc: str) -> None:
    @vm.command(action)
    def command(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                as_json: AsJson = False) -> None:
        _call(as_json, "vm", _api(url, ca, token_file), lambda c: c.post(f"/vms/{ident}/action", {"action": action}))
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
              url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Place a pending or held VM on a host yourself."""
    _call(as_json, "vm", _api(url, ca, token_file), lambda c: c.post(f"/vms/{ident}/action", {
        "action": "deploy", "host_id": host_id, "datastore_id": datastore_id}))


@vm.command("flatten")
def vm_flatten(ident: int, disk: int = typer.Option(0, "--disk", min=0, help="The disk's index (0: the first)"),
               url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Copy the image's blocks into a VM disk (RBD), so the image can be deleted."""
    _call(as_json, "vm", _api(url, ca, token_file), lambda c: c.post(f"/vms/{ident}/disks/{disk}/flatten", {}))


@vm.command("migrate")
def vm_migrate(ident: int, host_id: int = typer.Option(..., "--host"),
               url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Move a running VM to another host."""
    _call(as_json, "vm", _api(url, ca, token_file),
          lambda c: c.post(f"/vms/{ident}/action", {"action": "migrate", "host_id": host_id}))


@vm.command("recover")
def vm_recover(ident: int, success: bool = typer.Option(False, "--success", help="The step did happen"),
               failure: bool = typer.Option(False, "--failure", help="The step did not happen"),
               retry: bool = typer.Option(False, "--retry", help="Run the step again"),
               url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Settle a FAILED, UNKNOWN or stuck VM: say how its last step ended."""
    chosen = [how for how, on in (("success", success), ("failure", failure), ("retry", retry)) if on]

    def call(c: Client) -> Any:
        if len(chosen) != 1:
            raise ReportError([Report("FLAG_INVALID", f"{len(chosen)} of --success, --failure, --retry given",
                                      path="--success/--failure/--retry", value=chosen,
                                      fix="give exactly one of --success, --failure, --retry")])
        return c.post(f"/vms/{ident}/action", {"action": "recover", "how": chosen[0]})
    _call(as_json, "vm", _api(url, ca, token_file), call)


@vm.command("wait")
def vm_wait(idents: list[int], state: str = typer.Option("RUNNING", "--state", metavar="STATE", callback=_vm_state,
                                                       autocompletion=_complete_state, help=STATE_HELP),
            timeout: float = typer.Option(60.0), url: Url = None, ca: Ca = None, token_file: TokenFile = None,
            as_json: AsJson = False) -> None:
    """Wait until every VM named is in STATE (exit 5 after TIMEOUT seconds, or when one FAILED)."""
    wanted = state

    def wait(c: Client) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            current = [c.get(f"/vms/{i}") for i in idents]
            if all(v["state"] == wanted for v in current):
                return current
            failed = [v for v in current if v["state"] == "FAILED" and wanted != "FAILED"]
            if failed or time.monotonic() > deadline:
                late = [f"{v['id']}:{v['state']}" for v in current if v["state"] != wanted]
                raise ReportError([Report("WAIT_TIMEOUT", f"not {wanted}: {', '.join(late)}", value=late)])
            time.sleep(0.2)  # poll interval inside the deadline loop
    _call(as_json, "vm", _api(url, ca, token_file), wait, many=True)


# -- users, groups, tokens, audit -------------------------------------------------------------------------------
def _secret(document: dict[str, Any], secret: str, as_json: bool, what: str) -> None:
    """Print a new secret once: alone on stdout (so `> file` keeps just it), the explanation on stderr."""
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    print(f"{what}\nThe token follows on stdout; it will not be shown again: store it now "
          "(e.g. in a file of mode 0600 for --token-file).", file=sys.stderr)
    print(secret)


@user.command("create")
def user_create(name: str, role: Role = typer.Option(Role.USER, "--role", case_sensitive=False,
                                                     help="user: own VMs and images; admin: everything; "
                                                          "auditor: reads everything"),
                group_name: Optional[str] = typer.Option(None, "--group", help="Group name (the manager's default: "
                                                                                "users)"),
                url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Create a user and its first token (printed once)."""
    body: dict[str, Any] = {"name": name, "role": role.value}
    if group_name is not None:
        body["group"] = group_name
    document = _run(as_json, _api(url, ca, token_file), lambda c: c.post("/users", body))
    created = document["user"]
    _secret(document, document["token"], as_json,
            f"created user {created['name']} (id {created['id']}, role {created['role']}, group "
            f"{created.get('group_id', '-')}), token id {document.get('token_id', '-')}.")


@token.command("list")
def token_list(user_id: Optional[int] = typer.Option(None, "--user", help="Only this user's tokens (administrators)"),
               url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """List tokens (times in UTC); the secrets are never shown again."""
    _call(as_json, "token", _api(url, ca, token_file), lambda c: list(c.all("tokens", user_id=user_id)), many=True)


@token.command("create")
def token_create(name: str, expires: Optional[str] = typer.Option(
                     None, "--expires", help="30d, 12h, 90m (s, m, h, d, w) or never (default: the manager's)"),
                 user_id: Optional[int] = typer.Option(None, "--user", help="For this user (administrators)"),
                 url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """Create a token (printed once)."""
    def create(c: Client) -> Any:
        body: dict[str, Any] = {"name": name}
        if expires is not None:
            # A token that never expires is asked for as expires_in 0; null means the manager's default.
            body["expires_in"] = 0 if expires.strip().lower() == "never" else _lifetime(expires)
        if user_id is not None:
            body["user_id"] = user_id
        return c.post("/tokens", body)
    document = _run(as_json, _api(url, ca, token_file), create)
    made = document["token"]
    until = "never expires" if made.get("expires_at") is None else f"expires {iso(made['expires_at'])}"
    _secret(document, document["secret"], as_json,
            f"created token {made['id']} ({made['name']}) for user {made.get('user_id', '-')}; it {until}.")


@token.command("revoke")
def token_revoke(ident: int, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                 as_json: AsJson = False) -> None:
    """Revoke a token: it stops working at once."""
    _deleted(as_json, "token", ident, _api(url, ca, token_file), f"/tokens/{ident}", verb="revoked")


@group.command("create")
def group_create(name: str, url: Url = None, ca: Ca = None, token_file: TokenFile = None,
                 as_json: AsJson = False) -> None:
    """Create a group."""
    _call(as_json, "group", _api(url, ca, token_file), lambda c: c.post("/groups", {"name": name}))


def whoami(url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """The user the token belongs to."""
    _call(as_json, "user", _api(url, ca, token_file), lambda c: c.get("/whoami"))


def audit(since: Optional[str] = typer.Option(None, "--since", help="1h, 30m, 2d back from now, or a time such as "
                                                                      "2026-11-29T10:00:00Z (UTC if no offset)"),
          limit: int = typer.Option(100, "--limit", min=1, help="At most this many entries, oldest first"),
          url: Url = None, ca: Ca = None, token_file: TokenFile = None, as_json: AsJson = False) -> None:
    """What was done through the API, by whom (times in UTC)."""
    def read(c: Client) -> tuple[list[dict[str, Any]], bool]:
        start = _since(since) if since else None
        entries: list[dict[str, Any]] = []
        after = 0
        while len(entries) < limit:
            page = c.get("/audit", since=start, after=after, limit=min(limit - len(entries), 1000))
            entries += page["items"]
            if page.get("next") is None:
                return entries[:limit], False
            after = page["next"]
        return entries[:limit], True
    entries, more = _run(as_json, _api(url, ca, token_file), read)
    _show("audit", entries, as_json, entries)
    if more and not as_json:
        print(f"(the first {limit} entries; more with a larger --limit or a later --since)", file=sys.stderr)


# Top-level commands appliance.cli registers beside the sub-apps.
COMMANDS = {"whoami": whoami, "audit": audit}
