"""Session fixtures: one real Kafka broker for the tests that ask for it, and a tiny model.

Tests that need neither never wait for them (both are lazy, session-scoped fixtures).

Markers are applied here, from what a test does, so no test has to remember them (`make test-fast`
deselects them; `make test` runs everything):
- `kafka`: the test uses a broker fixture (directly or through another fixture) or starts a broker;
- `fault`: it kills, freezes or restarts a process or the broker (SIGKILL, SIGSTOP, restart);
- `browser`: it drives Chromium.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
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


BROKER_FIXTURES = frozenset({"kafka_broker", "own_broker", "broker_url"})
# A broker of the test's own: `start_broker`, `sentistream kafka start`, the chaos harness.
STARTS_A_BROKER = re.compile(r'\bstart_broker\(|"kafka", "start"|\brun_chaos\(')
# Killing, freezing or restarting a process or the broker, in the test or a fixture it uses (a
# `.kill()` in clean-up is not a fault test, so plain kills count only by the test's name below).
FAULT_SOURCE = re.compile(r"SIGKILL|SIGSTOP|\.suspend\(\)|\.restart\(|\bkill_9\b|\brun_chaos\(")
# Names that say so, for tests that talk to a broker (a static check named after a restart is not one).
FAULT_NAME = re.compile(r"(?:^|_)(?:kill|kills|killed|kill_9|restart|restarts|frozen|freeze)(?:_|$)")
DRIVES_A_BROWSER = re.compile(r"\bwebdriver\b|\bchromium\b", re.IGNORECASE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test `kafka`, `fault` and `browser` from what it (and its fixtures) do."""
    for item in items:
        for marker in markers_of(item):
            item.add_marker(marker)


def markers_of(item: pytest.Item) -> list[str]:
    """The automatic markers `item` deserves (see the module docstring)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    code = " ".join(_source(f) for f in [getattr(item, "function", None), *_fixture_functions(item)])
    found = []
    if fixtures & BROKER_FIXTURES or STARTS_A_BROKER.search(code):
        found.append("kafka")
    named = FAULT_NAME.search(getattr(item, "originalname", item.name))
    if FAULT_SOURCE.search(code) or (named and "kafka" in found):
        found.append("fault")
    module = getattr(item, "module", None)
    if module is not None and DRIVES_A_BROWSER.search(_source(module)):
        found.append("browser")
    return found


def _fixture_functions(item: pytest.Item) -> list:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [d.func for defs in info.name2fixturedefs.values() for d in defs]


@functools.cache
def _source(obj) -> str:
    if obj is None:
        return ""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


# Under CI=1 these tests must run: a browser test or a manifests test that skips there hides a broken
# page or manifest behind a missing tool (`make test` installs Chromium and kubectl).
MUST_RUN_IN_CI = re.compile(r"chromium|kubectl", re.IGNORECASE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Under CI=1, a browser or manifests test that skipped for a missing tool fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if MUST_RUN_IN_CI.search(reason) and not item.get_closest_marker("gpu"):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=1, where it must run: {reason}"
