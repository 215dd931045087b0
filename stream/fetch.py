"""Faust's aiokafka consumer, handing each fetched batch to the conductor in one task.

Faust's fetch loop (`Consumer._drain_messages`) delivers every message inside its own
`wait_first(callback(message), suspend_flow.wait())`: two tasks and an `asyncio.wait` per message,
the largest cost left in the worker's per-event path. Here the fetch is Faust's own (`getmany`, in
the fetch loop, as before), and the same per-message steps (read offset, gap tracking, the
conductor callback) run in order inside one such `wait_first` per fetched batch. Delivery stops
where Faust's would: when the flow is suspended (a rebalance), at the message it is waiting on or
before the next one, and the rebalance's seek to the committed offsets fetches the rest again.
"""

from __future__ import annotations

import asyncio


def batched_consumer_class():
    """The consumer class (built on first use: faust is imported lazily)."""
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers.aiokafka import Consumer

    class BatchedConsumer(Consumer):
        """Faust's aiokafka Consumer with a fetch loop that waits once per batch, not per message."""

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
