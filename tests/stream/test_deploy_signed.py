"""The control topic as hostile input, on a real broker (issue #24): a worker given --trusted-key keeps
scoring with its own model through forged and malformed records and a deploy signed by another key,
then serves a deploy signed with the trusted key; nothing is lost throughout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson

from model.bundle import checksum
from stream.control import publish
from tests.stream.test_deploy import (
    copy_with_note,
    deploy,
    kafka_of,
    labelled,
    produce_to_partitions,
    record,
    version_of,
)
from tests.stream.test_signing import ec_keypair
from tests.stream.worker_process import Topics, WorkerProcess, health, metric, read_topic, wait_until

VADER = "vader@3.3.2"
BIG = 2_000_000  # a 2 MB record: the control topic is created to take it, so the worker must refuse it


def create_models_topic(broker_url: str, name: str) -> None:
    """The control topic as `deploy` makes it, but taking records of up to 3 MB."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await admin.start()
        try:
            configs = {"cleanup.policy": "compact", "max.message.bytes": str(3_000_000)}
            await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
        finally:
            await admin.close()

    asyncio.run(create())


def write_raw(broker_url: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Records written straight to the control topic, as anyone with write access could."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker_url.removeprefix("kafka://"), max_request_size=3_000_000
        )
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key, partition=0)
        finally:
            await producer.stop()

    asyncio.run(send())


def score(broker_url: str, topics: Topics, prefix: str, count: int, seen: int) -> list[dict]:
    """Produce `count` labelled tweets and return every scored event so far (`seen` + `count`)."""
    produce_to_partitions(broker_url, topics.tweets, labelled(prefix, count, 1))
    records = read_topic(broker_url, topics.scored, expected=seen + count, timeout=240)
    return [orjson.loads(r.value) for r in records]


def test_a_worker_with_a_trusted_key_serves_only_what_that_key_signed_and_loses_nothing(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics, n = Topics(), 500
    trusted, trusted_pub = ec_keypair(tmp_path, "trusted")
    other, _ = ec_keypair(tmp_path, "other")
    create_models_topic(broker_url, topics.models)
    kafka = kafka_of(broker_url, topics)
    worker = WorkerProcess(
        broker_url, topics, tmp_path, "--trusted-key", str(trusted_pub), "--partitions", "1"
    )
    worker.start()
    try:
        worker.wait_ready()
        before = score(broker_url, topics, "before", n, 0)

        # 1. An unsigned copy of a real deployment: valid record, valid checksum, no signature.
        unsigned = copy_with_note(bundle, tmp_path / "unsigned", "unsigned")
        asyncio.run(publish(kafka, "champion", record(unsigned, checksum(unsigned))))
        # 2. The rest straight to the topic: what a deploy would never write.
        signed = copy_with_note(bundle, tmp_path / "signed", "signed by the trusted key")
        assert (
            deploy(broker_url, topics, str(signed), "--signing-key", str(trusted), "--show").returncode == 2
        )
        from model.signing import sign_bundle

        sign_bundle(signed, trusted)
        naive = orjson.loads(record(signed, checksum(signed)).model_dump_json())
        naive["deployed_at"] = "2024-01-01T00:00:00"  # no time zone: killed every worker before #24
        traversal = {**naive, "deployed_at": datetime.now(UTC).isoformat(), "checksum": "/etc"}
        write_raw(
            broker_url,
            topics.models,
            [
                (b"champion", orjson.dumps(traversal)),
                (b"champion", orjson.dumps(naive)),
                (b"champion", b"{not json"),
                (b"champion", b"null"),
                (b"challenger", b"x" * BIG),
            ],
        )
        # 3. A deploy signed with a key the worker does not trust.
        foreign = copy_with_note(bundle, tmp_path / "foreign", "signed by another key")
        done = deploy(broker_url, topics, str(foreign), "--signing-key", str(other))
        assert done.returncode == 0, done.stderr  # deploy cannot know the workers' key: they refuse it
        wait_until(
            lambda: metric(worker, 'sentistream_model_untrusted_total{role="champion"}') >= 2,
            120,
            "the unsigned and the foreign bundle refused",
        )
        assert metric(worker, "sentistream_control_records_skipped_total") == 5
        refused = health(worker)["models"]
        assert "bytes, over" in refused["skipped_record"]["reason"]  # the 2 MB one came last
        assert refused["model_version"] == VADER and refused["swaps"] == 0
        assert refused["rejected"]["untrusted"] and "does not verify" in refused["rejected"]["reason"]
        between = score(broker_url, topics, "between", n, n)

        # 4. A deploy signed with the trusted key is served.
        good = copy_with_note(bundle, tmp_path / "good", "the release")
        done = deploy(broker_url, topics, str(good), "--signing-key", str(trusted))
        assert done.returncode == 0, done.stderr
        wait_until(lambda: health(worker)["models"]["pending"] == ["champion"], 120, "the trusted deploy")
        after = score(broker_url, topics, "after", n, 2 * n)  # switched to at the first batch
        assert health(worker)["models"]["swaps"] == 1
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()

    events = after  # every scored event, in order
    assert sorted(e["id"] for e in events) == sorted(
        f"{p}-{i}" for p in ("before", "between", "after") for i in range(n)
    ), "lost or duplicated events"
    by_id = {e["id"]: e["model_version"] for e in events}
    assert {by_id[f"before-{i}"] for i in range(n)} == {VADER}
    assert {by_id[f"between-{i}"] for i in range(n)} == {VADER}
    assert {by_id[f"after-{i}"] for i in range(n)} == {version_of(good)}
    assert len(before) == n and len(between) == 2 * n
    log = worker.log_path.read_text()
    assert log.count("deployments are unauthenticated") == 0  # it has a trusted key
    assert "Traceback" not in log


def test_a_naive_deployment_time_no_longer_stops_a_worker(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    """The record of the issue: before #24 the worker exited 1 on the first batch after it
    (`TypeError: can't subtract offset-naive and offset-aware datetimes` in the agent)."""
    topics = Topics()
    worker = WorkerProcess(broker_url, topics, tmp_path, "--partitions", "1").start()
    try:
        worker.wait_ready()
        naive = orjson.loads(record(bundle, checksum(bundle)).model_dump_json())
        naive["deployed_at"] = "2024-01-01T00:00:00"
        write_raw(broker_url, topics.models, [(b"champion", orjson.dumps(naive))])
        wait_until(
            lambda: "skipping control-topic record at offset 0" in worker.log_path.read_text(),
            60,
            "the naive record refused (before #24 it was loaded, and the next batch raised TypeError)",
        )
        events = score(broker_url, topics, "naive", 200, 0)
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    assert {e["model_version"] for e in events} == {VADER}
    assert "deployments are unauthenticated" in worker.log_path.read_text()


def test_rollback_and_promote_republish_only_the_recorded_bytes(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    """Before #24 they fetched the old URI again without its checksum: whatever sat there was served."""
    topics = Topics()
    first = copy_with_note(bundle, tmp_path / "first", "first")
    second = copy_with_note(bundle, tmp_path / "second", "second")
    challenger = copy_with_note(bundle, tmp_path / "challenger", "challenger")
    for args in ([str(first)], [str(second)], [str(challenger), "--shadow"]):
        assert deploy(broker_url, topics, *args).returncode == 0
    (first / "NOTES.txt").write_text("replaced after it was deployed")
    (challenger / "NOTES.txt").write_text("replaced after it was shadowed")
    for action in ("--rollback", "--promote"):
        refused = deploy(broker_url, topics, action)
        assert refused.returncode == 2 and "checksum" in refused.stderr, refused.stderr
    assert current_champion(broker_url, topics) == version_of(second)


def current_champion(broker_url: str, topics: Topics) -> str:
    from tests.stream.test_deploy import current

    return current(broker_url, topics)["champion"].model_version
