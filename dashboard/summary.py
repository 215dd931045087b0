"""What the page shows, computed from a feed snapshot: filters, KPIs, shares over time, accuracy.

Pure pandas, no Streamlit: the app renders these numbers, the tests check them directly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from dashboard.feed import Snapshot
from model.calibration import ExpectedConfusion
from stream.events import SentimentStats

# Time windows a person can pick; None keeps everything the feed still holds.
WINDOWS: dict[str, float | None] = {
    "last minute": 60,
    "last 5 minutes": 300,
    "last 15 minutes": 900,
    "last hour": 3_600,
    "everything kept": None,
}
RATE_WINDOW_S = 10.0  # events/s is measured over the last few seconds of scoring time


@dataclass(frozen=True)
class Filters:
    """The keyword or hashtag, the time window and the models that every part of the page applies."""

    keyword: str = ""
    window_s: float | None = None
    models: tuple[str, ...] = ()  # model_versions to show; empty: every model

    @property
    def active(self) -> bool:
        """True when any filter narrows the view."""
        return bool(self.keyword.strip()) or self.window_s is not None or bool(self.models)


@dataclass(frozen=True)
class Kpis:
    """The headline numbers of the page."""

    events_per_s: float
    scored: int  # every scored event the feed has read (all time, not filtered)
    in_view: int  # the events the filters keep
    dead_lettered: int
    shares: dict[str, float]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    lag: int | None
    accuracy: float | None
    labelled: int
    # Estimated from the calibrated probabilities alone (the workers' sums and cells), no labels needed.
    estimated_accuracy: float | None = None
    estimated_events: int = 0
    estimated_shares: dict[str, float] | None = None  # the class mix the estimate allowed for


def filter_rows(rows: pd.DataFrame, filters: Filters, now: float) -> pd.DataFrame:
    """The rows inside the time window, scored by the chosen models, that contain the keyword
    (a #hashtag matches whole tags)."""
    out = rows
    if filters.window_s is not None:
        out = out[out["scored_at"] >= now - filters.window_s]
    if filters.models:
        out = out[out["model_version"].isin(filters.models)]
    keyword = filters.keyword.strip()
    if keyword:
        out = out[out["text"].str.contains(_keyword_pattern(keyword), regex=True, na=False)]
    return out


def _keyword_pattern(keyword: str) -> str:
    # "#travel" must not match "#travelling"; a plain word matches anywhere, like a search box.
    escaped = re.escape(keyword)
    return f"(?i){escaped}(?![\\w])" if keyword.startswith("#") else f"(?i){escaped}"


def compute_kpis(snapshot: Snapshot, rows: pd.DataFrame, filters: Filters) -> Kpis:
    """KPIs of the filtered `rows`; unfiltered shares come from the running totals (all time)."""
    recent = rows[rows["scored_at"] >= snapshot.taken_at - RATE_WINDOW_S]
    latency = rows["latency_ms"]
    accuracy, labelled = live_accuracy(rows)
    estimated = estimated_performance(snapshot.windows, snapshot.taken_at, filters)
    return Kpis(
        events_per_s=len(recent) / RATE_WINDOW_S,
        scored=snapshot.totals.scored,
        in_view=len(rows),
        dead_lettered=snapshot.totals.dead_lettered,
        shares=label_shares(snapshot, rows, filters),
        latency_p50_ms=float(latency.quantile(0.5)) if len(latency) else None,
        latency_p99_ms=float(latency.quantile(0.99)) if len(latency) else None,
        lag=snapshot.lag,
        accuracy=accuracy,
        labelled=labelled,
        estimated_accuracy=estimated.accuracy,
        estimated_events=estimated.events,
        estimated_shares=estimated.estimated_shares,
    )


def label_shares(snapshot: Snapshot, rows: pd.DataFrame, filters: Filters) -> dict[str, float]:
    """Each label's share of the filtered rows, or of every event read when nothing is filtered."""
    counts = rows["label"].value_counts().to_dict() if filters.active else snapshot.totals.labels
    total = sum(counts.values())
    return {label: n / total for label, n in sorted(counts.items())} if total else {}


def live_accuracy(rows: pd.DataFrame) -> tuple[float | None, int]:
    """(accuracy, n) over the rows whose replayed data carried a true label; None when none did."""
    labelled = rows[rows["true_label"].notna()]
    if labelled.empty:
        return None, 0
    hits = labelled["label"].str.lower() == labelled["true_label"].str.lower()
    return float(hits.mean()), len(labelled)


def estimated_performance(
    windows: Sequence[SentimentStats], now: float, filters: Filters
) -> ExpectedConfusion:
    """The estimate sums of the stats windows that ended inside the time window, for the chosen
    models, merged over workers and windows (the keyword filter cannot apply: windows hold no texts)."""
    merged = ExpectedConfusion()
    for window in windows:
        if filters.window_s is not None and window.window_end.timestamp() < now - filters.window_s:
            continue
        for version, sums in window.estimated.items():
            if not filters.models or version in filters.models:
                merged.merge(sums.sums())
    return merged


def share_over_time(rows: pd.DataFrame, window_s: float | None) -> pd.DataFrame:
    """Long frame (time, label, share, count): each label's share of the events in each time bucket."""
    if rows.empty:
        return pd.DataFrame(columns=["time", "label", "share", "count"])
    bucket = bucket_seconds(window_s, float(rows["scored_at"].max() - rows["scored_at"].min()))
    times = pd.to_datetime(rows["scored_at"], unit="s", utc=True).dt.floor(f"{bucket}s")
    counts = rows.groupby([times.rename("time"), rows["label"]]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby("time")["count"].transform("sum")
    return counts


def bucket_seconds(window_s: float | None, span_s: float) -> int:
    """About 60 buckets across the window (or across the data when the window is 'everything')."""
    width = (window_s if window_s is not None else span_s) / 60
    for step in (1, 5, 10, 30, 60, 300, 900, 3_600):
        if width <= step:
            return step
    return 3_600


def latest(rows: pd.DataFrame, n: int = 50) -> pd.DataFrame:
    """The newest `n` rows, newest first, with the columns the table shows."""
    out = rows.tail(n).iloc[::-1]
    return pd.DataFrame(
        {
            "time": pd.to_datetime(out["scored_at"], unit="s", utc=True).dt.strftime("%H:%M:%S"),
            "label": out["label"],
            "confidence": out["score"].round(3),
            "text": out["text"],
            "true label": out["true_label"],
            "user": out["user"],
        }
    ).reset_index(drop=True)


def refresh_slot(period_s: float) -> int:
    """Which `period_s`-long slot of the clock this is: viewers in the same slot share a drawing."""
    return int(time.time() // period_s)
