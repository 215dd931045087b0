"""`sentistream worker`: score the tweets topic with Faust, serving /health, /live, /ready, /metrics,
/predict and /explain.

Fails fast with one line when the model cannot be loaded, a web port is taken or the broker cannot
be reached, before Faust starts. Heavy imports (faust, torch) happen inside `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from model.bundle import load_bundle
from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.errors import SentistreamError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.bundles import Admission, UntrustedBundle, admit, load_verified, redacted
from stream.control import read_deployments
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS, KafkaSettings
from stream.worker.app import create_app, follow_deployments
from stream.worker.explain_view import register_explain_view
from stream.worker.processes import run_processes
from stream.worker.runner import run_worker
from stream.worker.settings import WorkerSettings, refuse_busy_web_ports
from stream.worker.topics import ensure_topics
from stream.worker.web import check_web_access

KAFKA_FLAGS = [*CONNECTION_FLAGS, *TOPIC_FLAGS]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `worker` flags: Kafka, model and worker settings (docs/ARCHITECTURE.md's command table)."""

    add_settings_arguments(parser, ModelSettings, MODEL_FLAGS)
    add_settings_arguments(parser, KafkaSettings, KAFKA_FLAGS)
    add_settings_arguments(parser, WorkerSettings)
    parser.add_argument("--json-logs", action="store_true", help="log one JSON object per line")


def run(args: argparse.Namespace) -> int:
    """Load the model, check the broker and topics, then run the worker until SIGTERM."""

    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(WorkerSettings, args)
    model_settings = settings_from_args(ModelSettings, args)
    check_model(model_settings)  # a broken --model fails in a second, before Kafka is touched
    refuse_busy_web_ports(settings)  # so does a taken web port
    check_web_access(settings)  # and views bound beyond loopback with no token
    admission = admission_of(settings)  # and a trusted key that is not an EC public key
    if settings.processes > 1:
        return run_processes(args, kafka, settings, model_settings)
    topics = asyncio.run(_ensure_topics(kafka, settings))
    if topics.created:
        log.info("created topics %s", topics.created)
    deployments, follow_from = asyncio.run(_deployments(kafka, settings))
    engine, deployment, path, rejected = _champion(
        deployments.get("champion"), model_settings, settings, admission
    )
    shadow = _shadow(settings, model_settings)

    loglevel = "DEBUG" if getattr(args, "verbose", False) else "INFO"
    with tempfile.TemporaryDirectory(prefix="sentistream-worker-") as datadir:
        app, scorer = create_app(
            kafka, settings, engine, Path(datadir), topics.max_message_bytes, deployment, model_settings, path
        )
        del engine  # the scorer holds it: after a swap nothing else may keep it resident
        models = scorer.models
        models.require(admission)
        if rejected is not None:
            models.reject("champion", *rejected)
            if not rejected[2]:  # a signature does not start verifying; a store may come back
                models.retry("champion", rejected[0])  # with back-off, until it serves or is replaced
        if shadow is not None:
            models.start_shadow(shadow)
        elif "challenger" in deployments:
            models.offer("challenger", deployments["challenger"])  # loads in the background
        if "canary" in deployments:
            models.offer("canary", deployments["canary"])  # a running one loads in the background
        if follow_from is not None:
            follow_deployments(app, kafka, models, follow_from)
        register_explain_view(app, scorer, model_settings)  # its own thread and model: never the stream's
        return run_worker(app, scorer, loglevel, json_logs=args.json_logs)


async def _deployments(kafka, settings) -> tuple[dict, int | None]:
    """The control topic's current deployments and where to follow it from (None: not following)."""
    if not settings.follow_deployments:
        return {}, None

    try:
        return await read_deployments(kafka, settings.startup_timeout_s)
    except Exception as exc:  # the broker answered a moment ago: say which step failed
        raise SentistreamError(
            f"cannot read the deployments topic {kafka.models_topic} ({type(exc).__name__}); "
            "check the broker, or pin --model with --no-follow-deployments"
        ) from None


def admission_of(settings) -> Admission:
    """What a deployment must pass on this worker; UsageError for an unusable trusted key. Without
    one, say once that whoever can write to the models topic decides what this worker serves."""
    key = settings.trusted_key
    if key is not None:
        from model.signing import check_public_key

        check_public_key(key.expanduser())
        key = key.expanduser()
    elif settings.follow_deployments:
        log.warning(
            "deployments are unauthenticated: any bundle a record on the models topic names is served; "
            "give --trusted-key (SENTISTREAM_TRUSTED_KEY) to serve only signed bundles"
        )
    prefixes = tuple(p.strip() for p in settings.model_uri_prefixes.split(",") if p.strip())
    return Admission(key, prefixes, settings.max_bundle_bytes, settings.model_cache_keep)


def _champion(deployment, model_settings, settings, admission: Admission):
    """(engine, the deployment it serves or None, its local path, (deployment, reason, untrusted)
    when it was rejected or None).

    A worker that starts after a deploy serves the deployed bundle from its first event; when that
    bundle cannot be served here (any failure: a record is hostile input), --model serves, the
    rejection is reported and the bundle is retried in the background.
    """
    if deployment is not None:
        try:
            path = admit(deployment, settings.model_cache_dir.expanduser(), admission)
            engine = load_verified(path, model_settings)
            log.info("serving the deployed model %s", engine.model_version)
            return engine, deployment, str(path), None
        except Exception as exc:  # DeploymentError, or an unreadable path (PermissionError) and the like
            reason = str(exc) if isinstance(exc, SentistreamError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "cannot serve the deployed model %s: %s; serving --model instead",
                redacted(deployment.uri),
                reason,
            )
            untrusted = isinstance(exc, UntrustedBundle)
            return load_engine(model_settings), None, model_settings.model, (deployment, reason, untrusted)
    return load_engine(model_settings), None, model_settings.model, None


def _shadow(settings, model_settings):
    """The --shadow challenger's engine, or None."""
    if not settings.shadow:
        return None
    return load_engine(model_settings.model_copy(update={"model": settings.shadow, "backend": "auto"}))


def check_model(model_settings) -> None:
    """One line saying why --model cannot serve, from its files alone (no weights loaded)."""
    if not model_settings.model or model_settings.backend in ("vader", "constant"):
        return

    try:
        load_bundle(model_settings.model)
    except SentistreamError:
        raise
    except Exception as exc:  # unreadable config, wrong label count, missing files: one line
        raise SentistreamError(
            f"cannot load the model {model_settings.model!r}: {type(exc).__name__}: {exc}"
        ) from None


def load_engine(model_settings):  # -> model.engines.Engine
    """The engine, or one line saying why it could not be loaded."""
    try:
        engine = model_settings.load_engine()
        engine.predict(["warm up the model before the worker reports ready"])  # first call is slow
        return engine
    except SentistreamError:
        raise
    except Exception as exc:  # any loader failure (missing files, bad weights) becomes one line
        raise SentistreamError(
            f"cannot load the model {model_settings.model!r} with backend {model_settings.backend}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


async def _ensure_topics(kafka, settings):  # -> stream.worker.topics.TopicCheck

    return await ensure_topics(kafka, settings)


COMMANDS = {"worker": (add_arguments, run)}
