"""The `appliance` command line: parse, call one action, render text or JSON, exit with a meaning.

Exit codes are in appliance.reports.ExitCode and docs/exit-codes.md.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from appliance import actions, __version__
from appliance.reports import ExitCode, Report, ReportError, Severity

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn two servers into a highly available cloud frontend, and run it.")
secrets_app = typer.Typer(no_args_is_help=True, help="Site secrets (mode 0600 file or APPLIANCE_SECRET_* variables).")
app.add_typer(secrets_app, name="secrets")

InventoryOpt = typer.Option(..., "--inventory", "-i", help="The site inventory (TOML).", dir_okay=False)
SecretsOpt = typer.Option(None, "--secrets", help="Secrets file (default: the inventory's secrets_file).",
                          dir_okay=False)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")


def _emit_reports(reports: list[Report], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": not any(r.severity is Severity.ERROR for r in reports),
                          "reports": [r.as_dict() for r in reports]}, indent=2, sort_keys=True))
    else:
        for report in reports:
            print(report.render(), file=sys.stderr)


def _run(as_json: bool, action: Callable[[], Any]) -> Any:
    """Call an action; turn expected failures into reports and exit codes, never a traceback."""
    try:
        return action()
    except ReportError as exc:
        _emit_reports(exc.reports, as_json)
        errors = sum(1 for r in exc.reports if r.severity is Severity.ERROR)
        if not as_json:
            print(f"{errors} error(s); nothing was changed.", file=sys.stderr)
        raise typer.Exit(int(exc.exit_code))
    except KeyboardInterrupt:
        print("interrupted; nothing half-written: files are renamed into place only when complete", file=sys.stderr)
        raise typer.Exit(130)
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        if os.environ.get("APPLIANCE_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {exc.__class__.__name__}: {exc}\n"
              "this is a bug in appliance; run again with APPLIANCE_DEBUG=1 for the traceback", file=sys.stderr)
        raise typer.Exit(int(ExitCode.INTERNAL))


def _apply_not_available() -> None:
    raise ReportError([Report("APPLY_NOT_AVAILABLE", "applying to live nodes is not built yet; nothing was contacted")])


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
    diff: bool = typer.Option(False, "--diff", help="With --check: show each file's content as a diff."),
    secrets: Optional[Path] = SecretsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Install the HA frontend on the inventory's two nodes (today: --check, the offline plan)."""
    if not check:
        _run(as_json, _apply_not_available)
    from appliance.plan import plan_text

    data = _run(as_json, lambda: actions.plan_install(inventory, secrets, diff=diff))
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
    progress = (lambda message: None) if as_json else (lambda message: print(f"  {message}", file=sys.stderr))
    result = _run(as_json, lambda: actions.render_site(inventory, secrets, output, validate=validate, force=force,
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
    site = _run(as_json, lambda: actions.validate_site(inventory, secrets))
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
    path = _run(False, lambda: actions.init_secrets(inventory, output))
    print(f"wrote {path} (mode 0600); add fence device passwords under [fence.<device>]")


def main() -> None:
    app()
