"""Windowed aggregates per worker: count per label, mean score, throughput, latency percentiles, and
accuracy estimated without labels from the calibrated probabilities (the sums and cells of
`model.calibration.ExpectedConfusion`).

Why not a Faust windowed table: a table needs a changelog topic, Faust's own partition assignor
and state recovery on every rebalance, which would make workers stateful (no scale-to-zero) and
cost throughput, and latency percentiles do not merge from per-key counters anyway. Each worker
therefore keeps its own tumbling windows in memory and publishes one `SentimentStats` per closed
window, named by `worker`; consumers sum the counts across workers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from model.calibration import ExpectedConfusion, LabelShift
from stream.events import EstimatedPerformance, ModelAccuracy, SentimentStats, ShadowStats


@dataclass
class Window:
    """What one tumbling window has seen so far."""

    counts: Counter = field(default_factory=Counter)
    score_sum: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    latencies_by_model: dict[str, list[float]] = field(default_factory=dict)  # a canary's latency gate
    dead_lettered: int = 0
    dead_by_model: Counter = field(default_factory=Counter)  # inference-stage dead letters per model
    by_model: Counter = field(default_factory=Counter)
    accuracy: dict[str, ModelAccuracy] = field(default_factory=dict)
    shadow: ShadowStats | None = None
    estimated: dict[str, ExpectedConfusion] = field(default_factory=dict)


class TumblingStats:
    """Tumbling windows of `size_s` seconds on the processing clock (epoch-aligned)."""

    def __init__(self, size_s: float, worker: str) -> None:
        self.size_s = size_s
        self.worker = worker
        self.windows: dict[int, Window] = {}
        self.model_error: str | None = None  # the last deployment rejected (stream/worker/serving.py)
        self.shifts: dict[str, LabelShift] = {}  # model_version -> its fit for the estimate under shift

    def know(self, model_version: str, shift: LabelShift | None) -> None:
        """Count `model_version`'s events into cells with `shift` from now on (None: CBPE sums only)."""
        if shift is not None:
            self.shifts[model_version] = shift

    def add_scored(
        self,
        label: str,
        score: float,
        latency_ms: float,
        now: float,
        model_version: str = "",
        true_label: str | None = None,
        scores: dict[str, float] | None = None,
    ) -> None:
        """Count one scored event at processing time `now` (epoch seconds); `scores` (label ->
        probability) feed the label-free accuracy estimate."""
        window = self._window(now)
        window.counts[label] += 1
        window.score_sum += score
        window.latencies_ms.append(latency_ms)
        window.latencies_by_model.setdefault(model_version, []).append(latency_ms)
        window.by_model[model_version] += 1
        if true_label is not None:
            _count_hit(window.accuracy.setdefault(model_version, ModelAccuracy()), label, true_label)
        if scores:
            window.estimated.setdefault(model_version, ExpectedConfusion()).add(
                scores, self.shifts.get(model_version)
            )

    def add_shadow(
        self, champion: str, challenger: str, pairs: list[tuple[str, str | None, str | None]], now: float
    ) -> None:
        """Count (champion label, challenger label or None, true label or None) triples."""
        shadow = self._shadow(champion, challenger, now)
        for mine, theirs, truth in pairs:
            if theirs is None:
                continue
            shadow.compared += 1
            shadow.agreed += mine == theirs
            row = shadow.confusion.setdefault(mine, {})
            row[theirs] = row.get(theirs, 0) + 1
            if truth is not None:
                _count_hit(shadow.challenger_accuracy, theirs, truth)

    def add_shadow_dropped(self, champion: str, challenger: str, count: int, now: float) -> None:
        """Count events the shadow skipped because it was busy."""
        self._shadow(champion, challenger, now).dropped += count

    def _shadow(self, champion: str, challenger: str, now: float) -> ShadowStats:
        window = self._window(now)
        if window.shadow is None or (window.shadow.champion, window.shadow.challenger) != (
            champion,
            challenger,
        ):
            window.shadow = ShadowStats(champion=champion, challenger=challenger)  # a swap starts afresh
        return window.shadow

    def add_dead_letters(self, count: int, now: float) -> None:
        """Count dead-lettered events at processing time `now`."""
        self._window(now).dead_lettered += count

    def add_model_dead_letters(self, model_version: str, count: int, now: float) -> None:
        """Count inputs dead-lettered at the inference stage of a batch `model_version` scored (its
        own failures; call `add_dead_letters` for the window's total as well)."""
        if count:
            self._window(now).dead_by_model[model_version] += count

    def close_due(self, now: float) -> list[SentimentStats]:
        """Remove and summarise every window that ended at or before `now`."""
        due = sorted(index for index in self.windows if (index + 1) * self.size_s <= now)
        return [self._summary(index, self.windows.pop(index)) for index in due]

    def close_all(self) -> list[SentimentStats]:
        """Summarise every window, open ones included (at shutdown)."""
        return self.close_due(math.inf)

    def _window(self, now: float) -> Window:
        return self.windows.setdefault(int(now // self.size_s), Window())

    def _summary(self, index: int, window: Window) -> SentimentStats:
        count = sum(window.counts.values())
        overall = ExpectedConfusion()
        for sums in window.estimated.values():
            overall.merge(sums)
        p50, p95, p99 = np.percentile(window.latencies_ms, [50, 95, 99]) if count else (0.0, 0.0, 0.0)
        return SentimentStats(
            window_start=datetime.fromtimestamp(index * self.size_s, UTC),
            window_end=datetime.fromtimestamp((index + 1) * self.size_s, UTC),
            worker=self.worker,
            count=count,
            counts=dict(window.counts),
            mean_score=window.score_sum / count if count else 0.0,
            events_per_s=(count + window.dead_lettered) / self.size_s,
            latency_p50_ms=float(p50),
            latency_p95_ms=float(p95),
            latency_p99_ms=float(p99),
            dead_lettered=window.dead_lettered,
            by_model=dict(window.by_model),
            accuracy=window.accuracy,
            shadow=window.shadow,
            model_error=self.model_error,
            estimated_accuracy=overall.accuracy,
            estimated_macro_recall=overall.macro_recall,
            estimated={version: _published(sums) for version, sums in window.estimated.items()},
            latency_p99_by_model={
                version: float(np.percentile(values, 99))
                for version, values in window.latencies_by_model.items()
            },
            dead_lettered_by_model=dict(window.dead_by_model),
        )


def _published(sums: ExpectedConfusion) -> EstimatedPerformance:
    return EstimatedPerformance(
        events=sums.events, support=sums.support, correct=sums.correct, cells=sums.cells, shares=sums.shares
    )


def _count_hit(accuracy: ModelAccuracy, label: str, true_label: str) -> None:
    accuracy.labelled += 1
    accuracy.correct += label.lower() == true_label.lower()
