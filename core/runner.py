"""The runner seam: the only way code outside the composition root touches a machine.

A Runner is bound to one host. Commands are argv lists (never a shell string); an argument
wrapped in ``Secret`` reaches the process but is shown as ``********`` in logs and errors.
"""
from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, TypeVar, Union

T = TypeVar("T")


class Secret:
    """An argv element or stdin payload that must never be logged."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


Arg = Union[str, Secret]


def reveal(argv: Sequence[Arg]) -> list[str]:
    """The argv to execute."""
    return [a.value if isinstance(a, Secret) else a for a in argv]


def display(argv: Sequence[Arg]) -> str:
    """The argv to show: shell-quoted, secrets masked."""
    return shlex.join("********" if isinstance(a, Secret) else a for a in argv)


@dataclass(frozen=True)
class Result:
    argv: str  # display form, secrets masked
    returncode: int
    stdout: str
    stderr: str
    host: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(Exception):
    """A command exited non-zero where the caller required success."""

    def __init__(self, result: Result):
        self.result = result
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        super().__init__(f"{result.host}: `{result.argv}` exited {result.returncode}\n{tail}")


class Runner(Protocol):
    host: str

    def run(self, argv: Sequence[Arg], *, stdin: str | Secret | None = None, check: bool = True,
            timeout: float | None = None, env: dict[str, str] | None = None) -> Result:
        """Run argv on the host; raise CommandFailed on non-zero exit when check is true."""

    def put(self, path: str, content: bytes, mode: int) -> None:
        """Write a file atomically (temp file in the same directory, then rename) with this mode."""

    def read(self, path: str) -> bytes | None:
        """A file's content, or None when it does not exist."""


def on_each(work: Sequence[tuple[str, Callable[[], T]]]) -> list[tuple[str, T | None, BaseException | None]]:
    """Run each host's part at once, one thread per host, and wait for all of them.

    A runner is bound to one host and used by one thread at a time, so hosts never share a
    connection. Under QEMU TCG every command costs about a second of round trip and a first install
    runs hundreds: done node by node, the pair took twice as long as either node. The call is a
    barrier (nothing returns until every host has finished its part), and the outcomes come back in
    the order given, each with its value or the exception it raised, so callers stay deterministic.
    """
    if len(work) <= 1:
        outcomes = []
        for host, part in work:
            try:
                outcomes.append((host, part(), None))
            except Exception as error:  # noqa: BLE001 - handed back to the caller, in order
                outcomes.append((host, None, error))
        return outcomes
    with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="on-each") as pool:
        futures = [(host, pool.submit(part)) for host, part in work]
        return [(host, None, f.exception()) if f.exception() else (host, f.result(), None) for host, f in futures]
