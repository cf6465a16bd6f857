"""RecordingRunner: a scripted host for tests. Each call must match the next expectation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from appliance.core.runner import Arg, CommandFailed, Result, Secret, display


@dataclass(frozen=True)
class Expected:
    argv: str  # display form, as a reader of the log would see it
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


class RecordingRunner:
    def __init__(self, host: str, expected: Sequence[Expected] = (), files: dict[str, bytes] | None = None):
        self.host = host
        self._expected = list(expected)
        self.files: dict[str, bytes] = dict(files or {})
        self.modes: dict[str, int] = {}
        self.calls: list[str] = []

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        shown = display(argv)
        self.calls.append(shown)
        if not self._expected:
            raise AssertionError(f"{self.host}: unexpected command `{shown}`")
        want = self._expected.pop(0)
        if want.argv != shown:
            raise AssertionError(f"{self.host}: expected `{want.argv}`, got `{shown}`")
        result = Result(shown, want.returncode, want.stdout, want.stderr, self.host)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def put(self, path: str, content: bytes, mode: int) -> None:
        self.files[path] = content
        self.modes[path] = mode

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def assert_done(self) -> None:
        if self._expected:
            raise AssertionError(f"{self.host}: expected commands never ran: {[e.argv for e in self._expected]}")
