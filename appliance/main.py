"""Entry point of the `appliance` command: `serve` goes straight to appliance.cli_serve (see there why)."""
from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        from appliance.cli_serve import serve_app

        serve_app(args=sys.argv[2:], prog_name="appliance serve")
        return
    from appliance.cli import main as cli_main

    cli_main()
