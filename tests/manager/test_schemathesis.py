"""schemathesis against the published OpenAPI spec of a running manager: no request may get a 5xx."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool
from tests.manager.test_serve_real import Serve, serve  # noqa: F401  (the fixture)


def test_no_generated_request_gets_a_server_error(serve, tmp_path):  # noqa: F811
    require_tool("qemu-img")
    schemathesis = Path(sys.executable).with_name("schemathesis")
    require_tool(str(schemathesis))
    token = (serve.home / "admin.token").read_text().strip()
    result = subprocess.run(
        [str(schemathesis), "run", f"http://127.0.0.1:{serve.port}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
         "--max-examples", "25", "--seed", "7", "--generation-deterministic"],
        capture_output=True, text=True, timeout=900)
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary.split("SUMMARY")[-1], summary
