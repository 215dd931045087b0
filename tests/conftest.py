"""Session fixtures: one real Kafka broker for the tests that ask for it, and a tiny model.

Tests that need neither never wait for them (both are lazy, session-scoped fixtures).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.ports import refused_port, start_broker
from tests.tiny_model import build_tiny_classifier

# No test may reach the Hugging Face Hub (these machines cannot, and tests must not depend on it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node KRaft broker on a free port, stopped at the end of the session."""
    broker = start_broker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path):
    """A broker of the test's own, which it may stop or restart (the session's must stay up)."""
    broker = start_broker(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker_url(kafka_broker) -> str:
    """`kafka://127.0.0.1:PORT` of the session broker, as the CLI's --broker takes it."""
    return kafka_broker.url


@pytest.fixture
def dead_port():
    """A port on 127.0.0.1 where nothing listens for the whole test (see `refused_port`)."""
    with refused_port() as port:
        yield port


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer DistilBERT 3-class classifier (random weights) with a trained tokenizer."""
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-model"))
