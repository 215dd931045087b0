"""The adapter of Faust's and aiokafka's private names: pinned versions, and what each piece promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stream import kafka_internals
from stream.kafka_internals import PINNED, batched_consumer_class, installed_versions, version_drift

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_faust_and_aiokafka_are_the_versions_the_adapter_was_written_for() -> None:
    assert version_drift() is None, version_drift()
    assert installed_versions() == PINNED


def test_a_version_change_is_named_with_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(kafka_internals, "installed_versions", lambda: {**PINNED, "aiokafka": "0.15.0"})
    message = version_drift()
    assert message is not None and "aiokafka 0.15.0 (pinned 0.14.0)" in message
    assert "stream/kafka_internals.py" in message


def test_the_pins_match_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for name, version in PINNED.items():
        assert f'"{name}=={version}"' in text, f"pyproject.toml must pin {name}=={version}"


def private_attributes(path: Path) -> set[str]:
    """Names `x._name` the module reads on objects other than self/cls (its own privates)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.add(node.attr)
    return found


@pytest.mark.parametrize("folder", ["stream", "dashboard"])
def test_no_module_but_the_adapter_reads_a_private_attribute_of_another_object(folder: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "kafka_internals.py" and (names := private_attributes(path) - {"_exit", "_fields"})
    }
    assert offenders == {}, f"private names belong in stream/kafka_internals.py: {offenders}"


async def noop(*args) -> None:
    pass


@pytest.mark.parametrize("commits", [True, False])
async def test_the_exactly_once_consumer_never_commits_and_reads_read_committed(
    commits: bool, monkeypatch
) -> None:
    import faust
    from faust.transport.drivers.aiokafka import Consumer

    app = faust.App(f"test-internals-{commits}", broker="kafka://127.0.0.1:1", store="memory://")
    called = []

    async def faust_commit(self, topics=None, start_new_transaction=True) -> bool:
        called.append(topics)
        return True

    monkeypatch.setattr(Consumer, "commit", faust_commit)
    consumer = batched_consumer_class(commits=commits)(
        app.transport, callback=noop, on_partitions_revoked=noop, on_partitions_assigned=noop
    )
    assert await consumer.commit() is commits
    assert called == ([None] if commits else []), (
        "exactly-once: Faust's timer, count and rebalance commits do nothing"
    )
    assert consumer.in_transaction is (not commits), "exactly-once reads input read_committed"
    assert list(consumer.on_init_dependencies()) == [], "Faust's own transaction manager never starts"
