"""The scoring agent: micro-batches from `tweets` -> model (off the event loop) -> scored / DLQ.

Delivery (stream/worker/delivery.py, stream/worker/transactions.py): events are taken in micro-batches straight
from the agent's channel, without Faust's automatic acks (stream/kafka_internals.py), and acked only
after the broker has every output of their batch. At-least-once: Faust commits acked offsets on
its timer, so no offset whose output could still be lost is ever committed. Exactly-once: each
batch commits its outputs and its input offsets in one transaction per input partition, and Faust
commits nothing. Agent concurrency stays 1 (faust-streaming #606). While one batch's outputs wait
for the broker, the next batch is scored (pipeline depth 2); its outputs are sent only once the
batch before is acked, so outputs, retries and acks keep their order. While a canary runs
(stream/worker/serving.py), its engine scores the batch's events of its partitions and the champion
the rest (`process_routed`), and the champion's delivered share goes to the canary's shadow.

No exception may leave the agent body: in faust-streaming 0.15.3 an agent that raises gets its
acked offsets committed and a new actor on the same stream, and the failed batch is never
delivered again. So a failure that belongs to one record becomes that record's dead letter, and
any other failure (broker gone past the retry budget, a bug) ends the process at once, before
anything past the last delivered batch is committed; a restarted worker gets the batch again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.engines.base import Engine
from stream.decode import Source
from stream.events import DeadLetter, ScoredTweet
from stream.kafka_internals import ChannelBatches
from stream.settings import KafkaSettings
from stream.worker.delivery import FatalError, Record
from stream.worker.health import WorkerState
from stream.worker.inference import STREAM, InferenceThread
from stream.worker.metrics import WorkerMetrics
from stream.worker.micro_batch import (
    BatchResult,
    Scored,
    next_offsets,
    process_batch,
    process_routed,
    source_of,
    to_records,
)
from stream.worker.serving import ServingModels
from stream.worker.settings import WorkerSettings, stream_batch_size
from stream.worker.stats import TumblingStats
from stream.worker.transactions import outputs_for

log = logging.getLogger(__name__)

FATAL_EXIT = 1


@dataclass(frozen=True)
class Delivery:
    """A batch whose outputs are on their way: its events and the task delivering them."""

    events: Sequence
    task: asyncio.Future


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
        max_message_bytes: int | None = None,
        exit: Callable[[int], None] = os._exit,
        models: ServingModels | None = None,
        outputs=None,  # stream.worker.delivery.AtLeastOnce or stream.worker.transactions.ExactlyOnce
    ) -> None:
        self.app, self.kafka, self.settings = app, kafka, settings
        self.metrics, self.stats = metrics, stats
        self.models = models or ServingModels(engine, metrics, stats)
        self.max_message_bytes = max_message_bytes or settings.max_message_bytes
        self.inference = InferenceThread()
        self.state = WorkerState()
        self.in_flight = 0
        self.batches = 0
        self.transactional = settings.guarantee == "exactly_once"
        self.outputs = outputs or outputs_for(kafka, settings)
        self._exit = exit

    @property
    def engine(self) -> Engine:
        """The engine that scores the stream now (it changes between batches on a deployment)."""
        return self.models.engine

    async def consume(self, stream) -> None:
        """The agent body: score micro-batches, deliver each, ack it once its outputs landed."""
        self.state.agent_running = True
        batches = self.micro_batches(stream)
        delivering: Delivery | None = None  # the batch before, its outputs on their way
        try:
            async for events in batches:
                self.in_flight += len(events)
                try:
                    scored = await self.handle(events)
                except Exception as exc:  # see the module docstring: nothing may escape
                    if delivering:
                        delivering.task.cancel()
                    self.fatal(exc, events)
                    return
                if delivering and not await self.delivered(delivering):
                    return
                delivering = Delivery(events, asyncio.ensure_future(self.deliver(scored, events, batches)))
            if delivering:
                await self.delivered(delivering)
        except Exception as exc:  # raised by the stream itself, between batches
            if not delivering or await self.delivered(delivering):  # the batch before still counts
                self.fatal(exc, [])
        finally:
            self.state.agent_running = False
            self.state.agent_failed = "the agent stopped"

    async def deliver(self, scored: Scored, events: Sequence, batches) -> None:
        """Publish a scored batch, wait until the broker has every output, then ack its events."""
        delivered = await self.outputs.publish(scored.records, next_offsets(scored.sources))
        self.record(scored.result, delivered, scored.sources, scored.model_of)
        self.shadow_score(scored, delivered)
        batches.ack(events)
        self.in_flight -= len(events)

    def shadow_score(self, scored: Scored, delivered: Sequence[Record]) -> None:
        """Offer the champion's published events to the shadow: a running canary's second copy
        (it shadows the champion's share), else the challenger, if any."""
        canary = scored.canary if scored.canary is not None and scored.canary is self.models.canary else None
        shadow = canary.shadow if canary is not None else self.models.shadow
        if shadow is None:
            return
        events_out = [
            r.event
            for r in delivered
            if isinstance(r.event, ScoredTweet)
            and not (canary is not None and r.source is not None and canary.serves(r.source.partition))
        ]
        shadow.offer(scored.model_version, events_out)

    async def delivered(self, delivery: Delivery) -> bool:
        """Wait for `delivery`; False when it failed (the worker is then stopping)."""
        try:
            await delivery.task
        except Exception as exc:  # see the module docstring: nothing may escape
            self.fatal(exc, delivery.events)
            return False
        return True

    def micro_batches(self, stream) -> ChannelBatches:
        """The micro-batches of the agent's stream (a faust Stream)."""
        size = stream_batch_size(self.settings, self.engine.device)
        return ChannelBatches(stream, size, self.settings.max_wait_ms / 1000.0)

    def fatal(self, exc: BaseException, events: Sequence) -> None:
        """Stop the process now: no commit, no agent restart; the batch is redelivered on restart."""
        where = ", ".join(sorted({f"{e.message.topic}[{e.message.partition}]" for e in events}))
        first = min((e.message.offset for e in events), default=-1)
        log.critical(
            "stopping the worker without committing: a batch of %d from %s (first offset %d) failed "
            "with %s%s; a restarted worker processes it again",
            len(events),
            where,
            first,
            type(exc).__name__,
            f": {exc}" if isinstance(exc, FatalError) else "",  # others might quote an input
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        self._exit(FATAL_EXIT)

    async def handle(self, events: Sequence) -> Scored:
        """Score one batch of Faust events: its outputs, encoded, to publish (no I/O)."""
        sources = [source_of(event.message) for event in events]
        messages = [(event.message.value, source) for event, source in zip(events, sources, strict=True)]
        engine = self.models.take()  # between batches: a deployed model takes over here, never mid-batch
        canary = self.models.canary  # a canary scores its partitions of this batch
        chars = self.settings.max_text_chars
        if canary is not None and any(canary.serves(source.partition) for source in sources):
            result = await self.inference.run(STREAM, process_routed, messages, engine, canary, chars)
        else:
            result = await self.inference.run(STREAM, process_batch, messages, engine, chars)
        records = to_records(
            result, sources, self.kafka, keep_partition=self.transactional, limit=self.max_message_bytes
        )
        return Scored(result, sources, records, engine.model_version, canary)

    def record(
        self,
        result: BatchResult,
        delivered: Sequence[Record],
        sources: Sequence[Source],
        model_of: Callable[[int], str] | None = None,
    ) -> None:
        """Update metrics, windowed stats and progress for the outputs the broker has; `model_of`
        (input partition -> model_version) attributes inference dead letters to their model."""
        now = time.time()
        m = self.metrics
        m.consumed.inc(len(result.outputs))
        m.batch_size.observe(len(result.outputs))
        m.inference_seconds.observe(result.inference_s)
        dead = 0
        for record in delivered:
            out = record.event
            if isinstance(out, DeadLetter):
                dead += 1
                m.dead_lettered.labels(out.stage).inc()
                if out.stage == "inference" and model_of is not None:
                    self.stats.add_model_dead_letters(model_of(out.partition), 1, now)
            elif out is not None:
                m.scored.labels(out.label).inc()
                m.scored_by_model.labels(out.model_version).inc()
                m.latency_seconds.observe(out.latency_ms / 1000.0)
                self.stats.add_scored(
                    out.label, out.score, out.latency_ms, now, out.model_version, out.true_label, out.scores
                )
        m.dropped_revoked.inc(len(result.outputs) - len(delivered))
        self.stats.add_dead_letters(dead, now)
        self.batches += 1
        for source in sources:
            offsets = self.state.next_offsets
            offsets[source.partition] = max(offsets.get(source.partition, 0), source.offset + 1)
        self.state.progressed()
        self.update_lag()

    def lag(self) -> dict[int, int]:
        """Partition -> messages waiting, for the assigned partitions this worker has positions for."""
        from faust.types import TP

        lags = {}
        for partition, position in self.state.next_offsets.items():
            highwater = self._highwater(TP(self.kafka.topic, partition))
            if highwater is not None:
                lags[partition] = max(0, highwater - position)
        return lags

    def _highwater(self, tp) -> int | None:
        try:
            return self.app.consumer.highwater(tp)
        except Exception:  # lag is advisory; mid-rebalance there is no highwater
            return None

    def update_lag(self) -> int:
        """Refresh the lag gauge; returns the total (0 also marks the worker as keeping up)."""
        lags = self.lag()
        for partition, value in lags.items():
            self.metrics.lag.labels(str(partition)).set(value)
        total = sum(lags.values())
        if total == 0:
            self.state.progressed()
        return total

    def on_assigned(self, partitions: set[int]) -> None:
        """A rebalance completed: positions of partitions this worker may have lost are forgotten."""
        self.outputs.on_assigned(partitions)
        self.state.assigned = [f"{self.kafka.topic}[{p}]" for p in sorted(partitions)]
        self.state.rebalancing = False
        self.state.next_offsets.clear()
        self.state.progressed()

    def close(self) -> None:
        """Let the inference thread finish its batch, then release it (and the model loader)."""
        self.inference.shutdown()
        self.models.close()
