"""`appliance serve`, kept apart from the rest of the CLI.

Pacemaker starts the manager in every failover; loading the whole command line first (inventory,
SSH, render) cost about 0.25 s of that outage, measured in the lab. appliance.main routes `serve`
here without importing appliance.cli.
"""
from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Optional

import typer

from appliance.output import run_action


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


def serve(config: Optional[Path] = typer.Option(None, "--config", "-c", dir_okay=False,
                                               help="manager.toml (default: the embedded default)"),
          bind: Optional[str] = typer.Option(None, help="Override [api] bind"),
          port: Optional[int] = typer.Option(None, help="Override [api] port"),
          log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", case_sensitive=False,
                                               help="text: UTC timestamp, level, logger, message; json: one "
                                                    "object a line"),
          access_log: bool = typer.Option(False, "--access-log", help="Log every request (never its headers)")) -> None:
    """Run the core manager: reconcile, then the controller loop and the HTTP API, until stopped."""
    from appliance.serve import serve as run_serve

    logging.getLogger().setLevel(logging.WARNING)
    run_action(False, lambda: run_serve(config, bind, port, log_format.value, access_log))


serve_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
serve_app.command()(serve)
