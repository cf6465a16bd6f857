"""The `appliance` command line: parse, call one action, render text or JSON, exit with a meaning.

Exit codes are in appliance.core.reports.ExitCode and docs/exit-codes.md.

Start-up time: every command (and each shell-completion keystroke) loads this module, so it imports
only typer and light modules; each command imports what it needs (appliance.actions pulls in
fabric, jinja2, the inventory's pydantic models) inside its body. tests/unit/test_cli_manager.py
checks that importing the CLI loads none of them; bench/cli_start.py measures it.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import typer.main
from typer.core import TyperGroup

from appliance import cli_manager, __version__
from appliance.cli_cache import cache_app
from appliance.cli_serve import serve
from appliance.output import run_action
from appliance.core.reports import Report, ReportError



class _Root(TyperGroup):
    """The root command, whose manager sub-apps (appliance.cli_manager.SUBAPPS) are built when named.

    Typer turns every function into a click command on each run, about 0.5 ms a command; the
    manager's sixty are built only for the noun on the command line (or all, for `appliance --help`,
    completion of the first word, and a mistyped noun's "did you mean")."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands) + [name for name in cli_manager.SUBAPPS if name not in self.commands]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in cli_manager.SUBAPPS:
            group = typer.main.get_group(cli_manager.SUBAPPS[cmd_name])
            group.name = cmd_name
            self.commands[cmd_name] = group
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and args[0] not in cli_manager.SUBAPPS:
            for name in cli_manager.SUBAPPS:  # an unknown noun: suggest among all of them
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


# rich_markup_mode=None: plain help. Typer's rich help labels every flag `<bool>` as if it took a
# value (`--check <bool>`), and loading rich costs about 0.1 s per --help. Sub-apps added here
# inherit it; the manager's set it themselves (they are built apart, see _Root).
app = typer.Typer(cls=_Root, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Turn two servers into a highly available cloud frontend, and run it.")
secrets_app = typer.Typer(no_args_is_help=True, help="Site secrets (mode 0600 file or APPLIANCE_SECRET_* variables).")
app.add_typer(secrets_app, name="secrets")
app.add_typer(cache_app, name="cache")

InventoryOpt = typer.Option(..., "--inventory", "-i", help="The site inventory (TOML).", dir_okay=False)
SecretsOpt = typer.Option(None, "--secrets", help="Secrets file (default: the inventory's secrets_file).",
                          dir_okay=False)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")


def _print_install(document: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    changed = document["changed"]
    verb = "would change" if document["check"] else "changed"
    print(f"{len(changed)} {verb}, {document['unchanged']} already as wanted")
    for change in changed:
        print(f"  {change['node']}: {change['status']:<12} {change['what']}")
        for line in change.get("diff", "").rstrip("\n").splitlines():
            print(f"      {line}")
    for note in document.get("notes", []):
        print(f"  note: {note}")
    for check in document.get("verify", []):
        print(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")


def _version(value: bool) -> None:
    if value:
        print(f"appliance {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every command run (secrets masked)."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command()
def install(
    inventory: Path = InventoryOpt,
    check: bool = typer.Option(False, "--check", help="Print the plan; contact nothing, change nothing."),
    diff: bool = typer.Option(False, "--diff", help="Show each change as a diff: with --check, the planned files; "
                              "with --check --live or a real install, files and CIB against the nodes."),
    live: bool = typer.Option(False, "--live", help="With --check: compare with the live nodes over SSH."),
    trust_new_host_keys: bool = typer.Option(False, "--trust-new-host-keys",
                                             help="Accept and record host keys not yet in known_hosts (never a changed one)."),
    secrets: Optional[Path] = SecretsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Install the HA frontend on the inventory's two nodes: plan, apply what differs, verify.

    --check alone prints the offline plan and contacts nothing; --check --live compares with the
    nodes and changes nothing."""
    from appliance import actions

    if not check or live:
        progress = (lambda m: None) if as_json else (lambda m: print(m, file=sys.stderr, flush=True))
        document = run_action(as_json, lambda: actions.install(inventory, secrets, check=check, diff=diff,
                                                               trust_new_host_keys=trust_new_host_keys,
                                                               progress=progress))
        _print_install(document, as_json)
        if not document["ok"]:
            raise typer.Exit(6)
        return
    from appliance.plan import plan_text

    data = run_action(as_json, lambda: actions.plan_install(inventory, secrets, diff=diff))
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        sys.stdout.write(plan_text(data, diff=diff))


@app.command()
def render(
    inventory: Path = InventoryOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (new or empty).", file_okay=False),
    validate: bool = typer.Option(True, "--validate/--no-validate",
                                  help="Check every file with the real tool (crm_verify, drbdadm, ...) first."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output directory."),
    secrets: Optional[Path] = SecretsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write every file that would land on each node, with its mode, under OUTPUT/<node>/."""
    from appliance import actions

    progress = (lambda message: None) if as_json else (lambda message: print(f"  {message}", file=sys.stderr))
    result = run_action(as_json, lambda: actions.render_site(inventory, secrets, output, validate=validate, force=force,
                                                       progress=progress))
    files = result.manifest["files"]
    if as_json:
        print(json.dumps({"ok": True, "output": str(result.out_dir), "files": files,
                          "failover": result.manifest["failover"],
                          "warnings": [w.as_dict() for w in result.warnings]}, indent=2, sort_keys=True))
        return
    for entry in files:
        verdict = entry["checked"]
        mark = "" if verdict is None else f"  [{'ok' if verdict['ok'] else 'REJECTED'}: {verdict['tool']}]"
        print(f"{entry['mode']}  {entry['node']}{entry['path']}{mark}")
    checked = sum(1 for e in files if e["checked"])
    print(f"wrote {len(files)} files to {result.out_dir}" + (f"; {checked} validated by the real tools" if validate
                                                             else "; not validated (--no-validate)"))
    for failed, name in result.manifest["failover"].items():
        print(f"failover preview ({failed} fails): {result.out_dir / name}")
    for warning in result.warnings:
        print(warning.render(), file=sys.stderr)


@app.command()
def validate(inventory: Path = InventoryOpt, secrets: Optional[Path] = SecretsOpt, as_json: bool = JsonOpt) -> None:
    """Validate the inventory and its secrets; contacts nothing."""
    from appliance import actions

    site = run_action(as_json, lambda: actions.validate_site(inventory, secrets))
    if as_json:
        print(json.dumps({"ok": True, "reports": [w.as_dict() for w in site.warnings]}, indent=2, sort_keys=True))
    else:
        for warning in site.warnings:
            print(warning.render(), file=sys.stderr)
        print(f"{inventory}: valid ({len(site.inventory.nodes)} nodes, stack {site.inventory.cluster.stack})")


@secrets_app.command("init")
def secrets_init(
    inventory: Path = InventoryOpt,
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write (default: the inventory's "
                                          "secrets_file).", dir_okay=False),
) -> None:
    """Write fresh random secrets (mode 0600). Refuses to replace an existing file."""
    from appliance import actions

    path = run_action(False, lambda: actions.init_secrets(inventory, output))
    print(f"wrote {path} (mode 0600); add fence device passwords under [fence.<device>]")


lab_app = typer.Typer(no_args_is_help=True, help="The local lab: the two frontends as namespaces on this machine.")
app.add_typer(lab_app, name="lab")
LabDirOpt = typer.Option(None, "--dir", help="Lab directory (default $APPLIANCE_LAB_DIR or /tmp/appliance-lab).")


def _lab_dir(directory: Optional[Path]) -> Path:
    from appliance.lab.lab import DEFAULT_DIR

    return directory or DEFAULT_DIR


def _lab_kind(directory: Path) -> str:
    from appliance.lab.vm import KIND_FILE

    kind = directory / KIND_FILE
    return kind.read_text().strip() if kind.exists() else "netns"


@lab_app.command("up")
def lab_up(directory: Optional[Path] = LabDirOpt, token: int = typer.Option(3000, help="corosync token (ms)"),
           kind: str = typer.Option("netns", help="netns: namespaces on this kernel (seconds); vm: QEMU machines "
                                    "with Debian's kernel, so DRBD, LVM, AoE and kernel NFS run (minutes)"),
           as_json: bool = JsonOpt) -> None:
    """Create the lab (idempotent): the nodes, their network, sshd per node, lab.toml and its secrets."""
    from appliance.lab import lab, vm

    if kind not in ("netns", "vm"):
        run_action(as_json, lambda: _refuse_flag("--kind", kind, "netns or vm"))
    progress = (lambda m: None) if as_json else (lambda m: print(m, file=sys.stderr, flush=True))
    lab_dir = _lab_dir(directory)
    if kind == "vm":
        result = run_action(as_json, lambda: vm.up(lab_dir, token, progress=progress))
    else:
        result = run_action(as_json, lambda: lab.up(lab_dir, token))
    _print_lab(result, as_json)


def _refuse_flag(flag: str, value: str, expected: str):
    from appliance.core.reports import Report, ReportError

    raise ReportError([Report("FLAG_INVALID", f"{flag} {value!r}: expected {expected}", value=value)])


@lab_app.command("down")
def lab_down(directory: Optional[Path] = LabDirOpt, as_json: bool = JsonOpt) -> None:
    """Stop every lab process (or machine) and remove what `lab up` created, and nothing else."""
    from appliance.lab import lab, vm

    lab_dir = _lab_dir(directory)
    if _lab_kind(lab_dir) == "vm":
        removed = run_action(as_json, lambda: vm.down(lab_dir))
    else:
        removed = run_action(as_json, lambda: lab.down(lab_dir))
    print(json.dumps({"removed": removed}, indent=2) if as_json else "\n".join(["removed:"] + removed))


@lab_app.command("status")
def lab_status(directory: Optional[Path] = LabDirOpt, as_json: bool = JsonOpt) -> None:
    """What of the lab exists."""
    from appliance.lab import lab, vm

    lab_dir = _lab_dir(directory)
    module = vm if _lab_kind(lab_dir) == "vm" else lab
    _print_lab(run_action(as_json, lambda: module.status(lab_dir)), as_json)


@lab_app.command("power")
def lab_power(machine: str = typer.Argument(..., help="a VM lab machine, e.g. cloud-cc01"),
              action: str = typer.Argument(..., help="on | off | status"),
              directory: Optional[Path] = LabDirOpt, as_json: bool = JsonOpt) -> None:
    """VM lab: the power switch by hand. off is a power cut (no shutdown); on boots the machine."""
    from appliance.lab import vm

    lab_dir = _lab_dir(directory)

    def act() -> dict:
        m = vm.machine(machine)
        if action not in ("on", "off", "status"):
            _refuse_flag("ACTION", action, "on, off or status")
        if action == "on":
            vm.power_on(lab_dir, m)
        elif action == "off":
            vm.power_off(lab_dir, m)
        return {"machine": m.name, "power": "on" if vm.qemu_pid(lab_dir / m.name) else "off"}

    result = run_action(as_json, act)
    print(json.dumps(result) if as_json else f"{result['machine']}: {result['power']}")
    if action == "status" and result["power"] == "off":
        raise typer.Exit(2)  # fence-agents' convention: 2 is off


@lab_app.command("replace")
def lab_replace(machine: str = typer.Argument(..., help="a VM lab machine that is off, e.g. cloud-cc02"),
                directory: Optional[Path] = LabDirOpt, as_json: bool = JsonOpt) -> None:
    """VM lab: swap a machine for a new server (fresh system, blank disks, new SSH host key), to
    practise docs/runbooks/replace-node.md. The machine must be off; it stays off."""
    from appliance.lab import vm

    lab_dir = _lab_dir(directory)
    result = run_action(as_json, lambda: vm.replace_machine(lab_dir, vm.machine(machine)))
    print(json.dumps(result) if as_json else
          f"{result['machine']}: replaced ({', '.join(result['replaced'])}); new host key "
          f"{result['host_key_fingerprint']}; power off (`appliance lab power {result['machine']} on`)")


def _print_lab(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"lab {result['lab_dir']}: inventory {result['inventory']}")
    for node in result.get("nodes", []):
        print(f"  {node['name']}: netns {'yes' if node['netns'] else 'no'}, LAN {node['lan_ip']}, "
              f"SAN {node['san_ip']}, anchor {node['anchor'] or '-'}, {node['processes']} processes")
    for m in result.get("machines", []):
        boot = result.get("seconds_until_ssh", {}).get(m["name"])
        print(f"  {m['name']} ({m['role']}): power {m['power']}, LAN {m['lan_ip']}, SAN {m['san_ip']}, "
              f"QEMU RSS {m['rss_mib']} MiB" + (f", sshd after {boot} s" if boot is not None else ""))
    if "power_switch" in result:
        print(f"  power switch on 10.251.0.254:1623: {'running' if result['power_switch'] else 'stopped'}")


@app.command()
def status(inventory: Path = InventoryOpt, as_json: bool = JsonOpt) -> None:
    """The live pair: nodes, resources and where they run, replication, API through TLS."""
    from appliance import actions

    document = run_action(as_json, lambda: actions.status(inventory))
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        cluster = document["cluster"]
        print(f"online: {', '.join(cluster['online']) or 'none'}; DC {cluster.get('dc')}")
        for rid, resource in sorted(cluster["resources"].items()):
            print(f"  {rid:<16} {resource['role'] or '':<10} {', '.join(resource['nodes']) or '-'}"
                  + ("  FAILED" if resource["failed"] else ""))
        for check in document["checks"]:
            print(f"{'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")
    if not all(c["ok"] for c in document["checks"]):
        raise typer.Exit(6)


@app.command()
def drill(fault: str = typer.Argument(..., help="kill-node | cut-link | kill-manager | kill-db | reboot-both (VM lab)"),
          inventory: Path = InventoryOpt, node: Optional[str] = typer.Option(None, help="default: the active node"),
          restore: bool = typer.Option(True, "--restore/--no-restore", help="Put the lab back afterwards."),
          as_json: bool = JsonOpt) -> None:
    """Lab only: inject a fault while writing through the API; print seconds to recover and writes lost."""
    from appliance import actions

    progress = (lambda m: None) if as_json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run_action(as_json, lambda: actions.run_drill(inventory, fault, node, restore_after=restore,
                                                           progress=progress))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        seconds = result["seconds_until_api_answers"]
        print(f"{fault} on {result['node']}: " + (
            f"the API answered again through the floating address after {seconds} s" if seconds is not None
            else "the API did NOT answer again through the floating address") +
            f"; {result['acknowledged_writes']} writes acknowledged, {result['acknowledged_writes_lost']} lost")
        if result["failures_after_first_answer"]:
            print(f"  it first answered after {result['seconds_until_first_answer']} s, then failed "
                  f"{result['failures_after_first_answer']} more time(s) before it held")
        if "restored_by" in result:
            print(f"  restored by {result['restored_by']}" + "".join(
                f"; it changed {c['node']}: {c['what']}" for c in result["restore_changed"]))
        for check in result.get("after_restore", []):
            if not check["ok"]:
                print(f"  after restoring: FAIL {check['check']}: {check['detail']}")
    if result["acknowledged_writes_lost"]:
        raise typer.Exit(5)
    if result["seconds_until_api_answers"] is None:
        raise typer.Exit(6)
    if not all(check["ok"] for check in result.get("after_restore", [])):
        raise typer.Exit(6)


app.command()(serve)  # also reachable without this module: appliance.main
for _name, _command in cli_manager.COMMANDS.items():  # whoami, audit
    app.command(_name)(_command)


def main() -> None:
    app()
