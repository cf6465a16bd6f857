"""Coded errors of the manager. The API turns them into 4xx answers; nothing is half-written.

The codes, their HTTP status and their fix are in the project's one catalogue (core/reports.py).
"""
from __future__ import annotations

from typing import Any

from .reports import CATALOGUE, fix_for


class CoreError(Exception):
    def __init__(self, code: str, message: str, **details: Any):
        if code not in CATALOGUE or CATALOGUE[code].http is None:
            raise ValueError(f"{code!r} is not a manager error code in core/reports.py")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return int(CATALOGUE[self.code].http)  # type: ignore[arg-type]

    @property
    def fix(self) -> str:
        return fix_for(self.code, **self.details)

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details, "fix": self.fix}}


def not_found(kind: str, ident: int | str) -> CoreError:
    return CoreError("NOT_FOUND", f"{kind} {ident} does not exist", kind=kind, id=ident)
