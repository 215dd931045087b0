"""`sentistream worker` fails fast, with one line, when it cannot start; flags read SENTISTREAM_*."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess

import pytest

from sentistream.settings import settings_from_args
from stream.settings import KafkaSettings
from stream.worker.cli import add_arguments
from stream.worker.settings import WorkerSettings, stream_batch_size
from tests.stream.worker_process import SENTISTREAM


def run_worker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SENTISTREAM, "worker", *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_unreachable_broker_fails_fast_with_one_line(dead_port) -> None:
    result = run_worker("--backend", "vader", "--broker", f"kafka://127.0.0.1:{dead_port}")
    assert result.returncode == 1
    assert "cannot reach the Kafka broker" in last_line(result)
    assert "Traceback" not in result.stderr


def test_a_taken_web_port_fails_in_one_line_before_touching_kafka(dead_port) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_worker(
            "--backend", "vader", "--broker", f"kafka://127.0.0.1:{dead_port}", "--web-port", str(port)
        )

    assert result.returncode == 2, result.stderr
    assert last_line(result) == (
        f"sentistream worker: error: web port {port} on 127.0.0.1: Address already in use; "
        "stop what uses it or pick another --web-port"
    )
    assert "Traceback" not in result.stderr and "cannot reach the Kafka broker" not in result.stderr


def test_model_that_cannot_be_loaded_fails_before_touching_kafka(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = run_worker("--model", str(tmp_path), "--backend", "torch", "--broker", "kafka://127.0.0.1:1")
    assert result.returncode in (1, 2)
    assert str(tmp_path) in last_line(result) and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--broker", "http://nope"), ("--batch-size", "0"), ("--guarantee", "maybe")]
)
def test_bad_flag_values_are_usage_errors(flag: str, value: str) -> None:
    result = run_worker(flag, value)
    assert result.returncode == 2
    assert last_line(result).startswith(f"sentistream worker: error: invalid {flag}")


def test_flags_win_over_environment_which_wins_over_defaults(monkeypatch) -> None:
    monkeypatch.setenv("SENTISTREAM_BATCH_SIZE", "7")
    monkeypatch.setenv("SENTISTREAM_GROUP_ID", "from-env")
    monkeypatch.setenv("SENTISTREAM_SCORED_TOPIC", "env-scored")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--group-id", "from-flag", "--web-port", "7000", "--guarantee", "exactly_once"])
    worker = settings_from_args(WorkerSettings, args)
    kafka = settings_from_args(KafkaSettings, args)
    assert (worker.batch_size, worker.group_id, worker.web_port) == (7, "from-flag", 7000)
    assert worker.guarantee == "exactly_once" and worker.partitions == 4
    assert kafka.scored_topic == "env-scored" and kafka.topic == "tweets"


def test_an_unset_batch_size_fills_a_gpu_pass_and_keeps_the_cpus_64() -> None:
    unset, given = WorkerSettings(), WorkerSettings(batch_size=100)
    assert (stream_batch_size(unset, "cpu"), stream_batch_size(unset, "cuda")) == (64, 512)
    assert (stream_batch_size(given, "cpu"), stream_batch_size(given, "cuda")) == (100, 100)
