"""The models a worker serves: the champion the stream scores with, its replacement, a shadow.

Deployments arrive from the control topic (stream/control.py) on the event loop. Loading and
verifying a bundle takes seconds, so it happens on a thread of its own while the stream keeps
scoring with the current engine; the agent picks the new engine up between two batches (`take`),
so every batch is scored by exactly one model and a partition switches once. A bundle that does not
load, score or match its checksum is rejected: the current engine keeps serving, and the failure is
logged, counted in /metrics, shown by /health and published in sentiment-stats (`model_error`).

A shadow (challenger) scores copies of the champion's delivered batches on its own thread. It never
makes the stream wait: while it is busy with one batch, the next ones are dropped and counted.

A canary (`deploy --canary`) is a candidate that scores the input partitions its record names, from
the next batch on, while the champion scores the rest and a second copy of the candidate shadows the
champion's share (so agreement is measured on the same events). It is loaded like a champion, and it
ends when its record says promoted or rolled back: a promotion's champion record names the same
bundle, which is then switched to at once without loading it again, so no partition flaps back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from stream.bundles import Admission, DeploymentError, UntrustedBundle, admit, load_verified, redacted
from stream.events import Canary, Deployment, ScoredTweet
from stream.retry import Backoff
from stream.worker.inference import STREAM, InferenceThread
from stream.worker.scoring import predict_guarded

if TYPE_CHECKING:
    from model.engines.base import Engine
    from model.settings import ModelSettings
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.stats import TumblingStats

log = logging.getLogger(__name__)

SHADOW_NICE = 10  # the challenger's thread gets the CPU only when the champion's stream leaves it idle
RELOADS = Backoff(5.0, 300.0)  # back-off of a champion that could not be loaded at start


@dataclass(frozen=True)
class Loaded:
    """An engine verified off the event loop, waiting to be taken between batches."""

    engine: Engine
    deployment: Deployment
    path: str
    load_s: float
    shadow_engine: Engine | None = None  # a canary's second copy, for shadow-scoring the champion's share


@dataclass(frozen=True)
class CanaryRoute:
    """A running canary on this worker: its engine scores `partitions`; `shadow` scores the rest again."""

    engine: Engine
    deployment: Canary
    partitions: frozenset[int]
    shadow: Shadow
    path: str

    def serves(self, partition: int) -> bool:
        return partition in self.partitions


def seconds_since(when: datetime) -> float:
    """Seconds from `when` to now; a naive time counts as UTC (a record must never raise here: this
    runs in the agent, where an exception stops the worker)."""
    return (datetime.now(UTC) - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


class ServingModels:
    """Which engine scores the next batch; deployments are loaded in the background."""

    def __init__(
        self,
        engine: Engine,
        metrics: WorkerMetrics,
        stats: TumblingStats,
        deployment: Deployment | None = None,
        model_settings: ModelSettings | None = None,
        cache_dir: Path | None = None,
        model_path: str | None = None,
    ) -> None:
        self.engine, self.deployment = engine, deployment
        self.metrics, self.stats = metrics, stats
        self.model_settings, self.cache_dir = model_settings, cache_dir
        # The serving bundle's local directory (/explain loads it too); None: VADER.
        self.model_path = model_path if model_path is not None else (model_settings and model_settings.model)
        self.shadow: Shadow | None = None
        self.canary: CanaryRoute | None = None
        self.canary_record: Canary | None = None  # the newest `canary` record, running or decided
        self.input_topic: str | None = None  # a canary for another input topic is not for this worker
        self.rejected: dict | None = None
        self.skipped: dict | None = None
        self.swaps = 0
        self._lock = threading.Lock()
        self._ready: dict[str, Loaded] = {}
        self._wanted: dict[str, str | None] = {}  # role -> checksum of the newest deployment offered
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self.admission = Admission()  # what a deployment must pass (the worker's settings: `require`)
        self.on_swap: list = []  # callables run after a swap, so holders of the old engine let it go
        self.reloads = RELOADS
        self._retry: threading.Timer | None = None
        metrics.model_info.labels(engine.model_version, "champion").set(1)
        stats.know(engine.model_version, engine.label_shift)

    def require(self, admission: Admission) -> None:
        """Admit deployments only as `admission` says (a trusted key, URI prefixes, size caps)."""
        self.admission = admission

    def offer(self, role: str, deployment: Deployment | None) -> None:
        """A control-topic record (event loop): load its bundle in the background, or clear a shadow."""
        if role == "canary":
            self._offer_canary(deployment)
            return
        self._wanted[role] = deployment.checksum if deployment else None
        if deployment is None:
            if role == "challenger":
                self._set_shadow(None)
            return  # clearing the champion keeps the model that serves
        current = self.deployment if role == "champion" else (self.shadow and self.shadow.deployment)
        if current is not None and current.checksum == deployment.checksum:
            if role == "champion":
                self.deployment = deployment  # same files: only the record (history) is newer
            return
        canary = self.canary
        if role == "champion" and canary is not None and canary.deployment.checksum == deployment.checksum:
            # A promotion: the canary's engine, verified and serving already, becomes the champion at
            # the next batch, so its partitions never go back to the old champion in between.
            with self._lock:
                self._ready["champion"] = Loaded(canary.engine, deployment, canary.path, 0.0)
            return
        if self.model_settings is None:
            log.warning(
                "ignoring the %s deployment of %s: this worker loads no models",
                role,
                redacted(deployment.uri),
            )
            return
        self._loader.submit(self._load, role, deployment)

    def _offer_canary(self, record: Deployment | None) -> None:
        canary = record if isinstance(record, Canary) else None
        if canary is not None:
            self.canary_record = canary
        if canary is None or not canary.running or self.input_topic not in (None, canary.topic):
            self._wanted["canary"] = None
            return  # a serving canary ends at the next batch (`take`)
        self._wanted["canary"] = canary.checksum
        if self.canary is not None and self.canary.deployment.checksum == canary.checksum:
            return
        if self.model_settings is None:
            log.warning("ignoring the canary of %s: this worker loads no models", redacted(canary.uri))
            return
        self._loader.submit(self._load, "canary", canary)

    def take(self) -> Engine:
        """The engine for the next batch (event loop, between batches): a verified replacement, if any.
        `canary` then says which partitions of the batch another engine scores."""
        with self._lock:
            champion = self._ready.pop("champion", None)
            challenger = self._ready.pop("challenger", None)
            canary = self._ready.pop("canary", None)
        if challenger is not None:
            self._set_shadow(Shadow(challenger.engine, challenger.deployment, self.metrics, self.stats))
        if champion is not None:
            self._switch(champion)
        wanted = self._wanted.get("canary")
        if self.canary is not None and self.canary.deployment.checksum != wanted:
            self._end_canary()
        if canary is not None:
            if canary.deployment.checksum == wanted and self.canary is None:
                self._start_canary(canary)
            else:  # ended or replaced while it loaded
                self._close_engines(canary.engine, canary.shadow_engine)
        return self.engine

    def _start_canary(self, loaded: Loaded) -> None:
        record = cast(Canary, loaded.deployment)  # `_load` of the role canary: a Canary and two engines
        shadow = Shadow(cast("Engine", loaded.shadow_engine), record, self.metrics, self.stats)
        self.canary = CanaryRoute(loaded.engine, record, frozenset(record.partitions), shadow, loaded.path)
        self.stats.know(loaded.engine.model_version, loaded.engine.label_shift)
        self.metrics.model_info.labels(loaded.engine.model_version, "canary").set(1)
        log.info(
            "canary %s now scores partitions %s of %s and shadows %s on the rest",
            loaded.engine.model_version,
            record.partitions,
            record.topic,
            self.engine.model_version,
        )

    def _end_canary(self) -> None:
        route, self.canary = self.canary, None
        if route is None:
            return
        self.metrics.model_info.labels(route.engine.model_version, "canary").set(0)
        record = self.canary_record
        status = (
            record.status if record is not None and record.checksum == route.deployment.checksum else "ended"
        )
        log.info(
            "canary %s %s; %s serves every partition",
            route.engine.model_version,
            status,
            self.engine.model_version,
        )
        # Its serving engine is released with its last reference (it may be the champion now); the
        # shadow's thread may still finish a batch: never make the event loop wait for it.
        threading.Thread(target=route.shadow.close, name="canary-shadow-close", daemon=True).start()

    @staticmethod
    def _close_engines(*engines: Engine | None) -> None:
        for engine in engines:
            if engine is not None:
                engine.close()

    def _switch(self, loaded: Loaded) -> None:
        old, self.engine, self.deployment = self.engine, loaded.engine, loaded.deployment
        self.model_path = loaded.path
        self.stats.know(self.engine.model_version, self.engine.label_shift)
        self.swaps += 1
        since = seconds_since(loaded.deployment.deployed_at)
        self.metrics.model_swaps.inc()
        self.metrics.model_swap_seconds.set(since)
        self.metrics.model_info.labels(old.model_version, "champion").set(0)
        self.metrics.model_info.labels(self.engine.model_version, "champion").set(1)
        self.rejected = self.stats.model_error = None
        log.info(
            "now serving %s (was %s), deployed %.1fs ago; loading and verifying took %.1fs",
            self.engine.model_version,
            old.model_version,
            since,
            loaded.load_s,
        )
        # The old engine is not closed here: a /predict request may still hold it. It is released
        # when the last reference goes; whoever else holds one is told to let go.
        del old
        for release in self.on_swap:
            try:
                release()
            except Exception as exc:  # runs in the agent: a holder's failure must not stop the stream
                log.warning("could not release the old model: %s", type(exc).__name__)

    def _set_shadow(self, shadow: Shadow | None) -> None:
        old, self.shadow = self.shadow, shadow
        if old is not None:
            self.metrics.model_info.labels(old.engine.model_version, "challenger").set(0)
            # Its batch in flight may take a while: never make the event loop wait for it.
            threading.Thread(target=old.close, name="shadow-close", daemon=True).start()
        if shadow is not None:
            self.metrics.model_info.labels(shadow.engine.model_version, "challenger").set(1)
            log.info("shadow-scoring with challenger %s", shadow.engine.model_version)

    def _load(self, role: str, deployment: Deployment, attempt: int = 0) -> None:
        """On the loader thread: admit (URI, checksum, signature), load, score the smoke batch.
        `attempt` > 0: a start-up champion retried with back-off until it loads or is replaced."""
        began = time.monotonic()
        if self._wanted.get(role) != deployment.checksum:
            return  # a newer record replaced it while this waited
        try:
            path = admit(deployment, self.cache_dir or Path("."), self.admission)
            engine = load_verified(path, self.model_settings)  # type: ignore[arg-type]
            shadow = self._shadow_copy(path, engine) if role == "canary" else None
        except Exception as exc:  # DeploymentError, or anything a loader raised: the old model stays
            reason = str(exc) if isinstance(exc, DeploymentError) else f"{type(exc).__name__}: {exc}"
            self.reject(role, deployment, reason, untrusted=isinstance(exc, UntrustedBundle))
            if attempt and not isinstance(exc, UntrustedBundle):
                self._retry_later(role, deployment, attempt + 1)
            return
        if self._wanted.get(role) != deployment.checksum:
            log.info(
                "discarding %s: a newer %s deployment arrived while it loaded", redacted(deployment.uri), role
            )
            self._close_engines(engine, shadow)
            return
        with self._lock:
            self._ready[role] = Loaded(engine, deployment, str(path), time.monotonic() - began, shadow)

    def _shadow_copy(self, path: Path, engine: Engine) -> Engine:
        """A canary's second copy, which shadow-scores on its own thread (an engine is never used by
        two); `engine` is closed when it cannot be made."""
        try:
            return load_verified(path, self.model_settings)  # type: ignore[arg-type]
        except BaseException:
            engine.close()
            raise

    def retry(self, role: str, deployment: Deployment) -> None:
        """Load `deployment` again with back-off (a champion that could not be loaded at start: a
        store not reachable yet, a volume mounted late) until it serves or a newer record arrives."""
        self._wanted[role] = deployment.checksum
        self._retry_later(role, deployment, 1)

    def _retry_later(self, role: str, deployment: Deployment, attempt: int) -> None:
        delay = self.reloads.delay(attempt)
        log.info("retrying the %s deployment of %s in %.0fs", role, redacted(deployment.uri), delay)
        self._retry = threading.Timer(delay, self._submit, (role, deployment, attempt))
        self._retry.daemon = True
        self._retry.start()

    def _submit(self, role: str, deployment: Deployment, attempt: int) -> None:
        with contextlib.suppress(RuntimeError):  # the loader shut down meanwhile
            self._loader.submit(self._load, role, deployment, attempt)

    def start_shadow(self, engine: Engine) -> None:
        """Shadow-score with `engine` (the worker's --shadow) from the next batch on."""
        self._set_shadow(Shadow(engine, None, self.metrics, self.stats))

    def reject(self, role: str, deployment: Deployment, reason: str, untrusted: bool = False) -> None:
        """Record that `deployment` will not serve here, and why (logs, /health, metrics, stats).
        `untrusted`: its signature did not verify against the trusted key (counted apart too)."""
        uri = redacted(deployment.uri)
        reason = reason.replace(deployment.uri, uri)
        self.rejected = {
            "role": role,
            "uri": uri,
            "model_version": deployment.model_version,
            "reason": reason[:500],
            "untrusted": untrusted,
            "at": datetime.now(UTC).isoformat(),
        }
        self.stats.model_error = f"rejected {role} {deployment.model_version}: {reason[:300]}"
        self.metrics.model_rejected.labels(role).inc()
        if untrusted:
            self.metrics.model_untrusted.labels(role).inc()
        log.error(
            "rejected the %s deployment of %s (%s); still serving %s",
            role,
            uri,
            reason,
            self.engine.model_version,
        )

    def skip(self, offset: int, reason: str) -> None:
        """A control-topic record that is not a deployment (event loop): counted and shown, never raised."""
        self.skipped = {"offset": offset, "reason": reason[:300], "at": datetime.now(UTC).isoformat()}
        self.metrics.control_records_skipped.inc()

    def describe(self) -> dict:
        """What /health says about the models."""
        d = self.deployment
        with self._lock:
            pending = sorted(self._ready)  # loaded and verified: switched to at the next batch
        return {
            "model_version": self.engine.model_version,
            # No deployed_by (a user name) and no credentials in the URI: /health is open to probes.
            "deployment": None
            if d is None
            else {"uri": redacted(d.uri), "deployed_at": d.deployed_at.isoformat()},
            "signatures": "required" if self.admission.trusted_key else "not checked",
            "challenger": self.shadow.engine.model_version if self.shadow else None,
            "swaps": self.swaps,
            "pending": pending,
            "rejected": self.rejected,
            "skipped_record": self.skipped,  # the last control-topic record that was not a deployment
            "canary": self._describe_canary(),
        }

    def _describe_canary(self) -> dict | None:
        record = self.canary_record
        if record is None:
            return None
        decision = record.decision
        return {
            "model_version": record.model_version,
            "status": record.status,
            "share": record.share,
            "partitions": record.partitions,
            "serving_here": self.canary is not None and self.canary.deployment.checksum == record.checksum,
            "decision": None
            if decision is None
            else {
                "decision": decision.decision,
                "reason": decision.reason,
                "at": decision.decided_at.isoformat(),
            },
        }

    def close(self) -> None:
        """Stop loading; release the shadow's thread."""
        if self._retry is not None:
            self._retry.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._set_shadow(None)
        self._end_canary()


class Shadow:
    """A challenger scoring copies of delivered batches on its own thread, one batch at a time."""

    def __init__(
        self, engine: Engine, deployment: Deployment | None, metrics: WorkerMetrics, stats: TumblingStats
    ) -> None:
        self.engine, self.deployment = engine, deployment
        self.metrics, self.stats = metrics, stats
        self.thread = InferenceThread("shadow", nice=SHADOW_NICE)
        self._task: asyncio.Task | None = None

    def offer(self, champion: str, events: Sequence[ScoredTweet]) -> None:
        """Score `events` with the challenger unless it is still busy (then they are dropped)."""
        if not events:
            return
        if self._task is not None and not self._task.done():
            self.stats.add_shadow_dropped(champion, self.engine.model_version, len(events), time.time())
            self.metrics.shadow_dropped.inc(len(events))
            return
        self._task = asyncio.ensure_future(self._score(champion, list(events)))

    async def _score(self, champion: str, events: list[ScoredTweet]) -> None:
        try:
            texts = [event.text for event in events]
            predictions = await self.thread.run(STREAM, predict_guarded, self.engine, texts)
        except Exception as exc:  # a broken challenger must never touch the champion's stream
            log.warning("the shadow model raised %s on a batch of %d", type(exc).__name__, len(events))
            return
        pairs = [
            (e.label, p.label if p.ok else None, e.true_label)
            for e, p in zip(events, predictions, strict=True)
        ]
        self.stats.add_shadow(champion, self.engine.model_version, pairs, time.time())
        self.metrics.shadow_compared.inc(len(pairs))
        self.metrics.shadow_agreed.inc(sum(1 for a, b, _ in pairs if a == b))

    def close(self) -> None:
        """Finish the batch in flight, then release the thread and the engine."""
        self.thread.shutdown()
        self.engine.close()
