"""A Kafka client that fails to connect is closed all the same.

An unclosed aiokafka client keeps its sockets and background tasks until the garbage collector
finds it ("Unclosed AIOKafkaConsumer"). The dashboard's alert feed retries every 5 s while the
broker is away, so one unclosed client per attempt is a leak that grows as long as the broker is
down.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from dashboard.alerts import AlertFeed
from stream.control import ensure_models_topic, publish, read_deployments
from stream.deployment.watch import partition_count, read_windows
from stream.settings import KafkaSettings

ATTEMPTS = {
    "the dashboard's alert feed": lambda kafka: AlertFeed(kafka, "alerts")._consume(),
    "reading the deployments": lambda kafka: read_deployments(kafka, timeout_s=5),
    "publishing a deployment": lambda kafka: publish(kafka, "challenger", None, timeout_s=5),
    "creating the control topic": lambda kafka: ensure_models_topic(kafka, timeout_s=5),
    "reading a canary's stats windows": lambda kafka: read_windows(kafka, datetime.now(UTC), timeout_s=5),
    "counting a canary's partitions": lambda kafka: partition_count(kafka, "tweets", timeout_s=5),
}


@pytest.fixture
def clients(monkeypatch) -> list:
    """Every aiokafka client the attempt under test made: those made on this test's thread (a
    background thread of another test, such as a dashboard's alert feed retrying a missing broker,
    may make and close its own at any moment, and it is not the attempt being judged)."""
    made: list = []
    mine = threading.get_ident()
    for cls in (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient):

        def init(self, *args, _init=cls.__init__, **kwargs) -> None:
            if threading.get_ident() == mine:
                made.append(self)
            _init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    return made


@pytest.mark.parametrize("what", list(ATTEMPTS))
def test_a_client_that_cannot_connect_is_closed(what: str, dead_port, clients) -> None:
    kafka = KafkaSettings(broker=f"kafka://127.0.0.1:{dead_port}")

    with pytest.raises((KafkaError, OSError, TimeoutError)):
        asyncio.run(ATTEMPTS[what](kafka))

    assert clients, f"{what} made no Kafka client"
    unclosed = [type(c).__name__ for c in clients if c._closed is not True]  # aiokafka's own flag
    assert unclosed == [], f"{what} left {unclosed} open"
