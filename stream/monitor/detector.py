"""Shift detection, pure (no Kafka, no clock of its own): merged windows in, `SentimentAlert`s out.

Method: a z-score against the rolling baseline, not CUSUM. Why:
- A label's share in a window of n events is a binomial proportion, so its noise is known:
  sd = sqrt(p0 (1 - p0) / n) around the baseline share p0. z = (p - p0) / sd is therefore a
  number of standard errors that already accounts for volume: 60% of 20 events is weak evidence,
  60% of 2,000 is overwhelming. Thresholds read in sigmas, the same at any traffic level.
- The question is "when should someone look": a sudden shift (a news event, an outage) must be
  reported in the window it appears. A z-score does that; CUSUM accumulates evidence over windows,
  which finds slow drifts but reports sudden jumps later, and its state needs resetting rules.
- A minimum absolute change (`min_share_change`) keeps huge volumes from alerting on shifts of a
  fraction of a point that are significant but uninteresting.
Volume uses the same idea with the baseline windows' mean and standard deviation (floored at the
Poisson sqrt(mean), so a very regular baseline does not make every wobble significant).

One alert per episode: an alert is raised when a window first crosses the threshold and the
episode stays open (no further alerts) until every label is back within half the threshold
(hysteresis). The baseline is rolling (the last `baseline_windows` windows, shifted ones
included), so a lasting shift becomes the new normal and closes its episode by itself.

No alert without a baseline: the first alert needs `min_baseline_windows` windows with events.
Windows without any stats before the first one with events are no baseline (they are the time
before the stream began), and neither is a silence that lasted longer than `stall_after_s` (the
`stalled` alert reported it): the baseline starts again after it. So a restarted monitor that
first reads the previous run's last window does not compare the new run with hours of nothing.

Estimated accuracy (`EstimateDetector`, additive to the shift rules): the workers publish the sums
of a label-free accuracy estimate per window (sums and cells of calibrated probabilities, `model.calibration`);
the monitor merges them like the counts and alerts once per episode when a window's estimate falls
below `estimate_floor`, or drops `estimate_drop` below the events-weighted mean of the last
`baseline_windows` windows and by `z_threshold` standard errors (binomial, as for shares).


`WindowClock` decides which windows are complete (see stream/monitor/app.py); `Examples` keeps recent
scored tweets per label for the alerts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from model.calibration import ExpectedConfusion
from stream.events import Change, Example, ScoredTweet, SentimentAlert
from stream.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

MAX_LABELS = 64  # distinct labels the monitor tracks


# ---- detection (pure: no Kafka, no clock) -------------------------------------------------------


@dataclass(frozen=True)
class WindowCounts:
    """A complete window, merged over workers."""

    start: datetime
    end: datetime
    counts: dict[str, int]
    estimate: ExpectedConfusion | None = None  # the label-free accuracy estimate's merged sums

    @property
    def total(self) -> int:
        """Events in the window."""
        return sum(self.counts.values())


@dataclass
class Scores:
    """What the last window looked like against the baseline (also exported as metrics)."""

    shares: dict[str, float]
    baselines: dict[str, float]
    z: dict[str, float]
    volume_z: float
    events: int


class ShiftDetector:
    """Feeds complete windows in time order; returns the alerts each one raises (no examples yet)."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.history: deque[WindowCounts] = deque(maxlen=settings.baseline_windows)
        self.share_since: datetime | None = None  # open share episode
        self.volume_since: datetime | None = None  # open volume episode
        self.last: Scores | None = None

    def observe(self, window: WindowCounts) -> list[SentimentAlert]:
        """Check `window` against the baseline, then add it to the baseline."""
        if self.history and not self._follows(window):
            self._restart(f"no stats for too long before {window.start.isoformat()}")
        elif self.history and not any(w.total for w in self.history):
            self._restart(f"no stats in the {len(self.history)} windows before {window.start.isoformat()}")
        if not self.history and not window.total:
            return []  # windows without stats before the first one with events are no baseline
        alerts = []
        if self._baseline_ready():
            share, volume = self._share_changes(window), self._volume_change(window)
            alerts += self._episode("share", window, share, open_=bool(share.moved), calm=share.calm)
            alerts += self._episode("volume", window, volume, open_=bool(volume.moved), calm=volume.calm)
        self.history.append(window)
        return alerts

    def _follows(self, window: WindowCounts) -> bool:
        """Whether `window` starts where the last one ended (the clock leaves long silences out)."""
        return (window.start - self.history[-1].end).total_seconds() <= self.settings.stats_window_s / 2

    def _baseline_ready(self) -> bool:
        return sum(1 for w in self.history if w.total) >= self.settings.min_baseline_windows

    def _restart(self, why: str) -> None:
        """Forget the baseline and close open episodes: what came before a long silence is no baseline."""
        log.info("shift baseline starts again: %s", why)
        self.history.clear()
        self.share_since = self.volume_since = None

    def _share_changes(self, window: WindowCounts) -> _Verdict:
        s = self.settings
        base_total = sum(w.total for w in self.history)
        labels = sorted({label for w in [*self.history, window] for label in w.counts})
        n = window.total
        changes, calm = [], True
        shares, baselines, zs = {}, {}, {}
        for label in labels:
            # Add-half smoothing: a label never seen in the baseline still has a finite standard error.
            p0 = (sum(w.counts.get(label, 0) for w in self.history) + 0.5) / (base_total + 1)
            p = window.counts.get(label, 0) / n if n else p0
            z = (p - p0) / math.sqrt(p0 * (1 - p0) / n) if n else 0.0
            shares[label], baselines[label], zs[label] = p, p0, z
            if n >= s.min_window_events and abs(z) >= s.z_threshold and abs(p - p0) >= s.min_share_change:
                changes.append(Change(what=label, baseline=p0, value=p, change=p - p0, z=z))
            if abs(z) >= s.z_threshold / 2 and abs(p - p0) >= s.min_share_change / 2:
                calm = False
        self.last = Scores(shares, baselines, zs, self._volume_z(window), n)
        return _Verdict(changes, calm)

    def _volume_z(self, window: WindowCounts) -> float:
        totals = [w.total for w in self.history]
        mean = sum(totals) / len(totals)
        sd = math.sqrt(sum((t - mean) ** 2 for t in totals) / len(totals))
        return (window.total - mean) / max(sd, math.sqrt(mean), 1.0)

    def _volume_change(self, window: WindowCounts) -> _Verdict:
        s = self.settings
        mean = sum(w.total for w in self.history) / len(self.history)
        z = self._volume_z(window)
        relative = abs(window.total - mean) / max(mean, 1.0)
        moved = abs(z) >= s.volume_z_threshold and relative >= s.min_volume_change
        change = Change(what="volume", baseline=mean, value=window.total, change=window.total - mean, z=z)
        calm = abs(z) < s.volume_z_threshold / 2 or relative < s.min_volume_change / 2
        return _Verdict([change] if moved else [], calm)

    def _episode(self, kind: str, window: WindowCounts, verdict: _Verdict, open_: bool, calm: bool) -> list:
        attr = f"{kind}_since"
        since = getattr(self, attr)
        if since is None and open_:
            setattr(self, attr, window.start)
            return [_alert(kind, window, window.start, verdict.moved)]
        if since is not None and calm:
            log.info("%s shift that began %s is over", kind, since.isoformat())
            setattr(self, attr, None)
        return []


class EstimateDetector:
    """Feeds complete windows in time order; alerts when the estimated accuracy falls (see the docstring)."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.history: deque[ExpectedConfusion] = deque(maxlen=settings.baseline_windows)
        self.since: datetime | None = None  # open episode

    def observe(self, window: WindowCounts) -> list[SentimentAlert]:
        """Judge `window`'s estimate against the floor and the baseline, then add it to the baseline."""
        s, estimate = self.settings, window.estimate
        if estimate is None or estimate.events < s.min_estimate_events or estimate.accuracy is None:
            return []
        change = self._change(estimate.accuracy, estimate.events)
        below = s.estimate_floor is not None and estimate.accuracy < s.estimate_floor
        dropped = change.baseline - change.value >= s.estimate_drop and -change.z >= s.z_threshold
        calm = not below and (
            change.baseline - change.value < s.estimate_drop / 2 or -change.z < s.z_threshold / 2
        )
        self.history.append(estimate)
        if self.since is None and (below or dropped):
            self.since = window.start
            return [_alert("estimated_accuracy", window, window.start, [change])]
        if self.since is not None and calm:
            log.info("estimated-accuracy episode that began %s is over", self.since.isoformat())
            self.since = None
        return []

    def _change(self, value: float, events: int) -> Change:
        """`value` against the baseline's events-weighted mean (the floor, or itself, without one)."""
        baseline = value if self.settings.estimate_floor is None else self.settings.estimate_floor
        if len(self.history) >= self.settings.min_baseline_windows:
            merged = ExpectedConfusion()
            for past in self.history:
                merged.merge(past)
            baseline = merged.accuracy if merged.accuracy is not None else baseline
        # The mean of n top probabilities in [0, 1] has a variance of at most a (1 - a) / n.
        z = (value - baseline) / math.sqrt(max(baseline * (1 - baseline), 1e-6) / events)
        return Change(what="estimated_accuracy", baseline=baseline, value=value, change=value - baseline, z=z)


@dataclass(frozen=True)
class _Verdict:
    moved: list[Change]
    calm: bool


def _alert(kind: str, window: WindowCounts, since: datetime, changes: list[Change]) -> SentimentAlert:
    return SentimentAlert(
        kind=kind,  # type: ignore[arg-type]
        since=since,
        window_start=window.start,
        window_end=window.end,
        events=window.total,
        changes=sorted(changes, key=lambda c: -abs(c.z)),
        summary=summarise(kind, changes, since),
    )


def summarise(kind: str, changes: Iterable[Change], since: datetime) -> str:
    """'negative share 60% (baseline 20%, +40 pts, z=+9.8); ... since 06:00:10 UTC'."""
    at = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if kind == "stalled":
        return f"no sentiment-stats since {at}: every worker stopped, or the stream is empty"
    parts = []
    for c in changes:
        if c.what == "estimated_accuracy":
            parts.append(f"estimated accuracy (no labels) {c.value:.0%} (baseline {c.baseline:.0%}, {100 * c.change:+.0f} pts, z={c.z:+.1f})")  # fmt: skip
        elif c.what == "volume":
            parts.append(
                f"volume {c.value:.0f} events/window (baseline {c.baseline:.0f}, {c.change:+.0f}, z={c.z:+.1f})"
            )
        else:
            parts.append(f"{c.what} share {c.value:.0%} (baseline {c.baseline:.0%}, {100 * c.change:+.0f} pts, z={c.z:+.1f})")  # fmt: skip
    return "; ".join(parts) + f" since {at}"


# ---- merging windows (Faust-independent state, fed by the agent) ---------------------------------


@dataclass
class _Partition:
    newest: int | None = None  # the newest window it carried; None: nothing yet
    heard_at: float = -math.inf  # wall time of its last stats (or of its assignment)


class WindowClock:
    """Which windows are complete (event time), from the window starts each stats partition carried.

    Window W is complete once every partition that carries stats carried window W + `grace_windows`
    or later. Wall time (`now`, epoch s) only decides two things: a partition silent for `idle_s`
    no longer holds windows open, and a window starting more than `future_s` after `now` is refused.
    Without `now` (tests of event time alone) neither rule applies.
    """

    def __init__(
        self, window_s: float, grace_windows: int, idle_s: float = math.inf, future_s: float = math.inf
    ) -> None:
        self.window_s, self.grace = window_s, grace_windows
        self.idle_s, self.future_s = idle_s, future_s
        self.next_index: int | None = None  # first window not evaluated yet (until then: the oldest seen)
        self.evaluated = False
        self.partitions: dict[int, _Partition] = {}
        self.carried: set[int] = set()  # windows not evaluated yet that some stats named

    def index(self, start: datetime) -> int:
        """The window number of a window start."""
        return int(start.timestamp() // self.window_s)

    def start_of(self, index: int) -> datetime:
        """The start of window number `index`."""
        return datetime.fromtimestamp(index * self.window_s, UTC)

    def assign(self, partitions: Iterable[int], now: float) -> None:
        """The stats partitions this monitor reads now: each holds windows open until it carries stats
        or stays silent for `idle_s` (at start, one may be read hours behind another)."""
        kept = {p: self.partitions.get(p, _Partition()) for p in partitions}
        for state in kept.values():
            state.heard_at = now
        self.partitions = kept

    def too_far_ahead(self, start: datetime, now: float | None) -> bool:
        """Whether window `start` begins more than `future_s` after `now` (a worker's clock is wrong)."""
        return now is not None and start.timestamp() - now > self.future_s

    def see(self, start: datetime, partition: int = 0, now: float | None = None) -> bool:
        """Note a window start carried by `partition`; False when it does not count: its window was
        already evaluated (too late), or it is too far ahead of `now` (see `too_far_ahead`)."""
        if self.too_far_ahead(start, now):
            return False
        index = self.index(start)
        if self.next_index is None or (not self.evaluated and index < self.next_index):
            self.next_index = index  # another partition's first stats may be older than the first seen
        state = self.partitions.setdefault(partition, _Partition())
        state.newest = index if state.newest is None else max(state.newest, index)
        state.heard_at = now if now is not None else state.heard_at
        if index < self.next_index:
            return False
        self.carried.add(index)
        return True

    def complete(self, max_gap: int, now: float | None = None) -> list[int]:
        """Window numbers now complete, oldest first. A run of more than `max_gap` windows that no
        stats named is a silence, not a run of empty windows: it is left out."""
        last = self._last_complete(now)
        if self.next_index is None or last is None or last < self.next_index:
            return []
        due = _without_silences(range(self.next_index, last + 1), self.carried, max_gap)
        self.next_index, self.evaluated = last + 1, True
        self.carried = {i for i in self.carried if i > last}
        return due

    def _last_complete(self, now: float | None) -> int | None:
        """The newest window every partition still holding windows open has moved `grace` past."""
        holding = [
            p.newest for p in self.partitions.values() if now is None or now - p.heard_at < self.idle_s
        ]
        if not holding or None in holding:
            return None  # every partition went silent (the stall alert's case), or one was not read yet
        return min(n for n in holding if n is not None) - self.grace


def _without_silences(due: range, carried: set[int], max_gap: int) -> list[int]:
    """`due` without the runs of more than `max_gap` windows that are not in `carried`."""
    kept: list[int] = []
    silent: list[int] = []
    for index in due:
        if index not in carried:
            silent.append(index)
            continue
        kept += silent if len(silent) <= max_gap else []
        kept.append(index)
        silent = []
    return kept + (silent if len(silent) <= max_gap else [])


class Examples:
    """The last few scored tweets per label, for alerts."""

    def __init__(self, per_label: int, keep: int = 0) -> None:
        self.per_label = per_label
        self.keep = max(per_label, keep)  # more than shown when alerts are explained
        self.by_label: dict[str, deque[Example]] = {}

    def add(self, event: ScoredTweet) -> None:
        """Remember `event` (the oldest of its label is forgotten)."""
        if self.keep == 0:
            return
        if event.label not in self.by_label and len(self.by_label) >= MAX_LABELS:
            return  # labels come from the topic: bound how many distinct ones are kept
        queue = self.by_label.setdefault(event.label, deque(maxlen=self.keep))
        queue.append(Example(id=event.id, text=event.text[:500], label=event.label))

    def for_alert(self, alert: SentimentAlert) -> list[Example]:
        """Examples of the labels whose share went up (or of every label, for volume)."""
        labels = [c.what for c in alert.changes if c.what != "volume" and c.change > 0] or list(self.by_label)
        shown = self.per_label
        return [e for label in labels for e in list(self.by_label.get(label, ()))[-shown:]] if shown else []

    def texts(self, label: str) -> list[str]:
        """The kept texts of `label`, oldest first."""
        return [e.text for e in self.by_label.get(label, ())]
