"""Coded errors of the manager. The API turns them into 4xx answers; nothing is half-written."""
from __future__ import annotations

from typing import Any

STATUS = {
    "REQUEST_INVALID": 422,
    "VALUE_INVALID": 422,
    "EXPRESSION_INVALID": 422,
    "NOT_FOUND": 404,
    "NAME_TAKEN": 409,
    "IN_USE": 409,
    "STATE_INVALID": 409,
    "NO_ADDRESS": 409,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "BACKEND_FAILED": 502,
}


class CoreError(Exception):
    def __init__(self, code: str, message: str, **details: Any):
        if code not in STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(kind: str, ident: int | str) -> CoreError:
    return CoreError("NOT_FOUND", f"{kind} {ident} does not exist", kind=kind, id=ident)
