"""Build the Faust app from settings: topics, the scoring agent, the stats timer and the web views.

Nothing is created at import; `create_app` is called once by `sentistream worker`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from model.engines.base import Engine
from stream.control import follow
from stream.events import Deployment
from stream.faust_app import faust_credentials
from stream.kafka_internals import batched_consumer_class
from stream.settings import KafkaSettings
from stream.worker.agent import Scorer
from stream.worker.metrics import WorkerMetrics
from stream.worker.serving import ServingModels
from stream.worker.settings import WorkerSettings
from stream.worker.stats import TumblingStats
from stream.worker.topics import declare_topics
from stream.worker.web import register_views

if TYPE_CHECKING:
    from model.settings import ModelSettings

log = logging.getLogger(__name__)


def worker_name(settings: WorkerSettings) -> str:
    """The name this worker reports in stats: the setting, or host:pid."""
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


def create_app(
    kafka: KafkaSettings,
    settings: WorkerSettings,
    engine: Engine,
    datadir: Path,
    max_message_bytes: int | None = None,
    deployment: Deployment | None = None,
    model_settings: ModelSettings | None = None,
    model_path: str | None = None,
):
    """A faust.App wired to score `kafka.topic` with `engine`; returns (app, scorer).

    `datadir` is Faust's scratch directory (the worker keeps no state there; a temporary one will do).
    `max_message_bytes` is the largest output the topics take (default: the setting).
    `deployment` is the control-topic record `engine` was loaded from (None: the worker's --model);
    `model_settings` is how deployed bundles are loaded (None: this worker never swaps models);
    `model_path` is the local directory `engine` was loaded from (default: model_settings.model).
    """
    import faust

    app = faust.App(settings.group_id, datadir=str(datadir), **app_config(kafka, settings))
    # Before app.consumer is first used. Exactly-once: only the batches' transactions commit.
    app.transport.Consumer = batched_consumer_class(commits=settings.guarantee == "at_least_once")
    metrics = WorkerMetrics()
    metrics.model_loaded.set(1)
    stats = TumblingStats(settings.stats_window_s, worker_name(settings))
    limit = min(max_message_bytes or settings.max_message_bytes, settings.max_message_bytes)
    cache = settings.model_cache_dir.expanduser()
    models = ServingModels(engine, metrics, stats, deployment, model_settings, cache, model_path)
    models.input_topic = kafka.topic  # a canary names partitions of one input topic
    scorer = Scorer(app, kafka, settings, engine, metrics, stats, max_message_bytes=limit, models=models)
    app.agent(declare_topics(app, kafka, settings), name="score-tweets", concurrency=1)(scorer.consume)
    _track_assignment(app, scorer)
    _publish_stats_every_window(app, kafka, scorer)
    register_views(app, scorer)
    return app, scorer


def follow_deployments(app, kafka: KafkaSettings, models: ServingModels, start: int) -> None:
    """Have `app` pass every control-topic record from offset `start` to `models` while it runs."""

    @app.task
    async def _follow() -> None:
        await follow(kafka, start, models.offer, on_skip=models.skip)


def app_config(kafka: KafkaSettings, settings: WorkerSettings) -> dict:
    """faust.App keyword arguments from the settings."""
    return {
        "broker": kafka.broker,
        "broker_credentials": faust_credentials(kafka),
        "store": "memory://",
        "autodiscover": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        # Exactly-once is the worker's own (stream/worker/transactions.py): Faust's transaction manager
        # stays off, and its consumer commits nothing in that mode (stream/kafka_internals.py).
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "consumer_group_instance_id": group_instance_id(settings),
        # No tables, so no standbys: Faust then uses aiokafka's round-robin assignor rather than its
        # own, whose assignment carries each member's web URL and which, when a static member comes
        # back on another port, kills the consumer's group coordination (an assertion).
        "table_standby_replicas": 0,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 10,
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        # Faust's own pages (/router, /table, /graph, stats, /performance) describe the app to anyone
        # who asks: off. Only the views of stream/worker/web.py are served (issue #24).
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
    }


def group_instance_id(settings: WorkerSettings) -> str | None:
    """The static consumer-group member id: the worker name, when one is given and static membership
    is on. A worker restarted under the same name takes its partitions back at once, instead of
    waiting `session_timeout_s` for its old session to expire."""
    return settings.worker_name if settings.static_membership and settings.worker_name else None


def _track_assignment(app, scorer: Scorer) -> None:
    """Tell the scorer's state when a rebalance starts and completes (readiness waits for it)."""

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs) -> None:
        scorer.state.rebalancing = True

    @app.on_rebalance_complete.connect
    async def _assigned(sender, **kwargs) -> None:
        partitions = {tp.partition for tp in app.consumer.assignment() if tp.topic == scorer.kafka.topic}
        scorer.on_assigned(partitions)
        log.info("partitions assigned: %s", scorer.state.assigned)


def _publish_stats_every_window(app, kafka: KafkaSettings, scorer: Scorer) -> None:
    """A timer that sends each closed window to the stats topic and refreshes the lag; the last
    window is sent at shutdown. Stats are advisory: a failure is logged, never raised."""
    stats = scorer.stats
    interval = min(1.0, stats.size_s / 2)

    async def publish(windows) -> None:
        for window in windows:  # advisory: outside any transaction
            await scorer.outputs.send_advisory(
                kafka.stats_topic, stats.worker.encode(), window.model_dump_json().encode()
            )

    @app.timer(interval, name="publish-sentiment-stats")
    async def _every_window() -> None:
        try:
            scorer.update_lag()
            await publish(stats.close_due(time.time()))
        except Exception as exc:  # a stats hiccup must not crash the worker
            log.warning("could not publish sentiment stats: %s", type(exc).__name__)

    @app.on_before_shutdown.connect
    async def _last_window(sender, **kwargs) -> None:
        try:
            await asyncio.wait_for(publish(stats.close_all()), timeout=5.0)
        except Exception as exc:  # shutting down: say it, do not block the exit
            log.warning("could not publish the last sentiment-stats window: %s", type(exc).__name__)
        await scorer.outputs.stop()  # every batch is delivered by now (Faust waited for the acks)
