"""Micro-batches of Faust events taken straight from the agent's channel, and acked in bulk.

Faust's `stream.noack_take()` moves every event through the stream iterator, a buffering
processor and a passive-drainer task (about a dozen event-loop callbacks per event), and
`stream.ack()` is one await per event. This takes the events the conductor queued for the agent's
topic in one go and does per event only what the stream iterator does for delivery: skip an event
of a past rebalance generation (acked, as Faust does: the new owner fetches it again from the
committed offset) and track the message, so Faust's shutdown and rebalance still wait for it to be
acked. Acking a batch marks its offsets safe to commit, exactly as `stream.ack` per event would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence


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
