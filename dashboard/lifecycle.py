"""The model lifecycle on the page, computed from a feed snapshot: which models score, which are
deployed, how a shadow challenger agrees with the champion, live accuracy per model, rejections, and
where a canary's gates stand (stream/deployment/gates.py, the same evaluator `deploy` runs).

Every worker publishes its own `sentiment-stats` window (stream/worker/stats.py), so figures here are sums
over the workers' windows that share a `window_end`. Pure pandas, no Streamlit: app.py renders
these frames, the tests check them directly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from dashboard.feed import UNKNOWN_MODEL
from stream.deployment.gates import evaluate
from stream.events import ROLES, Canary, Deployment, SentimentStats, Verdict

MAX_MODELS = 64  # model filter options: the most frequent few (names come from the topic)


def model_options(rows: pd.DataFrame, selected: Iterable[str] = ()) -> list[str]:
    """The model_versions of the buffered events, most frequent first, plus any still selected."""
    seen = rows["model_version"].value_counts().index[:MAX_MODELS].tolist()
    return seen + sorted(set(selected) - set(seen))


def recent(windows: Iterable[SentimentStats], window_s: float | None, now: float) -> list[SentimentStats]:
    """The windows that ended inside the page's time window (all of them for 'everything kept')."""
    if window_s is None:
        return list(windows)
    return [w for w in windows if w.window_end.timestamp() >= now - window_s]


def events_per_model(windows: Iterable[SentimentStats], rows: pd.DataFrame) -> pd.DataFrame:
    """Columns model_version, scored (stats windows summed over workers), in view (buffered rows)."""
    scored: Counter[str] = Counter()
    for window in windows:
        for version, count in window.by_model.items():
            scored[version or UNKNOWN_MODEL] += count
    in_view = rows["model_version"].value_counts()
    names = sorted(set(scored) | set(in_view.index), key=lambda n: (-scored[n], -in_view.get(n, 0), n))
    return pd.DataFrame(
        {
            "model_version": names,
            "scored": [scored[n] for n in names],
            "in view": [int(in_view.get(n, 0)) for n in names],
        }
    )


def agreement_over_time(windows: Iterable[SentimentStats]) -> pd.DataFrame:
    """One row per window and champion/challenger pair, summed over workers: time, champion,
    challenger, compared, agreed, dropped, agreement (agreed / compared; NaN when none compared)."""
    totals: dict[tuple[datetime, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for window in windows:
        if (shadow := window.shadow) is not None:
            total = totals[(window.window_end, shadow.champion, shadow.challenger)]
            total[0] += shadow.compared
            total[1] += shadow.agreed
            total[2] += shadow.dropped
    frame = pd.DataFrame(
        [(*key, *counts) for key, counts in sorted(totals.items())],
        columns=["time", "champion", "challenger", "compared", "agreed", "dropped"],
    )
    frame["agreement"] = frame["agreed"] / frame["compared"].where(frame["compared"] > 0)
    return frame


@dataclass(frozen=True)
class Confusion:
    """Champion label (rows) x challenger label (columns) -> events, in one window."""

    window_end: datetime
    champion: str
    challenger: str
    table: pd.DataFrame


def latest_confusion(windows: Iterable[SentimentStats]) -> Confusion | None:
    """The confusion of the newest window with a shadow, summed over workers (the pair that compared
    most, when a swap happened inside that window); None without a shadow."""
    shadowed = [w for w in windows if w.shadow is not None]
    if not shadowed:
        return None
    end = max(w.window_end for w in shadowed)
    pairs: Counter[tuple[str, str]] = Counter()
    for w in shadowed:
        if w.window_end == end:
            pairs[(w.shadow.champion, w.shadow.challenger)] += w.shadow.compared
    champion, challenger = pairs.most_common(1)[0][0]
    cells: Counter[tuple[str, str]] = Counter()
    for w in shadowed:
        if w.window_end == end and (w.shadow.champion, w.shadow.challenger) == (champion, challenger):
            for mine, row in w.shadow.confusion.items():
                for theirs, count in row.items():
                    cells[(mine, theirs)] += count
    index = pd.MultiIndex.from_tuples(list(cells), names=["champion", "challenger"])
    table = pd.Series(list(cells.values()), index=index, dtype="int64").unstack(fill_value=0)
    return Confusion(end, champion, challenger, table.sort_index().sort_index(axis=1))


def accuracy_over_time(windows: Iterable[SentimentStats]) -> pd.DataFrame:
    """Live accuracy per window and model on the events that carried a true label, summed over
    workers: time, model, role (champion: it published the events; challenger: the shadow),
    labelled, correct, accuracy."""
    totals: dict[tuple[datetime, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for window in windows:
        hits = [(version or UNKNOWN_MODEL, "champion", acc) for version, acc in window.accuracy.items()]
        if window.shadow is not None:
            hits.append((window.shadow.challenger, "challenger", window.shadow.challenger_accuracy))
        for model, role, acc in hits:
            if acc.labelled:
                total = totals[(window.window_end, model, role)]
                total[0] += acc.labelled
                total[1] += acc.correct
    frame = pd.DataFrame(
        [(*key, *counts) for key, counts in sorted(totals.items())],
        columns=["time", "model", "role", "labelled", "correct"],
    )
    frame["accuracy"] = frame["correct"] / frame["labelled"]
    return frame


def accuracy_per_model(over_time: pd.DataFrame) -> pd.DataFrame:
    """`accuracy_over_time` summed over its windows: model, role, labelled, correct, accuracy."""
    totals = over_time.groupby(["model", "role"], as_index=False)[["labelled", "correct"]].sum()
    totals["accuracy"] = totals["correct"] / totals["labelled"]
    return totals


def rejections(latest: Mapping[str, SentimentStats]) -> dict[str, list[str]]:
    """Reason -> workers whose latest window says they rejected a deployment (a worker that then
    accepted one publishes windows without `model_error` again)."""
    found: dict[str, list[str]] = defaultdict(list)
    for worker, window in sorted(latest.items()):
        if window.model_error:
            found[window.model_error].append(worker)
    return dict(found)


def deployments_frame(deployments: Mapping[str, Deployment]) -> pd.DataFrame:
    """One row per deployed role: role, model_version, uri, deployed_by, deployed_at, earlier
    (the champions a rollback can go back to)."""
    return pd.DataFrame(
        [
            {
                "role": role,
                "model_version": d.model_version,
                "uri": d.uri,
                "deployed_by": d.deployed_by,
                "deployed_at": d.deployed_at,
                "earlier": len(d.history),
            }
            for role in ROLES
            if (d := deployments.get(role)) is not None
        ],
        columns=["role", "model_version", "uri", "deployed_by", "deployed_at", "earlier"],
    )


@dataclass(frozen=True)
class CanaryView:
    """A canary on the control topic and its gates: evaluated live over the windows kept here while it
    runs (`live`), the decision its record carries once it ended."""

    canary: Canary
    verdict: Verdict
    live: bool


def canary_view(
    deployments: Mapping[str, Deployment], windows: Iterable[SentimentStats], now: datetime
) -> CanaryView | None:
    """The canary's state; None when the control topic holds none."""
    canary = deployments.get("canary")
    if not isinstance(canary, Canary):
        return None
    if canary.running:
        verdict = evaluate(canary.gates, canary.model_version, windows, canary.deployed_at, now)
        return CanaryView(canary, verdict, live=True)
    decided = canary.decision
    if decided is None:
        return CanaryView(canary, Verdict(decision="pending", reason=""), live=False)
    return CanaryView(
        canary, Verdict(decision=decided.decision, reason=decided.reason, gates=decided.gates), False
    )


def gates_frame(verdict: Verdict) -> pd.DataFrame:
    """One row per gate: gate, outcome, value, threshold (`>=` or `<=`), events, min_events."""
    return pd.DataFrame(
        [
            {
                "gate": g.gate,
                "outcome": g.outcome,
                "value": g.value,
                "threshold": f"{'>=' if g.bound == 'min' else '<='} {g.threshold:g}",
                "events": g.events,
                "min_events": g.min_events,
            }
            for g in verdict.gates
        ],
        columns=["gate", "outcome", "value", "threshold", "events", "min_events"],
    )
