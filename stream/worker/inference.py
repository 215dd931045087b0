"""The inference thread: one thread runs the engine, stream batches before web requests.

One thread, because engines are not all safe to call from two threads at once (a fast tokenizer
raises "Already borrowed"). A priority queue, because /predict traffic must never make the stream
wait behind it: a stream batch waits for at most the one job already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

STREAM, WEB = 0, 1  # priorities: lower runs first


class InferenceThread:
    """Runs submitted calls one at a time on a single thread, lowest priority value first."""

    def __init__(self, name: str = "inference", nice: int = 0) -> None:
        """`nice` > 0 lowers this thread's CPU priority (Linux): a shadow model yields the cores to the stream."""
        self._nice = nice
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within a priority
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.busy_since: float | None = None  # time.monotonic() when the running job began
        self._thread.start()

    async def run(self, priority: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the inference thread, awaited from the event loop."""
        return await asyncio.wrap_future(self.submit(priority, fn, *args))

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future:
        """`fn(*args)` on the inference thread, from any thread; its future."""
        future: Future = Future()
        self._jobs.put((priority, next(self._order), future, fn, args))
        return future

    def queued(self, priority: int | None = None) -> int:
        """How many jobs wait (of `priority`, or all)."""
        with self._jobs.mutex:
            return sum(1 for job in self._jobs.queue if job[2] is not None and priority in (None, job[0]))

    def stuck_for(self, now: float | None = None) -> float:
        """Seconds the running job has been running (0 when idle)."""
        began = self.busy_since
        return 0.0 if began is None else (now if now is not None else time.monotonic()) - began

    def shutdown(self) -> None:
        """Finish the running and queued jobs, then stop the thread."""
        self._jobs.put((2, next(self._order), None, None, ()))
        self._thread.join()

    def _run(self) -> None:
        if self._nice:
            # Linux: a thread id is a PRIO_PROCESS target, and threads it starts inherit the value.
            # Elsewhere the shadow still drops what it cannot keep up with.
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while True:
            _, _, future, fn, args = self._jobs.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            self.busy_since = time.monotonic()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the awaiting coroutine, which decides
                future.set_exception(exc)
            finally:
                self.busy_since = None
