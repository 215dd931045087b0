"""Exactly once: each batch's outputs and input offsets commit in one transaction per input partition.

Fencing by transactional id (aiokafka's `send_offsets_to_transaction` takes no consumer-group
metadata, so KIP-447's fencing by generation is not available): whoever owns input partition p
produces its outputs through the transactional id `GROUP-TOPIC-p`. Before its first transaction
in a consumer-group generation, a worker starts a fresh producer for p. Its InitProducerId fences
every older producer of p (their transactions can no longer commit) and returns only once the
broker has completed or aborted their open transaction; only then does the worker read p's
committed offset. Events below it are already done (by an earlier owner, or by a commit whose
acknowledgement was lost) and are skipped. So every offset's outputs commit once, with the offset.

A failure inside a transaction (a send the broker did not acknowledge, an unknown outcome, a
failed commit) is never answered by sending again inside it: the producer is dropped, a fresh one
fences and resolves the open transaction, the committed offset is read again, and what is left of
the batch goes into a new transaction. A fenced producer means a newer owner has p: its outputs of
this batch are dropped, and the new owner redoes them from the committed offset.

Faust commits nothing in this mode (stream/kafka_internals.py: no timer, count, rebalance or
shutdown commit), so no offset is ever committed outside a transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.settings import KafkaSettings
from stream.worker.delivery import (
    AtLeastOnce,
    FatalError,
    ProducerFactory,
    Record,
    default_factory,
    is_fenced,
    is_permanent,
    is_too_large,
    producer_options,
    send_all,
    send_backoff,
    smaller_dead_letter,
    stop_quietly,
)
from stream.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_S = 30.0  # one transaction's longest wait (a broker restart) before it is redone
CommittedReader = Callable[[int], Awaitable[int]]  # input partition -> committed offset (-1: none)


@dataclass
class _Partition:
    """The producer of one input partition in one consumer-group generation."""

    producer: Any
    generation: int
    committed: int | None = None  # next offset to process; None until read after fencing


class _Redo(Exception):
    """Some outputs were replaced by smaller dead letters: run the transaction again at once."""


class ExactlyOnce(AtLeastOnce):
    """Outputs and input offsets in one transaction per input partition and batch."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        group_id: str,
        factory: ProducerFactory = default_factory,
        committed: CommittedReader | None = None,
    ) -> None:
        super().__init__(kafka, settings, factory)
        self.group_id = group_id
        self.partitions: dict[int, _Partition] = {}
        self.generation = 0
        self.assigned: set[int] | None = None  # None until the first assignment: all are owned
        self.read_committed = committed or self._committed_from_broker
        self._admin = None
        self._closing: set[asyncio.Task] = set()  # producers of lost partitions being closed

    def transactional_id(self, partition: int) -> str:
        """The one transactional id of input partition `partition`, whichever worker owns it."""
        return f"{self.group_id}-{self.kafka.topic}-{partition}"

    def on_assigned(self, partitions: set[int]) -> None:
        """A rebalance completed: every producer is started afresh (fencing) before its next use,
        and those of partitions this worker lost are closed (their new owner has fenced them)."""
        self.generation += 1
        self.assigned = set(partitions)
        lost = [self.partitions.pop(p) for p in list(self.partitions) if p not in self.assigned]
        for state in lost:
            task = asyncio.get_running_loop().create_task(stop_quietly(state.producer))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def publish(self, records: Sequence[Record], ends: dict[int, int]) -> list[Record]:
        """Commit each input partition's outputs with its next offset `ends[p]`; the records the
        broker has (those of a partition this worker lost are dropped: the new owner redoes them)."""
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.source.partition].append(record)
        outcomes = await asyncio.gather(
            *(self._commit(p, by_partition[p], end) for p, end in ends.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [record for delivered in outcomes for record in delivered]

    async def _commit(self, partition: int, records: list[Record], end: int) -> list[Record]:
        """Retry one partition's transaction, each attempt in a fresh one, until it commits."""
        attempts = send_backoff(self.settings).start()
        while True:
            if self.assigned is not None and partition not in self.assigned:
                return []  # revoked: the new owner starts from the committed offset
            try:
                timeout = max(1.0, min(ATTEMPT_TIMEOUT_S, attempts.remaining_s()))
                return await asyncio.wait_for(self._transaction(partition, records, end), timeout)
            except _Redo:
                continue
            except Exception as exc:
                await self._drop(partition)
                if is_fenced(exc):
                    log.info(
                        "%s[%d] has a newer owner: its outputs are left to it", self.kafka.topic, partition
                    )
                    return []
                if is_permanent(exc):
                    raise FatalError(f"the broker refused a transaction for good: {exc!r}") from None
                if attempts.expired():
                    raise FatalError(
                        f"could not commit the outputs of {self.kafka.topic}[{partition}] within "
                        f"{self.settings.send_retry_s:.0f}s (last: {type(exc).__name__})"
                    ) from None
                log.warning(
                    "the transaction of %s[%d] failed (%s); the batch is redone in a new one",
                    self.kafka.topic,
                    partition,
                    type(exc).__name__,
                )
                await attempts.wait()

    async def _transaction(self, partition: int, records: list[Record], end: int) -> list[Record]:
        """One attempt: begin, send what is not committed yet, add the offset, commit."""
        state = await self._partition(partition)
        producer = state.producer
        await producer.begin_transaction()  # on a fresh producer: waits until it has fenced the others
        if state.committed is None:
            state.committed = await self.read_committed(partition)
        if state.committed >= end:  # already committed: by an earlier attempt or an earlier owner
            await producer.abort_transaction()  # empty: ends without asking the broker
            return records
        todo = [r for r in records if r.source.offset >= state.committed]
        failures = await send_all(producer, todo)
        errors = [e for e in failures if e is not None]
        if any(is_too_large(e) for e in errors):
            self._shrink(records, todo, failures)
            await self._drop(partition)  # aborts the open transaction by fencing it
            raise _Redo
        if errors:
            raise errors[0]
        from aiokafka import TopicPartition

        await producer.send_offsets_to_transaction(
            {TopicPartition(self.kafka.topic, partition): end}, self.group_id
        )
        await producer.commit_transaction()
        state.committed = end
        return records

    def _shrink(self, records: list[Record], todo: list[Record], failures: list) -> None:
        """Replace each record refused for its size by a smaller dead letter, in place."""
        for record, error in zip(todo, failures, strict=True):
            if error is not None and is_too_large(error):
                records[records.index(record)] = smaller_dead_letter(record, self.kafka, type(error).__name__)

    async def _partition(self, partition: int) -> _Partition:
        """The producer of `partition` for this generation, started (and so fencing) on first use."""
        state = self.partitions.get(partition)
        if state is not None and state.generation == self.generation:
            return state
        await self._drop(partition)
        options = producer_options(self.kafka, self.settings)
        producer = self.factory(**options, transactional_id=self.transactional_id(partition))
        try:
            await producer.start()
        except BaseException:
            await stop_quietly(producer)
            raise
        state = self.partitions[partition] = _Partition(producer, self.generation)
        return state

    async def _drop(self, partition: int) -> None:
        """Close `partition`'s producer; its open transaction is aborted when the next one fences it."""
        state = self.partitions.pop(partition, None)
        if state is not None:
            await stop_quietly(state.producer)

    async def _committed_from_broker(self, partition: int) -> int:
        """The consumer group's committed offset of input `partition` (-1 when there is none)."""
        from aiokafka import TopicPartition

        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.kafka.bootstrap, **self.kafka.aiokafka_security()
            )
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        tp = TopicPartition(self.kafka.topic, partition)
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=[tp])
        found = offsets.get(tp)
        return found.offset if found is not None else -1

    async def stop(self) -> None:
        """Close every producer and the admin client."""
        for partition in list(self.partitions):
            await self._drop(partition)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._admin is not None:
            await asyncio.wait_for(self._admin.close(), 5.0)
            self._admin = None
        await super().stop()


def outputs_for(kafka: KafkaSettings, settings: WorkerSettings, factory: ProducerFactory = default_factory):
    """The delivery of the guarantee in force."""
    if settings.guarantee == "exactly_once":
        return ExactlyOnce(kafka, settings, settings.group_id, factory)
    return AtLeastOnce(kafka, settings, factory)
