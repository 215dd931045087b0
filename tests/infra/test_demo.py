"""`sentistream demo` end to end: broker, worker, replay and dashboard come up, scored events flow,
and when it stops every process it started is gone (and the broker it started is stopped)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys

import psutil
import pytest
import requests

from infra.broker import BrokerSettings, LocalBroker, free_port
from infra.demo import add_arguments, settings_of
from stream.events import ScoredTweet


def first_scored_event(broker_url: str, timeout: float) -> ScoredTweet:
    """The first event on `tweets-scored` of the demo's broker."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> ScoredTweet:
        consumer = AIOKafkaConsumer(
            "tweets-scored",
            bootstrap_servers=broker_url.removeprefix("kafka://"),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout)
            return ScoredTweet.model_validate_json(record.value)
        finally:
            await consumer.stop()

    return asyncio.run(read())


def start_demo(tmp_path, attempts: int = 3) -> tuple[subprocess.Popen, dict[str, int], list[str]]:
    """Start `sentistream demo` until its dashboard is announced: (process, ports, output so far).

    The ports were free when `free_port()` looked, but the demo's children bind them later; one
    taken meanwhile is refused by the demo (exit 2, naming the port) and retried on new ones.
    """
    for _ in range(attempts):
        ports = {name: free_port() for name in ("kafka", "dashboard", "worker")}
        # --duration only bounds a demo that hangs; the test stops it at the first scored event.
        command = [sys.executable, "-m", "sentistream.cli", "demo", "--duration", "600"]
        command += ["--data-dir", str(tmp_path / "kafka")]
        for name, port in ports.items():
            command += [f"--{name}-port", str(port)]
        env = os.environ | {"HF_HUB_OFFLINE": "1"}  # no trained bundle in tmp_path, no Hub: VADER
        demo = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if "Dashboard: http://" in line:
                return demo, ports, lines
        if demo.wait(60) != 2 or "already in use" not in "".join(lines):
            raise AssertionError("".join(lines))
    raise AssertionError(f"no free ports after {attempts} attempts: {''.join(lines)}")


def still_running(pids: list[int], timeout: float = 60) -> list[int]:
    """The pids still running once each has exited or `timeout` passed (zombies count as exited)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_demo_runs_everything_and_stops_what_it_started(tmp_path):
    demo, ports, lines = start_demo(tmp_path)
    try:
        assert any("VADER lexicon baseline" in line for line in lines), lines
        assert requests.get(f"http://127.0.0.1:{ports['dashboard']}/_stcore/health", timeout=5).ok
        event = first_scored_event(f"kafka://127.0.0.1:{ports['kafka']}", timeout=120)
        assert event.label in {"negative", "neutral", "positive"} and event.model.startswith("vader")
        demo.send_signal(signal.SIGTERM)  # what `kill` sends; the demo treats it as Ctrl-C
        lines += demo.stdout.readlines()
        assert demo.wait(120) == 0, "".join(lines)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(60)
    assert "Demo stopped." in "".join(lines)
    started = dict(re.findall(r"Started (\w+) \(pid (\d+)\)", "".join(lines)))
    assert set(started) == {"worker", "replay", "sink", "monitor", "dashboard"}, lines
    pids = [int(p) for p in started.values()]
    # Waited for, not slept on: a child that outlives the demo fails after the bound, not by chance.
    assert not still_running(pids), "still running after the demo exited"
    broker = LocalBroker(BrokerSettings(port=ports["kafka"], data_dir=tmp_path / "kafka"))
    assert not broker.status().running


def test_a_busy_port_is_refused_naming_the_flag(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sentistream.cli", "demo", "--kafka-port", str(free_port()),
             "--data-dir", str(tmp_path / "kafka"), "--worker-port", str(busy)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {busy} for the worker is already in use; pick another with --worker-port" in result.stderr
    assert not LocalBroker(BrokerSettings(data_dir=tmp_path / "kafka")).status().running


def test_settings_come_from_their_owners_environment_variables(monkeypatch):
    monkeypatch.setenv("SENTISTREAM_KAFKA_PORT", "19092")
    monkeypatch.setenv("SENTISTREAM_WEB_PORT", "16066")
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_PORT", "18501")
    monkeypatch.setenv("SENTISTREAM_MODEL", "some/model")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plan, model = settings_of(parser.parse_args(["--dashboard-port", "18600"]))
    assert (plan.broker.port, plan.worker_port, plan.dashboard_port) == (19092, 16066, 18600)
    assert model == "some/model"


def test_the_train_hint_trains_what_the_demo_serves_next_time(tmp_path, monkeypatch):
    """The hint's command, parsed by the real CLI, leaves --output unset: only then does `train`
    link models/latest, the bundle the next `make demo` picks up (--output models/latest would not)."""
    import shlex

    from infra.demo import TRAIN_HINT
    from sentistream.cli import build_parser
    from sentistream.settings import settings_from_args
    from training.settings import TrainSettings
    from training.train import MODELS_DIR

    command = shlex.split(TRAIN_HINT.split(": ", 1)[1].split("  (")[0])
    assert command[0] == "sentistream"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "YOUR.csv").write_text("text,label\nok,neutral\n")
    settings = settings_from_args(TrainSettings, build_parser("train").parse_args(command[1:]))
    assert settings.output is None and "models/latest" in TRAIN_HINT and MODELS_DIR.name == "models"


def test_a_demo_killed_with_sigkill_leaves_no_child_running(tmp_path):
    """The demo's children die with it even when it gets no chance to stop them (kill -9)."""
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from infra.demo import Demo\n"
            "demo = Demo.__new__(Demo)\n"
            f"demo.children, demo.log_dir = [], Path({str(tmp_path)!r})\n"
            f"child = demo._spawn('dashboard', ['dashboard', '--port', '{port}', '--broker', 'kafka://127.0.0.1:1'])\n"
            "time.sleep(600)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        child = int(re.search(r"Started dashboard \(pid (\d+)\)", parent.stdout.readline()).group(1))
        assert psutil.pid_exists(child)
    finally:
        parent.kill()  # the demo's death, with no chance to clean up
        parent.wait(10)
    assert not still_running([child], timeout=30), (tmp_path / "dashboard.log").read_text()[-2000:]
