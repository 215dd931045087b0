"""A TCP proxy in front of a real broker that can make a write ambiguous: the broker appends the
batch, and the client is told it failed.

The broker advertises the proxy's port (`BrokerSettings.advertised_port`), so every connection of
every client goes through it. Frames are forwarded untouched, except that once armed with
`fail_next_produce(topic)`, the next Produce request naming `topic` reaches the broker as sent, and
its response comes back with every partition's error set to UNKNOWN_SERVER_ERROR, a non-retriable
error: the records are in the log, and the producer's future fails. That is the fault a re-send
inside the open transaction turns into a committed duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from io import BytesIO

PRODUCE = 0
UNKNOWN_SERVER_ERROR = -1


def _produce_response_class(version: int):
    from aiokafka.protocol import produce

    return getattr(produce, f"ProduceResponse_v{version}")


def fail_produce_response(payload: bytes, version: int) -> bytes:
    """`payload` (correlation id + ProduceResponse body) with every partition's error code set to
    UNKNOWN_SERVER_ERROR."""
    schema = _produce_response_class(version).SCHEMA
    topics, *rest = schema.decode(BytesIO(payload[4:]))
    failed = [
        (topic, [(p[0], UNKNOWN_SERVER_ERROR, *p[2:]) for p in partitions]) for topic, partitions in topics
    ]
    return payload[:4] + schema.encode((failed, *rest))


class KafkaProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream`, in a thread of its own."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port, self.upstream = port, upstream
        self.failed = 0  # Produce responses turned into failures so far
        self._armed: bytes | None = None
        self._doomed: set[tuple[int, int]] = set()  # (connection, correlation id) to fail
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> KafkaProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail_next_produce(self, topic: str) -> None:
        """The next Produce request that names `topic` is written, and answered with an error."""
        with self._lock:
            self._armed = topic.encode()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_writer.close()
            return
        versions: dict[int, int] = {}  # correlation id -> Produce version, of this connection
        connection = id(client_writer)
        upstream = asyncio.ensure_future(self._requests(client_reader, broker_writer, versions, connection))
        downstream = asyncio.ensure_future(
            self._responses(broker_reader, client_writer, versions, connection)
        )
        await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_writer, broker_writer):
            with contextlib.suppress(Exception):
                writer.close()

    async def _requests(self, reader, writer, versions: dict[int, int], connection: int) -> None:
        while True:
            size_bytes = await reader.readexactly(4)
            payload = await reader.readexactly(struct.unpack(">i", size_bytes)[0])
            api_key, version, correlation = struct.unpack(">hhi", payload[:8])
            if api_key == PRODUCE:
                versions[correlation] = version
                with self._lock:
                    if self._armed is not None and self._armed in payload:
                        self._doomed.add((connection, correlation))
                        self._armed = None
            writer.write(size_bytes + payload)
            await writer.drain()

    async def _responses(self, reader, writer, versions: dict[int, int], connection: int) -> None:
        while True:
            size_bytes = await reader.readexactly(4)
            payload = await reader.readexactly(struct.unpack(">i", size_bytes)[0])
            correlation = struct.unpack(">i", payload[:4])[0]
            version = versions.pop(correlation, None)
            if version is not None and (connection, correlation) in self._doomed:
                self._doomed.discard((connection, correlation))
                payload = fail_produce_response(payload, version)
                size_bytes = struct.pack(">i", len(payload))
                self.failed += 1
            writer.write(size_bytes + payload)
            await writer.drain()
