"""The scoring agent: micro-batches from `tweets` -> model (off the event loop) -> scored / DLQ.

Delivery: events are taken without Faust's automatic acks (`noack_take`) and acked only after
the broker has acknowledged every output of their batch, so Faust never commits an offset whose
output could still be lost (at-least-once). Agent concurrency stays 1 (faust-streaming #606).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from model.engines.base import Engine
from stream.decode import Source, decode_tweet
from stream.events import DeadLetter, ScoredTweet
from stream.metrics import WorkerMetrics
from stream.scoring import Item, encode, predict_guarded, to_outputs
from stream.settings import KafkaSettings, WorkerSettings
from stream.stats import TumblingStats

log = logging.getLogger(__name__)

# Sends that fail after aiokafka's own retries are retried this long before the worker gives up
# (and restarts without committing, so nothing is lost).
SEND_RETRY_S = 120.0


@dataclass
class BatchResult:
    """What one micro-batch produced: one output per input, in input order."""

    outputs: list[ScoredTweet | DeadLetter] = field(default_factory=list)
    inference_s: float = 0.0


@dataclass(frozen=True)
class Record:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None


def process_batch(
    messages: Sequence[tuple[bytes | None, Source]], engine: Engine, max_text_chars: int
) -> BatchResult:
    """Decode, validate and score a batch (runs on the inference thread; no I/O)."""
    decoded = [(decode_tweet(value, source), value, source) for value, source in messages]
    items = [
        Item(out, source, value or b"") for out, value, source in decoded if not isinstance(out, DeadLetter)
    ]
    began = time.perf_counter()
    predictions = predict_guarded(engine, [item.tweet.text for item in items]) if items else []
    inference_s = time.perf_counter() - began
    scored = iter(to_outputs(items, predictions, engine.name, max_text_chars))
    outputs = [out if isinstance(out, DeadLetter) else next(scored) for out, _, _ in decoded]
    return BatchResult(outputs, inference_s)


def to_records(
    result: BatchResult, sources: Sequence[Source], kafka: KafkaSettings, keep_partition: bool
) -> list[Record]:
    """The messages to produce; `keep_partition` co-partitions outputs with inputs (transactions)."""
    records = []
    for out, source in zip(result.outputs, sources, strict=True):
        partition = source.partition if keep_partition else None
        if isinstance(out, DeadLetter):
            records.append(Record(kafka.dlq_topic, source.key, encode(out), partition))
        else:
            records.append(Record(kafka.scored_topic, out.id.encode("utf-8"), encode(out), partition))
    return records


class Scorer:
    """Runs micro-batches through the engine and publishes their outputs; one per worker."""

    def __init__(
        self,
        app,  # faust.App (untyped: faust is imported lazily)
        kafka: KafkaSettings,
        settings: WorkerSettings,
        engine: Engine,
        metrics: WorkerMetrics,
        stats: TumblingStats,
    ) -> None:
        self.app, self.kafka, self.settings, self.engine = app, kafka, settings, engine
        self.metrics, self.stats = metrics, stats
        # One thread: batches are scored in order, and the event loop stays free to heartbeat.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.in_flight = 0
        self.batches = 0
        self.transactional = settings.guarantee == "exactly_once"

    async def consume(self, stream) -> None:
        """The agent body: take micro-batches, score them, ack them once their outputs landed."""
        within = self.settings.max_wait_ms / 1000.0
        async for events in stream.noack_take(self.settings.batch_size, within=within):
            self.in_flight = len(events)
            try:
                await self.handle(events)
            finally:
                self.in_flight = 0
            for event in events:
                await stream.ack(event)
            if self.transactional:
                # Commit now, between batches, so a transaction never holds outputs whose input
                # offsets it does not also commit (Faust's timer commit could split a batch).
                await self.app.consumer.commit()

    async def handle(self, events: Sequence) -> None:
        """Score one batch of Faust events and wait until the broker has every output."""
        sources = [_source(event.message) for event in events]
        messages = [(event.message.value, source) for event, source in zip(events, sources, strict=True)]
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.executor, process_batch, messages, self.engine, self.settings.max_text_chars
        )
        await self.publish(to_records(result, sources, self.kafka, keep_partition=self.transactional))
        self.record(result, sources)

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record and wait for the broker's acknowledgements; retry what failed."""
        deadline = time.monotonic() + SEND_RETRY_S
        pending = list(records)
        while pending:
            failures = await self._send_all(pending)
            pending = [record for record, error in zip(pending, failures, strict=True) if error]
            if pending:
                error = next(e for e in failures if e)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"could not deliver {len(pending)} outputs for {SEND_RETRY_S:.0f}s: {error!r}"
                    )
                log.warning("retrying %d outputs the broker did not acknowledge: %r", len(pending), error)
                await asyncio.sleep(1.0)

    async def _send_all(self, records: Sequence[Record]) -> list[BaseException | None]:
        producer = self.app.producer
        await producer.maybe_start()
        owned = self._still_owned(records)
        futures = []
        for r in owned:
            tid = self._transactional_id(r.partition)
            futures.append(
                await producer.send(r.topic, r.key, r.value, r.partition, None, None, transactional_id=tid)
            )
        results = dict(
            zip(map(id, owned), await asyncio.gather(*futures, return_exceptions=True), strict=True)
        )
        return [_error(results.get(id(r))) for r in records]

    def _still_owned(self, records: Sequence[Record]) -> list[Record]:
        """In exactly-once mode, drop outputs of partitions a rebalance took away: their
        transaction is gone and the new owner redoes them from the last committed offset."""
        if not self.transactional:
            return list(records)
        from faust.types import TP

        assigned = self.app.consumer.assignment()
        return [r for r in records if TP(self.kafka.topic, r.partition) in assigned]

    def _transactional_id(self, partition: int | None) -> str | None:
        """In exactly-once mode, the transaction that also commits the input partition's offsets.

        Faust's own TransactionManager.send picks the transaction from the *output* partition as
        seen by the consumer's metadata, which does not know output topics, so its sends bypass
        the transaction; this uses the id Faust commits the input offsets with.
        """
        if not self.transactional or partition is None:
            return None
        group = self.app.assignor.group_for_topic(self.kafka.topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    def record(self, result: BatchResult, sources: Sequence[Source]) -> None:
        """Update metrics, windowed stats and lag after a delivered batch."""
        now = time.time()
        m = self.metrics
        m.consumed.inc(len(result.outputs))
        m.batch_size.observe(len(result.outputs))
        m.inference_seconds.observe(result.inference_s)
        dead = 0
        for out in result.outputs:
            if isinstance(out, DeadLetter):
                dead += 1
                m.dead_lettered.labels(out.stage).inc()
            else:
                m.scored.labels(out.label).inc()
                m.latency_seconds.observe(out.latency_ms / 1000.0)
                self.stats.add_scored(out.label, out.score, out.latency_ms, now)
        self.stats.add_dead_letters(dead, now)
        self.batches += 1
        self._update_lag(sources)

    def _update_lag(self, sources: Sequence[Source]) -> None:
        last: dict[int, int] = {}
        for source in sources:
            last[source.partition] = max(last.get(source.partition, -1), source.offset)
        for partition, offset in last.items():
            highwater = self._highwater(source.topic, partition)
            if highwater is not None:
                self.metrics.lag.labels(str(partition)).set(max(0, highwater - offset - 1))

    def _highwater(self, topic: str, partition: int) -> int | None:
        from faust.types import TP

        try:
            return self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # lag is advisory; a consumer mid-rebalance may not know the highwater yet
            return None

    def close(self) -> None:
        """Let the inference thread finish its batch, then release it."""
        self.executor.shutdown(wait=True)


def _error(result: object) -> BaseException | None:
    return result if isinstance(result, BaseException) else None


def _source(message) -> Source:
    return Source(message.topic, message.partition, message.offset, message.key, message.timestamp)
