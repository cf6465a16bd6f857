"""DryRunner: records what would run and be written, changes nothing.

Reads go to an optional inner runner, so `--check` against a live host can still gather facts.
"""
from __future__ import annotations

from typing import Sequence

from appliance.core.runner import Arg, Result, Runner, Secret, display


class DryRunner:
    def __init__(self, host: str, inner: Runner | None = None):
        self.host = host
        self.inner = inner
        self.commands: list[str] = []
        self.writes: list[tuple[str, int, int]] = []  # (path, mode, size)

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        shown = display(argv)
        self.commands.append(shown)
        return Result(shown, 0, "", "", self.host)

    def put(self, path: str, content: bytes, mode: int) -> None:
        self.writes.append((path, mode, len(content)))

    def read(self, path: str) -> bytes | None:
        return self.inner.read(path) if self.inner else None
