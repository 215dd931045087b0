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


def airline_like_rows(n: int = 600, seed: int = 0) -> list[dict[str, float]]:
    from tests.model.test_estimate_under_shift import AIRLINE, rows_as_scores, scored

    return rows_as_scores(scored(AIRLINE, n, seed)[0])


def test_a_model_with_a_shift_fit_publishes_cells_and_the_estimate_under_shift() -> None:
    from model.calibration import ExpectedConfusion
    from tests.model.test_estimate_under_shift import identity_shift

    stats = TumblingStats(10.0, "w1")
    stats.know("m@1", identity_shift())
    stats.know("vader@3", None)  # no fit: CBPE sums only
    rows = airline_like_rows()
    direct = ExpectedConfusion()
    for i, scores in enumerate(rows):
        label = max(scores, key=scores.__getitem__)
        stats.add_scored(label, scores[label], 1.0, now=1000.0 + i / 100, model_version="m@1", scores=scores)
        direct.add(scores, identity_shift())
    (window,) = stats.close_due(1010.0)
    published = window.estimated["m@1"]
    assert sum(published.cells.values()) == published.events == len(rows)
    assert published.shares == {"negative": 0.16, "neutral": 0.45, "positive": 0.39}
    assert window.estimated_accuracy == pytest.approx(direct.accuracy)
    cbpe = sum(published.correct.values()) / published.events
    assert abs(window.estimated_accuracy - cbpe) > 0.02  # the window's estimate is not CBPE's
    again = SentimentStats.model_validate_json(window.model_dump_json())  # what the wire carries
    assert again.estimated["m@1"].sums().accuracy == pytest.approx(direct.accuracy)


def test_windows_of_two_workers_merge_to_the_estimate_of_all_their_rows() -> None:
    from tests.model.test_estimate_under_shift import identity_shift

    rows = airline_like_rows(900, seed=1)
    workers = [TumblingStats(10.0, name) for name in ("w1", "w2")]
    everything = TumblingStats(10.0, "all")
    for stats in (*workers, everything):
        stats.know("m@1", identity_shift())
    for i, scores in enumerate(rows):
        label = max(scores, key=scores.__getitem__)
        for stats in (workers[i % 2], everything):
            stats.add_scored(label, scores[label], 1.0, now=1000.0, model_version="m@1", scores=scores)
    (a,), (b,), (whole,) = (stats.close_all() for stats in (*workers, everything))
    merged = a.estimated["m@1"].sums()
    merged.merge(b.estimated["m@1"].sums())
    assert merged.accuracy == pytest.approx(whole.estimated_accuracy)
    assert merged.macro_recall == pytest.approx(whole.estimated_macro_recall)


async def test_the_worker_counts_cells_for_a_model_whose_bundle_has_the_shift_fit() -> None:
    from model.calibration import LabelShift
    from model.engines.select import load_engine
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.serving import ServingModels
    from tests.stream.test_delivery import FakeBroker, FakeStream, batch, make_scorer

    engine = load_engine(None, backend="constant")
    engine.label_shift = LabelShift(engine.labels, [1.0] * 3, 1.0, [0.0] * 3, [0.2, 0.5, 0.3])
    models = ServingModels(engine, WorkerMetrics(), TumblingStats(10.0, "w"))  # registers the fit
    scorer, exits = make_scorer(FakeBroker(), models=models)
    await scorer.consume(FakeStream([batch((0, 0), (0, 1), (1, 0))]))
    (window,) = scorer.stats.close_all()
    published = window.estimated["constant@0"]
    # the constant engine says neutral with probability 1: one cell, all of its weight on neutral
    assert published.cells == {"neutral|0,40,0": 3}
    assert published.shares == {"negative": 0.2, "neutral": 0.5, "positive": 0.3}
    assert window.estimated_accuracy == pytest.approx(1.0) and exits == []
    scorer.close()
