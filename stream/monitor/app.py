"""The monitor's Faust app: merge every worker's windows from `sentiment-stats`, compare each closed window with
a rolling baseline, publish a `SentimentAlert` to `sentiment-alerts` when the mix or volume moves.

The detection itself is stream/monitor/detector.py (pure); this module feeds it complete windows and
sends what it raises.

Why a Faust windowed table here and none in the workers (stream/worker/stats.py argues against one
there): the workers must stay stateless to scale to zero; the monitor is one stateful replica whose
open windows should survive a restart, which the table's changelog gives it.

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
rebuilt from the windows that follow. Every stats event carries its window: one cut to another
length than the monitor's `stats_window_s` (a worker run with another SENTISTREAM_STATS_WINDOW_S)
would add a longer or shorter window's counts to ours, so it is refused, counted
(`sentistream_monitor_stats_wrong_window`) and logged as an error once per worker and length; with
every worker refused, no stats count as arriving and the `stalled` alert follows.

An alert counts once the broker acknowledged it. One that could not be sent stays queued, in
order, and is sent again with the next stats event or timer tick; its episode stays open, so
the detector does not raise it twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from model.calibration import ExpectedConfusion
from stream.events import Change, ScoredTweet, SentimentAlert, SentimentStats
from stream.faust_app import faust_credentials
from stream.monitor.detector import (
    MAX_LABELS,
    EstimateDetector,
    Examples,
    Scores,
    ShiftDetector,
    WindowClock,
    WindowCounts,
    summarise,
)
from stream.monitor.drivers import DriverSource, drivers_for, risen_label
from stream.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

MAX_UNSENT = 100  # alerts kept for sending again while the alerts topic refuses them
ESTIMATE_KEY = "\x00estimated:"  # table keys of the estimate's sums (never a label: labels are text)
MAX_CELLS = 4096  # distinct estimate cells kept (3 labels on the 1/40 grid have about 2,600); past it: CBPE


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
        self.wrong_window = Counter("sentistream_monitor_stats_wrong_window", "stats events refused: cut to another window than the monitor's", registry=r)  # fmt: skip
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


class ShiftMonitor:
    """The monitor's state and agent bodies; `create_monitor` wires them into a faust.App."""

    def __init__(self, app, table, kafka, settings: MonitorSettings) -> None:
        self.app, self.table, self.kafka, self.settings = app, table, kafka, settings
        self.detector = ShiftDetector(settings)
        self.estimates = EstimateDetector(settings)
        self.clock = WindowClock(
            settings.stats_window_s, settings.grace_windows, settings.partition_idle_s, settings.max_future_s
        )
        self.drivers = (
            DriverSource(settings.worker_url, settings.api_token_file, settings.explain_texts,
                         settings.explain_timeout_s, settings.drivers)
            if settings.worker_url else None
        )  # fmt: skip
        self.examples = Examples(settings.examples, settings.explain_texts if self.drivers else 0)
        self.metrics = MonitorMetrics()
        self.labels: set[str] = set()
        self.cell_keys: set[str] = set()  # the estimate's cells seen (table keys are not listed per window)
        self.share_labels: list[str] = []  # the label order of the cells (the bundle's), as published
        self.wrong_windows: set[tuple[str, float]] = set()  # (worker, window length) already logged
        self.at = 0.0  # the timestamp the windowed table reads and writes (see create_monitor)
        self.last_stats_at = time.time()
        self.stalled = False
        self.published = 0  # alerts the broker acknowledged
        self.unsent: deque[SentimentAlert] = deque()  # raised, not acknowledged yet: sent again, in order
        self.assigned = False  # its first rebalance completed: /health says ready (and not rebalancing)
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
        if self.wrong_window(stats, message):
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

    def wrong_window(self, stats: SentimentStats, message) -> bool:
        """True, said loudly, when `stats` was cut to another window length than the monitor's."""
        length = (stats.window_end - stats.window_start).total_seconds()
        if math.isclose(length, self.settings.stats_window_s, abs_tol=1e-3):
            return False
        self.metrics.wrong_window.inc()
        if (stats.worker, length) not in self.wrong_windows:
            self.wrong_windows.add((stats.worker, length))
            log.error("%s[%d]@%d: stats of %s cover %g s windows, the monitor's are %g s; refused: run the "
                      "workers and the monitor with the same SENTISTREAM_STATS_WINDOW_S (--stats-window-s)",
                      message.topic, message.partition, message.offset, stats.worker, length,
                      self.settings.stats_window_s)  # fmt: skip
        return True

    def merge(self, stats: SentimentStats) -> None:
        """Add one worker's counts to its window in the table."""
        self.at = stats.window_start.timestamp() + self.settings.stats_window_s / 2
        for label, count in stats.counts.items():
            if label not in self.labels and len(self.labels) >= MAX_LABELS:
                continue  # labels come from the topic: a misbehaving producer must not grow them forever
            self.labels.add(label)
            self.table[label] += count
        self.merge_estimate(stats)

    def merge_estimate(self, stats: SentimentStats) -> None:
        """Add one worker's estimate sums and cells (all its models) to its window in the table. The
        validation shares are kept as events x share, so windows of models with other shares blend."""
        for sums in stats.estimated.values():
            self.table[f"{ESTIMATE_KEY}events"] += sums.events
            for part, values in (("support", sums.support), ("correct", sums.correct)):
                for label, value in values.items():
                    if label in self.labels:
                        self.table[f"{ESTIMATE_KEY}{part}:{label}"] += value
            if sums.cells and sums.shares and self._same_label_order(list(sums.shares)):
                self.merge_cells(sums.cells, sums.shares)

    def _same_label_order(self, labels: list[str]) -> bool:
        if not self.share_labels and len(labels) <= MAX_LABELS:
            self.share_labels = labels
        return labels == self.share_labels  # cells of another label order read as other cells: skipped

    def merge_cells(self, cells: dict[str, int], shares: dict[str, float]) -> None:
        celled = 0
        for key, count in cells.items():
            if key not in self.cell_keys and len(self.cell_keys) >= MAX_CELLS:
                continue  # the estimate of this window then falls back to CBPE (not every event has a cell)
            self.cell_keys.add(key)
            self.table[f"{ESTIMATE_KEY}cell:{key}"] += count
            celled += count
        for label, share in shares.items():
            self.table[f"{ESTIMATE_KEY}share:{label}"] += share * celled
        self.table[f"{ESTIMATE_KEY}celled"] += celled

    async def evaluate_due(self, now: float) -> None:
        """Evaluate every window complete at wall time `now`, then send the alerts still unsent."""
        # A silence long enough to raise `stalled` is not replayed as empty windows (see the docstring).
        max_gap = max(1, math.ceil(self.settings.stall_after_s / self.settings.stats_window_s))
        async with self.evaluating:
            for index in self.clock.complete(max_gap, now):
                await self.evaluate(self.window(index))
        await self.send_unsent()

    def window(self, index: int) -> WindowCounts:
        """The merged counts of window `index`, read from the windowed table."""
        start = self.clock.start_of(index)
        self.at = start.timestamp() + self.settings.stats_window_s / 2
        counts = {label: int(self.table[label].value()) for label in sorted(self.labels)}
        return WindowCounts(
            start, start + timedelta(seconds=self.settings.stats_window_s), counts, self._estimate()
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
        celled = float(self.table[f"{ESTIMATE_KEY}celled"].value())
        cells = {key: int(self.table[f"{ESTIMATE_KEY}cell:{key}"].value()) for key in sorted(self.cell_keys)}
        shares = (
            {
                label: float(self.table[f"{ESTIMATE_KEY}share:{label}"].value()) / celled
                for label in self.share_labels
            }
            if celled
            else None
        )
        return ExpectedConfusion(
            events, part["support"], part["correct"], {k: n for k, n in cells.items() if n}, shares
        )

    async def evaluate(self, window: WindowCounts) -> None:
        """Run the detector on a complete window; publish what it raises."""
        alerts = self.detector.observe(window) + self.estimates.observe(window)
        self.metrics.record(self.detector.last, window)
        for alert in alerts:
            alert = alert.model_copy(update={"examples": self.examples.for_alert(alert)})
            if self.drivers is not None and (label := risen_label(alert)) is not None:
                alert = await drivers_for(alert, self.examples.texts(label), self.drivers)
            await self.publish(alert)

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
                        self.kafka.alerts_topic, alert.kind.encode(), alert.model_dump_json().encode(),
                        None, None, None,
                    )  # fmt: skip
                except Exception as exc:  # any failure: the alert stays queued, nothing is counted
                    log.warning("alert %s not sent to %s (%s: %s); %d unsent, tried again soon", alert.alert_id,
                                self.kafka.alerts_topic, type(exc).__name__, exc, len(self.unsent))  # fmt: skip
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
    monitor_ref: list[ShiftMonitor] = []
    # Faust expires windows on the wall clock: keep one as long as a silent partition may hold it open.
    expires = timedelta(
        seconds=settings.stats_window_s * (settings.grace_windows + 3) + settings.partition_idle_s
    )
    table = (
        app.Table("sentiment-window-counts", default=int, partitions=partitions)
        .tumbling(settings.stats_window_s, expires=expires)
        .relative_to(lambda event=None: monitor_ref[0].at)  # the window being merged or read
    )
    monitor = ShiftMonitor(app, table, kafka, settings)
    monitor_ref.append(monitor)
    stats_topic = app.topic(kafka.stats_topic, value_type=bytes, value_serializer="raw", key_serializer="raw")
    app.agent(stats_topic, name="merge-sentiment-stats")(monitor.consume_stats)
    if settings.examples or settings.worker_url:
        scored = app.topic(kafka.scored_topic, value_type=bytes, value_serializer="raw", key_serializer="raw")
        app.agent(scored, name="sample-scored-tweets")(monitor.consume_scored)
    app.timer(min(settings.stats_window_s, 5.0), name="check-stats-stall")(monitor.tick)

    @app.on_partitions_assigned.connect
    async def _stats_partitions(sender, assigned, **kwargs) -> None:
        stats_partitions = [tp.partition for tp in assigned if tp.topic == kafka.stats_topic]
        monitor.clock.assign(stats_partitions, time.time())

    _register_views(app, monitor)
    return app, monitor


def _register_views(app, monitor: ShiftMonitor) -> None:
    from faust.web import View

    @app.on_rebalance_complete.connect
    async def _assigned(sender, **kwargs) -> None:
        monitor.assigned = True

    @app.page("/health")
    class Health(View):
        async def get(self, request):
            ready = monitor.assigned and not app.rebalancing
            body = {"status": "ready" if ready else "starting", "alerts": monitor.published}
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request):
            from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

            # Typed as the worker's /metrics is (stream/worker/web.py says why).
            return self.bytes(monitor.metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
