"""Run the Faust worker until it is told to stop; SIGTERM drains the in-flight batch first.

Faust's stop sequence waits for every taken event to be acked (`stream_wait_empty`), then commits,
so the batch being scored when SIGTERM arrives is finished, delivered and committed before exit.
"""

from __future__ import annotations

import logging

from stream.faust_app import run_app
from stream.worker.agent import Scorer

log = logging.getLogger(__name__)


def run_worker(app, scorer: Scorer, loglevel: str = "INFO", json_logs: bool = False) -> int:
    """Run `app` (a faust.App) in this process until SIGTERM/SIGINT; returns the exit status."""
    try:
        code = run_app(app, loglevel, json_logs)
        log.info("worker stopped (exit status %d) after %d batches", code, scorer.batches)
        return code
    finally:
        scorer.close()
