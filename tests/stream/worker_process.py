"""Test support for the stream worker: run `sentistream worker` as a subprocess, produce, read back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.kafka_reader import read_topic as read_topic  # re-exported: the stream tests import it here
from tests.ports import ATTEMPTS, PortTaken, free_ports, log_size, wait_serving

SENTISTREAM = str(Path(sys.executable).parent / "sentistream")


@dataclass
class Topics:
    """Unique topic names and consumer group for one test."""

    prefix: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")

    @property
    def tweets(self) -> str:
        return f"{self.prefix}-tweets"

    @property
    def scored(self) -> str:
        return f"{self.prefix}-scored"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}-dlq"

    @property
    def stats(self) -> str:
        return f"{self.prefix}-stats"

    @property
    def models(self) -> str:
        return f"{self.prefix}-models"

    @property
    def group(self) -> str:
        return f"{self.prefix}-group"

    def flags(self) -> list[str]:
        """The worker flags that point it at these topics and group."""
        return [
            "--topic", self.tweets, "--scored-topic", self.scored, "--dlq-topic", self.dlq,
            "--stats-topic", self.stats, "--models-topic", self.models, "--group-id", self.group,
        ]  # fmt: skip


class WorkerProcess:
    """One `sentistream worker` subprocess with its own web port and log file.

    With `--processes N` among the flags it is the parent of N workers, on web ports `port`
    to `port + N - 1`.
    """

    def __init__(
        self, broker_url: str, topics: Topics, log_dir: Path, *extra: str, name: str = "w", faults: str = ""
    ) -> None:
        """`faults` (see tests/stream/faulty_worker.py) runs the worker with a fault-injecting engine."""
        self.log_path = log_dir / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
        command = [sys.executable, "-m", "tests.stream.faulty_worker"] if faults else [SENTISTREAM]
        self.args = [
            *command, "worker", "--broker", broker_url, "--backend", "vader", *topics.flags(), *extra,
        ]  # fmt: skip
        self.faults = faults
        self.processes = int(extra[extra.index("--processes") + 1]) if "--processes" in extra else 1
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.since = 0  # where this start's output begins in the log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ports(self) -> range:
        """The web ports of this worker's processes (one, unless --processes was given)."""
        return range(self.port, self.port + self.processes)

    def start(self) -> WorkerProcess:
        """Start the worker on free web ports (`wait_ready` moves them when one was taken)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SENTISTREAM_TEST_FAULTS": self.faults}
        self.port, self.since = free_ports(self.processes), log_size(self.log_path)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.args, "--web-port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return self

    def wait_ready(self, timeout: float = 180.0) -> dict:
        """Wait until every process of this worker serves /health with 200 on its own port; the
        first one's answer.

        A worker that exits because a web port was taken is started again on others.
        """
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answers = [
                    wait_serving(self.process, port, self.log_path, self.since, self._healthy, timeout)
                    for port in self.ports
                ]
                return answers[0]
            except PortTaken:
                if attempt == ATTEMPTS:
                    raise
                self.start()
        raise AssertionError("unreachable")

    def _healthy(self, port: int) -> dict | None:
        try:
            answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except requests.RequestException:
            return None
        return answer.json() if answer.status_code == 200 else None

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def create_topics(broker_url: str, names: list[str], partitions: int) -> None:
    """Create `names` with `partitions` partitions each."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        finally:
            await admin.close()

    asyncio.run(create())


def produce(
    broker_url: str, topic: str, messages: list[tuple[bytes | None, bytes]], pace_s: float = 0.0
) -> None:
    """Send (key, value) messages and wait for every acknowledgement."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker_url.removeprefix("kafka://"), max_request_size=4_000_000, linger_ms=5
        )
        await producer.start()
        try:
            futures = []
            for i, (key, value) in enumerate(messages):
                futures.append(await producer.send(topic, value, key=key))
                if pace_s and i % 50 == 49:
                    await asyncio.sleep(pace_s)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def mark_the_end(
    broker_url: str, topic: str, partitions: int, value: Callable[[str], bytes] | None = None
) -> set[str]:
    """Produce a marker tweet to each partition of `topic`, after everything produced so far; their keys.

    A worker takes a partition in order and has a batch's outputs acknowledged before it takes the
    next batch, so once every marker is scored, every output of the messages before them is in the
    output topics: what is missing then is missing, and a duplicate is already there (no waiting
    out a quiet period to prove that nothing more comes). `value(key)` builds a marker's value
    (default: a tweet).
    """
    import orjson
    from aiokafka import AIOKafkaProducer

    keys = {f"end-{p}": p for p in range(partitions)}

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await producer.start()
        try:
            for key, p in keys.items():
                body = value(key) if value else orjson.dumps({"id": key, "text": "the end marker"})
                await producer.send_and_wait(topic, body, key=key.encode(), partition=p)
        finally:
            await producer.stop()

    asyncio.run(send())
    return set(keys)


def read_until_marked(
    broker_url: str, topic: str, markers: set[str], timeout: float = 60.0, committed: bool = True
) -> list:
    """The records of `topic` up to the outputs of `markers` (see `mark_the_end`), markers left out:
    every record the topic holds once the last marker's output is there, none waited for after."""

    def marked(records) -> bool:
        return markers <= {r.key.decode() for r in records if r.key}

    records = read_topic(broker_url, topic, 0, timeout, idle_s=0, committed=committed, until=marked)
    return [r for r in records if not (r.key and r.key.decode() in markers)]


def health(worker: WorkerProcess) -> dict:
    """The worker's /health body (whatever its status)."""
    return requests.get(worker.url + "/health", timeout=5).json()


def metric(worker: WorkerProcess, name: str, timeout: float = 5.0) -> float:
    """The sum of the worker's /metrics samples whose line starts with `name` (0 when none)."""
    text = requests.get(worker.url + "/metrics", timeout=timeout).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def consumed(worker: WorkerProcess) -> float:
    """How many input messages the worker has processed, from /metrics."""
    return metric(worker, "sentistream_consumed_total ")


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll `condition()` every 0.2 s; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def tweets(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    """`count` valid messages keyed `prefix-i` (the key is also the id)."""
    import orjson

    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": f"nice {i}"}))
        for i in range(count)
    ]


def ids_of(records) -> list[str]:
    """The keys of scored records, as text."""
    return [r.key.decode() for r in records]
