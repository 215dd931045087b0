"""Run the Faust worker until it is told to stop; SIGTERM drains the in-flight batch first.

Faust's stop sequence waits for every taken event to be acked (`stream_wait_empty`), then commits,
so the batch being scored when SIGTERM arrives is finished, delivered and committed before exit.
"""

from __future__ import annotations

import logging

from stream.agents import Scorer
from stream.logs import logging_config

log = logging.getLogger(__name__)


def run_worker(app, scorer: Scorer, loglevel: str = "INFO", json_logs: bool = False) -> int:
    """Run `app` (a faust.App) in this process until SIGTERM/SIGINT; returns the exit status."""
    import faust

    worker = faust.Worker(
        app,
        loglevel=loglevel,
        logging_config=logging_config(loglevel, json_logs),
        redirect_stdouts=False,
        quiet=True,  # no banner on stdout: logs go to stderr, one record a line
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        log.info("worker stopped (exit status %d) after %d batches", code, scorer.batches)
        return code
    finally:
        scorer.close()
    return 0
