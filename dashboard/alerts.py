"""Shift alerts in the dashboard: a banner for the newest one and markers on the over-time chart.

`AlertFeed` is a small background consumer of `sentiment-alerts` (one per server process, cached
by the page with `st.cache_resource`), keeping the last `keep` alerts. The banner's text is built
from numbers and names stripped to plain characters; example tweets go into a `st.dataframe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
from pydantic import ValidationError

from dashboard.names import plain_name, shown_name
from stream.events import SentimentAlert
from stream.kafka_internals import topic_partitions
from stream.retry import Backoff
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

BANNER_FOR = timedelta(minutes=15)  # an alert stays on the page this long after it was raised
RECONNECTS = Backoff(5.0)  # between two sessions of the alert consumer (the broker gone, no topic yet)


class AlertFeed:
    """Reads the alerts topic (the last `keep` per partition at start, then new ones) on a thread."""

    def __init__(self, kafka: KafkaSettings, topic: str, keep: int = 50) -> None:
        self.kafka, self.topic = kafka, topic
        self.alerts: deque[SentimentAlert] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> AlertFeed:
        """Start the consumer thread (daemon: it dies with the server)."""
        threading.Thread(target=self._thread_main, name="alert-feed", daemon=True).start()
        return self

    def _thread_main(self) -> None:
        asyncio.run(self._run())

    def stop(self) -> None:
        """Ask the thread to finish."""
        self._stop.set()

    def recent(self) -> list[SentimentAlert]:
        """The alerts read so far, oldest first."""
        with self._lock:
            return list(self.alerts)

    def ingest(self, value: bytes) -> None:
        """Keep one alert (the thread's path; bad messages are logged and skipped)."""
        try:
            alert = SentimentAlert.model_validate_json(value)
        except ValidationError as exc:
            log.warning("%s: not a SentimentAlert (%s)", self.topic, exc.errors()[0]["msg"])
            return
        with self._lock:
            self.alerts.append(alert)

    async def _run(self) -> None:
        attempts = RECONNECTS.start()
        while not self._stop.is_set():
            try:
                await self._consume()
            except Exception as exc:  # broker gone: the page keeps the alerts it has and retries
                log.info("alert feed: %r; retrying in %g s", exc, attempts.pause_s)
            await attempts.wait()

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False, **self.kafka.aiokafka_security()
        )
        try:
            await consumer.start()
            partitions = await _assign_tail(consumer, self.topic, self.alerts.maxlen or 50)
            while partitions and not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        self.ingest(record.value)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def _assign_tail(consumer, topic: str, keep: int) -> list:
    """Assign every partition of `topic` at `keep` before its end; [] while the topic does not exist."""
    from aiokafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
    if not partitions:
        return []
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, max(starts[tp], ends[tp] - keep))
    return partitions


def shared_alert_feed(kafka: KafkaSettings) -> AlertFeed:
    """The one alert feed of this server process (cached like the page's main feed)."""
    import streamlit as st

    @st.cache_resource(show_spinner=False)
    def _feed(key: str, _kafka: KafkaSettings, topic: str) -> AlertFeed:
        return AlertFeed(_kafka, topic).start()

    return _feed(kafka.model_dump_json(), kafka, kafka.alerts_topic)


def live_banner_ui(kafka: KafkaSettings) -> None:
    """The banner as app.py calls it (inside the live fragment, so it appears without a reload)."""
    alert_banner_ui(shared_alert_feed(kafka).recent())


# ---- rendering -----------------------------------------------------------------------------------


def banner_text(alert: SentimentAlert, name=plain_name) -> str:
    """One line for the banner, from the alert's numbers and names rendered by `name` (plain text;
    `shown_name` where markdown renders the line)."""
    at = alert.since.astimezone(UTC).strftime("%H:%M:%S UTC")
    if alert.kind == "stalled":
        return f"No sentiment statistics since {at}: the workers stopped or no tweets arrive."
    if alert.kind == "estimated_accuracy":
        c = alert.changes[0]
        return (
            f"Estimated accuracy (from the model's confidence, no labels) fell to {c.value:.0%} since {at} "
            f"(usually {c.baseline:.0%}, {100 * c.change:+.0f} pts)."
        )
    parts = []
    for c in alert.changes[:3]:
        if c.what == "volume":
            parts.append(f"volume {c.value:,.0f} events per window (usually {c.baseline:,.0f})")
        else:
            parts.append(
                f"{name(c.what)} {c.value:.0%} (usually {c.baseline:.0%}, {100 * c.change:+.0f} pts)"
            )
    line = f"Sentiment shift since {at}: " + "; ".join(parts)
    if alert.drivers:
        words = ", ".join(f"“{name(d.word)}”" for d in alert.drivers)
        line += f". Words driving it: {words}"
    return line


def alert_banner_ui(alerts: Sequence[SentimentAlert], now: datetime | None = None) -> None:
    """A warning banner for the newest alert of the last 15 minutes, with its example tweets."""
    import streamlit as st

    now = now or datetime.now(UTC)
    fresh = [a for a in alerts if now - a.raised_at <= BANNER_FOR]
    if not fresh:
        return
    alert = fresh[-1]
    st.warning(banner_text(alert, shown_name), icon="🚨")  # a label must not become a link
    if alert.examples:
        with st.expander("Example tweets"):
            st.dataframe(
                pd.DataFrame([e.model_dump() for e in alert.examples])[["label", "text", "id"]],
                hide_index=True,
            )


def markers_frame(alerts: Sequence[SentimentAlert]) -> pd.DataFrame:
    """Columns time, kind, summary: one row per alert, for rules on a time axis."""
    return pd.DataFrame(
        {
            "time": [a.since for a in alerts],
            "kind": [a.kind for a in alerts],
            "summary": [banner_text(a) for a in alerts],
        }
    )


def with_alert_markers(chart, alerts: Sequence[SentimentAlert], x: str = "time:T"):  # -> altair.LayerChart
    """`chart` with a dashed vertical rule where each alert's shift began (tooltip: the summary)."""
    import altair as alt

    if not alerts:
        return chart
    rules = (
        alt.Chart(markers_frame(alerts))
        .mark_rule(color="#ff7f0e", strokeDash=[4, 3], strokeWidth=2)
        .encode(x=alt.X(x), tooltip=["time:T", "kind:N", "summary:N"])
    )
    return alt.layer(chart, rules)
