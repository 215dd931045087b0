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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError

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


class DeploymentError(UsageError):
    """A bundle that must not serve: it does not load, does not score or is not what was deployed (exit 2)."""


class ModelRef(BaseModel):
    """One deployed bundle: where it is, exactly what it is, and who deployed it when."""

    uri: str = Field(description="a local path or any URI fsspec reads")
    model: str = Field(description="name@version")
    model_version: str = Field(description="name@version+checksum prefix, as in scored events")
    checksum: str = Field(description="sha256 of the bundle's files (model.bundle.checksum)")
    deployed_by: str
    deployed_at: datetime


class Deployment(ModelRef):
    """The value of a `champion` or `challenger` record on the control topic."""

    history: list[ModelRef] = Field(
        default_factory=list, description="earlier champions, newest first (for --rollback)"
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


def fetch(uri: str, cache_dir: Path, expected: str | None = None) -> Path:
    """A local directory holding the bundle at `uri`: the path itself, or a copy in
    `cache_dir/<checksum>` made once per checksum. DeploymentError when its files' checksum is not
    `expected` (the bundle changed after it was deployed)."""
    if not is_remote(uri):
        path = local_path(uri)
        if not path.is_dir():
            raise DeploymentError(f"{uri}: no such bundle directory")
        return _checked(path, uri, expected)
    cached = cache_dir / expected if expected else None
    if cached is not None and cached.is_dir():
        return cached
    import fsspec

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        fs, root = fsspec.core.url_to_fs(uri)
        fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
        digest = checksum(staging)
        if expected and digest != expected:
            raise DeploymentError(f"{uri}: checksum {digest[:12]} is not the deployed {expected[:12]}")
        target = cache_dir / digest
        if not target.exists():
            staging.rename(target)
        return target
    except DeploymentError:
        raise
    except Exception as exc:  # any fsspec backend error: not found, denied, no such protocol
        raise DeploymentError(f"cannot fetch {uri}: {type(exc).__name__}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checked(path: Path, uri: str, expected: str | None) -> Path:
    if expected:
        digest = checksum(path)
        if digest != expected:
            raise DeploymentError(
                f"{uri}: checksum {digest[:12]} is not the deployed {expected[:12]} (the files changed "
                "after `sentistream deploy`; deploy the bundle again)"
            )
    return path


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
    try:
        return Deployment.model_validate_json(value)
    except ValidationError as exc:
        raise ValueError(f"not a deployment record: {exc.errors()[0]['msg']}") from None


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


def apply(current: dict[str, Deployment], key: bytes | None, value: bytes | None, offset: int) -> str | None:
    """Fold one control-topic record into `current`; returns its role, None when it is skipped."""
    role = key.decode("utf-8", "replace") if key else ""
    if role not in ROLES:
        log.warning("skipping control-topic record at offset %d: key %r is not a role", offset, role[:40])
        return None
    try:
        deployment = parse(value)
    except ValueError as exc:
        log.warning("skipping control-topic record at offset %d: %s", offset, exc)
        return None
    if deployment is None:
        current.pop(role, None)
    else:
        current[role] = deployment
    return role


async def follow(kafka: KafkaSettings, start: int, on_record, retry_s: float = 5.0) -> None:
    """Call `on_record(role, deployment | None)` for every control-topic record from offset `start`,
    forever; a lost broker is retried, never raised (the stream keeps its model meanwhile)."""
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
                role = apply(current, message.key, message.value, message.offset)
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
