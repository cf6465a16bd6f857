"""Hooks: commands (or built-in functions) run when a VM or host enters a state.

`on` is "VM:<STATE>" or "HOST:<STATE>" ("VM:*" for every VM change). Arguments may contain $VMID,
$HID and $STATE. Commands run through the runner, off the controller's thread, with a timeout; every
run is logged with its exit code. A hook never blocks or breaks the lifecycle.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .runner import Runner

log = logging.getLogger("appliance.hooks")


@dataclass(frozen=True)
class Hook:
    on: str
    command: tuple[str, ...]
    timeout: float = 30.0

    def matches(self, kind: str, state: str) -> bool:
        hook_kind, _, hook_state = self.on.partition(":")
        return hook_kind == kind and hook_state in ("*", state)


class Hooks:
    def __init__(self, hooks: list[Hook], runner: Runner | None, max_workers: int = 4):
        self.hooks = hooks
        self.runner = runner
        self.builtins: list[tuple[str, Callable[[int, str], None]]] = []
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hook")
        self.pending: list[Future] = []

    def register(self, on: str, function: Callable[[int, str], None]) -> None:
        """A built-in hook, called on the controller's thread (it changes manager state)."""
        self.builtins.append((on, function))

    def fire(self, kind: str, ident: int, state: str) -> None:
        for on, function in self.builtins:
            if Hook(on, ()).matches(kind, state):
                function(ident, state)
        if self.runner is None:
            return
        for hook in self.hooks:
            if hook.matches(kind, state):
                argv = [a.replace("$VMID" if kind == "VM" else "$HID", str(ident)).replace("$STATE", state)
                        for a in hook.command]
                self.pending = [f for f in self.pending if not f.done()]
                self.pending.append(self._pool.submit(self._run, hook, argv))

    def _run(self, hook: Hook, argv: list[str]) -> int:
        assert self.runner is not None
        result = self.runner.run(argv, check=False, timeout=hook.timeout)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "hook %s: `%s` exited %d %s", hook.on, result.argv, result.returncode,
                (result.stderr or result.stdout).strip()[-200:])
        return result.returncode

    def wait(self) -> None:
        for future in list(self.pending):
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
