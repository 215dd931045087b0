"""Start and stop on a real broker: exactly-once refuses outputs with too few partitions, in one
line; a clean stop publishes the last (still open) stats window; a taken web port is not mistaken
for the worker's."""

from __future__ import annotations

import signal
import subprocess
import sys

import requests

import tests.stream.worker_process
from stream.events import SentimentStats
from tests.ports import free_ports, start_server, stop
from tests.stream.worker_process import (
    SENTISTREAM,
    Topics,
    WorkerProcess,
    create_topics,
    produce,
    read_topic,
    tweets,
)


def test_exactly_once_with_too_few_output_partitions_fails_with_the_fix(broker_url) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=4)
    create_topics(broker_url, [topics.scored], partitions=1)
    result = subprocess.run(
        [SENTISTREAM, "worker", "--broker", broker_url, "--backend", "vader", *topics.flags(),
         "--guarantee", "exactly_once"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"exactly_once needs {topics.scored} to have at least the 4 partitions" in last
    assert "--partitions 4" in last and "Traceback" not in result.stderr


def test_a_clean_stop_publishes_the_open_stats_window(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=1)
    worker = WorkerProcess(broker_url, topics, tmp_path, "--stats-window-s", "3600").start()
    try:
        worker.wait_ready()
        produce(broker_url, topics.tweets, tweets("s", 7))
        read_topic(broker_url, topics.scored, 7, timeout=60, idle_s=0)
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log_tail()
    finally:
        worker.stop()
    # It has exited: what the topics hold now is all it ever wrote (read to their ends, no waiting).
    assert len(read_topic(broker_url, topics.scored, 7, timeout=30, idle_s=0)) == 7
    windows = [
        SentimentStats.model_validate_json(r.value)
        for r in read_topic(broker_url, topics.stats, 1, timeout=20, idle_s=0)
    ]
    assert sum(w.count for w in windows) == 7, worker.log_tail()


def test_a_web_port_taken_by_a_stranger_is_not_taken_for_the_worker(
    broker_url, tmp_path, monkeypatch
) -> None:
    # The stranger answers GET /health with 200 and a body, as a worker would.
    (tmp_path / "health").write_text('{"status": "a stranger"}')
    stranger, taken = start_server(
        lambda port: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        tmp_path / "stranger.log", answers_health,
        cwd=tmp_path,
    )  # fmt: skip
    ports = iter([taken])
    monkeypatch.setattr(
        tests.stream.worker_process, "free_ports", lambda n: next(ports, None) or free_ports(n)
    )
    worker = WorkerProcess(broker_url, Topics(), tmp_path).start()
    try:
        assert worker.port == taken
        health = worker.wait_ready()  # its first start exits (port taken); it is started on another
        assert worker.port != taken and health["status"] == "ready", health
    finally:
        worker.stop()
        stop(stranger)


def answers_health(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok
    except requests.RequestException:
        return False
