"""Write every file that would land on each node into a directory tree, atomically.

The tree is built beside the target and renamed into place, so the target holds either the old
render or the complete new one. Layout: DIR/<node>/<absolute path>, DIR/cluster/..., and
DIR/manifest.json with each file's mode, owner, checksum and checker verdict.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from appliance.checkers import CheckRun
from appliance.plan import file_entry
from appliance.core.reports import Report, ReportError
from appliance.roles.model import RolePlan
from appliance.runner.atomic import atomic_write


def refuse_non_empty(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise ReportError([Report("OUTPUT_NOT_EMPTY", f"{out_dir} exists and is not empty", value=str(out_dir))])


def write_tree(out_dir: Path, plans: Iterable[RolePlan], checks: CheckRun | None, *, force: bool) -> dict[str, Any]:
    """Write the render to ``out_dir``; returns the manifest."""
    refuse_non_empty(out_dir, force)
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))  # mode 0700: holds secrets
    verdicts = {(o.node, o.path): o for o in (checks.outcomes if checks else [])}
    manifest: dict[str, Any] = {"files": [], "failover": {}}
    try:
        for plan in plans:
            for node in plan.nodes:
                for spec in node.files:
                    atomic_write(staging / node.node / spec.path.lstrip("/"), spec.content, spec.mode)
                    entry = {"node": node.node, "role": plan.role, **file_entry(spec)}
                    verdict = verdicts.get((node.node, spec.path))
                    entry["checked"] = None if verdict is None else {"ok": verdict.ok, "tool": verdict.tool}
                    manifest["files"].append(entry)
        for failed, preview in sorted((checks.previews if checks else {}).items()):
            name = f"cluster/failover-{failed}.txt"
            atomic_write(staging / name, (f"# crm_simulate: {failed} fails\n\nTransition Summary:\n"
                                          f"{preview.transition}\nRevised Cluster Status:\n"
                                          f"{preview.revised_status}").encode(), 0o644)
            manifest["failover"][failed] = name
        atomic_write(staging / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                     0o644)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.rename(out_dir, old)
    os.rename(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
