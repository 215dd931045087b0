"""The dashboard's data: a background Kafka consumer feeding a bounded buffer and running totals.

One `Feed` runs per server process (the app caches it with `st.cache_resource`). A daemon thread
runs its own asyncio loop with aiokafka, reading `tweets-scored`, `tweets-dlq` and
`sentiment-stats` from the end minus a bounded backlog, and the compacted `sentistream-models`
control topic from its beginning (its current champion and challenger). Scored events and stats
windows go into ring buffers (`deque(maxlen=...)`) and into running aggregates, so memory stays
flat however long it runs.
Page renders take `snapshot()`s; they never touch the consumer. Everything but the thread is plain
logic, testable without Kafka or Streamlit (`ingest_*` is the path the consumer thread takes).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, TypeVar

import orjson
import pandas as pd
from pydantic import ValidationError

from dashboard.settings import DashboardSettings
from stream.control import apply
from stream.events import DeadLetter, Deployment, ScoredTweet, SentimentStats
from stream.kafka_internals import topic_partitions
from stream.retry import Backoff
from stream.settings import ConsumerGroupSettings, KafkaSettings

log = logging.getLogger(__name__)

E = TypeVar("E", ScoredTweet, DeadLetter, SentimentStats)

State = Literal["connecting", "unreachable", "connected", "lost"]
# Label and model names come from the topic, i.e. from whoever can produce to it: cap how many
# distinct ones the running totals keep so a misbehaving producer cannot grow them without bound.
MAX_DISTINCT = 64
OTHER = "(other)"
DEFAULT_GROUP_ID = ConsumerGroupSettings.model_fields["group_id"].default
UNKNOWN_MODEL = "unknown"  # the model_version of events written before versions existed


class Row(NamedTuple):
    """One scored event as the dashboard keeps it (only what the page shows)."""

    id: str
    text: str
    user: str | None
    label: str
    score: float
    model: str
    model_version: str  # UNKNOWN_MODEL for events written before versions existed
    scored_at: float  # epoch seconds
    latency_ms: float
    true_label: str | None
    received_at: float  # epoch seconds the feed read it


COLUMNS = list(Row._fields)


@dataclass(frozen=True)
class Connection:
    """What the feed knows about the broker, for the banners."""

    state: State
    broker: str
    error: str | None = None
    since: float = field(default_factory=time.time)
    ever_connected: bool = False


@dataclass(frozen=True)
class Totals:
    """Running aggregates over every event the feed has read (not only the buffered ones)."""

    scored: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    last_event_at: float | None = None
    last_dead_letter: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the feed for one page render."""

    rows: pd.DataFrame
    totals: Totals
    connection: Connection
    stats: dict[str, SentimentStats]  # the latest window of each worker
    lag: int | None
    taken_at: float
    windows: tuple[SentimentStats, ...] = ()  # the last `stats_windows` windows, oldest first
    deployments: dict[str, Deployment] = field(default_factory=dict)  # role -> current deployment


class Feed:
    """Bounded in-memory view of the scored stream, filled by a background consumer thread."""

    def __init__(
        self, kafka: KafkaSettings, settings: DashboardSettings, worker_group: str = DEFAULT_GROUP_ID
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.worker_group = worker_group  # `ConsumerGroupSettings.group_id`, for the lag KPI
        self._lock = threading.Lock()
        self._rows: deque[Row] = deque(maxlen=settings.buffer_size)
        self._labels: Counter[str] = Counter()
        self._models: Counter[str] = Counter()
        self._totals = Totals()
        self._stats: dict[str, SentimentStats] = {}
        self._windows: deque[SentimentStats] = deque(maxlen=settings.stats_windows)
        self._deployments: dict[str, Deployment] = {}
        self._lag: int | None = None
        self._connection = Connection("connecting", kafka.bootstrap)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- ingestion: the path the consumer thread takes -------------------------------------------

    def ingest_scored(self, raw: bytes, received_at: float | None = None) -> bool:
        """Add one `tweets-scored` message; False (and counted as malformed) when it is not one."""
        event = self._parse(ScoredTweet, raw)
        if event is None:
            return False
        row = self._row(event, received_at or time.time())
        with self._lock:
            self._rows.append(row)
            _bounded_add(self._labels, row.label)
            _bounded_add(self._models, row.model)
            self._totals = replace(
                self._totals, scored=self._totals.scored + 1, last_event_at=row.received_at
            )
        return True

    def ingest_dead_letter(self, raw: bytes) -> bool:
        """Count one `tweets-dlq` message and remember its reason."""
        letter = self._parse(DeadLetter, raw)
        if letter is None:
            return False
        with self._lock:
            t = self._totals
            reason = f"{letter.stage}: {letter.error}"[:300]
            self._totals = replace(t, dead_lettered=t.dead_lettered + 1, last_dead_letter=reason)
        return True

    def ingest_stats(self, raw: bytes) -> bool:
        """Keep one `sentiment-stats` window: the latest of each worker, and the last few of all."""
        stats = self._parse(SentimentStats, raw)
        if stats is None:
            return False
        with self._lock:
            self._windows.append(stats)
            self._stats[stats.worker] = stats
            if len(self._stats) > MAX_DISTINCT:  # workers come and go: forget the stalest
                stalest = min(self._stats, key=lambda w: self._stats[w].window_end)
                del self._stats[stalest]
        return True

    def ingest_deployment(self, key: bytes | None, raw: bytes | None, offset: int) -> bool:
        """Fold one control-topic record into the current deployments (None: the role is cleared)."""
        with self._lock:  # `apply` logs and skips a record that is not a deployment, as workers do
            return apply(self._deployments, key, raw, offset) is not None

    def ingest(
        self,
        topic: str,
        raw: bytes | None,
        received_at: float | None = None,
        key: bytes | None = None,
        offset: int = -1,
    ) -> bool:
        """Route one message by its topic to the matching `ingest_*`."""
        if topic == self.kafka.models_topic:  # checked first: a null value there is a valid tombstone
            return self.ingest_deployment(key, raw, offset)
        if raw is None:
            self._count_malformed()
            return False
        if topic == self.kafka.scored_topic:
            return self.ingest_scored(raw, received_at)
        if topic == self.kafka.dlq_topic:
            return self.ingest_dead_letter(raw)
        return self.ingest_stats(raw)

    def snapshot(self) -> Snapshot:
        """A copy of everything a page render needs, taken under the lock."""
        with self._lock:
            rows = list(self._rows)
            totals = replace(self._totals, labels=dict(self._labels), models=dict(self._models))
            stats, lag, connection = dict(self._stats), self._lag, self._connection
            windows, deployments = tuple(self._windows), dict(self._deployments)
        frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
        return Snapshot(frame, totals, connection, stats, lag, time.time(), windows, deployments)

    def _row(self, event: ScoredTweet, received_at: float) -> Row:
        cap = self.settings.max_text_chars
        text = event.text if len(event.text) <= cap else event.text[: cap - 1] + "…"
        return Row(
            id=event.id[:200],
            text=text,
            user=event.user[:100] if event.user else None,
            label=event.label[:50],
            score=event.score,
            model=event.model[:200],
            model_version=event.model_version[:200] or UNKNOWN_MODEL,
            scored_at=event.scored_at.timestamp(),
            latency_ms=event.latency_ms,
            true_label=event.true_label[:50] if event.true_label else None,
            received_at=received_at,
        )

    def _parse(self, event_type: type[E], raw: bytes) -> E | None:
        """`raw` as an `event_type`, or None (counted as malformed) when it is not one."""
        try:
            return event_type.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError, TypeError):
            self._count_malformed()
            return None

    def _count_malformed(self) -> None:
        with self._lock:
            self._totals = replace(self._totals, malformed=self._totals.malformed + 1)

    def set_connection(self, state: State, error: str | None = None) -> None:
        with self._lock:
            old = self._connection
            ever = old.ever_connected or state == "connected"
            if old.state == "connected" and state in ("unreachable", "connecting"):
                state = "lost"  # it worked before: say it was lost, not that it never answered
            if old.state == "lost" and state == "unreachable":
                state = "lost"
            since = old.since if old.state == state else time.time()
            self._connection = Connection(state, self.kafka.bootstrap, error, since, ever)

    def set_lag(self, lag: int | None) -> None:
        with self._lock:
            self._lag = lag

    # -- the background thread -------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """True once `stop()` was called: the consumer thread winds down."""
        return self._stop.is_set()

    def start(self) -> Feed:
        """Start the consumer thread (once); returns self so it can be cached in one expression."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the consumer thread to finish and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(KafkaReader(self).run_forever())


class KafkaReader:
    """The consumer loop of one `Feed`: connect, read, notice a lost broker, reconnect."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.kafka = feed.kafka
        self.settings = feed.settings
        self.topics = (
            self.kafka.scored_topic,
            self.kafka.dlq_topic,
            self.kafka.stats_topic,
            self.kafka.models_topic,
        )
        # next offset per (topic, partition): a reconnect resumes here instead of re-reading history
        self.positions: dict[tuple[str, int], int] = {}
        self.assigned: set[tuple[str, int]] = set()
        self.admin = None

    async def run_forever(self) -> None:
        """Read until the feed is stopped, retrying every `retry_s` while the broker is away."""
        attempts = Backoff(self.settings.retry_s).start()
        while not self.feed.stopped:
            if await self._broker_answers():
                await self._session_or_error()
            else:
                self.feed.set_connection("unreachable", "no broker answers at this address")
            await attempts.wait(self._sleep)

    async def _session_or_error(self) -> None:
        from aiokafka.errors import KafkaError

        try:
            await self._session()
        except (KafkaError, OSError, ConnectionLostError) as exc:
            log.warning("dashboard feed lost the broker at %s: %s", self.kafka.bootstrap, exc)
            self.feed.set_connection("lost", str(exc) or type(exc).__name__)

    async def _session(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        security = self.kafka.aiokafka_security()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap, **security)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap,
            group_id=None,  # every dashboard reads everything; nothing to commit
            enable_auto_commit=False,
            request_timeout_ms=10_000,
            **security,
        )
        self.assigned = set()
        try:
            await consumer.start()
            await self.admin.start()
            self.feed.set_connection("connected")
            await self._read(consumer)
        finally:
            await _close_quietly(consumer.stop())
            await _close_quietly(self.admin.close())

    async def _read(self, consumer) -> None:
        next_check = 0.0
        while not self.feed.stopped:
            if time.monotonic() >= next_check:
                await self._housekeeping(consumer)
                next_check = time.monotonic() + self.settings.retry_s
            if not self.assigned:
                await self._sleep(0.2)
                continue
            batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
            now = time.time()
            for tp, records in batches.items():
                for record in records:
                    self.feed.ingest(tp.topic, record.value, now, record.key, record.offset)
                self.positions[(tp.topic, tp.partition)] = records[-1].offset + 1

    async def _housekeeping(self, consumer) -> None:
        """Notice a lost broker, pick up new topics and partitions, refresh the lag KPI."""
        if not await self._broker_answers():
            raise ConnectionLostError(f"no broker answers at {self.kafka.bootstrap}")
        # aiokafka retries for up to its request timeout; a page that says "connected" meanwhile
        # would be lying, so a slow answer counts as a lost broker (the next session retries).
        try:
            await asyncio.wait_for(self._assign(consumer), 5.0)
        except TimeoutError:
            raise ConnectionLostError(f"the broker at {self.kafka.bootstrap} stopped answering") from None
        try:
            self.feed.set_lag(await asyncio.wait_for(self._worker_lag(consumer), 3.0))
        except TimeoutError:
            self.feed.set_lag(None)

    async def _assign(self, consumer) -> None:
        from aiokafka import TopicPartition

        found = {(topic, p) for topic in self.topics for p in await topic_partitions(consumer, topic)}
        if found == self.assigned:
            return
        tps = [TopicPartition(t, p) for t, p in sorted(found)]
        consumer.assign(tps)
        await self._seek(consumer, tps)
        self.assigned = found

    async def _seek(self, consumer, tps) -> None:
        """Resume where this feed left off, else start `backlog` events before the end (the compacted
        control topic: at its beginning, since its current state is every role's newest record)."""
        fresh = [tp for tp in tps if (tp.topic, tp.partition) not in self.positions]
        ends = await consumer.end_offsets(fresh) if fresh else {}
        starts = await consumer.beginning_offsets(fresh) if fresh else {}
        for tp in tps:
            known = self.positions.get((tp.topic, tp.partition))
            if known is None and tp.topic == self.kafka.models_topic:
                known = starts[tp]
            elif known is None:
                known = max(starts[tp], ends[tp] - self.settings.backlog)
            consumer.seek(tp, known)

    async def _worker_lag(self, consumer) -> int | None:
        """Messages on the input topic the workers' consumer group has not committed yet."""
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        try:
            committed = await self.admin.list_consumer_group_offsets(self.feed.worker_group)
            tps = [tp for tp in committed if tp.topic == self.kafka.topic]
            if not tps:
                return None
            ends = await consumer.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
            return sum(max(0, ends[tp] - committed[tp].offset) for tp in tps)
        except (KafkaError, OSError, KeyError):
            return None

    async def _broker_answers(self) -> bool:
        """True when any bootstrap server accepts a TCP connection (cheap; run every few seconds)."""
        return await asyncio.to_thread(self.kafka.reachable, 1.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the feed is stopped."""
        deadline = time.monotonic() + seconds
        while not self.feed.stopped and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, seconds))


class ConnectionLostError(Exception):
    """The broker stopped answering during a session."""


async def _close_quietly(closing) -> None:
    """Close a client whose broker may be gone: aiokafka then raises its fetcher's cancellation."""
    try:
        await closing
    except (Exception, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # we are being cancelled ourselves: let it through
            raise
        log.debug("closing a Kafka client after a lost connection failed", exc_info=True)


def _bounded_add(counter: Counter[str], key: str) -> None:
    if key in counter or len(counter) < MAX_DISTINCT:
        counter[key] += 1
    else:
        counter[OTHER] += 1
