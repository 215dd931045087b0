"""The label-free accuracy estimate in `sentiment-stats`: per window, per model, mergeable."""

from __future__ import annotations

import pytest

from stream.events import SentimentStats
from stream.worker.stats import TumblingStats

SURE = {"negative": 0.9, "neutral": 0.05, "positive": 0.05}
UNSURE = {"negative": 0.2, "neutral": 0.3, "positive": 0.5}


def test_a_window_carries_the_estimate_of_its_scored_events() -> None:
    stats = TumblingStats(10.0, "w1")
    for i in range(4):
        stats.add_scored("negative", 0.9, 1.0, now=1000.0 + i, model_version="m@1", scores=SURE)
    stats.add_scored("positive", 0.5, 1.0, now=1005.0, model_version="m@2", scores=UNSURE)
    (window,) = stats.close_due(1010.0)
    # Expected correct: 4 x 0.9 + 0.5 over 5 events.
    assert window.estimated_accuracy == pytest.approx((4 * 0.9 + 0.5) / 5)
    support = {"negative": 4 * 0.9 + 0.2, "neutral": 4 * 0.05 + 0.3, "positive": 4 * 0.05 + 0.5}
    recall = (4 * 0.9 / support["negative"] + 0 + 0.5 / support["positive"]) / 3
    assert window.estimated_macro_recall == pytest.approx(recall)
    assert window.estimated["m@1"].events == 4 and window.estimated["m@2"].events == 1
    assert window.estimated["m@1"].correct == {"negative": pytest.approx(3.6)}
    again = SentimentStats.model_validate_json(window.model_dump_json())  # what the wire carries
    assert again.estimated_accuracy == window.estimated_accuracy and again.estimated == window.estimated


def test_a_window_without_probabilities_has_no_estimate() -> None:
    stats = TumblingStats(10.0, "w1")
    stats.add_scored("negative", 0.9, 1.0, now=1000.0)
    (window,) = stats.close_all()
    assert window.estimated_accuracy is None and window.estimated_macro_recall is None
    assert window.estimated == {}


def test_stats_published_before_the_estimate_still_parse() -> None:
    old = {
        "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:00:10Z", "worker": "w",
        "count": 1, "counts": {"negative": 1}, "mean_score": 0.9, "events_per_s": 0.1,
        "latency_p50_ms": 1.0, "latency_p95_ms": 1.0, "latency_p99_ms": 1.0,
    }  # fmt: skip
    assert SentimentStats.model_validate(old).estimated_accuracy is None


async def test_the_worker_counts_the_probabilities_of_what_it_delivered() -> None:
    from tests.stream.test_delivery import FakeBroker, FakeStream, batch, make_scorer

    scorer, exits = make_scorer(FakeBroker())
    await scorer.consume(FakeStream([batch((0, 0), (0, 1), (1, 0))]))
    (window,) = scorer.stats.close_all()
    # The constant engine says "neutral" with probability 1: a certain model is certainly right.
    assert window.estimated_accuracy == pytest.approx(1.0)
    assert window.estimated["constant@0"].events == 3
    assert exits == []
    scorer.close()
