"""Every private name of Faust and aiokafka this project relies on, in one place.

Faust stays the application (agent, group membership, web views, timers); what it offers no public
way to do lives here, pinned to the versions it was written against (`PINNED`, checked by
tests/stream/test_kafka_internals.py, which fails with what to re-check when they change):

- `batched_consumer_class`: Faust's aiokafka consumer with a fetch loop that hands each fetched
  batch to the conductor in one task (Faust's own loop costs two tasks and an `asyncio.wait` per
  message), and, for exactly-once, a consumer that never commits offsets itself and reads input
  `read_committed`: the worker's transactions commit them (stream/worker/transactions.py).
- `ChannelBatches`: micro-batches taken straight from an agent's channel queue, acked in bulk.
- `topic_partitions`: the partitions of a topic without creating it, on a consumer the caller already
  holds (the dashboard); a command without one asks an admin client (`stream.admin.partition_ids`).

Faust's fetch loop (`Consumer._drain_messages`) delivers every message inside its own
`wait_first(callback(message), suspend_flow.wait())`. Here the fetch is Faust's own (`getmany`, in
the fetch loop, as before), and the same per-message steps (read offset, gap tracking, the
conductor callback) run in order inside one such `wait_first` per fetched batch. Delivery stops
where Faust's would: when the flow is suspended (a rebalance), at the message it is waiting on or
before the next one, and the rebalance's seek to the committed offsets fetches the rest again.

`ChannelBatches`: Faust's `stream.noack_take()` moves every event through the stream iterator, a
buffering processor and a passive-drainer task (about a dozen event-loop callbacks per event), and
`stream.ack()` is one await per event. This takes the events the conductor queued for the agent's
topic in one go and does per event only what the stream iterator does for delivery: skip an event
of a past rebalance generation (acked, as Faust does: the new owner fetches it again from the
committed offset) and track the message, so Faust's shutdown and rebalance still wait for it to be
acked. Acking a batch marks its offsets processed, exactly as `stream.ack` per event would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

# The versions this module was written against; anything else must be re-checked first.
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def installed_versions() -> dict[str, str]:
    """The installed versions of the pinned distributions."""
    from importlib.metadata import version

    return {name: version(name) for name in PINNED}


def version_drift() -> str | None:
    """None when the installed Faust and aiokafka are the pinned ones, else what to do."""
    installed = installed_versions()
    drift = {name: v for name, v in installed.items() if v != PINNED[name]}
    if not drift:
        return None
    found = ", ".join(f"{name} {v} (pinned {PINNED[name]})" for name, v in drift.items())
    return (
        f"{found}: stream/kafka_internals.py uses private names of these libraries; re-read each "
        "against the new version, then update PINNED"
    )


def batched_consumer_class(commits: bool = True):
    """The consumer class (built on first use: faust is imported lazily).

    `commits=False` (exactly-once): the consumer never commits offsets (no timer, count, rebalance
    or shutdown commit behind a batch's back) and reads `read_committed`; transactions commit.
    """
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers.aiokafka import Consumer

    class BatchedConsumer(Consumer):
        """Faust's aiokafka Consumer with a fetch loop that waits once per batch, not per message."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if not commits:
                # Faust reads input read_committed when this flag is set; its own transaction
                # manager, which the same flag would start, is kept out by on_init_dependencies.
                self.in_transaction = True

        def on_init_dependencies(self):
            return super().on_init_dependencies() if commits else []

        async def commit(self, topics=None, start_new_transaction: bool = True) -> bool:
            """Faust's commit (its timer, every `broker_commit_every` messages, a rebalance, the
            shutdown); with `commits=False` nothing: only the batch's transaction commits."""
            if commits:
                return await super().commit(topics, start_new_transaction=start_new_transaction)
            return False

        async def _drain_messages(self, fetcher) -> None:
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    await self.sleep(0)  # as Faust's loop: never hold the loop across fetches
                    batch = [pair async for pair in self.getmany(timeout=1.0)]
                    if batch and not self.should_stop:
                        await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                    self.diag.unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    self.log.info("Broker stopped consumer, shutting down...")
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    self.log.info("Consumer shutting down for user cancel.")
                    return
                raise
            except Exception as exc:
                self.log.exception("Drain messages raised: %r", exc)
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        async def _deliver(self, batch: list) -> None:
            """Faust's per-message steps for one fetched batch, in order, while the flow is on."""
            app, callback = self.app, self.callback
            get_read_offset = self._read_offset.__getitem__
            set_read_offset = self._read_offset.__setitem__
            acks_enabled_for = app.topics.acks_enabled_for
            for n, (tp, message) in enumerate(batch, 1):
                if n % 100 == 0:  # let health checks and timers in during a big batch
                    await asyncio.sleep(0)
                if not self.flow_active or message.generation_id != app.consumer_generation_id:
                    return  # a rebalance began: Faust's getmany stops here too
                offset = message.offset
                read = get_read_offset(tp)
                if read is not None and offset < read:
                    continue  # already delivered (Faust drops these too)
                if offset - (read or 0) > 1 and read and acks_enabled_for(message.topic):
                    await self._add_gap(tp, read + 1, offset)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)

    return BatchedConsumer


class ChannelBatches:
    """Up to `size` events at a time from a Faust agent's stream, waiting at most `within` seconds
    to fill a batch once its first event arrived."""

    def __init__(self, stream, size: int, within: float) -> None:
        self.app = stream.app
        # Iterating the topic registers this channel with the conductor, as the stream's own
        # iterator would; the conductor then queues every message of the agent's topic here.
        self.channel = aiter(stream.channel)
        self.queue = self.channel.queue
        self.size, self.within = size, within

    async def __aiter__(self) -> AsyncIterator[list]:
        try:
            while True:
                try:
                    events = await self.take()
                except StopAsyncIteration:  # thrown into the channel when Faust stops the agent
                    return
                if events:
                    yield events
        finally:
            self.channel.on_stop_iteration()

    async def take(self) -> list:
        """The next batch (empty when every event taken was of a past generation)."""
        events: list = []
        self._admit(await self.queue.get(), events)  # raises what was thrown into the channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.within
        while len(events) < self.size:
            while self.queue.qsize() and len(events) < self.size:
                self._admit(self.queue.get_nowait(), events)
            remaining = deadline - loop.time()
            if len(events) >= self.size or remaining <= 0:
                break
            try:
                self._admit(await asyncio.wait_for(self.queue.get(), remaining), events)
            except TimeoutError:
                break
        return events

    def _admit(self, event, events: list) -> None:
        message = event.message
        app = self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            event.ack()
            return
        if not message.tracked:
            message.tracked = True
            app.consumer.track_message(message)
        events.append(event)

    def ack(self, events: Sequence) -> None:
        """Mark `events` processed: their offsets may be committed from now on."""
        on_message_out = self.app.sensors.on_message_out
        for event in events:
            if event.ack():
                message = event.message
                on_message_out(message.tp, message.offset, message)


async def topic_partitions(consumer, topic: str) -> list[int]:
    """The partitions of `topic` as the broker knows them now ([] while it does not exist), asked
    with an all-topics metadata request: asking for the topic by name would auto-create it."""
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())
