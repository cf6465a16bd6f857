"""Time as a dependency: real for the service, virtual for tests and the HA simulator.

`now()` is monotonic: for intervals inside one process. `wall()` is UTC epoch seconds: for anything
persisted or compared across nodes (the two frontends have different uptimes, so a monotonic time
stored by one is meaningless to the other after a failover).
"""
from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class VirtualClock:
    """Advances only when told to: deterministic waits in tests. `uptime` is the monotonic origin,
    `epoch` the wall time at the start, so two nodes can share a wall clock and differ in uptime."""

    def __init__(self, start: float = 0.0, epoch: float = 1_790_000_000.0):
        self._now = start
        self._epoch = epoch - start

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch + self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)
