"""Estimated-accuracy alerts: a drop of the label-free estimate against its baseline, or below a floor."""

from __future__ import annotations

from datetime import timedelta

import pytest

from model.calibration import ExpectedConfusion
from stream.events import EstimatedPerformance, SentimentStats
from stream.monitor.detector import EstimateDetector, WindowCounts
from stream.monitor.settings import MonitorSettings
from tests.stream.test_monitor import START, WINDOW_S, feed, monitor_app, sent_kinds

COUNTS = {"negative": 40, "neutral": 80, "positive": 80}


def estimate(accuracy: float, events: int = 200) -> ExpectedConfusion:
    """Sums whose estimated accuracy is `accuracy` (every event predicted neutral, for simplicity)."""
    return ExpectedConfusion(
        events,
        {"negative": events * (1 - accuracy), "neutral": events * accuracy},
        {"neutral": events * accuracy},
    )


def window(i: int, accuracy: float | None, events: int = 200) -> WindowCounts:
    start = START + timedelta(seconds=WINDOW_S * i)
    sums = None if accuracy is None else estimate(accuracy, events)
    return WindowCounts(start, start + timedelta(seconds=WINDOW_S), COUNTS, sums)


def alerts_of(accuracies: list[float | None], events: int = 200, **settings) -> list[tuple[int, object]]:
    detector = EstimateDetector(MonitorSettings(stats_window_s=WINDOW_S, **settings))
    return [(i, a) for i, acc in enumerate(accuracies) for a in detector.observe(window(i, acc, events))]


def test_a_drop_of_the_estimate_raises_one_alert_at_once() -> None:
    steady = [0.80 + 0.01 * (-1) ** i for i in range(12)]
    raised = alerts_of(steady + [0.65] * 5)
    assert [i for i, _ in raised] == [12]
    (change,) = raised[0][1].changes
    assert raised[0][1].kind == "estimated_accuracy" and change.what == "estimated_accuracy"
    assert change.baseline == pytest.approx(0.80, abs=0.01) and change.value == pytest.approx(0.65)
    assert "estimated accuracy (no labels) 65% (baseline 80%" in raised[0][1].summary


def test_a_steady_estimate_and_small_wobbles_raise_nothing() -> None:
    assert alerts_of([0.80 + 0.015 * (-1) ** i for i in range(60)]) == []


def test_a_window_below_the_floor_alerts_without_a_baseline() -> None:
    assert [i for i, _ in alerts_of([0.9, 0.6, 0.6, 0.9, 0.6], estimate_floor=0.7)] == [1, 4]


def test_windows_with_few_events_or_no_estimate_are_not_judged() -> None:
    assert alerts_of([0.9, 0.2, None, 0.2], events=10, estimate_floor=0.7) == []
    assert alerts_of([None] * 3, estimate_floor=0.7) == []


def stats_event(worker: str, i: int, accuracy: float) -> bytes:
    start = START + timedelta(seconds=WINDOW_S * i)
    sums = estimate(accuracy, 100)
    return SentimentStats(
        window_start=start, window_end=start + timedelta(seconds=WINDOW_S), worker=worker, count=100,
        counts={label: n // 2 for label, n in COUNTS.items()}, mean_score=accuracy, events_per_s=10,
        latency_p50_ms=5, latency_p95_ms=9, latency_p99_ms=12, estimated_accuracy=accuracy,
        estimated={"m@1": EstimatedPerformance(events=sums.events, support=sums.support, correct=sums.correct)},
    ).model_dump_json().encode()  # fmt: skip


def test_the_monitor_merges_two_workers_estimates_and_alerts_once() -> None:
    monitor = monitor_app()
    # Worker B's model goes bad from window 12 on: the merged estimate falls from 0.85 to 0.60.
    records = [
        (0, stats_event(worker, i, 0.85 if worker == "A" or i < 12 else 0.35))
        for i in range(16)
        for worker in ("A", "B")
    ]
    feed(monitor, records)
    assert sent_kinds(monitor) == ["estimated_accuracy"]
    (alert,) = monitor.app.producer.sent
    assert alert.window_start == START + timedelta(seconds=WINDOW_S * 12)
    assert alert.changes[0].value == pytest.approx(0.60) and alert.changes[0].baseline == pytest.approx(0.85)


def test_the_monitor_estimates_under_shift_from_the_workers_cells() -> None:
    from tests.model.test_estimate_under_shift import identity_shift
    from tests.stream.test_stats_estimate import airline_like_rows

    monitor = monitor_app()
    rows = airline_like_rows(800, seed=2)
    halves = [ExpectedConfusion(), ExpectedConfusion()]
    whole = ExpectedConfusion()
    for i, scores in enumerate(rows):
        halves[i % 2].add(scores, identity_shift())
        whole.add(scores, identity_shift())
    start = START
    for worker, sums in zip("AB", halves, strict=True):
        monitor.merge(
            SentimentStats(
                window_start=start, window_end=start + timedelta(seconds=WINDOW_S), worker=worker,
                count=sums.events, counts={"negative": 1, "neutral": 1, "positive": 1}, mean_score=0.5,
                events_per_s=1, latency_p50_ms=1, latency_p95_ms=1, latency_p99_ms=1,
                estimated={"m@1": EstimatedPerformance(
                    events=sums.events, support=sums.support, correct=sums.correct, cells=sums.cells,
                    shares=sums.shares,
                )},
            )
        )  # fmt: skip
    read = monitor.window(int(start.timestamp() // WINDOW_S)).estimate
    assert read is not None and read.events == len(rows)
    assert read.cells == whole.cells
    assert read.accuracy == pytest.approx(whole.accuracy)
    assert abs(read.accuracy - sum(read.correct.values()) / read.events) > 0.01  # so not CBPE
