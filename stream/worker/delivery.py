"""How a scored batch's outputs reach Kafka: the worker's own aiokafka producers, one guarantee each.

- `AtLeastOnce`: one idempotent producer. Every output is sent and its acknowledgement awaited;
  what failed is sent again (in order) until `send_retry_s` runs out. An ambiguous failure (the
  broker wrote the record, the acknowledgement was lost) can leave a second copy: at-least-once.
- `ExactlyOnce` (stream/worker/transactions.py): one transaction per input partition and batch that
  holds the outputs *and* the input offsets; a failure aborts it and the batch is redone in a new
  one, never re-sent inside the open transaction.

Both also send the advisory messages (sentiment-stats) through the plain producer.
`publish` returns the records the broker has; it raises `FatalError` when the batch cannot be
delivered (the worker then stops without committing, and a restarted one redoes the batch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.decode import Source, dead_letter
from stream.events import DeadLetter, ScoredTweet
from stream.retry import Backoff
from stream.settings import KafkaSettings
from stream.worker.scoring import dlq_key, fit_dead_letter
from stream.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

ProducerFactory = Callable[..., Any]  # AIOKafkaProducer's signature; tests pass fakes


@dataclass(frozen=True)
class Record:
    """One message to produce, and the event it carries."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    event: ScoredTweet | DeadLetter | None = None
    source: Source | None = None
    raw: bytes = b""  # the input, for a dead letter should the broker refuse this record


class FatalError(Exception):
    """A failure no record can be blamed for: the worker must stop without committing."""


def smaller_dead_letter(record: Record, kafka: KafkaSettings, reason: str) -> Record:
    """`record` as a dead letter a quarter of its size, after the broker refused it as too large."""
    source = record.source
    if isinstance(record.event, DeadLetter):
        letter = record.event
    else:
        letter = dead_letter(record.raw, source, "validate", f"the scored event was refused: {reason}")
    letter, value = fit_dead_letter(letter, max(1024, len(record.value) // 4))
    return Record(kafka.dlq_topic, dlq_key(source), value, record.partition, letter, source, record.raw)


def producer_options(kafka: KafkaSettings, settings: WorkerSettings) -> dict:
    """aiokafka producer keyword arguments shared by every producer of the worker."""
    return {
        "bootstrap_servers": kafka.bootstrap,
        "acks": "all",  # an output counts as delivered only when every in-sync replica has it
        "enable_idempotence": True,  # the producer's own retries never duplicate a record
        "linger_ms": 5,
        "max_request_size": max(settings.max_message_bytes + 65_536, 1_048_576),
        **kafka.aiokafka_security(),
    }


def send_backoff(settings: WorkerSettings) -> Backoff:
    """The pauses between attempts at a batch's outputs (either guarantee), until `send_retry_s`."""
    return Backoff(0.5, 5.0, deadline_s=settings.send_retry_s)


def default_factory(**options: Any):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**options)


class AtLeastOnce:
    """Outputs through one idempotent producer, retried until acknowledged."""

    def __init__(
        self, kafka: KafkaSettings, settings: WorkerSettings, factory: ProducerFactory = default_factory
    ) -> None:
        self.kafka, self.settings, self.factory = kafka, settings, factory
        self.producer = None

    async def plain(self):
        """The non-transactional producer, started on first use."""
        if self.producer is None:
            producer = self.factory(**producer_options(self.kafka, self.settings))
            try:
                await producer.start()
            except BaseException:
                await stop_quietly(producer)
                raise
            self.producer = producer
        return self.producer

    async def send_advisory(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send a message outside any guarantee's bookkeeping (stats); waits for the broker."""
        producer = await self.plain()
        await (await producer.send(topic, value, key=key))

    def on_assigned(self, partitions: set[int]) -> None:
        """A rebalance completed: nothing to do for plain producers."""

    async def stop(self) -> None:
        """Flush and close the producers (bounded: a broker that is gone cannot hold the exit)."""
        if self.producer is not None:
            await stop_quietly(self.producer, flush=True)
            self.producer = None

    async def publish(self, records: Sequence[Record], ends: dict[int, int]) -> list[Record]:
        """Send every record and wait for the broker's acknowledgements; retry what failed.

        A record the broker refuses as too large is replaced by a smaller dead letter; a permanent
        error (authorisation) or running out of `send_retry_s` raises FatalError. `ends` (input
        partition -> next offset) is for transactions; here Faust commits the acked offsets.
        """
        attempts = send_backoff(self.settings).start()
        pending, delivered = list(records), []
        while pending:
            failures = await self._send_all(pending)
            delivered += [r for r, error in zip(pending, failures, strict=True) if error is None]
            pending = [self._retry(r, e) for r, e in zip(pending, failures, strict=True) if e is not None]
            if pending and attempts.expired():
                raise FatalError(
                    f"could not deliver {len(pending)} outputs within {self.settings.send_retry_s:.0f}s"
                )
            if pending:
                log.warning("retrying %d outputs the broker did not acknowledge", len(pending))
                await attempts.wait()
        return delivered

    def _retry(self, record: Record, error: BaseException) -> Record:
        """What to send again for a failed record (or FatalError when retrying cannot help)."""
        if is_too_large(error):
            return smaller_dead_letter(record, self.kafka, type(error).__name__)
        if is_permanent(error):
            raise FatalError(f"the broker refused an output for good: {error!r}")
        return record

    async def _send_all(self, records: Sequence[Record]) -> list[BaseException | None]:
        """Send `records` in order; one result per record (None when acknowledged)."""
        try:
            producer = await self.plain()
        except Exception as exc:  # cannot connect now: every record failed, retriably
            return [exc] * len(records)
        return await send_all(producer, records)


async def send_all(producer, records: Sequence[Record]) -> list[BaseException | None]:
    """Send `records` in order through `producer`; one result per record (None when acknowledged)."""
    pending: list = []
    for r in records:
        try:
            pending.append(await producer.send(r.topic, r.value, key=r.key, partition=r.partition))
        except Exception as exc:  # aiokafka raises size errors before the future
            pending.append(exc)
    return [await _outcome(p) for p in pending]


async def _outcome(pending) -> BaseException | None:
    if isinstance(pending, BaseException):
        return pending
    try:
        await pending
    except Exception as exc:  # a failed delivery is a value here, classified by the caller
        return exc
    return None


async def stop_quietly(producer, flush: bool = False, timeout: float = 5.0) -> None:
    """Close `producer` within `timeout` s, whatever state it (or the broker) is in."""
    try:
        if flush:
            await asyncio.wait_for(producer.flush(), timeout)
    except Exception as exc:  # closing anyway: what was not flushed is redone from the offsets
        log.warning("could not flush the producer: %s", type(exc).__name__)
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except Exception as exc:  # a producer that cannot close cleanly is dropped
        log.warning("could not close a producer cleanly: %s", type(exc).__name__)


def is_too_large(error: BaseException) -> bool:
    """The broker or the producer refuses this record for its size."""
    from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

    return isinstance(error, MessageSizeTooLargeError | RecordTooLargeError | RecordListTooLargeError)


def is_permanent(error: BaseException) -> bool:
    """Retrying cannot help: authorisation refused."""
    from aiokafka.errors import (
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        TopicAuthorizationFailedError,
        TransactionalIdAuthorizationFailed,
    )

    permanent = (
        TopicAuthorizationFailedError,
        ClusterAuthorizationFailedError,
        TransactionalIdAuthorizationFailed,
        GroupAuthorizationFailedError,
    )
    return isinstance(error, permanent)


def is_fenced(error: BaseException) -> bool:
    """A newer owner of the input partition initialised its producer: this one may not commit."""
    from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

    return isinstance(error, ProducerFenced | InvalidProducerEpoch)
