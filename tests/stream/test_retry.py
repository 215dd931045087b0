"""The one retry policy (stream/retry.py): pauses that grow and cap, a deadline that ends the trying."""

from __future__ import annotations

import pytest

from stream.retry import Backoff


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pauses_grow_by_the_factor_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 5.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert Backoff(1.0, 100.0, factor=3.0).delay(3) == 9.0


def test_without_a_cap_every_pause_is_the_first() -> None:
    assert {Backoff(5.0).delay(n) for n in (1, 2, 50)} == {5.0}


def test_a_retry_that_runs_for_weeks_never_overflows() -> None:
    assert Backoff(5.0, 300.0).delay(1_000_000) == 300.0


def test_without_a_deadline_the_trying_never_expires() -> None:
    clock = Clock()
    attempts = Backoff(1.0).start(clock=clock)
    clock.now += 1e9
    assert not attempts.expired() and attempts.remaining_s() == float("inf")


def test_the_deadline_counts_from_the_start_or_from_when_it_began() -> None:
    clock = Clock()
    attempts = Backoff(1.0, deadline_s=10.0).start(clock=clock)
    clock.now += 10.0
    assert not attempts.expired() and attempts.remaining_s() == 0.0
    clock.now += 0.1
    assert attempts.expired()
    assert Backoff(1.0, deadline_s=10.0).start(began=clock.now - 11, clock=clock).expired()


async def test_each_wait_takes_the_next_pause() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    attempts = Backoff(0.5, 5.0).start()
    assert attempts.pause_s == 0.5
    for _ in range(5):
        await attempts.wait(sleep)
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0] and attempts.pause_s == 5.0


async def test_a_deadline_ends_a_retry_loop_with_its_last_error() -> None:
    """The shape every caller writes: try, give up with the last error once expired, else wait."""
    clock, tried = Clock(), []

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    async def send() -> None:
        tried.append(clock.now)
        raise ConnectionError(f"attempt {len(tried)}")

    attempts = Backoff(1.0, 4.0, deadline_s=10.0).start(clock=clock)
    with pytest.raises(ConnectionError, match="attempt 5"):
        while True:
            try:
                await send()
            except ConnectionError:
                if attempts.expired():
                    raise
                await attempts.wait(sleep)
    assert [t - 100.0 for t in tried] == [0.0, 1.0, 3.0, 7.0, 11.0]


def test_the_blocking_wait_sleeps_the_same_pauses(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("stream.retry.time.sleep", slept.append)
    attempts = Backoff(0.25, 1.0).start()
    for _ in range(4):
        attempts.wait_sync()
    assert slept == [0.25, 0.5, 1.0, 1.0]
