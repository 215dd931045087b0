"""The local broker against itself: real JVM, real Kafka protocol, real restarts."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra import broker as broker_mod
from infra.broker import BrokerSettings, LocalBroker, free_port
from sentistream.cli import main
from sentistream.errors import SentistreamError, UsageError
from tests.ports import ATTEMPTS, log_size, lost_its_port, refused_port, start_broker


def _messages(n: int) -> list[bytes]:
    # Binary-ish payloads on purpose: byte-identical round trip, not just "some text came back".
    return [f"message {i} ".encode() + os.urandom(16) for i in range(n)]


async def _produce(address: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=address, acks="all")
    await producer.start()
    try:
        batch = [await producer.send(topic, v) for v in values]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def _consume_all(address: str, topic: str, expected: int) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=address, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[bytes] = []
    try:
        while len(got) < expected:
            records = await consumer.getmany(timeout_ms=2000, max_records=1000)
            if not records:
                break
            for batch in records.values():
                got.extend(r.value for r in batch)
    finally:
        await consumer.stop()
    return got


def _java_pids(data_dir) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and "kafka.Kafka" in p.info["cmdline"]
        and str(data_dir / "server.properties") in p.info["cmdline"]
    ]


def start_with_the_cli(data_dir, capsys) -> BrokerSettings:
    """`sentistream kafka start` on a free port, on another when that one was taken meanwhile."""
    for attempt in range(1, ATTEMPTS + 1):
        settings = BrokerSettings(port=free_port(), data_dir=data_dir)
        since = log_size(LocalBroker(settings).log_file)
        status = main(["kafka", "start", "--port", str(settings.port), "--data-dir", str(settings.data_dir)])
        output = capsys.readouterr()
        if status == 0:
            assert "Kafka is up at" in output.out
            return settings
        assert attempt < ATTEMPTS and lost_its_port(LocalBroker(settings), since), output.err
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_round_trip_survives_restart_and_stop_leaves_no_java(tmp_path, capsys):
    settings = start_with_the_cli(tmp_path / "kafka", capsys)
    broker = LocalBroker(settings)
    values = _messages(1000)
    try:
        assert (
            main(["kafka", "start", "--port", str(settings.port), "--data-dir", str(settings.data_dir)]) == 0
        )
        assert "already running" in capsys.readouterr().out

        asyncio.run(_produce(broker.address, "roundtrip", values))
        assert asyncio.run(_consume_all(broker.address, "roundtrip", 1000)) == values

        assert broker.stop() is True
        assert _java_pids(broker.data_dir) == []
        already, seconds = broker.start()
        assert not already and seconds > 0
        assert asyncio.run(_consume_all(broker.address, "roundtrip", 1000)) == values
    finally:
        broker.stop()
    assert _java_pids(broker.data_dir) == []
    assert main(["kafka", "stop", "--port", str(settings.port), "--data-dir", str(settings.data_dir)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


@pytest.mark.slow
def test_a_controller_port_taken_before_the_broker_binds_it_is_retried(tmp_path, monkeypatch):
    # Bound but never listened on: the JVM's bind fails as it would on a port taken meanwhile.
    with refused_port() as taken:
        # The first two answers go to the log dir's formatting and the first launch.
        ports = iter([taken, taken])
        monkeypatch.setattr(broker_mod, "free_port", lambda: next(ports, None) or free_port())
        broker = start_broker(tmp_path / "kafka")
        try:
            assert broker.status().running
            assert f"CONTROLLER://127.0.0.1:{taken}" not in broker.properties_file.read_text()
        finally:
            broker.stop()
    assert f"failed to bind to 127.0.0.1:{taken}" in broker.log_file.read_text()  # the retry did happen


def test_status_reports_stopped_broker(tmp_path, capsys):
    assert main(["kafka", "status", "--port", "1", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stopped" in out and str(tmp_path) in out and "server.log" in out


SQUATTER = """
import socket, sys
with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"still mine " + conn.recv(16))
"""


def _ask(port: int, word: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(word)
        return conn.recv(64)


def test_port_in_use_by_a_foreign_process_is_refused_not_killed(tmp_path):
    squatter = subprocess.Popen([sys.executable, "-c", SQUATTER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(squatter.stdout.readline())
        broker = LocalBroker(BrokerSettings(port=port, data_dir=tmp_path))
        with pytest.raises(UsageError, match=f"port {port} .*--port"):
            broker.start()
        # The foreign process is alive, still owns the port, and still answers on it.
        assert squatter.poll() is None
        assert _ask(port, b"ping") == b"still mine ping"
        assert not broker.pid_file.exists()
    finally:
        squatter.kill()
        squatter.wait()


def test_pid_check_matches_the_exact_data_dir_not_a_prefix(tmp_path):
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=tmp_path / "kafka"))
    # A broker of the neighbouring data dir `kafka2`: its arguments contain `.../kafka` as a prefix.
    neighbour = tmp_path / "kafka2" / "server.properties"
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", broker_mod.MAIN_CLASS, str(neighbour)]
    )
    try:
        broker.data_dir.mkdir()
        broker.pid_file.write_text(f"{other.pid}\n")
        assert broker.status().running is False
        assert broker.stop() is False
        assert other.poll() is None  # never signalled: it is not ours
    finally:
        other.kill()
        other.wait()


def start_twice_at_once(root) -> tuple[Path, list[str]]:
    """Two `sentistream kafka start` of one data dir under `root`, the second while the first formats
    and launches: (data dir, their outputs). Run again on another port when the port was taken."""
    for attempt in range(1, ATTEMPTS + 1):
        port, data_dir = free_port(), root / f"attempt-{attempt}"
        cmd = [sys.executable, "-m", "sentistream.cli", "kafka", "start", "--port", str(port)]
        cmd += ["--data-dir", str(data_dir)]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while not data_dir.exists() and first.poll() is None:
            time.sleep(0.01)  # polls for the first start's data dir
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        outputs = [p.communicate(timeout=240)[0] for p in (first, second)]
        if [first.returncode, second.returncode] == [0, 0]:
            return data_dir, outputs
        broker = LocalBroker(BrokerSettings(port=port, data_dir=data_dir))
        broker.stop()
        assert attempt < ATTEMPTS and lost_its_port(broker, 0), outputs
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_two_concurrent_starts_leave_one_broker_that_stop_stops(tmp_path):
    root = tmp_path / "kafka"
    root.mkdir()
    try:
        data_dir, outputs = start_twice_at_once(root)
        assert sorted("already running" in out for out in outputs) == [False, True], outputs
        pids = _java_pids(data_dir)
        assert (
            len(pids) == 1
            and broker_mod.LocalBroker(BrokerSettings(data_dir=data_dir)).status().pid == pids[0]
        )
    finally:
        for each in root.iterdir():
            LocalBroker(BrokerSettings(data_dir=each)).stop()
    assert _java_pids(data_dir) == []


def test_stale_pid_file_is_detected_and_cleared(tmp_path):
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=tmp_path))
    tmp_path.mkdir(exist_ok=True)
    broker.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert broker.status().running is False
    assert not broker.pid_file.exists()
    assert broker.stop() is False


@pytest.mark.parametrize(
    ("missing", "hint"), [("java", "openjdk-17-jre-headless"), ("mvn", "apt-get install maven")]
)
def test_missing_tool_names_the_debian_package(monkeypatch, missing, hint):
    real_which = broker_mod.shutil.which
    monkeypatch.setattr(
        broker_mod.shutil, "which", lambda name: None if name == missing else real_which(name)
    )
    with pytest.raises(SentistreamError, match=hint):
        broker_mod._require_tools()


def test_maven_offline_failure_is_one_line():
    output = (
        "[ERROR] Failed to execute goal ... Could not transfer artifact org.apache.kafka:kafka_2.13:pom:4.3.1\n"
        * 3
    )
    message = broker_mod._maven_failure(output)
    assert "\n" not in message and "Maven Central" in message and "no jars are cached" in message


def test_cached_classpath_with_a_vanished_jar_is_resolved_again(tmp_path, monkeypatch):
    cache = tmp_path / "cp.txt"
    cache.write_text(str(tmp_path / "gone.jar"))
    monkeypatch.setattr(broker_mod, "classpath_cache", lambda: cache)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        cache.write_text(str(tmp_path / "fresh.jar"))
        return type("R", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(broker_mod.subprocess, "run", fake_run)
    assert broker_mod.resolve_classpath().endswith("fresh.jar")
    assert calls and calls[0][0] == "mvn"


def test_cluster_ids_are_valid_kafka_uuids():
    # A leading '-' once made the storage formatter read the id as a flag (1 start in 64 failed).
    ids = {broker_mod.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
