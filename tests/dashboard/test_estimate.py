"""The live page's estimated accuracy: merged from the workers' stats windows, shown beside live accuracy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard.alerts import banner_text
from dashboard.summary import Filters, estimated_performance
from stream.events import Change, EstimatedPerformance, SentimentAlert, SentimentStats

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def window(worker: str, age_s: float, sums: dict[str, tuple[int, float]]) -> SentimentStats:
    """A stats window that ended `age_s` ago; `sums`: model_version -> (events, expected correct)."""
    end = NOW - timedelta(seconds=age_s)
    return SentimentStats(
        window_start=end - timedelta(seconds=10), window_end=end, worker=worker, count=1, counts={"x": 1},
        mean_score=0.5, events_per_s=0.1, latency_p50_ms=1, latency_p95_ms=1, latency_p99_ms=1,
        estimated={
            version: EstimatedPerformance(events=n, support={"x": float(n)}, correct={"x": correct})
            for version, (n, correct) in sums.items()
        },
    )  # fmt: skip


WINDOWS = [
    window("A", 3_600, {"m@1": (100, 10.0)}),  # an hour ago: outside "last 15 minutes"
    window("A", 20, {"m@1": (100, 90.0)}),
    window("B", 20, {"m@1": (50, 30.0), "m@2": (50, 20.0)}),
]


def test_the_estimate_merges_workers_and_models_inside_the_time_window() -> None:
    merged = estimated_performance(WINDOWS, NOW.timestamp(), Filters(window_s=900))
    assert merged.events == 200 and merged.accuracy == pytest.approx((90 + 30 + 20) / 200)
    everything = estimated_performance(WINDOWS, NOW.timestamp(), Filters())
    assert everything.events == 300


def test_the_model_filter_applies_to_the_estimate() -> None:
    merged = estimated_performance(WINDOWS, NOW.timestamp(), Filters(window_s=900, models=("m@2",)))
    assert merged.events == 50 and merged.accuracy == pytest.approx(0.4)


def test_no_windows_with_an_estimate_show_none() -> None:
    assert estimated_performance([], NOW.timestamp(), Filters()).accuracy is None


def test_the_kpis_show_estimated_and_measured_accuracy_apart() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        from dashboard.app import kpis_ui
        from dashboard.summary import Kpis

        kpis_ui(
            Kpis(
                events_per_s=1.0,
                scored=10,
                in_view=10,
                dead_lettered=0,
                shares={"positive": 1.0},
                latency_p50_ms=None,
                latency_p99_ms=None,
                lag=None,
                accuracy=None,
                labelled=0,
                estimated_accuracy=0.734,
                estimated_events=200,
                estimated_shares={"negative": 0.27, "neutral": 0.2, "positive": 0.53},
            )
        )

    at = AppTest.from_function(page).run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Live accuracy"] == "n/a"  # nothing labelled: measured accuracy is unknown
    assert shown["Estimated accuracy (no labels)"] == "73%"
    (estimated,) = [m for m in at.metric if m.label == "Estimated accuracy (no labels)"]
    assert "true mix as negative 27%, neutral 20%, positive 53%" in estimated.help


def test_the_banner_of_an_estimate_alert_says_it_comes_from_confidence() -> None:
    change = Change(what="estimated_accuracy", baseline=0.8, value=0.6, change=-0.2, z=-9.0)
    alert = SentimentAlert(
        kind="estimated_accuracy", since=NOW, window_start=NOW, window_end=NOW, events=200,
        changes=[change], summary="",
    )  # fmt: skip
    text = banner_text(alert)
    assert "Estimated accuracy" in text and "no labels" in text and "60%" in text and "usually 80%" in text
