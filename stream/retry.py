"""The one retry policy: how long to wait between attempts, and when to stop trying.

`Backoff` is the policy (frozen, a module constant or built from settings); `start()` gives one
run of it, `Attempts`, which each loop drives in its own words: try, look at `expired()`, log,
`await wait()` (or `wait_sync()` on a thread). Every loop that retries or polls uses it: the
worker's sends and transactions, its control-topic follower and model reloads, the dashboard's
reconnects, the demo's and the broker's start-up waits, the supervisors' polls.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Pause `first_s`, then `factor` times longer each attempt up to `max_s` (None: no growth, every
    pause is `first_s`); give up once `deadline_s` has passed since the start (None: never)."""

    first_s: float
    max_s: float | None = None
    factor: float = 2.0
    deadline_s: float | None = None

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (1, 2, ...)."""
        cap = self.first_s if self.max_s is None else self.max_s
        # The exponent stops growing long after the cap is reached: a float power would overflow.
        return min(self.first_s * self.factor ** min(attempt - 1, 100), cap)

    def start(self, began: float | None = None, clock: Callable[[], float] = time.monotonic) -> Attempts:
        """One run of this policy; its deadline counts from `began` (a `clock()` reading; default: now)."""
        return Attempts(self, clock() if began is None else began, clock)


class Attempts:
    """One run of a `Backoff`: the pauses taken so far and the time left."""

    def __init__(self, backoff: Backoff, began: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff, self.clock = backoff, clock
        self.deadline = math.inf if backoff.deadline_s is None else began + backoff.deadline_s
        self.waited = 0  # pauses taken: the next one is `backoff.delay(waited + 1)`

    def expired(self) -> bool:
        """The deadline has passed: stop trying (and raise or report the last error)."""
        return self.clock() > self.deadline

    def remaining_s(self) -> float:
        """Seconds left before the deadline (inf without one; negative once it passed)."""
        return self.deadline - self.clock()

    @property
    def pause_s(self) -> float:
        """The pause the next `wait` takes (for a log line that says it before waiting)."""
        return self.backoff.delay(self.waited + 1)

    async def wait(self, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Take the next pause (`sleep`: e.g. one that wakes early when its loop is stopped)."""
        pause = self.pause_s
        self.waited += 1
        await sleep(pause)

    def wait_sync(self) -> None:
        """Take the next pause, blocking the thread."""
        pause = self.pause_s
        self.waited += 1
        time.sleep(pause)
