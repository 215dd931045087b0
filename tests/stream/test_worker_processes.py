"""`sentistream worker --processes N`: N consumer-group members under one parent, on a real broker."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
from collections import Counter
from types import SimpleNamespace

import psutil
import pytest

import tests.stream.worker_process
from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.cli import build_parser
from sentistream.settings import settings_from_args
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS, KafkaSettings
from stream.worker.processes import child_argv, child_overrides
from stream.worker.settings import WorkerSettings
from tests.ports import ATTEMPTS, free_ports
from tests.stream.worker_process import (
    SENTISTREAM,
    Topics,
    WorkerProcess,
    create_topics,
    ids_of,
    mark_the_end,
    metric,
    produce,
    read_until_marked,
    tweets,
    wait_until,
)

PARTITIONS = 4


def parse_worker(argv: list[str]) -> argparse.Namespace:
    return build_parser("worker").parse_args(argv)


def test_a_child_runs_with_the_parents_flags_and_its_own_port_name_and_threads() -> None:
    parent = parse_worker(
        [
            "-v", "worker", "--broker", "kafka://10.0.0.7:9093", "--topic", "in", "--group-id", "g",
            "--backend", "vader", "--batch-size", "128", "--guarantee", "exactly_once", "--web-port", "7000",
            "--worker-name", "gpu-a", "--processes", "3", "--no-follow-deployments", "--json-logs",
        ]
    )  # fmt: skip
    settings = settings_from_args(WorkerSettings, parent)
    child = parse_worker(child_argv(parent, child_overrides(settings, 2, threads=4)))

    got = settings_from_args(WorkerSettings, child)
    assert got == settings.model_copy(update={"processes": 1, "web_port": 7002, "worker_name": "gpu-a-2"})
    assert settings_from_args(KafkaSettings, child) == settings_from_args(KafkaSettings, parent)
    assert settings_from_args(ModelSettings, child) == settings_from_args(ModelSettings, parent).model_copy(
        update={"threads": 4}
    )
    assert child.verbose and child.json_logs and child.follow_deployments is False
    # Every flag the worker takes is repeated: a new one left out here would run children differently.
    repeated = {*MODEL_FLAGS, *CONNECTION_FLAGS, *TOPIC_FLAGS, *WorkerSettings.model_fields}
    assert repeated == set(vars(parse_worker(["worker"]))) - {"command", "run", "verbose", "json_logs"}


def test_a_child_without_a_name_or_threads_keeps_the_defaults() -> None:
    parent = parse_worker(["worker", "--processes", "2"])
    settings = settings_from_args(WorkerSettings, parent)
    child = parse_worker(child_argv(parent, child_overrides(settings, 1, threads=None)))

    assert settings_from_args(WorkerSettings, child).worker_name is None  # host:pid, unique per child
    assert settings_from_args(ModelSettings, child).threads is None
    assert settings_from_args(WorkerSettings, child).web_port == settings.web_port + 1


def test_a_taken_web_port_of_a_later_process_is_refused_in_one_line_before_kafka(dead_port) -> None:
    for _ in range(ATTEMPTS):  # again when a stranger took port first or first+1 meanwhile
        first = free_ports(3)
        result = start_with_a_port_taken(first, first + 2, dead_port)
        line = result.stderr.strip().splitlines()[-1]
        if not any(f"web port {port} " in line for port in (first, first + 1)):
            break

    assert result.returncode == 2, result.stderr
    assert f"web port {first + 2} (worker process 2)" in line and "Address already in use" in line
    assert f"ports {first}-{first + 2} free" in line and "Traceback" not in result.stderr
    assert "cannot reach the Kafka broker" not in result.stderr  # refused before Kafka was asked


def test_a_set_whose_later_port_was_taken_is_started_again_on_free_ones(
    broker_url, tmp_path, monkeypatch
) -> None:
    # The harness's side of the refusal above: CI once lost two tests to port+1 being taken.
    first = free_ports(2)
    monkeypatch.setattr(
        tests.stream.worker_process, "free_ports", lambda n: next(firsts, None) or free_ports(n)
    )
    firsts = iter([first])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        worker = WorkerProcess(broker_url, Topics(), tmp_path, "--processes", "2").start()
        try:
            assert worker.port == first
            worker.wait_ready()

            assert worker.port != first and "Address already in use" in worker.log_path.read_text()
            assert len(family(worker)) == 2
        finally:
            worker.stop()


def start_with_a_port_taken(first: int, taken_port: int, dead_port: int) -> subprocess.CompletedProcess:
    """`worker --processes 3 --web-port first` while something listens on `taken_port`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", taken_port))
        taken.listen()
        return subprocess.run(
            [SENTISTREAM, "worker", "--backend", "vader", "--broker", f"kafka://127.0.0.1:{dead_port}",
             "--processes", "3", "--web-port", str(first), "--web-host", "127.0.0.1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


def family(worker: WorkerProcess) -> list[psutil.Process]:
    return psutil.Process(worker.process.pid).children(recursive=True)


@pytest.fixture
def two_processes(broker_url, tmp_path):
    topics = Topics()
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    worker = WorkerProcess(broker_url, topics, tmp_path, "--processes", "2", "--partitions", str(PARTITIONS))
    worker.start().wait_ready()  # every process serves /health
    yield topics, worker
    worker.stop()


def test_two_processes_share_the_partitions_score_everything_once_and_stop_together(
    broker_url, two_processes
) -> None:
    topics, worker = two_processes
    children = family(worker)
    assert len(children) == 2, worker.log_tail()

    produce(broker_url, topics.tweets, tweets("p", 2_000))
    markers = mark_the_end(broker_url, topics.tweets, PARTITIONS)
    scored = Counter(ids_of(read_until_marked(broker_url, topics.scored, markers)))

    assert set(scored) == {f"p-{i}" for i in range(2_000)}
    assert set(scored.values()) == {1}
    second = SimpleNamespace(url=f"http://127.0.0.1:{worker.port + 1}")
    shares = [metric(worker, "sentistream_consumed_total "), metric(second, "sentistream_consumed_total ")]
    assert all(share > 0 for share in shares), f"one process got no partition: {shares}"

    worker.signal(signal.SIGTERM)
    assert worker.wait(90) == 0, worker.log_tail()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_child_killed_stops_the_set_with_a_failure(two_processes) -> None:
    _, worker = two_processes
    first, other = family(worker)

    first.kill()

    assert worker.wait(90) == 1, worker.log_tail()
    assert "exited on its own" in worker.log_tail()
    assert psutil.wait_procs([other], timeout=30)[1] == [], "the other child outlived the parent"


def test_a_parent_killed_takes_its_children_with_it(two_processes) -> None:
    _, worker = two_processes
    children = family(worker)

    worker.process.kill()
    worker.process.wait(10)

    _, alive = psutil.wait_procs(children, timeout=60)
    assert alive == [], "orphaned worker processes kept running"


def test_a_frozen_child_is_killed_and_the_set_stopped(two_processes) -> None:
    _, worker = two_processes
    wait_until(
        lambda: "all 2 worker processes are live" in worker.log_tail(200), 60, "the parent to see both live"
    )
    frozen, other = family(worker)

    frozen.suspend()  # SIGSTOP: its /live stops answering, as a hung process's would

    assert worker.wait(120) == 1, worker.log_tail()
    assert "failed http://127.0.0.1:" in worker.log_tail(200)
    assert psutil.wait_procs([frozen, other], timeout=30)[1] == [], "a child outlived the stopped set"
