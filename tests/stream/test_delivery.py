"""The delivery path in process: a fake stream and a fake producer whose acks and failures the test
controls. Deterministic proofs of the rules in stream/agents.py: an input is acked only once every
output of its batch is acknowledged, retries keep order, a failed batch is never committed and
stops the worker, exactly-once sends with the input partition's transaction, and outputs of
revoked partitions are dropped and not counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from faust.types import TP

from model.engines import load_engine
from stream.agents import Scorer
from stream.events import DeadLetter
from stream.metrics import WorkerMetrics
from stream.settings import KafkaSettings, WorkerSettings
from stream.stats import TumblingStats

KAFKA = KafkaSettings(topic="in", scored_topic="out", dlq_topic="dlq", stats_topic="stats")


@dataclass
class Message:
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    topic: str = "in"
    timestamp: float = 1_700_000_000.0


@dataclass
class Event:
    message: Message


class FakeStream:
    """Yields the given batches, records acks (what `Scorer.micro_batches` makes of a Faust stream)."""

    def __init__(self, batches: list[list[Event]]) -> None:
        self.batches, self.acked = batches, []

    async def __aiter__(self):
        for batch in self.batches:
            yield batch

    def ack(self, events: list[Event]) -> None:
        self.acked += [(event.message.partition, event.message.offset) for event in events]


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    transactional_id: str | None
    future: asyncio.Future


@dataclass
class FakeProducer:
    """`decide(sent, attempt)` returns None (ack), "hold" (test resolves it), "raise" (raise in
    send, as aiokafka does for an oversized record) or an exception (the future fails with it)."""

    decide: object = lambda sent, attempt: None
    sent: list[Sent] = field(default_factory=list)
    attempts: dict = field(default_factory=dict)

    async def maybe_start(self) -> None:
        pass

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        future = asyncio.get_running_loop().create_future()
        record = Sent(topic, key, value, partition, transactional_id, future)
        attempt = self.attempts[(topic, key)] = self.attempts.get((topic, key), 0) + 1
        verdict = self.decide(record, attempt)
        if verdict == "raise":
            raise MessageSizeTooLargeError("too big")
        self.sent.append(record)
        if verdict is None:
            future.set_result(None)
        elif isinstance(verdict, BaseException):
            future.set_exception(verdict)
        return future


class FakeConsumer:
    def __init__(self, assigned: set[TP]) -> None:
        self.assigned, self.commits = assigned, 0

    def assignment(self) -> set[TP]:
        return self.assigned

    async def commit(self) -> None:
        self.commits += 1

    def highwater(self, tp: TP) -> int:
        return 0


def make_scorer(producer: FakeProducer, guarantee: str = "at_least_once", assigned=None, **settings):
    consumer = FakeConsumer(assigned if assigned is not None else {TP("in", p) for p in range(4)})
    app = SimpleNamespace(
        producer=producer,
        consumer=consumer,
        conf=SimpleNamespace(id="app"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0),
    )
    exits: list[int] = []
    scorer = Scorer(
        app,
        KAFKA,
        WorkerSettings(guarantee=guarantee, **settings),
        load_engine(None, backend="constant"),
        WorkerMetrics(),
        TumblingStats(10.0, "w"),
        exit=exits.append,
    )
    scorer.micro_batches = lambda stream: stream  # the fake stream yields batches itself
    return scorer, consumer, exits


def batch(*partition_offsets: tuple[int, int]) -> list[Event]:
    return [
        Event(Message(p, o, orjson.dumps({"id": f"{p}-{o}", "text": f"text {p}-{o}"}), f"{p}-{o}".encode()))
        for p, o in partition_offsets
    ]


async def until(condition, what: str, polls: int = 500) -> None:
    """Yield to the loop until `condition()`; fail naming `what` rather than hang."""
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def counted(scorer: Scorer, name: str) -> float:
    return sum(s.value for m in scorer.metrics.registry.collect() for s in m.samples if s.name == name)


async def test_inputs_are_acked_only_after_every_output_is_acknowledged() -> None:
    producer = FakeProducer(decide=lambda sent, attempt: "hold")
    scorer, _, exits = make_scorer(producer)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2))])
    task = asyncio.create_task(scorer.consume(stream))
    while len(producer.sent) < 3:
        await asyncio.sleep(0.01)
    producer.sent[0].future.set_result(None)
    producer.sent[2].future.set_result(None)
    await asyncio.sleep(0.05)
    assert stream.acked == [], "acked before the second output was acknowledged"
    producer.sent[1].future.set_result(None)
    await task
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_the_next_batch_is_scored_while_outputs_wait_but_sent_only_after_the_ack() -> None:
    producer = FakeProducer(decide=lambda sent, attempt: "hold")
    scorer, _, exits = make_scorer(producer)
    scored_batches = []
    engine_predict = scorer.engine.predict
    scorer.engine.predict = lambda texts: scored_batches.append(len(texts)) or engine_predict(texts)
    stream = FakeStream([batch((0, 0), (0, 1)), batch((0, 2))])
    task = asyncio.create_task(scorer.consume(stream))
    await until(lambda: len(scored_batches) == 2, "the second batch to be scored while the first waits")
    await asyncio.sleep(0.05)
    assert [s.key for s in producer.sent] == [b"0-0", b"0-1"], "sent before the batch before was acked"
    assert stream.acked == []
    for sent in producer.sent:
        sent.future.set_result(None)
    await until(lambda: len(producer.sent) == 3, "the second batch to be sent")
    assert stream.acked == [(0, 0), (0, 1)], "the first batch is acked before the second is sent"
    producer.sent[2].future.set_result(None)
    await task
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_failed_sends_are_retried_in_their_original_order() -> None:
    def decide(sent, attempt):
        return KafkaTimeoutError() if attempt == 1 and sent.key in (b"0-1", b"0-3") else None

    producer = FakeProducer(decide=decide)
    scorer, _, exits = make_scorer(producer)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2), (0, 3))])
    await scorer.consume(stream)
    keys = [s.key for s in producer.sent]
    assert keys == [b"0-0", b"0-1", b"0-2", b"0-3", b"0-1", b"0-3"]
    assert stream.acked == [(0, 0), (0, 1), (0, 2), (0, 3)] and exits == []
    assert counted(scorer, "sentistream_scored_total") == 4
    scorer.close()


@pytest.mark.parametrize(
    ("error", "settings"),
    [
        (TopicAuthorizationFailedError(), {}),  # permanent: no retries at all
        (KafkaTimeoutError(), {"send_retry_s": 0.2}),  # retriable, but past the retry budget
    ],
)
async def test_a_batch_that_cannot_be_delivered_is_never_acked_nor_committed(error, settings) -> None:
    producer = FakeProducer(decide=lambda sent, attempt: error if sent.key == b"1-1" else None)
    scorer, consumer, exits = make_scorer(producer, guarantee="exactly_once", **settings)
    stream = FakeStream([batch((1, 0)), batch((1, 1), (1, 2)), batch((1, 3))])
    await scorer.consume(stream)
    assert exits == [1]
    assert stream.acked == [(1, 0)], "only the batch before the failure is acked"
    assert consumer.commits == 1, "the failed batch is not committed"
    assert all(s.key != b"1-3" for s in producer.sent), "no batch after the failure is processed"
    if isinstance(error, TopicAuthorizationFailedError):
        assert producer.attempts[("out", b"1-1")] == 1, "a permanent error is not retried"
    scorer.close()


async def test_exactly_once_sends_in_the_input_partitions_transaction_and_commits_each_batch() -> None:
    producer = FakeProducer()
    scorer, consumer, exits = make_scorer(producer, guarantee="exactly_once")
    stream = FakeStream([batch((2, 5), (3, 7)), batch((3, 8))])
    await scorer.consume(stream)
    assert [(s.partition, s.transactional_id) for s in producer.sent] == [
        (2, "app-0-2"),
        (3, "app-0-3"),
        (3, "app-0-3"),
    ]
    assert consumer.commits == 2 and exits == []
    scorer.close()


async def test_outputs_of_revoked_partitions_are_dropped_and_not_counted() -> None:
    producer = FakeProducer()
    scorer, _, exits = make_scorer(producer, guarantee="exactly_once", assigned={TP("in", 0)})
    stream = FakeStream([batch((0, 0), (1, 0), (1, 1), (0, 1))])
    await scorer.consume(stream)
    assert [s.key for s in producer.sent] == [b"0-0", b"0-1"]
    assert counted(scorer, "sentistream_scored_total") == 2
    assert counted(scorer, "sentistream_dropped_revoked_total") == 2
    assert counted(scorer, "sentistream_consumed_total") == 4
    (window,) = scorer.stats.close_all()
    assert window.count == 2
    assert exits == []
    scorer.close()


async def test_an_output_the_producer_refuses_as_too_large_becomes_a_dead_letter() -> None:
    producer = FakeProducer(
        decide=lambda sent, attempt: "raise" if sent.key == b"0-1" and sent.topic == "out" else None
    )
    scorer, _, exits = make_scorer(producer)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2))])
    await scorer.consume(stream)
    assert [(s.topic, s.key) for s in producer.sent] == [("out", b"0-0"), ("out", b"0-2"), ("dlq", b"0-1")]
    letter = DeadLetter.model_validate_json(producer.sent[-1].value)
    assert letter.stage == "validate" and "MessageSizeTooLargeError" in letter.error and letter.offset == 1
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_an_unforeseen_error_stops_the_worker_before_the_batch_is_acked(monkeypatch) -> None:
    import stream.agents

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(stream.agents, "to_records", broken)
    producer = FakeProducer()
    scorer, consumer, exits = make_scorer(producer)
    fake = FakeStream([batch((0, 0)), batch((0, 1))])
    await scorer.consume(fake)
    assert exits == [1] and fake.acked == [] and producer.sent == [] and consumer.commits == 0
    assert not scorer.state.agent_running
    scorer.close()


async def test_an_error_from_the_stream_itself_stops_the_worker() -> None:
    class BrokenStream(FakeStream):
        async def __aiter__(self):
            yield self.batches[0]
            raise RuntimeError("the stream broke")

    scorer, _, exits = make_scorer(FakeProducer())
    fake = BrokenStream([batch((0, 0))])
    await scorer.consume(fake)
    assert fake.acked == [(0, 0)] and exits == [1] and not scorer.state.agent_running
    scorer.close()
