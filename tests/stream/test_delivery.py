"""The delivery path in process: a fake stream and a fake broker whose acks, failures and
transactions the test controls. Deterministic proofs of the rules in stream/worker/agent.py,
stream/worker/delivery.py and stream/worker/transactions.py: an input is acked only once every output of its
batch is acknowledged, retries keep order, a failed batch is never committed and stops the worker;
exactly-once commits each partition's outputs with its offsets, never re-sends inside an open
transaction (an ambiguous send or commit is redone in a new transaction, 0 duplicates for
read_committed readers), skips what a fenced owner already committed, and drops the outputs of
partitions it lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerFenced,
    TopicAuthorizationFailedError,
)
from faust.types import TP

from model.engines import load_engine
from stream.events import DeadLetter
from stream.settings import KafkaSettings
from stream.worker.agent import Scorer
from stream.worker.delivery import AtLeastOnce
from stream.worker.metrics import WorkerMetrics
from stream.worker.settings import WorkerSettings
from stream.worker.stats import TumblingStats
from stream.worker.transactions import ExactlyOnce

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
    state: str = "plain"  # plain, open (in a transaction), committed or aborted


class FakeBroker:
    """The broker as the worker's producers see it: a log, transactions, committed offsets, fencing.

    `decide(sent, attempt)` returns None (ack), "hold" (the test resolves it), "raise" (raise in
    send, as aiokafka does for an oversized record), "ambiguous" (the record is written, the
    acknowledgement is lost) or an exception (the future fails with it, nothing is written).
    `commit_fails(producer, n)` makes the n-th commit attempt raise: "before" (nothing committed)
    or "after" (committed, then the acknowledgement is lost).
    """

    def __init__(self, decide=lambda sent, attempt: None, commit_fails=lambda producer, n: None) -> None:
        self.decide, self.commit_fails = decide, commit_fails
        self.sent: list[Sent] = []  # what reached the log
        self.tried: list[bytes | None] = []  # the key of every send, in order
        self.attempts: dict = {}
        self.committed: dict[int, int] = {}  # input partition -> committed offset
        self.commits = 0
        self.producers: list[FakeProducer] = []

    def factory(self, **options):
        producer = FakeProducer(self, options.get("transactional_id"))
        self.producers.append(producer)
        return producer

    async def read_committed(self, partition: int) -> int:
        return self.committed.get(partition, -1)

    def visible(self) -> list[Sent]:
        """What a read_committed reader sees."""
        return [s for s in self.sent if s.state in ("plain", "committed")]


class FakeProducer:
    def __init__(self, broker: FakeBroker, transactional_id: str | None) -> None:
        self.broker, self.transactional_id = broker, transactional_id
        self.fenced = self.stopped = False
        self.open: list[Sent] | None = None
        self.offsets: dict[int, int] = {}
        self.commit_attempts = 0

    async def start(self) -> None:
        for other in self.broker.producers:  # InitProducerId: older producers of this id are fenced
            if (
                other is not self
                and other.transactional_id == self.transactional_id
                and self.transactional_id
            ):
                other.fenced = True
                for sent in other.open or []:
                    sent.state = "aborted"
                other.open = None

    async def stop(self) -> None:
        self.stopped = True

    async def flush(self) -> None:
        pass

    def _check(self) -> None:
        if self.fenced:
            raise ProducerFenced()

    async def begin_transaction(self) -> None:
        self._check()
        assert self.open is None, "a transaction is already open"
        self.open, self.offsets = [], {}

    async def send(self, topic, value, key=None, partition=None):
        self._check()
        future = asyncio.get_running_loop().create_future()
        record = Sent(topic, key, value, partition, self.transactional_id, future)
        attempt = self.broker.attempts[(topic, key)] = self.broker.attempts.get((topic, key), 0) + 1
        self.broker.tried.append(key)
        verdict = self.broker.decide(record, attempt)
        if verdict == "raise":
            raise MessageSizeTooLargeError("too big")
        if isinstance(verdict, BaseException):
            future.set_exception(verdict)
            return future
        if self.open is not None:
            record.state = "open"
            self.open.append(record)
        self.broker.sent.append(record)
        if verdict is None:
            future.set_result(None)
        elif verdict == "ambiguous":
            future.set_exception(KafkaTimeoutError())
        return future

    async def send_offsets_to_transaction(self, offsets, group_id) -> None:
        self._check()
        self.offsets = {tp.partition: offset for tp, offset in offsets.items()}

    async def commit_transaction(self) -> None:
        self._check()
        self.commit_attempts += 1
        fails = self.broker.commit_fails(self, self.commit_attempts)
        if fails == "before":
            raise KafkaTimeoutError()
        for sent in self.open:
            sent.state = "committed"
        self.broker.committed.update(self.offsets)
        self.broker.commits += 1
        self.open = None
        if fails == "after":
            raise KafkaTimeoutError()

    async def abort_transaction(self) -> None:
        for sent in self.open or []:
            sent.state = "aborted"
        self.open = None


class FakeConsumer:
    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int:
        return 0


def make_scorer(broker: FakeBroker, guarantee: str = "at_least_once", assigned=None, models=None, **settings):
    """A Scorer over the fake broker; `models` (a ServingModels) serves instead of the constant model."""
    consumer = FakeConsumer(assigned if assigned is not None else {TP("in", p) for p in range(4)})
    app = SimpleNamespace(consumer=consumer)
    worker = WorkerSettings(guarantee=guarantee, **settings)
    if guarantee == "exactly_once":
        outputs = ExactlyOnce(KAFKA, worker, worker.group_id, broker.factory, broker.read_committed)
    else:
        outputs = AtLeastOnce(KAFKA, worker, broker.factory)
    exits: list[int] = []
    if models is None:
        engine, metrics, stats = (
            load_engine(None, backend="constant"),
            WorkerMetrics(),
            TumblingStats(10.0, "w"),
        )
    else:
        engine, metrics, stats = models.engine, models.metrics, models.stats
    scorer = Scorer(
        app, KAFKA, worker, engine, metrics, stats, exit=exits.append, outputs=outputs, models=models
    )
    if assigned is not None:
        scorer.on_assigned({tp.partition for tp in assigned})
    scorer.micro_batches = lambda stream: stream  # the fake stream yields batches itself
    return scorer, exits


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
    broker = FakeBroker(decide=lambda sent, attempt: "hold")
    scorer, exits = make_scorer(broker)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2))])
    task = asyncio.create_task(scorer.consume(stream))
    while len(broker.sent) < 3:
        await asyncio.sleep(0.01)
    broker.sent[0].future.set_result(None)
    broker.sent[2].future.set_result(None)
    await asyncio.sleep(0.05)
    assert stream.acked == [], "acked before the second output was acknowledged"
    broker.sent[1].future.set_result(None)
    await task
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_the_next_batch_is_scored_while_outputs_wait_but_sent_only_after_the_ack() -> None:
    broker = FakeBroker(decide=lambda sent, attempt: "hold")
    scorer, exits = make_scorer(broker)
    scored_batches = []
    engine_predict = scorer.engine.predict
    scorer.engine.predict = lambda texts: scored_batches.append(len(texts)) or engine_predict(texts)
    stream = FakeStream([batch((0, 0), (0, 1)), batch((0, 2))])
    task = asyncio.create_task(scorer.consume(stream))
    await until(lambda: len(scored_batches) == 2, "the second batch to be scored while the first waits")
    await asyncio.sleep(0.05)
    assert [s.key for s in broker.sent] == [b"0-0", b"0-1"], "sent before the batch before was acked"
    assert stream.acked == []
    for sent in broker.sent:
        sent.future.set_result(None)
    await until(lambda: len(broker.sent) == 3, "the second batch to be sent")
    assert stream.acked == [(0, 0), (0, 1)], "the first batch is acked before the second is sent"
    broker.sent[2].future.set_result(None)
    await task
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_failed_sends_are_retried_in_their_original_order() -> None:
    def decide(sent, attempt):
        return KafkaTimeoutError() if attempt == 1 and sent.key in (b"0-1", b"0-3") else None

    broker = FakeBroker(decide=decide)
    scorer, exits = make_scorer(broker)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2), (0, 3))])
    await scorer.consume(stream)
    assert broker.tried == [b"0-0", b"0-1", b"0-2", b"0-3", b"0-1", b"0-3"]
    assert stream.acked == [(0, 0), (0, 1), (0, 2), (0, 3)] and exits == []
    assert counted(scorer, "sentistream_scored_total") == 4
    scorer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize(
    ("error", "settings"),
    [
        (TopicAuthorizationFailedError(), {}),  # permanent: no retries at all
        (KafkaTimeoutError(), {"send_retry_s": 0.2}),  # retriable, but past the retry budget
    ],
)
async def test_a_batch_that_cannot_be_delivered_is_never_acked_nor_committed(
    guarantee, error, settings
) -> None:
    broker = FakeBroker(decide=lambda sent, attempt: error if sent.key == b"1-1" else None)
    scorer, exits = make_scorer(broker, guarantee=guarantee, **settings)
    stream = FakeStream([batch((1, 0)), batch((1, 1), (1, 2)), batch((1, 3))])
    await scorer.consume(stream)
    assert exits == [1]
    assert stream.acked == [(1, 0)], "only the batch before the failure is acked"
    assert all(s.key != b"1-3" for s in broker.sent), "no batch after the failure is processed"
    if guarantee == "exactly_once":
        assert broker.committed == {1: 1}, "the failed batch's offsets are not committed"
        assert [s.key for s in broker.visible()] == [b"1-0"]
    if isinstance(error, TopicAuthorizationFailedError):
        assert broker.attempts[("out", b"1-1")] == 1, "a permanent error is not retried"
    scorer.close()


async def test_exactly_once_commits_each_input_partitions_outputs_with_its_offsets() -> None:
    broker = FakeBroker()
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    stream = FakeStream([batch((2, 5), (3, 7)), batch((3, 8))])
    await scorer.consume(stream)
    assert [(s.key, s.partition, s.transactional_id, s.state) for s in broker.sent] == [
        (b"2-5", 2, "sentistream-worker-in-2", "committed"),
        (b"3-7", 3, "sentistream-worker-in-3", "committed"),
        (b"3-8", 3, "sentistream-worker-in-3", "committed"),
    ]
    assert broker.committed == {2: 6, 3: 9} and broker.commits == 3 and exits == []
    assert stream.acked == [(2, 5), (3, 7), (3, 8)]
    scorer.close()


async def test_exactly_once_never_resends_inside_the_open_transaction_after_an_ambiguous_send() -> None:
    # The broker writes 0-1 but its acknowledgement is lost: re-sending it inside the same
    # transaction would commit two copies. The transaction is abandoned (its producer fenced by a
    # fresh one, which aborts it) and the batch is redone in a new one.
    broker = FakeBroker(
        decide=lambda sent, attempt: "ambiguous" if sent.key == b"0-1" and attempt == 1 else None
    )
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2))])
    await scorer.consume(stream)
    assert Counter(s.key for s in broker.visible()) == {b"0-0": 1, b"0-1": 1, b"0-2": 1}
    assert [s.state for s in broker.sent[:3]] == ["aborted"] * 3, "the first attempt is aborted whole"
    assert broker.committed == {0: 3} and exits == [] and stream.acked == [(0, 0), (0, 1), (0, 2)]
    assert counted(scorer, "sentistream_scored_total") == 3
    scorer.close()


async def test_exactly_once_does_not_redo_a_commit_whose_acknowledgement_was_lost() -> None:
    broker = FakeBroker(commit_fails=lambda producer, n: "after" if producer is broker.producers[0] else None)
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    stream = FakeStream([batch((0, 0), (0, 1)), batch((0, 2))])
    await scorer.consume(stream)
    assert [s.key for s in broker.visible()] == [b"0-0", b"0-1", b"0-2"], "no output twice"
    assert broker.committed == {0: 3} and exits == []
    scorer.close()


async def test_exactly_once_redoes_a_batch_whose_commit_failed_before_it_committed() -> None:
    broker = FakeBroker(
        commit_fails=lambda producer, n: "before" if producer is broker.producers[0] else None
    )
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    await scorer.consume(FakeStream([batch((0, 0), (0, 1))]))
    assert [s.key for s in broker.visible()] == [b"0-0", b"0-1"]
    assert [s.state for s in broker.sent] == ["aborted", "aborted", "committed", "committed"]
    assert broker.committed == {0: 2} and exits == []
    scorer.close()


async def test_exactly_once_skips_what_an_earlier_owner_committed() -> None:
    # The previous owner of partition 0 committed up to offset 2 after this worker had fetched
    # from an older committed offset: offsets 0 and 1 are done and must not come out again.
    broker = FakeBroker()
    broker.committed[0] = 2
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2), (0, 3))])
    await scorer.consume(stream)
    assert [s.key for s in broker.visible()] == [b"0-2", b"0-3"]
    assert broker.committed == {0: 4} and exits == []
    assert stream.acked == [(0, 0), (0, 1), (0, 2), (0, 3)]
    scorer.close()


async def test_exactly_once_fenced_by_a_newer_owner_leaves_the_batch_to_it() -> None:
    broker = FakeBroker(decide=lambda sent, attempt: "hold" if sent.key == b"1-1" else None)
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    stream = FakeStream([batch((1, 0), (1, 1))])
    task = asyncio.create_task(scorer.consume(stream))
    await until(lambda: len(broker.sent) == 2, "the batch to be in flight")
    await broker.factory(transactional_id="sentistream-worker-in-1").start()  # the new owner
    broker.sent[1].future.set_exception(ProducerFenced())
    await task
    assert broker.visible() == [] and broker.committed == {} and exits == []
    assert counted(scorer, "sentistream_dropped_revoked_total") == 2
    assert counted(scorer, "sentistream_scored_total") == 0
    scorer.close()


async def test_exactly_once_starts_fresh_producers_after_each_rebalance() -> None:
    broker = FakeBroker()
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    await scorer.consume(FakeStream([batch((0, 0))]))
    scorer.on_assigned({0})
    broker.committed[0] = 5  # meanwhile another owner processed up to offset 5
    await scorer.consume(FakeStream([batch((0, 1), (0, 5))]))
    assert len(broker.producers) == 2 and broker.producers[0].stopped, "the old producer is closed"
    assert [s.key for s in broker.visible()] == [b"0-0", b"0-5"], "the committed offset is read again"
    assert exits == []
    scorer.close()


async def test_exactly_once_closes_the_producers_of_partitions_it_lost() -> None:
    broker = FakeBroker()
    scorer, exits = make_scorer(broker, guarantee="exactly_once")
    await scorer.consume(FakeStream([batch((0, 0), (1, 0))]))
    by_id = {p.transactional_id: p for p in broker.producers}
    scorer.on_assigned({1})
    await until(lambda: by_id["sentistream-worker-in-0"].stopped, "the lost partition's producer to close")
    assert not by_id["sentistream-worker-in-1"].stopped and exits == []
    scorer.close()


async def test_outputs_of_revoked_partitions_are_dropped_and_not_counted() -> None:
    broker = FakeBroker()
    scorer, exits = make_scorer(broker, guarantee="exactly_once", assigned={TP("in", 0)})
    stream = FakeStream([batch((0, 0), (1, 0), (1, 1), (0, 1))])
    await scorer.consume(stream)
    assert [s.key for s in broker.sent] == [b"0-0", b"0-1"]
    assert counted(scorer, "sentistream_scored_total") == 2
    assert counted(scorer, "sentistream_dropped_revoked_total") == 2
    assert counted(scorer, "sentistream_consumed_total") == 4
    (window,) = scorer.stats.close_all()
    assert window.count == 2
    assert exits == []
    scorer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_an_output_the_producer_refuses_as_too_large_becomes_a_dead_letter(guarantee) -> None:
    broker = FakeBroker(
        decide=lambda sent, attempt: "raise" if sent.key == b"0-1" and sent.topic == "out" else None
    )
    scorer, exits = make_scorer(broker, guarantee=guarantee)
    stream = FakeStream([batch((0, 0), (0, 1), (0, 2))])
    await scorer.consume(stream)
    visible = broker.visible()
    assert sorted((s.topic, s.key) for s in visible) == [("dlq", b"0-1"), ("out", b"0-0"), ("out", b"0-2")]
    letter = DeadLetter.model_validate_json(next(s.value for s in visible if s.topic == "dlq"))
    assert letter.stage == "validate" and "MessageSizeTooLargeError" in letter.error and letter.offset == 1
    assert stream.acked == [(0, 0), (0, 1), (0, 2)] and exits == []
    scorer.close()


async def test_an_unforeseen_error_stops_the_worker_before_the_batch_is_acked(monkeypatch) -> None:
    import stream.worker.agent

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(stream.worker.agent, "to_records", broken)
    broker = FakeBroker()
    scorer, exits = make_scorer(broker)
    fake = FakeStream([batch((0, 0)), batch((0, 1))])
    await scorer.consume(fake)
    assert exits == [1] and fake.acked == [] and broker.sent == [] and broker.commits == 0
    assert not scorer.state.agent_running
    scorer.close()


async def test_an_error_from_the_stream_itself_stops_the_worker() -> None:
    class BrokenStream(FakeStream):
        async def __aiter__(self):
            yield self.batches[0]
            raise RuntimeError("the stream broke")

    scorer, exits = make_scorer(FakeBroker())
    fake = BrokenStream([batch((0, 0))])
    await scorer.consume(fake)
    assert fake.acked == [(0, 0)] and exits == [1] and not scorer.state.agent_running
    scorer.close()
