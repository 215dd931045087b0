"""Scale-out and faults on a real broker: two workers share a 4-partition topic, one is killed with
SIGKILL mid-stream, the broker restarts mid-stream, SIGTERM drains and exits 0. Nothing is lost;
duplicates (allowed by at-least-once) are counted and bounded by the uncommitted window.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import orjson
import pytest

from infra.broker import BrokerSettings, LocalBroker, free_port
from tests.kafka_proxy import KafkaProxy
from tests.stream.worker_process import (
    Topics,
    WorkerProcess,
    consumed,
    create_topics,
    health,
    ids_of,
    mark_the_end,
    produce,
    read_until_marked,
    tweets,
    wait_until,
)

FAST_FAILOVER = ("--session-timeout-s", "6", "--batch-size", "50", "--commit-interval-s", "0.5")
PACE_S = 0.05  # 50 messages per 50 ms: about 1,000 messages/s, so there is a stream to interrupt


def produce_in_background(broker_url: str, topic: str, messages) -> threading.Thread:
    thread = threading.Thread(target=produce, args=(broker_url, topic, messages, PACE_S), daemon=True)
    thread.start()
    return thread


def duplicates(ids: list[str]) -> int:
    return sum(count - 1 for count in Counter(ids).values())


def lost_the_broker(worker: WorkerProcess, since: int) -> bool:
    """The worker's log, after offset `since`, shows its Kafka client failing to reach the broker."""
    with worker.log_path.open("rb") as log:
        log.seek(since)
        return b"Unable connect to" in log.read()


@pytest.mark.slow
def test_two_workers_share_partitions_and_survive_a_kill_9(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=4)
    a = WorkerProcess(broker_url, topics, tmp_path, *FAST_FAILOVER, name="a").start()
    b = WorkerProcess(broker_url, topics, tmp_path, *FAST_FAILOVER, name="b").start()
    messages = tweets("k", 6000)
    try:
        a.wait_ready(), b.wait_ready()
        wait_until(
            lambda: len(health(a)["partitions"]) == len(health(b)["partitions"]) == 2, 30, "a 2+2 split"
        )
        producer = produce_in_background(broker_url, topics.tweets, messages)
        wait_until(lambda: consumed(a) >= 500 and consumed(b) >= 500, 30, "both workers to take a share")
        a.process.kill()
        producer.join(60)
        end = mark_the_end(broker_url, topics.tweets, 4)
        scored = ids_of(read_until_marked(broker_url, topics.scored, end, timeout=90))
        assert health(b)["partitions"] == [f"{topics.tweets}[{p}]" for p in range(4)]
    finally:
        a.stop(), b.stop()
    assert set(scored) == {key.decode() for key, _ in messages}, b.log_tail()
    extra = duplicates(scored)
    print(f"kill -9 of one of two workers: {extra} duplicates of {len(messages)} messages")
    # Only what the killed worker delivered after its last commit is redone: at ~500 messages/s
    # per worker and a 0.5 s commit interval, a few hundred at most.
    assert extra <= 1000


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(own_broker, tmp_path) -> None:
    broker = own_broker
    topics = Topics()
    worker = WorkerProcess(broker.url, topics, tmp_path, *FAST_FAILOVER)
    messages = tweets("r", 5000)
    try:
        create_topics(broker.url, [topics.tweets], partitions=2)
        worker.start().wait_ready()
        produce(broker.url, topics.tweets, messages[:2500])
        wait_until(lambda: consumed(worker) >= 500, 30, "the worker to be mid-stream")
        broker.stop()
        since = worker.log_path.stat().st_size
        wait_until(lambda: lost_the_broker(worker, since), 60, "the worker to find the broker gone")
        broker.start()
        produce(broker.url, topics.tweets, messages[2500:])
        end = mark_the_end(broker.url, topics.tweets, 2)
        scored = ids_of(read_until_marked(broker.url, topics.scored, end, timeout=90))
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    assert set(scored) == {key.decode() for key, _ in messages}, worker.log_tail()
    print(f"broker restart: {duplicates(scored)} duplicates of {len(messages)} messages")


@pytest.mark.slow
def test_sigterm_finishes_the_batch_commits_and_exits_0(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=2)
    messages = tweets("s", 4000)
    first = WorkerProcess(broker_url, topics, tmp_path, *FAST_FAILOVER, name="first").start()
    first.wait_ready()
    producer = produce_in_background(broker_url, topics.tweets, messages)
    wait_until(lambda: consumed(first) >= 500, 30, "the worker to be mid-stream")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, first.log_tail()  # a bound against a hang, not a speed claim
    producer.join(60)
    end = mark_the_end(broker_url, topics.tweets, 2)
    second = WorkerProcess(broker_url, topics, tmp_path, *FAST_FAILOVER, name="second").start()
    try:
        second.wait_ready()
        scored = ids_of(read_until_marked(broker_url, topics.scored, end))
    finally:
        second.stop()
    assert set(scored) == {key.decode() for key, _ in messages}
    assert duplicates(scored) == 0, "a clean stop commits everything it delivered"


@pytest.mark.slow
def test_exactly_once_survives_a_kill_9_without_duplicates(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=2)
    eos = (*FAST_FAILOVER, "--guarantee", "exactly_once")
    first = WorkerProcess(broker_url, topics, tmp_path, *eos, name="eos1").start()
    messages = tweets("x", 3000)
    first.wait_ready()
    producer = produce_in_background(broker_url, topics.tweets, messages)
    wait_until(lambda: consumed(first) >= 800, 30, "the worker to be mid-stream")
    first.process.kill()
    producer.join(60)
    end = mark_the_end(broker_url, topics.tweets, 2)
    second = WorkerProcess(broker_url, topics, tmp_path, *eos, name="eos2").start()
    try:
        second.wait_ready()
        committed = ids_of(read_until_marked(broker_url, topics.scored, end))
        everything = ids_of(read_until_marked(broker_url, topics.scored, end, committed=False))
    finally:
        second.stop()
    assert Counter(committed) == Counter(key.decode() for key, _ in messages), second.log_tail()
    # The killed worker's open transaction did reach the log; read_committed readers never see it.
    print(f"exactly-once kill -9: {len(everything) - len(committed)} aborted outputs hidden from readers")


@pytest.mark.slow
def test_exactly_once_a_partition_revoked_mid_batch_comes_out_once(broker_url, tmp_path) -> None:
    # A worker's batch is in flight when a second worker joins: the rebalance takes partitions
    # away from it mid-batch. Whoever ends up with each partition, every input comes out once.
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=2)
    eos = (*FAST_FAILOVER, "--guarantee", "exactly_once")
    release = tmp_path / "release"
    first = WorkerProcess(
        broker_url, topics, tmp_path, *eos, faults=f"block=BLOCK,release={release}", name="first"
    ).start()
    first.wait_ready()
    messages = [
        *tweets("a", 300),
        (b"hold", orjson.dumps({"id": "hold", "text": "BLOCK me"})),
        *tweets("b", 300),
    ]
    produce(broker_url, topics.tweets, messages)
    wait_until(lambda: (tmp_path / "release.blocked").exists(), 30, "the batch to be in flight")
    second = WorkerProcess(broker_url, topics, tmp_path, *eos, faults="raise=NEVER", name="second").start()
    try:
        second.wait_ready()  # its joining starts the rebalance while the first worker's batch waits
        time.sleep(2.0)
        release.touch()
        wait_until(lambda: len(health(second)["partitions"]) == 1, 60, "the partitions to be shared")
        end = mark_the_end(broker_url, topics.tweets, 2)
        scored = ids_of(read_until_marked(broker_url, topics.scored, end))
    finally:
        second.stop()
        first.stop()
    assert Counter(scored) == Counter(key.decode() for key, _ in messages), first.log_tail()


@pytest.mark.slow
def test_exactly_once_an_ambiguous_write_is_redone_in_a_new_transaction_never_resent_in_the_open_one(
    tmp_path,
) -> None:
    # The broker appends a batch of outputs, and the worker is told the write failed (a proxy
    # rewrites the acknowledgement). Sending those outputs again inside the same transaction would
    # commit two copies; read_committed readers must see one.
    proxy_port, broker_port = free_port(), free_port()
    proxy = KafkaProxy(proxy_port, broker_port).start()
    broker = LocalBroker(
        BrokerSettings(port=broker_port, advertised_port=proxy_port, data_dir=tmp_path / "kafka")
    )
    broker.start()
    url = f"kafka://127.0.0.1:{proxy_port}"
    topics = Topics()
    worker = WorkerProcess(
        url, topics, tmp_path, "--guarantee", "exactly_once", "--batch-size", "50", name="eos"
    )
    try:
        create_topics(url, [topics.tweets], partitions=1)
        worker.start().wait_ready()
        proxy.fail_next_produce(topics.scored)
        messages = tweets("a", 200)
        produce(url, topics.tweets, messages)
        end = mark_the_end(url, topics.tweets, 1)
        committed = ids_of(read_until_marked(url, topics.scored, end))
        everything = ids_of(read_until_marked(url, topics.scored, end, committed=False))
    finally:
        worker.stop()
        broker.stop()
        proxy.stop()
    assert proxy.failed == 1, "the proxy failed one write"
    assert Counter(committed) == Counter(key.decode() for key, _ in messages), worker.log_tail()
    assert len(everything) > len(committed), "the failed write reached the log (and was aborted)"
