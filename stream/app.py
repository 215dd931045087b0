"""Build the Faust app from settings: topics, the scoring agent, the stats timer and the web views.

Nothing is created at import; `create_app` is called once by `sentistream worker`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from model.engines.base import Engine
from stream.agents import Scorer
from stream.metrics import WorkerMetrics
from stream.settings import KafkaSettings, WorkerSettings
from stream.stats import TumblingStats
from stream.topics import declare_topics
from stream.web import register_views

log = logging.getLogger(__name__)


def worker_name(settings: WorkerSettings) -> str:
    """The name this worker reports in stats: the setting, or host:pid."""
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


def create_app(kafka: KafkaSettings, settings: WorkerSettings, engine: Engine, datadir: Path):
    """A faust.App wired to score `kafka.topic` with `engine`; returns (app, scorer).

    `datadir` is Faust's scratch directory (the worker keeps no state there; a temporary one will do).
    """
    import faust

    app = faust.App(settings.group_id, datadir=str(datadir), **app_config(kafka, settings))
    metrics = WorkerMetrics()
    metrics.model_loaded.set(1)
    stats = TumblingStats(settings.stats_window_s, worker_name(settings))
    scorer = Scorer(app, kafka, settings, engine, metrics, stats)
    app.agent(declare_topics(app, kafka, settings), name="score-tweets", concurrency=1)(scorer.consume)
    _track_assignment(app)
    _publish_stats_every_window(app, kafka, stats)
    register_views(app, scorer)
    return app, scorer


def app_config(kafka: KafkaSettings, settings: WorkerSettings) -> dict:
    """faust.App keyword arguments from the settings."""
    return {
        "broker": kafka.broker,
        "broker_credentials": _credentials(kafka),
        "store": "memory://",
        "autodiscover": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "processing_guarantee": settings.guarantee,
        "consumer_auto_offset_reset": "earliest",
        # Exactly-once commits after every batch (stream/agents.py), never on Faust's timer.
        "broker_commit_interval": settings.commit_interval_s
        if settings.guarantee == "at_least_once"
        else 3600.0,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 10,
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "producer_acks": -1,  # an output counts as delivered only when every in-sync replica has it
    }


def _credentials(kafka: KafkaSettings):
    """Faust's credentials object for the security settings (None for PLAINTEXT)."""
    import faust

    security = kafka.aiokafka_security()
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=security["sasl_plain_password"],
            mechanism=kafka.sasl_mechanism,
            ssl_context=security.get("ssl_context"),
        )
    if "ssl_context" in security:
        return faust.SSLCredentials(security["ssl_context"])
    return None


def _track_assignment(app) -> None:
    """Remember that a rebalance completed, which /health waits for."""
    app.sentistream_assigned = False

    @app.on_rebalance_complete.connect
    async def _assigned(sender, **kwargs) -> None:
        app.sentistream_assigned = True
        log.info(
            "partitions assigned: %s",
            sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment()),
        )


def _publish_stats_every_window(app, kafka: KafkaSettings, stats: TumblingStats) -> None:
    """A timer that sends each closed window to the stats topic."""
    interval = min(1.0, stats.size_s / 2)

    @app.timer(interval, name="publish-sentiment-stats")
    async def _publish() -> None:
        for window in stats.close_due(time.time()):
            # Stats are advisory, so they bypass the transactional producer of exactly-once mode.
            await app.producer.send(
                kafka.stats_topic, stats.worker.encode(), window.model_dump_json().encode(), None, None, None
            )
