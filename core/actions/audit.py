"""The audit log: who changed what, when, and how it ended. Read by administrators and auditors.

A record holds the user, method, path, operation, entity and result code; never a request body
or a header, so no secret reaches it.
"""
from __future__ import annotations

import logging
from typing import Any

from ..authz import Actor
from . import Env

log = logging.getLogger("appliance.audit")


class Audit:
    def __init__(self, env: Env):
        self.env = env

    def record(self, actor: Actor | None, method: str, path: str, operation: str, status: int, code: str,
               entity: str = "", entity_id: int | None = None) -> None:
        """Write one record; a failure to write is logged, never turned into a failed request."""
        if entity_id is not None and not 0 <= entity_id < 2 ** 63:
            entity_id = None  # an id no column can hold (a refused request's): the path still names it
        row: dict[str, Any] = {
            "at": self.env.wall(), "user_id": actor.user_id if actor else None,
            "user_name": (actor.name if actor else "-")[:255], "method": method[:8], "path": path[:512],
            "operation": operation[:64], "entity": entity[:16], "entity_id": entity_id, "status": status,
            "code": code[:32]}
        try:
            with self.env.store.transaction() as tx:
                self.env.store.audit.insert(tx, row)
        except Exception:  # noqa: BLE001 (the database may be failing over; the log keeps the record)
            log.exception("audit record not written: %s", {k: v for k, v in row.items()})

    def page(self, actor: Actor, since: float, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        with self.env.store.read() as tx:
            rows, cursor = self.env.store.audit.page(tx, since, after, limit)
        return [{**{k: v for k, v in r.items() if k != "user_name"}, "user": r["user_name"]} for r in rows], cursor
