"""Canary gates: from `sentiment-stats` windows alone, promote the candidate, roll it back, or wait.

A canary (`sentistream deploy BUNDLE --canary 0.1`) serves the candidate on a share of the input
partitions and shadow-scores the champion's share with it. Every worker publishes its windows to
`sentiment-stats`; `evaluate` reads them and decides. It is pure and total (no I/O, no clock: `now`
is given), so the command that watches a canary, `deploy --show` and the dashboard all give the same
verdict for the same windows.

Four gates, each a threshold and a minimum number of events (`Gates.min_events`):

- `agreement`: of the champion's events the candidate shadow-scored, the share it labelled the same;
- `estimated_accuracy`: the candidate's label-free accuracy estimate (the merged sums and cells in
  `estimated`, `model.calibration.ExpectedConfusion`)
  is at most `accuracy_drop` below the champion's over the same windows (a drop, not a floor: the
  estimate's level depends on the data, its gap between two models on the same stream much less);
- `latency_p99`: the candidate's p99 from input to score (`latency_p99_by_model`, windows weighted by
  their events; percentiles do not merge exactly, a weighted mean of them is the usual proxy);
- `dead_letter_rate`: inputs dead-lettered at the `inference` stage of the candidate's batches,
  over the inputs it was given (decode and validate failures are the input's, not the model's).

A gate short of its events is pending. A gate that fails with enough events rolls the candidate back
at once (a bad model should serve as little as possible); all gates passing promotes it; no decision
within `timeout_s` rolls it back (a canary without traffic must not stay half-deployed forever).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from model.calibration import ExpectedConfusion
from stream.events import GateName, GateResult, Gates, Outcome, SentimentStats, Verdict

__all__ = ["GateResult", "Gates", "Verdict", "canary_partitions", "evaluate"]


def evaluate(
    gates: Gates,
    candidate: str,
    windows: Iterable[SentimentStats],
    started_at: datetime,
    now: datetime,
) -> Verdict:
    """The verdict on the canary of `candidate` (a model_version) from the stats windows that ended
    after `started_at` (a window counted twice, by worker and start, counts once)."""
    seen = _since(windows, started_at)
    results = [
        _agreement(gates, candidate, seen),
        _estimated_accuracy(gates, candidate, seen),
        _latency(gates, candidate, seen),
        _dead_letters(gates, candidate, seen),
    ]
    failed = [r for r in results if r.outcome == "fail"]
    if failed:
        return Verdict(decision="rollback", reason="; ".join(r.describe() for r in failed), gates=results)
    pending = [r for r in results if r.outcome == "pending"]
    if not pending:
        return Verdict(
            decision="promote",
            reason="all gates passed: " + "; ".join(r.describe() for r in results),
            gates=results,
        )
    waited = (now - started_at).total_seconds()
    waiting = "; ".join(r.describe() for r in pending)
    if waited >= gates.timeout_s:
        return Verdict(
            decision="rollback", reason=f"undecided after {waited:.0f}s (timeout): {waiting}", gates=results
        )
    return Verdict(decision="pending", reason=waiting, gates=results)


def canary_partitions(share: float, partitions: int, topic: str = "the input topic") -> list[int]:
    """The input partitions a canary of `share` serves: the first ceil(share x partitions), at least
    one and at most all but one (the champion's share is what the candidate is compared with).
    ValueError when the topic has fewer than two partitions or the share is not in (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"a canary share is a fraction between 0 and 1 exclusive, not {share}")
    if partitions < 2:
        raise ValueError(
            f"{topic} has {partitions} partition(s); a canary needs at least 2 "
            "(one for the candidate, one for the champion it is compared with)"
        )
    count = min(max(math.ceil(share * partitions - 1e-9), 1), partitions - 1)
    return list(range(count))


def _since(windows: Iterable[SentimentStats], started_at: datetime) -> list[SentimentStats]:
    unique: dict[tuple[str, datetime], SentimentStats] = {}
    for window in windows:
        if window.window_end > started_at:
            unique[(window.worker, window.window_start)] = window
    return list(unique.values())


def _agreement(gates: Gates, candidate: str, windows: Sequence[SentimentStats]) -> GateResult:
    shadows = [w.shadow for w in windows if w.shadow is not None and w.shadow.challenger == candidate]
    compared = sum(s.compared for s in shadows)
    agreed = sum(s.agreed for s in shadows)
    value = agreed / compared if compared else None
    return _judged("agreement", value, gates.agreement, "min", compared, gates.min_events)


def _estimated_accuracy(gates: Gates, candidate: str, windows: Sequence[SentimentStats]) -> GateResult:
    mine, theirs = ExpectedConfusion(), ExpectedConfusion()
    for window in windows:
        for version, sums in window.estimated.items():
            (mine if version == candidate else theirs).merge(sums.sums())
    events = min(mine.events, theirs.events)  # a comparison needs both sides
    threshold = theirs.accuracy - gates.accuracy_drop if theirs.accuracy is not None else 0.0
    return _judged(
        "estimated_accuracy",
        mine.accuracy,
        threshold,
        "min",
        events,
        gates.min_events,
    )


def _latency(gates: Gates, candidate: str, windows: Sequence[SentimentStats]) -> GateResult:
    weighted, events = 0.0, 0
    for window in windows:
        p99, scored = window.latency_p99_by_model.get(candidate), window.by_model.get(candidate, 0)
        if p99 is not None and scored:
            weighted += p99 * scored
            events += scored
    value = weighted / events if events else None
    return _judged("latency_p99", value, gates.latency_p99_ms, "max", events, gates.min_events)


def _dead_letters(gates: Gates, candidate: str, windows: Sequence[SentimentStats]) -> GateResult:
    dead = sum(w.dead_lettered_by_model.get(candidate, 0) for w in windows)
    given = dead + sum(w.by_model.get(candidate, 0) for w in windows)
    value = dead / given if given else None
    return _judged("dead_letter_rate", value, gates.dead_letter_rate, "max", given, gates.min_events)


def _judged(
    gate: GateName,
    value: float | None,
    threshold: float,
    bound: Literal["min", "max"],
    events: int,
    needed: int,
) -> GateResult:
    if value is None or events < needed:
        outcome: Outcome = "pending"
    else:
        ok = value >= threshold if bound == "min" else value <= threshold
        outcome = "pass" if ok else "fail"
    return GateResult(gate=gate, outcome=outcome, value=value, threshold=threshold, bound=bound,
                      events=events, min_events=needed)  # fmt: skip
