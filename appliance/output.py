"""Turning action results and failures into output and exit codes, for every CLI command."""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable

import typer

from appliance.core.reports import ExitCode, Report, ReportError, Severity


def emit_reports(reports: list[Report], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": not any(r.severity is Severity.ERROR for r in reports),
                          "reports": [r.as_dict() for r in reports]}, indent=2, sort_keys=True))
    else:
        for report in reports:
            print(report.render(), file=sys.stderr)


def run_action(as_json: bool, action: Callable[[], Any], closing: str = "nothing was changed.") -> Any:
    """Call an action; turn expected failures into reports and exit codes, never a traceback."""
    try:
        return action()
    except ReportError as exc:
        emit_reports(exc.reports, as_json)
        errors = sum(1 for r in exc.reports if r.severity is Severity.ERROR)
        if not as_json:
            applied = [a for r in exc.reports for a in r.payload.get("applied_before", [])]
            print(f"{errors} error(s); " + (f"applied before the failure: {len(applied)} changes, listed above "
                                            "and in --json as applied_before." if applied else closing),
                  file=sys.stderr)
        raise typer.Exit(int(exc.exit_code))
    except KeyboardInterrupt:
        print("interrupted; files are renamed into place only when complete", file=sys.stderr)
        raise typer.Exit(130)
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        if os.environ.get("APPLIANCE_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {exc.__class__.__name__}: {exc}\n"
              "this is a bug in appliance; run again with APPLIANCE_DEBUG=1 for the traceback", file=sys.stderr)
        raise typer.Exit(int(ExitCode.INTERNAL))
