"""Control-topic records are hostile input: whatever one holds, no worker raises, and nothing it names
is read outside the cache or served unchecked (issue #24). No broker: the records go straight to the
functions the worker calls."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from model.bundle import checksum
from stream.bundles import DeploymentError, fetch
from stream.control import apply, parse
from stream.events import Deployment

GOOD = {
    "uri": "s3://models/tiny",
    "model": "tiny@1",
    "model_version": "tiny@1+0123456789ab",
    "checksum": "0123456789abcdef" * 4,
    "deployed_by": "ci@builder",
    "deployed_at": "2026-01-01T00:00:00+00:00",
}


def record(**changes) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def test_a_well_formed_record_parses() -> None:
    deployment = parse(record())
    assert deployment is not None and deployment.deployed_at.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (record(deployed_at="2024-01-01T00:00:00"), "naive time"),
        (record(checksum="../../etc"), "path traversal"),
        (record(checksum="/etc"), "absolute path"),
        (record(checksum=""), "empty checksum skips verification"),
        (record(checksum="ABCDEF" + "0" * 58), "upper-case hex"),
        (record(checksum="0" * 63), "too short"),
        (record(uri="ftp://host/bundle"), "unknown scheme"),
        (record(uri="javascript:alert(1)"), "unknown scheme"),
        (record(uri=""), "empty uri"),
        (record(uri="/models/\0tiny"), "NUL in a path"),
        (record(model="x" * 10_000), "oversized field"),
        (record(history=[orjson.loads(record())] * 50), "history too long"),
        (b"{not json", "invalid JSON"),
        (b"null", "null"),
        (b"[]", "array"),
        (b"x" * 2_000_000, "2 MB value"),
        (b"[" * 100_000 + b"]" * 100_000, "deep nesting"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_hostile_record_is_refused_as_a_value_error(value: bytes, why: str) -> None:
    with pytest.raises(ValueError):
        parse(value)
    skipped: list[tuple[int, str]] = []
    assert apply({}, b"champion", value, 7, lambda *a: skipped.append(a)) is None, why  # never raised
    assert skipped and skipped[0][0] == 7 and skipped[0][1].startswith("not a deployment record")


def test_a_skipped_record_leaves_the_current_deployment() -> None:
    current = {"champion": parse(record())}
    apply(current, b"champion", record(deployed_at="2024-01-01T00:00:00"), 8)
    assert current["champion"] == parse(record())


def test_fetch_never_reads_outside_the_cache(tmp_path: Path) -> None:
    """Before #24, fetch('s3://nonexistent/x', cache, '/etc') returned /etc without fetching a byte."""
    with pytest.raises(DeploymentError):
        fetch("s3://nonexistent/x", tmp_path / "cache", "/etc")
    with pytest.raises(DeploymentError):
        fetch("s3://nonexistent/x", tmp_path / "cache", "../" * 5 + "etc")


def test_fetch_refuses_a_bundle_over_the_size_cap(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/big/{tmp_path.name}"
    fs.pipe(root + "/weights.bin", b"0" * 5000)
    with pytest.raises(DeploymentError, match="over"):
        fetch(f"memory://{root}", tmp_path / "cache", None, max_bytes=4096)
    assert not any((tmp_path / "cache").glob("[0-9a-f]*"))  # nothing left in the cache


def test_the_cache_keeps_the_newest_bundles_only(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    cache = tmp_path / "cache"
    for i in range(5):
        root = f"/many/{tmp_path.name}/{i}"
        fs.pipe(root + "/weights.bin", f"bundle {i}".encode())
        fetch(f"memory://{root}", cache, None, keep=3)
    kept = sorted(p.name for p in cache.iterdir())
    assert len(kept) == 3
    assert (cache / checksum_of_bytes(b"bundle 4")).is_dir()  # the one just fetched is always kept


def checksum_of_bytes(data: bytes) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "weights.bin").write_bytes(data)
        return checksum(scratch)


def test_a_local_bundle_is_checked_against_its_checksum_always(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "f").write_text("x")
    assert fetch(str(bundle), tmp_path / "cache", checksum(bundle)) == bundle
    shutil.copy(bundle / "f", bundle / "g")
    with pytest.raises(DeploymentError, match="checksum"):
        fetch(str(bundle), tmp_path / "cache", checksum_of_bytes(b"x"))


def test_serving_survives_a_naive_time_that_slipped_past_validation(tmp_path: Path) -> None:
    """The TypeError that killed every worker (a naive deployed_at in `_switch`) must not recur, even
    for a record built in process rather than parsed."""
    from stream.worker.serving import Loaded
    from tests.stream.test_deploy import serving

    models = serving(tmp_path)
    good = parse(record())
    naive = good.model_copy(update={"deployed_at": datetime(2024, 1, 1)})
    models._ready["champion"] = Loaded(models.engine, naive, "x", 0.1)
    assert models.take() is models.engine and models.swaps == 1
    models.close()


def test_a_record_carries_an_aware_time_when_deploy_builds_it() -> None:
    assert Deployment.model_validate_json(record()).deployed_at.utcoffset() is not None
    assert datetime.now(UTC).tzinfo is not None


CANARY = {**GOOD, "share": 0.25, "topic": "tweets", "partitions": [0]}


def test_a_canary_record_parses_under_its_key_and_older_records_are_untouched_by_it() -> None:
    from stream.events import Canary

    current: dict = {}
    assert apply(current, b"champion", record(), 0) == "champion"  # a record from before canaries
    assert apply(current, b"canary", orjson.dumps(CANARY), 1) == "canary"
    canary = current["canary"]
    assert isinstance(canary, Canary) and canary.running and canary.gates.min_events == 500
    assert type(current["champion"]) is Deployment and current["champion"].history == []


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"share": 1.0}, "a canary on every partition"),
        ({"partitions": []}, "no partition"),
        ({"partitions": [-1]}, "a negative partition"),
        ({"status": "paused"}, "an unknown status"),
        ({"gates": {"agreement": 2}}, "a threshold out of range"),
        ({"share": None}, "no share: a champion record under the canary key"),
    ],
)
def test_a_canary_record_that_cannot_be_one_is_skipped_with_a_reason(changes: dict, why: str) -> None:
    skipped: list = []
    current: dict = {}
    value = orjson.dumps({**CANARY, **changes})
    assert apply(current, b"canary", value, 7, lambda offset, reason: skipped.append(reason)) is None, why
    assert current == {} and skipped and skipped[0].startswith("not a deployment record")
