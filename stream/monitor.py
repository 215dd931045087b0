"""Shift alerts: merge every worker's windows from `sentiment-stats`, compare each closed window with
a rolling baseline, publish a `SentimentAlert` to `sentiment-alerts` when the mix or volume moves.

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

Windows: workers publish each closed window once, named by worker (so each worker's stats stay on
one partition of the stats topic); the Faust windowed table sums their counts per label. Window W
is complete once every partition that carries stats has moved `grace_windows` past it (every
worker closes windows on the same clock, so by then all have published W). Partitions are read
independently, so one partition's newest window says nothing about another's: during a
catch-up one can be hours ahead. A partition that stayed silent for `partition_idle_s` (its
worker stopped, or it never carried stats) no longer holds windows open. A window that starts
more than `max_future_s` after the monitor's clock is ignored with a warning: a worker with a
wrong clock must not complete, at once, every window before it. Empty windows between complete
ones count as zero events. If no stats arrive for `stall_after_s`, a `stalled` alert says the
stream (or every worker) stopped. One replica: the app holds all partitions of the stats topic.
After a restart the table's open windows come back from its changelog, but the baseline is
rebuilt from the windows that follow.

An alert counts once the broker acknowledged it. One that could not be sent stays queued, in
order, and is sent again with the next stats event or timer tick; its episode stays open, so
the detector does not raise it twice.

Estimated accuracy (`EstimateDetector`, additive to the shift rules): the workers publish the sums
of a label-free accuracy estimate per window (CBPE on calibrated probabilities, `model.calibration`);
the monitor merges them like the counts and alerts once per episode when a window's estimate falls
below `estimate_floor`, or drops `estimate_drop` below the events-weighted mean of the last
`baseline_windows` windows and by `z_threshold` standard errors (binomial, as for shares).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.calibration import ExpectedConfusion
from stream.app import faust_credentials
from stream.events import ScoredTweet, SentimentStats

log = logging.getLogger(__name__)

MAX_LABELS = 64  # distinct labels the monitor tracks
MAX_UNSENT = 100  # alerts kept for sending again while the alerts topic refuses them
ESTIMATE_KEY = "\x00estimated:"  # table keys of the estimate's sums (never a label: labels are text)


class MonitorSettings(BaseSettings):
    """How the monitor windows and when it alerts (`sentistream monitor`; env prefix SENTISTREAM_MONITOR_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_MONITOR_", frozen=True)

    app_id: str = Field(
        default="sentistream-monitor", description="Faust app id (consumer group, table topics)"
    )
    alerts_topic: str = Field(default="sentiment-alerts", description="topic the alerts go to")
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="replication factor of the topics the monitor creates (stats and alerts when "
        "missing, its table's changelog and leader topics)",
    )
    window_s: float = Field(
        default=10.0, gt=0, description="window size; must equal the workers' stats window"
    )
    baseline_windows: int = Field(default=30, ge=3, description="windows in the rolling baseline")
    min_baseline_windows: int = Field(
        default=6, ge=2, description="windows with events needed in the baseline before alerting"
    )
    grace_windows: int = Field(
        default=1,
        ge=1,
        description="a window is complete once every stats partition carried one this many windows later",
    )
    partition_idle_s: float = Field(
        default=30.0, gt=0, description="a stats partition silent this long no longer holds windows open"
    )
    max_future_s: float = Field(
        default=300.0,
        gt=0,
        description="stats of a window starting more than this after the monitor's clock are ignored",
    )
    z_threshold: float = Field(
        default=4.0, gt=0, description="share shift alert: |z| of a label's share at least this"
    )
    min_share_change: float = Field(
        default=0.10, ge=0, le=1, description="share shift alert: and its share moved at least this much"
    )
    min_window_events: int = Field(
        default=20, ge=1, description="windows with fewer events are not checked for share shifts"
    )
    volume_z_threshold: float = Field(
        default=4.0, gt=0, description="volume alert: |z| of the event count at least this"
    )
    min_volume_change: float = Field(
        default=0.5, ge=0, description="volume alert: and the count moved at least this fraction"
    )
    stall_after_s: float = Field(
        default=60.0, gt=0, description="stalled alert when no stats arrive for this long"
    )
    examples: int = Field(
        default=3, ge=0, description="example tweets per label kept for alerts (0: do not read tweets-scored)"
    )
    web_port: int = Field(
        default=6067, ge=1, le=65535, description="port of the monitor's /health and /metrics"
    )
    web_host: str = Field(
        default="127.0.0.1", description="interface the web views bind (0.0.0.0 in containers)"
    )
    from_beginning: bool = Field(
        default=False, description="on first start, read the stats topic from its beginning"
    )
    estimate_floor: float | None = Field(
        default=None, ge=0, le=1, description="estimated-accuracy alert: a window's estimate below this"
    )
    estimate_drop: float = Field(
        default=0.05, gt=0, le=1, description="estimated-accuracy alert: or this far below its baseline"
    )
    min_estimate_events: int = Field(
        default=50, ge=1, description="windows with fewer estimated events are not judged on the estimate"
    )


# ---- the alert event ---------------------------------------------------------------------------


class Change(BaseModel):
    """One quantity that moved: a label's share, or the event count ("volume")."""

    what: str = Field(description="the label whose share moved, or 'volume'")
    baseline: float = Field(description="its rolling-baseline value (share 0..1, or events per window)")
    value: float = Field(description="its value in the window that raised the alert")
    change: float = Field(description="value - baseline")
    z: float = Field(description="standard errors away from the baseline")


class Example(BaseModel):
    """A recent scored tweet with the label that moved."""

    id: str
    text: str
    label: str


class SentimentAlert(BaseModel):
    """One event on `sentiment-alerts` per shift episode: what moved, how much, since when."""

    alert_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["share", "volume", "stalled", "estimated_accuracy"]
    since: datetime = Field(description="start of the first window of the shift")
    window_start: datetime
    window_end: datetime
    events: int = Field(description="events in the window that raised it")
    changes: list[Change]
    summary: str = Field(description="one line a person can read")
    examples: list[Example] = Field(default_factory=list)
    raised_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


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
        return (window.start - self.history[-1].end).total_seconds() <= self.settings.window_s / 2

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

    def __init__(self, per_label: int) -> None:
        self.per_label = per_label
        self.by_label: dict[str, deque[Example]] = {}

    def add(self, event: ScoredTweet) -> None:
        """Remember `event` (the oldest of its label is forgotten)."""
        if self.per_label == 0:
            return
        if event.label not in self.by_label and len(self.by_label) >= MAX_LABELS:
            return  # labels come from the topic: bound how many distinct ones are kept
        queue = self.by_label.setdefault(event.label, deque(maxlen=self.per_label))
        queue.append(Example(id=event.id, text=event.text[:500], label=event.label))

    def for_alert(self, alert: SentimentAlert) -> list[Example]:
        """Examples of the labels whose share went up (or of every label, for volume)."""
        labels = [c.what for c in alert.changes if c.what != "volume" and c.change > 0] or list(self.by_label)
        return [e for label in labels for e in self.by_label.get(label, ())]


# ---- metrics -----------------------------------------------------------------------------------


class MonitorMetrics:
    """Prometheus gauges the alert rules in infra/prometheus/alerts.yml read."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self.share = Gauge("sentistream_monitor_label_share", "share of the label in the last complete window", ["label"], registry=r)  # fmt: skip
        self.baseline = Gauge("sentistream_monitor_label_share_baseline", "rolling-baseline share of the label", ["label"], registry=r)  # fmt: skip
        self.z = Gauge("sentistream_monitor_label_share_zscore", "z-score of the label's share against the baseline", ["label"], registry=r)  # fmt: skip
        self.events = Gauge(
            "sentistream_monitor_window_events", "events in the last complete window", registry=r
        )
        self.volume_z = Gauge("sentistream_monitor_volume_zscore", "z-score of the event count against the baseline", registry=r)  # fmt: skip
        self.window_end = Gauge("sentistream_monitor_last_window_end_seconds", "end of the last complete window (epoch s)", registry=r)  # fmt: skip
        self.last_stats = Gauge("sentistream_monitor_last_stats_seconds", "when the last stats event arrived (epoch s)", registry=r)  # fmt: skip
        self.alerts = Counter("sentistream_monitor_alerts", "alerts the alerts topic acknowledged", ["kind"], registry=r)  # fmt: skip
        self.bad_stats = Counter(
            "sentistream_monitor_bad_stats", "stats events that could not be read", registry=r
        )
        self.unsent = Gauge("sentistream_monitor_alerts_unsent", "alerts raised but not acknowledged yet", registry=r)  # fmt: skip

    def record(self, scores: Scores | None, window: WindowCounts) -> None:
        """Export the last window's numbers."""
        self.events.set(window.total)
        self.window_end.set(window.end.timestamp())
        if scores is None:
            return
        self.volume_z.set(scores.volume_z)
        for label, share in scores.shares.items():
            self.share.labels(label).set(share)
            self.baseline.labels(label).set(scores.baselines[label])
            self.z.labels(label).set(scores.z[label])

    def render(self) -> bytes:
        """The Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ---- the Faust app -----------------------------------------------------------------------------


class Monitor:
    """The monitor's state and agent bodies; `create_monitor` wires them into a faust.App."""

    def __init__(self, app, table, kafka, settings: MonitorSettings) -> None:
        self.app, self.table, self.kafka, self.settings = app, table, kafka, settings
        self.detector = ShiftDetector(settings)
        self.estimates = EstimateDetector(settings)
        self.clock = WindowClock(
            settings.window_s, settings.grace_windows, settings.partition_idle_s, settings.max_future_s
        )
        self.examples = Examples(settings.examples)
        self.metrics = MonitorMetrics()
        self.labels: set[str] = set()
        self.at = 0.0  # the timestamp the windowed table reads and writes (see create_monitor)
        self.last_stats_at = time.time()
        self.stalled = False
        self.published = 0  # alerts the broker acknowledged
        self.unsent: deque[SentimentAlert] = deque()  # raised, not acknowledged yet: sent again, in order
        self.sending = asyncio.Lock()
        self.evaluating = asyncio.Lock()  # the agent and the timer: windows are judged in order, once

    async def consume_stats(self, stream) -> None:
        """Agent body: merge each stats event into the table, then evaluate the windows it completes."""
        async for event in stream.events():
            try:
                await self.handle_stats(event.value, event.message)
            except Exception:  # an agent that raises stops consuming; log with the offset and go on
                log.exception("%s[%d]@%d: could not process stats", event.message.topic,
                              event.message.partition, event.message.offset)  # fmt: skip

    async def handle_stats(self, value: bytes, message) -> None:
        """Merge one stats event (raw JSON) and publish the alerts of the windows it completes."""
        try:
            stats = SentimentStats.model_validate_json(value)
        except ValidationError as exc:
            self.metrics.bad_stats.inc()
            log.warning("%s[%d]@%d: not a SentimentStats event (%s); skipped", message.topic,
                        message.partition, message.offset, exc.errors()[0]["msg"])  # fmt: skip
            return
        now = time.time()
        self.last_stats_at, self.stalled = now, False
        self.metrics.last_stats.set(self.last_stats_at)
        if self.clock.too_far_ahead(stats.window_start, now):
            log.warning("%s[%d]@%d: stats of %s for window %s, which starts %.0f s from now; ignored "
                        "(is that worker's clock wrong?)", message.topic, message.partition, message.offset,
                        stats.worker, stats.window_start.isoformat(), stats.window_start.timestamp() - now)  # fmt: skip
            return
        if not self.clock.see(stats.window_start, message.partition, now):
            log.warning("stats of %s for window %s came after it was evaluated; not counted",
                        stats.worker, stats.window_start.isoformat())  # fmt: skip
            return
        self.merge(stats)
        await self.evaluate_due(now)

    def merge(self, stats: SentimentStats) -> None:
        """Add one worker's counts to its window in the table."""
        self.at = stats.window_start.timestamp() + self.settings.window_s / 2
        for label, count in stats.counts.items():
            if label not in self.labels and len(self.labels) >= MAX_LABELS:
                continue  # labels come from the topic: a misbehaving producer must not grow them forever
            self.labels.add(label)
            self.table[label] += count
        self.merge_estimate(stats)

    def merge_estimate(self, stats: SentimentStats) -> None:
        """Add one worker's estimate sums (all its models) to its window in the table."""
        for sums in stats.estimated.values():
            self.table[f"{ESTIMATE_KEY}events"] += sums.events
            for part, values in (("support", sums.support), ("correct", sums.correct)):
                for label, value in values.items():
                    if label in self.labels:
                        self.table[f"{ESTIMATE_KEY}{part}:{label}"] += value

    async def evaluate_due(self, now: float) -> None:
        """Evaluate every window complete at wall time `now`, then send the alerts still unsent."""
        # A silence long enough to raise `stalled` is not replayed as empty windows (see the docstring).
        max_gap = max(1, math.ceil(self.settings.stall_after_s / self.settings.window_s))
        async with self.evaluating:
            for index in self.clock.complete(max_gap, now):
                await self.evaluate(self.window(index))
        await self.send_unsent()

    def window(self, index: int) -> WindowCounts:
        """The merged counts of window `index`, read from the windowed table."""
        start = self.clock.start_of(index)
        self.at = start.timestamp() + self.settings.window_s / 2
        counts = {label: int(self.table[label].value()) for label in sorted(self.labels)}
        return WindowCounts(
            start, start + timedelta(seconds=self.settings.window_s), counts, self._estimate()
        )

    def _estimate(self) -> ExpectedConfusion | None:
        """The merged estimate sums of the window at `self.at`; None when no worker sent any."""
        events = int(self.table[f"{ESTIMATE_KEY}events"].value())
        if not events:
            return None
        part = {
            name: {
                label: float(self.table[f"{ESTIMATE_KEY}{name}:{label}"].value())
                for label in sorted(self.labels)
            }
            for name in ("support", "correct")
        }
        return ExpectedConfusion(events, part["support"], part["correct"])

    async def evaluate(self, window: WindowCounts) -> None:
        """Run the detector on a complete window; publish what it raises."""
        alerts = self.detector.observe(window) + self.estimates.observe(window)
        self.metrics.record(self.detector.last, window)
        for alert in alerts:
            await self.publish(alert.model_copy(update={"examples": self.examples.for_alert(alert)}))

    async def publish(self, alert: SentimentAlert) -> None:
        """Queue `alert` for the alerts topic and send what is queued; never raises."""
        log.warning("ALERT %s: %s", alert.kind, alert.summary)
        if len(self.unsent) >= MAX_UNSENT:
            lost = self.unsent.popleft()
            log.error(
                "alert %s (%s) dropped unsent: %d newer ones wait", lost.alert_id, lost.summary, MAX_UNSENT
            )
        self.unsent.append(alert)
        await self.send_unsent()

    async def send_unsent(self) -> None:
        """Send the queued alerts in order; each counts once acknowledged. At the first failure the
        rest waits for the next stats event or timer tick (the one retry policy of alerts)."""
        if self.sending.locked():
            return  # the sender already running takes what was queued meanwhile
        async with self.sending:
            while self.unsent:
                alert = self.unsent[0]
                try:
                    await self.app.producer.send_and_wait(
                        self.settings.alerts_topic, alert.kind.encode(), alert.model_dump_json().encode(),
                        None, None, None,
                    )  # fmt: skip
                except Exception as exc:  # any failure: the alert stays queued, nothing is counted
                    log.warning("alert %s not sent to %s (%s: %s); %d unsent, tried again soon", alert.alert_id,
                                self.settings.alerts_topic, type(exc).__name__, exc, len(self.unsent))  # fmt: skip
                    break
                self.unsent.popleft()
                self.published += 1
                self.metrics.alerts.labels(alert.kind).inc()
            self.metrics.unsent.set(len(self.unsent))

    async def consume_scored(self, stream) -> None:
        """Agent body: keep the last few tweets per label, for the alerts' examples."""
        async for value in stream:
            try:
                self.examples.add(ScoredTweet.model_validate_json(value))
            except ValidationError:
                continue  # not ours to judge: the scored topic's readers report bad events

    async def tick(self) -> None:
        """Timer body: windows that a silent partition held open, the stall alert, unsent alerts."""
        await self.evaluate_due(time.time())
        await self.check_stall()

    async def check_stall(self) -> None:
        """A `stalled` alert once when no stats arrived for `stall_after_s`."""
        quiet = time.time() - self.last_stats_at
        if quiet < self.settings.stall_after_s or self.stalled:
            return
        self.stalled = True
        since = datetime.fromtimestamp(self.last_stats_at, UTC)
        now = datetime.now(UTC)
        change = Change(what="volume", baseline=0.0, value=0.0, change=0.0, z=0.0)
        await self.publish(
            SentimentAlert(
                kind="stalled",
                since=since,
                window_start=since,
                window_end=now,
                events=0,
                changes=[change],
                summary=summarise("stalled", [], since),
            )
        )


def create_monitor(kafka, settings: MonitorSettings, partitions: int, datadir):
    """A faust.App running the monitor; `partitions`: the stats topic's (the table must match)."""
    import faust

    app = faust.App(
        settings.app_id, broker=kafka.broker, broker_credentials=faust_credentials(kafka), datadir=str(datadir),
        store="memory://", autodiscover=False, topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest" if settings.from_beginning else "latest",
        web_enabled=True, web_port=settings.web_port, web_bind=settings.web_host, web_host=settings.web_host,
    )  # fmt: skip
    monitor_ref: list[Monitor] = []
    # Faust expires windows on the wall clock: keep one as long as a silent partition may hold it open.
    expires = timedelta(seconds=settings.window_s * (settings.grace_windows + 3) + settings.partition_idle_s)
    table = (
        app.Table("sentiment-window-counts", default=int, partitions=partitions)
        .tumbling(settings.window_s, expires=expires)
        .relative_to(lambda event=None: monitor_ref[0].at)  # the window being merged or read
    )
    monitor = Monitor(app, table, kafka, settings)
    monitor_ref.append(monitor)
    stats_topic = app.topic(kafka.stats_topic, value_type=bytes, value_serializer="raw", key_serializer="raw")
    app.agent(stats_topic, name="merge-sentiment-stats")(monitor.consume_stats)
    if settings.examples:
        scored = app.topic(kafka.scored_topic, value_type=bytes, value_serializer="raw", key_serializer="raw")
        app.agent(scored, name="sample-scored-tweets")(monitor.consume_scored)
    app.timer(min(settings.window_s, 5.0), name="check-stats-stall")(monitor.tick)

    @app.on_partitions_assigned.connect
    async def _stats_partitions(sender, assigned, **kwargs) -> None:
        stats_partitions = [tp.partition for tp in assigned if tp.topic == kafka.stats_topic]
        monitor.clock.assign(stats_partitions, time.time())

    _register_views(app, monitor)
    return app, monitor


def _register_views(app, monitor: Monitor) -> None:
    from faust.web import View

    app.sentistream_assigned = False

    @app.on_rebalance_complete.connect
    async def _assigned(sender, **kwargs) -> None:
        app.sentistream_assigned = True

    @app.page("/health")
    class Health(View):
        async def get(self, request):
            ready = app.sentistream_assigned and not app.rebalancing
            body = {"status": "ready" if ready else "starting", "alerts": monitor.published}
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request):
            return self.bytes(monitor.metrics.render(), content_type="text/plain; version=0.0.4")
