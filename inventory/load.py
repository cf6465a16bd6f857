"""Load and validate a site: inventory TOML + secrets. Nothing here contacts a host."""
from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from ..core.reports import Report, ReportError, Severity, errors_in
from .checks import check_inventory
from .schema import Inventory
from .secrets import Secrets, load_secrets, placeholder_secrets

MAX_INVENTORY_BYTES = 1 << 20

# pydantic error type -> our report code
_PYDANTIC_CODES = {
    "missing": "INVENTORY_MISSING_FIELD",
    "extra_forbidden": "INVENTORY_UNKNOWN_FIELD",
    "literal_error": "INVENTORY_INVALID_CHOICE",
    "greater_than_equal": "INVENTORY_OUT_OF_RANGE",
    "less_than_equal": "INVENTORY_OUT_OF_RANGE",
    "too_short": "INVENTORY_OUT_OF_RANGE",
    "too_long": "INVENTORY_OUT_OF_RANGE",
}


@dataclass(frozen=True)
class Site:
    """A validated inventory with its secrets (real, or placeholders for an offline plan)."""

    inventory: Inventory
    secrets: Secrets
    path: Path
    warnings: tuple[Report, ...] = ()
    installer_prefix: str | None = None  # the installer's own Python environment (the lab runs the manager from it)

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def parse_inventory(data: Any) -> tuple[Inventory | None, list[Report]]:
    """Validate decoded TOML data: structure first, then cross-field checks. Pure."""
    if not isinstance(data, dict):
        return None, [Report("INVENTORY_WRONG_TYPE", "the inventory must be a TOML table", value=type(data).__name__)]
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        return None, [_from_pydantic(e) for e in exc.errors(include_url=False)]
    except RecursionError:
        return None, [Report("INVENTORY_WRONG_TYPE", "the inventory nests too deeply to be an inventory")]
    return inventory, check_inventory(inventory)


def read_inventory(path: Path) -> tuple[Inventory | None, list[Report]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Report("INVENTORY_UNREADABLE", f"cannot read {path}: {exc.strerror or exc}",
                             value=str(path))]
    if len(raw) > MAX_INVENTORY_BYTES:
        return None, [Report("INVENTORY_UNREADABLE", f"{path} is larger than {MAX_INVENTORY_BYTES} bytes",
                             value=len(raw))]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, [Report("INVENTORY_NOT_TOML", f"{path} is not UTF-8 text (byte {exc.start})", value=str(path))]
    except tomllib.TOMLDecodeError as exc:
        return None, [Report("INVENTORY_NOT_TOML", f"{path} is not valid TOML: {exc}", value=str(path))]
    except RecursionError:
        return None, [Report("INVENTORY_NOT_TOML", f"{path} nests too deeply", value=str(path))]
    return parse_inventory(data)


def load_site(path: Path, secrets_path: Path | None = None, *, require_secrets: bool = True,
              env: Mapping[str, str] | None = None) -> Site:
    """Load inventory and secrets, validate all of it, raise ReportError once with every problem.

    With ``require_secrets=False`` (offline plans) a site without any secrets gets placeholders and
    a warning; secrets that exist but are wrong (bad mode, bad value) are still errors.
    """
    inventory, reports = read_inventory(path)
    if inventory is None or errors_in(reports):
        raise ReportError(reports)
    devices = [d.name for d in inventory.fencing.devices]
    if secrets_path is None and inventory.secrets_file:
        secrets_path = (path.parent / inventory.secrets_file)
    secrets, secret_reports = load_secrets(secrets_path, devices, env, need_tls=inventory.proxy.tls.generate,
                                           need_monitoring=inventory.manager.monitoring == "push")
    if secrets is None:
        nothing_given = all(r.code == "SECRETS_MISSING" for r in secret_reports)
        if require_secrets or not nothing_given:
            raise ReportError(reports + secret_reports)
        reports.append(Report("SECRETS_MISSING", "no secrets loaded: the plan shows placeholders, and render or "
                              "apply will need them", path="secrets_file",
                              value=str(secrets_path) if secrets_path else None, severity=Severity.WARNING))
        secrets = placeholder_secrets(devices)
    return Site(inventory=inventory, secrets=secrets, path=path, warnings=tuple(reports),
                installer_prefix=sys.prefix if inventory.lab.enabled else None)


def _from_pydantic(error: Mapping[str, Any]) -> Report:
    kind = str(error.get("type", ""))
    code = kind if kind.startswith("INVENTORY_") else _PYDANTIC_CODES.get(kind, "INVENTORY_WRONG_TYPE")
    loc = _path(error.get("loc", ()))
    value = error.get("input")
    if code == "INVENTORY_MISSING_FIELD":
        value = None
    message = str(error.get("msg", "invalid"))
    if code == "INVENTORY_UNKNOWN_FIELD":
        message = f"unknown field {str(loc.rsplit('.', 1)[-1])!r}"
    elif code == "INVENTORY_MISSING_FIELD":
        message = "required field is missing"
    elif code == "INVENTORY_WRONG_TYPE" and not kind.startswith("INVENTORY_"):
        message = f"{message} (got {type(value).__name__})"
    if isinstance(value, (dict, list)):
        value = f"<{type(value).__name__}>"  # do not echo whole tables back
    return Report(code, message, path=loc, value=value)


def _path(loc: Any) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic appends the branch name of a union ("str", "function-after[...]"): not ours to show.
            text = str(part)
            if text in ("str", "int", "bool") or text.startswith(("function-", "literal[")):
                continue
            out += f".{text}" if out else text
    return out
