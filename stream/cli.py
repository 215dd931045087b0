"""`sentistream worker`: score the tweets topic with Faust, serving /health, /live, /ready, /metrics,
/predict and /explain.

Fails fast with one line when the model cannot be loaded or the broker cannot be reached, before
Faust starts. Heavy imports (faust, torch) happen inside `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from sentistream.errors import SentistreamError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS

KAFKA_FLAGS = [*CONNECTION_FLAGS, *TOPIC_FLAGS]

log = logging.getLogger("stream.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `worker` flags: Kafka, model and worker settings (docs/ARCHITECTURE.md's command table)."""
    from model.settings import MODEL_FLAGS, ModelSettings
    from stream.settings import KafkaSettings, WorkerSettings

    add_settings_arguments(parser, ModelSettings, MODEL_FLAGS)
    add_settings_arguments(parser, KafkaSettings, KAFKA_FLAGS)
    add_settings_arguments(parser, WorkerSettings)
    parser.add_argument("--json-logs", action="store_true", help="log one JSON object per line")


def run(args: argparse.Namespace) -> int:
    """Load the model, check the broker and topics, then run the worker until SIGTERM."""
    from model.settings import ModelSettings
    from stream.settings import KafkaSettings, WorkerSettings

    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(WorkerSettings, args)
    model_settings = settings_from_args(ModelSettings, args)
    engine = load_engine(model_settings)
    topics = asyncio.run(_ensure_topics(kafka, settings))
    if topics.created:
        log.info("created topics %s", topics.created)

    from stream.app import create_app
    from stream.explain_view import register_explain_view
    from stream.worker import run_worker

    loglevel = "DEBUG" if getattr(args, "verbose", False) else "INFO"
    with tempfile.TemporaryDirectory(prefix="sentistream-worker-") as datadir:
        app, scorer = create_app(kafka, settings, engine, Path(datadir), topics.max_message_bytes)
        register_explain_view(app, scorer, model_settings)  # its own thread and model: never the stream's
        return run_worker(app, scorer, loglevel, json_logs=args.json_logs)


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


async def _ensure_topics(kafka, settings):  # -> stream.topics.TopicCheck
    from stream.topics import ensure_topics

    return await ensure_topics(kafka, settings)


COMMANDS = {"worker": (add_arguments, run)}
