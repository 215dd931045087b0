"""Model deployments: a compacted control topic says which bundle every worker serves.

`sentistream deploy BUNDLE` checks that the bundle loads and scores, then publishes a `Deployment`
under the key `champion` of `sentistream-models` (`--shadow`: under `challenger`). Workers read the
topic to its end before they start, so a worker that scales from zero starts on the current
deployment, and follow it while they run (stream/serving.py swaps the engine between batches).

The topic is compacted, so only the newest value per key survives; each champion therefore carries
the champions it replaced (`history`), which is what `deploy --rollback` goes back to. A bundle is a
local path (a mounted volume) or any URI fsspec reads (s3://, gs://, https://, ...), copied once
into a local cache named by its checksum.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from model.bundle import checksum
from sentistream.errors import UsageError
from stream.settings import KafkaSettings

if TYPE_CHECKING:
    from model.engines.base import Engine
    from model.settings import ModelSettings

log = logging.getLogger(__name__)

Role = Literal["champion", "challenger"]
ROLES: tuple[Role, ...] = ("champion", "challenger")
HISTORY_KEPT = 10  # champions a deployment remembers for --rollback
# Scored by every candidate before it serves: a bundle that cannot score these never replaces one that can.
SMOKE_TEXTS = [
    "I love this, it works perfectly and the support team was great!",
    "This is the worst update ever, everything is broken and slow.",
    "The package arrived on Tuesday.",
]


MAX_RECORD_BYTES = 64 * 1024  # a record with HISTORY_KEPT earlier champions is ~5 KB
# Where a deployed bundle may live: a local path (a mounted volume) or one of these stores. Anything
# else fsspec could open (ftp, sftp, ssh, github, a chained "zip::" URL...) is refused in the record.
URI_SCHEMES = frozenset({"", "file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "hf", "https"})


class DeploymentError(UsageError):
    """A bundle that must not serve: it does not load, does not score or is not what was deployed (exit 2)."""


def _known_uri(uri: str) -> str:
    if "\0" in uri or "::" in uri or any(ord(c) < 32 for c in uri):
        raise ValueError("the uri holds control characters or a chained fsspec URL")
    scheme = urlsplit(uri).scheme.lower()
    if len(scheme) != 1 and scheme not in URI_SCHEMES:  # one letter: a Windows drive
        raise ValueError(f"the uri scheme {scheme!r} is not one of {sorted(URI_SCHEMES - {''})} or a path")
    return uri


Uri = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_known_uri)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ModelRef(BaseModel):
    """One deployed bundle: where it is, exactly what it is, and who deployed it when.

    Validated as hostile input (issue #24): whoever can write to the control topic controls these
    fields, so the checksum is 64 lower-case hex digits (it names a cache directory), times carry a
    time zone, the URI is a path or a known store, and every string has a length cap.
    """

    model_config = ConfigDict(extra="ignore")

    uri: Uri = Field(description="a local path or a URI of a known store (URI_SCHEMES)")
    model: Name = Field(description="name@version")
    model_version: Name = Field(description="name@version+checksum prefix, as in scored events")
    checksum: Sha256 = Field(description="sha256 of the bundle's files (model.bundle.checksum)")
    deployed_by: Name
    deployed_at: AwareDatetime


class Deployment(ModelRef):
    """The value of a `champion` or `challenger` record on the control topic."""

    history: list[ModelRef] = Field(
        default_factory=list,
        max_length=HISTORY_KEPT,
        description="earlier champions, newest first (for --rollback)",
    )

    def ref(self) -> ModelRef:
        """This deployment without its history."""
        return ModelRef(**self.model_dump(exclude={"history"}))


def deployer() -> str:
    """`user@host`, recorded with every deployment."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def is_remote(uri: str) -> bool:
    """True for a URI fsspec must fetch; False for a local path (or file://)."""
    scheme = urlsplit(uri).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


def local_path(uri: str) -> Path:
    """The local directory a non-remote `uri` names."""
    return Path(uri.removeprefix("file://")).expanduser()


def redacted(uri: str) -> str:
    """`uri` without user, password or query (a signed URL's token): safe for /health and logs."""
    if not is_remote(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


DEFAULT_MAX_BUNDLE_BYTES = 8 << 30  # a large transformer with its ONNX and int8 files fits
DEFAULT_CACHE_KEEP = 3  # cached bundles kept: the serving one, a rollback target, a challenger


def fetch(
    uri: str,
    cache_dir: Path,
    expected: str | None = None,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    keep: int = DEFAULT_CACHE_KEEP,
) -> Path:
    """A local directory holding the bundle at `uri`: the path itself, or a copy in
    `cache_dir/<checksum>` made once per checksum. DeploymentError when its files' checksum is not
    `expected` (the bundle changed after it was deployed), when `expected` is not a sha256 (it
    names a cache directory), or when the remote bundle is over `max_bytes`. The cache keeps the
    `keep` bundles used last."""
    if expected is not None and not _is_sha256(expected):
        raise DeploymentError(f"{redacted(uri)}: the expected checksum is not a sha256 hex digest")
    if not is_remote(uri):
        path = local_path(uri)
        if not path.is_dir():
            raise DeploymentError(f"{uri}: no such bundle directory")
        return _checked(path, uri, expected)
    cached = cache_dir / expected if expected else None
    if cached is not None and cached.is_dir():
        os.utime(cached)  # used now: pruned last
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        target = _download(uri, staging, cache_dir, expected, max_bytes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_cache(cache_dir, keep, target)
    return target


def _download(uri: str, staging: Path, cache_dir: Path, expected: str | None, max_bytes: int) -> Path:
    import fsspec

    shown = redacted(uri)
    try:
        fs, root = fsspec.core.url_to_fs(uri)
        size = fs.du(root, total=True)
        if size > max_bytes:
            raise DeploymentError(f"{shown}: {size:,} bytes is over the {max_bytes:,}-byte bundle cap")
        fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
    except DeploymentError:
        raise
    except Exception as exc:  # any fsspec backend error: not found, denied, no such protocol
        raise DeploymentError(f"cannot fetch {shown}: {type(exc).__name__}") from None
    # The listing may lie or change under us: the bytes on disk are what counts.
    fetched = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    if fetched > max_bytes:
        raise DeploymentError(f"{shown}: {fetched:,} bytes is over the {max_bytes:,}-byte bundle cap")
    digest = checksum(staging)
    if expected and digest != expected:
        raise DeploymentError(f"{shown}: checksum {digest[:12]} is not the deployed {expected[:12]}")
    target = cache_dir / digest
    if not target.exists():
        staging.rename(target)
    os.utime(target)
    return target


def prune_cache(cache_dir: Path, keep: int, used: Path) -> None:
    """Remove all but the `keep` bundles of `cache_dir` used last (`used` always stays)."""
    bundles = [p for p in cache_dir.iterdir() if p.is_dir() and _is_sha256(p.name) and p != used]
    bundles.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in bundles[max(keep - 1, 0) :]:
        shutil.rmtree(stale, ignore_errors=True)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _checked(path: Path, uri: str, expected: str | None) -> Path:
    if expected:
        digest = checksum(path)
        if digest != expected:
            raise DeploymentError(
                f"{uri}: checksum {digest[:12]} is not the deployed {expected[:12]} (the files changed "
                "after `sentistream deploy`; deploy the bundle again)"
            )
    return path


@dataclass(frozen=True)
class Admission:
    """What a worker requires of a deployment before it loads it (WorkerSettings, read at start).

    `trusted_key`: serve only bundles signed by it (None: any bundle whose checksum matches, which
    means whoever can write to the control topic decides what is served). `uri_prefixes`: where
    bundles may come from (empty: anywhere a record may point). `max_bundle_bytes`, `cache_keep`:
    see `fetch`.
    """

    trusted_key: Path | None = None
    uri_prefixes: tuple[str, ...] = ()
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    cache_keep: int = DEFAULT_CACHE_KEEP


def admit(deployment: ModelRef, cache_dir: Path, admission: Admission) -> Path:
    """The local directory of `deployment`'s bundle, once its URI is allowed, its files match the
    recorded checksum and, with a trusted key, its signature verifies; DeploymentError otherwise."""
    if admission.uri_prefixes and not allowed(deployment.uri, admission.uri_prefixes):
        raise DeploymentError(
            f"{redacted(deployment.uri)} is not under an allowed prefix ({', '.join(admission.uri_prefixes)})"
        )
    path = fetch(
        deployment.uri, cache_dir, deployment.checksum, admission.max_bundle_bytes, admission.cache_keep
    )
    if admission.trusted_key is not None:
        from model.signing import SignatureError, verify_bundle

        try:
            verify_bundle(path, admission.trusted_key)
        except SignatureError as exc:
            raise UntrustedBundle(f"{redacted(deployment.uri)}: {exc}") from None
    return path


class UntrustedBundle(DeploymentError):
    """A bundle whose signature does not verify against the worker's trusted key."""


def allowed(uri: str, prefixes: tuple[str, ...]) -> bool:
    """True when `uri`, normalised (no `..` escapes a prefix), starts with one of `prefixes`."""
    if is_remote(uri):
        if ".." in urlsplit(uri).path.split("/"):
            return False
        target = uri
    else:
        target = os.path.normpath(local_path(uri))
    return any(target == p.rstrip("/") or target.startswith(p.rstrip("/") + "/") for p in prefixes)


def load_verified(path: Path, model_settings: ModelSettings) -> Engine:
    """The engine of the bundle at `path`, after it scored `SMOKE_TEXTS`; DeploymentError otherwise."""
    # A worker scoring with VADER (no model) loads a deployed bundle with the best backend for it.
    backend = model_settings.backend if model_settings.backend in ("onnx", "torch") else "auto"
    try:
        engine = model_settings.model_copy(update={"model": str(path), "backend": backend}).load_engine()
    except Exception as exc:  # missing files, bad weights, wrong label count: one line
        raise DeploymentError(f"{path} does not load: {type(exc).__name__}: {exc}") from None
    try:
        predictions = engine.predict(SMOKE_TEXTS)
    except Exception as exc:  # the model raised on ordinary texts
        engine.close()
        raise DeploymentError(f"{path} loads but raised {type(exc).__name__} scoring a smoke batch") from None
    broken = [
        p.error or f"label {p.label!r}" for p in predictions if not p.ok or p.label not in engine.labels
    ]
    if len(predictions) != len(SMOKE_TEXTS) or broken:
        engine.close()
        raise DeploymentError(f"{path} loads but does not score a smoke batch: {broken[:1] or predictions}")
    return engine


def new_deployment(uri: str, path: Path, engine: Engine, history: list[ModelRef]) -> Deployment:
    """The control-topic record for `engine`, loaded from `path` (fetched from `uri`)."""
    return Deployment(
        uri=uri,
        model=engine.name,
        model_version=engine.model_version,
        checksum=checksum(path),
        deployed_by=deployer(),
        deployed_at=datetime.now(UTC),
        history=history[:HISTORY_KEPT],
    )


def parse(value: bytes | None) -> Deployment | None:
    """A control-topic value (None: a tombstone); ValueError when it is not a deployment."""
    if value is None:
        return None
    if len(value) > MAX_RECORD_BYTES:
        raise ValueError(f"not a deployment record: {len(value):,} bytes, over {MAX_RECORD_BYTES:,}")
    try:
        return Deployment.model_validate_json(value)
    except Exception as exc:  # ValidationError, or anything the JSON parser raises on hostile bytes
        errors = getattr(exc, "errors", None)
        reason = errors()[0]["msg"] if callable(errors) and errors() else type(exc).__name__
        raise ValueError(f"not a deployment record: {reason}") from None


async def read_deployments(
    kafka: KafkaSettings, timeout_s: float = 10.0
) -> tuple[dict[str, Deployment], int]:
    """The current deployment per role, and the offset that follows the last record read.

    A record that is not a deployment is logged and skipped: nothing written to the control topic by
    hand may stop a worker from starting.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        if kafka.models_topic not in await consumer.topics():
            return {}, 0
        tp = TopicPartition(kafka.models_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        current: dict[str, Deployment] = {}
        while await consumer.position(tp) < end:
            batches = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), timeout_s)
            for message in batches.get(tp, []):
                apply(current, message.key, message.value, message.offset)
        return current, end
    finally:
        await consumer.stop()


def apply(
    current: dict[str, Deployment],
    key: bytes | None,
    value: bytes | None,
    offset: int,
    on_skip: Callable[[int, str], None] | None = None,
) -> str | None:
    """Fold one control-topic record into `current`; returns its role, None when it is skipped
    (then `on_skip(offset, reason)`, when given)."""
    role = key.decode("utf-8", "replace") if key else ""
    reason = None
    if role not in ROLES:
        reason = f"key {role[:40]!r} is not a role"
    else:
        try:
            deployment = parse(value)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        log.warning("skipping control-topic record at offset %d: %s", offset, reason)
        if on_skip is not None:
            on_skip(offset, reason)
        return None
    if deployment is None:
        current.pop(role, None)
    else:
        current[role] = deployment
    return role


async def follow(kafka: KafkaSettings, start: int, on_record, retry_s: float = 5.0, on_skip=None) -> None:
    """Call `on_record(role, deployment | None)` for every control-topic record from offset `start`,
    and `on_skip(offset, reason)` for every record that is not one, forever; a lost broker is
    retried, never raised (the stream keeps its model meanwhile)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(kafka.models_topic, 0)
    position = start
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **kafka.aiokafka_security(),
        )
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, position)
            async for message in consumer:
                position = message.offset + 1
                current: dict[str, Deployment] = {}
                role = apply(current, message.key, message.value, message.offset, on_skip)
                if role is not None:
                    on_record(role, current.get(role))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # advisory: a worker must outlive a control-topic hiccup
            log.warning(
                "following %s failed (%s); retrying in %.0fs", kafka.models_topic, type(exc).__name__, retry_s
            )
            await asyncio.sleep(retry_s)
        finally:
            await consumer.stop()


async def publish(
    kafka: KafkaSettings,
    role: Role,
    deployment: Deployment | None,
    timeout_s: float = 15.0,
    replication: int = 1,
) -> int:
    """Write `deployment` (None: clear the role) to the control topic; returns its offset once every
    in-sync replica has it."""
    from aiokafka import AIOKafkaProducer

    await ensure_models_topic(kafka, timeout_s, replication)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True, **kafka.aiokafka_security()
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        value = deployment.model_dump_json().encode() if deployment is not None else None
        meta = await asyncio.wait_for(
            producer.send_and_wait(kafka.models_topic, value, key=role.encode(), partition=0), timeout_s
        )
        return meta.offset
    finally:
        await producer.stop()


async def ensure_models_topic(kafka: KafkaSettings, timeout_s: float = 15.0, replication: int = 1) -> bool:
    """Create the compacted, single-partition control topic when it is missing; True when created."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        return await create_models_topic(admin, kafka, replication)
    finally:
        await admin.close()


async def create_models_topic(admin, kafka: KafkaSettings, replication: int) -> bool:
    """With a started admin client: create the control topic when missing; True when created."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    if kafka.models_topic in set(await admin.list_topics()):
        return False
    # One partition: every worker reads all of it, in order. Compacted: the newest value per role stays.
    topic = NewTopic(kafka.models_topic, 1, replication, topic_configs={"cleanup.policy": "compact"})
    try:
        await admin.create_topics([topic])
    except TopicAlreadyExistsError:  # another worker or deploy created it first
        return False
    return True
