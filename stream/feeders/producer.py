"""Send tweets to Kafka: `TweetProducer` for asyncio code, `produce_texts` for everyone else.

Every message is built through `stream.events.Tweet` (so a producer cannot send what the worker will
reject), keyed by the tweet id, and sent by an idempotent `acks=all` aiokafka producer with
compressed, lingering batches. Bulk senders (`send_many`, `send_encoded`) fill aiokafka record
batches directly: one Python call per message instead of one coroutine, which is what lets a
single core push tens of thousands of messages a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import SentistreamError, UsageError
from stream.decode import describe_validation_error
from stream.events import Tweet, new_id
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

TweetLike = Tweet | str | Mapping[str, Any]
# One message may be at most 1 MiB: aiokafka's max_request_size and, within a few bytes, the broker's
# default message.max.bytes. A record's headers (batch header, varints) take well under the margin.
MAX_MESSAGE_BYTES = 1_048_576
RECORD_OVERHEAD_BYTES = 128
DeliveryCallback = Callable[[str, BaseException | None], None]


class ProducerSettings(BaseSettings):
    """How the producers batch, compress and wait (the broker and topic are in `KafkaSettings`)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_PRODUCER_", frozen=True)

    linger_ms: int = Field(default=10, ge=0, description="how long a batch waits for more messages")
    batch_bytes: int = Field(
        default=512 * 1024, ge=1024, description="bytes per partition batch before it is sent"
    )
    compression: Literal["lz4", "zstd", "gzip", "none"] = Field(
        default="lz4", description="batch compression"
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="seconds to reach the broker and learn the topic before giving up"
    )
    request_timeout_ms: int = Field(
        default=30000, ge=1000, description="ms a batch may take, retries included, before it fails"
    )
    retry_backoff_ms: int = Field(default=100, ge=0, description="ms between retries of a failed batch")
    client_id: str = Field(default="sentistream-producer", description="client id the broker logs")


class Encoded(NamedTuple):
    """One message ready for Kafka: the tweet id, its key bytes and its JSON value bytes."""

    id: str
    key: bytes
    value: bytes


def to_tweet(item: TweetLike) -> Tweet:
    """A `Tweet` with an id from a text, a mapping in the `tweets` schema, or a `Tweet`."""
    try:
        if isinstance(item, str):
            return Tweet(text=item, id=new_id())
        if isinstance(item, Tweet):
            return item if item.id is not None else item.model_copy(update={"id": new_id()})
        return Tweet.model_validate(item if item.get("id") is not None else {**item, "id": new_id()})
    except ValidationError as exc:
        raise UsageError(f"not a valid tweet: {describe_validation_error(exc)}") from None


def encode_tweet(item: TweetLike) -> Encoded:
    """Validate `item` as a `Tweet` and serialise it: key = id (UTF-8), value = compact JSON."""
    tweet = to_tweet(item)
    value = tweet.__pydantic_serializer__.to_json(tweet, exclude_none=True)
    key = tweet.id.encode()  # type: ignore[union-attr]  # to_tweet sets id
    size = len(key) + len(value) + RECORD_OVERHEAD_BYTES
    if size > MAX_MESSAGE_BYTES:  # bad input, said before Kafka refuses it as a broker error
        raise UsageError(
            f"not a valid tweet: {size:,} bytes as a Kafka message, over the limit of "
            f"{MAX_MESSAGE_BYTES:,} bytes (1 MiB); shorten or split its text"
        )
    return Encoded(tweet.id, key, value)  # type: ignore[arg-type]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a key: the same id always lands in the same partition.

    CRC32 rather than Kafka's murmur2: aiokafka's murmur2 is pure Python and costs ~4 µs a key, a
    quarter of the whole per-message budget. Ids are unique per tweet, so only stability matters.
    """
    return zlib.crc32(key) % partitions


class TweetProducer:
    """Async context manager that sends tweets to `kafka.topic` (or `topic`)."""

    def __init__(self, kafka: KafkaSettings, settings: ProducerSettings, topic: str | None = None) -> None:
        self.kafka = kafka
        self.settings = settings
        self.topic = topic or kafka.topic
        self._producer: Any = None
        self._pending: list[tuple[asyncio.Future, int]] = []
        self._prune_at = 10_000
        self.sent = 0

    async def __aenter__(self) -> TweetProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and learn the topic's partitions; an unreachable broker fails within the timeout."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        self._producer = AIOKafkaProducer(**self._client_options())
        try:
            await asyncio.wait_for(self._connect(), self.settings.connect_timeout_s)
        except (TimeoutError, OSError, KafkaError) as exc:
            await self._close_quietly()
            raise SentistreamError(self._unreachable_message(exc)) from None

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "bootstrap_servers": self.kafka.bootstrap,
            "client_id": s.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if s.compression == "none" else s.compression,
            "linger_ms": s.linger_ms,
            "max_batch_size": s.batch_bytes,
            "request_timeout_ms": s.request_timeout_ms,
            "retry_backoff_ms": s.retry_backoff_ms,
            **self.kafka.aiokafka_security(),
        }

    async def _connect(self) -> None:
        await self._producer.start()
        await self._producer.partitions_for(self.topic)  # auto-creates the topic where the broker allows

    def _unreachable_message(self, exc: BaseException) -> str:
        reason = "no answer" if isinstance(exc, TimeoutError) else f"connection failed: {type(exc).__name__}"
        return (
            f"cannot reach Kafka at {self.kafka.broker} or its topic {self.topic!r} within "
            f"{self.settings.connect_timeout_s:g}s ({reason}); start one with `sentistream kafka start` "
            "or pass --broker kafka://HOST:PORT"
        )

    async def _close_quietly(self) -> None:
        from aiokafka.errors import KafkaError

        try:
            await asyncio.wait_for(self._producer.stop(), 2.0)
        except (TimeoutError, OSError, KafkaError) as exc:  # a half-open client must not hide the real error
            log.debug("closing the producer: %s", exc)
        self._producer = None

    async def stop(self) -> None:
        """Flush what is buffered, then close the connection."""
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            await self._close_quietly()  # after a failed flush, aiokafka's stop would wait forever

    async def send(self, item: TweetLike | Encoded, on_delivered: DeliveryCallback | None = None) -> str:
        """Queue one tweet (batched with the next ones for `linger_ms`); returns its id."""
        message = item if isinstance(item, Encoded) else encode_tweet(item)
        partitions = await self._partitions()
        partition = partition_for(message.key, partitions)
        with self._broker_errors():
            future = await self._producer.send(
                self.topic, message.value, key=message.key, partition=partition
            )
        self._track(future, 1)
        if on_delivered is not None:
            future.add_done_callback(lambda f: on_delivered(message.id, _failure(f)))
        return message.id

    async def send_many(self, items: Iterable[TweetLike]) -> list[str]:
        """Queue many tweets in as few record batches as fit; returns their ids in order."""
        messages = [encode_tweet(item) for item in items]
        await self.send_encoded(messages)
        return [m.id for m in messages]

    async def send_encoded(self, messages: Sequence[Encoded]) -> None:
        """Queue already-encoded messages, in order per partition, filling one batch per partition."""
        partitions = await self._partitions()
        builders: dict[int, Any] = {}
        for message in messages:
            partition = partition_for(message.key, partitions)
            builder = builders.get(partition) or self._producer.create_batch()
            if builder.append(key=message.key, value=message.value, timestamp=None) is None:
                await self._submit(builder, partition)
                builder = self._producer.create_batch()
                if builder.append(key=message.key, value=message.value, timestamp=None) is None:
                    raise UsageError(f"tweet {message.id} is larger than --batch-bytes; raise it")
            builders[partition] = builder
        for partition, builder in builders.items():
            await self._submit(builder, partition)

    async def _submit(self, builder: Any, partition: int) -> None:
        count = builder.record_count()
        builder.close()
        with self._broker_errors():
            future = await self._producer.send_batch(builder, self.topic, partition=partition)
        self._track(future, count)

    async def _partitions(self) -> int:
        if self._producer is None:
            raise SentistreamError("the producer is not started; use `async with TweetProducer(...)`")
        with self._broker_errors():
            return len(await self._producer.partitions_for(self.topic))

    @contextlib.contextmanager
    def _broker_errors(self) -> Iterator[None]:
        """A broker that stops answering mid-stream becomes one line, not an aiokafka traceback."""
        from aiokafka.errors import KafkaError

        try:
            yield
        except KafkaError as exc:
            raise SentistreamError(
                f"Kafka at {self.kafka.broker} stopped taking messages for {self.topic!r} "
                f"({type(exc).__name__}: {exc}); {self.sent} were queued before it"
            ) from None

    def _track(self, future: asyncio.Future, count: int) -> None:
        self._pending.append((future, count))
        self.sent += count
        if len(self._pending) > self._prune_at:  # keep memory flat on endless streams
            self._pending = [(f, n) for f, n in self._pending if not f.done() or _failure(f)]
            self._prune_at = max(10_000, 2 * len(self._pending))  # amortised: never prune on every send

    async def flush(self) -> None:
        """Wait until every queued message is acknowledged; raise if any could not be delivered.

        aiokafka retries a lost broker forever (its own flush would never return), so a flush gives
        up once a whole `request_timeout_ms` passes without a single acknowledgement.
        """
        if self._producer is None:
            return
        pending, self._pending = self._pending, []
        waiting = {f for f, _ in pending}
        timeout_s = self.settings.request_timeout_ms / 1000
        while waiting:
            done, waiting = await asyncio.wait(waiting, timeout=timeout_s)
            if not done:
                break
        failed = [(f, n) for f, n in pending if not f.done() or _failure(f)]
        if failed:
            lost = sum(n for _, n in failed)
            reason = _failure(failed[0][0]) or f"no acknowledgement for {timeout_s:g}s"
            raise SentistreamError(
                f"{lost} messages were not delivered to {self.topic!r} at {self.kafka.broker} ({reason}); "
                "they are not among those reported as sent"
            )


def _failure(future: asyncio.Future) -> BaseException | None:
    if not future.done():
        return None
    return future.exception() if not future.cancelled() else asyncio.CancelledError()


def produce_texts(
    items: Iterable[TweetLike], kafka: KafkaSettings | None = None, settings: ProducerSettings | None = None
) -> list[str]:
    """Send tweets (texts, mappings or `Tweet`s) from synchronous code; returns their ids once acked.

    Settings not given are read from `SENTISTREAM_*` variables. Runs its own event loop, so call it
    from plain code, not from inside a running asyncio loop (use `TweetProducer` there).
    """
    kafka = kafka or KafkaSettings()
    settings = settings or ProducerSettings()

    async def send_all() -> list[str]:
        async with TweetProducer(kafka, settings) as producer:
            return await producer.send_many(items)

    return asyncio.run(send_all())
