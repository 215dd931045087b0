"""What every Faust app of the project shares: broker credentials from `KafkaSettings`, and running an
app in this process until SIGTERM/SIGINT. The worker (stream/worker/) and the monitor
(stream/monitor/) are the two Faust apps; Faust is imported only when one of them calls this.
"""

from __future__ import annotations

from stream.logs import logging_config
from stream.settings import KafkaSettings


def faust_credentials(kafka: KafkaSettings):
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


def run_app(app, loglevel: str = "INFO", json_logs: bool = False) -> int:
    """Run `app` (a faust.App) in this process until SIGTERM/SIGINT; returns the exit status.

    Faust's stop sequence waits for every taken event to be acked (`stream_wait_empty`), then
    commits, so the batch being processed when SIGTERM arrives is finished first.
    """
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
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
