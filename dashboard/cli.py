"""`sentistream dashboard`: serve the live Streamlit page (`streamlit run dashboard/app.py`).

The settings are validated here, then handed to the Streamlit process as `SENTISTREAM_*`
environment variables, which is where the page reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sentistream.settings import add_settings_arguments, env_name, settings_from_args

HELP = "run the live Streamlit dashboard"
DASHBOARD_FLAGS = [
    "port",
    "address",
    "worker_url",
    "worker_group",
    "buffer_size",
    "refresh_s",
    "upload_limit_mb",
]
KAFKA_FLAGS = ["broker", "topic", "scored_topic", "dlq_topic", "stats_topic"]
APP = Path(__file__).with_name("app.py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dashboard.settings import DashboardSettings
    from stream.settings import KafkaSettings

    add_settings_arguments(parser, DashboardSettings, DASHBOARD_FLAGS)
    add_settings_arguments(parser, KafkaSettings, KAFKA_FLAGS)


def run(args: argparse.Namespace) -> int:
    from dashboard.settings import DashboardSettings
    from stream.settings import KafkaSettings

    settings = settings_from_args(DashboardSettings, args)
    kafka = settings_from_args(KafkaSettings, args)
    env = os.environ | settings_env(settings, DASHBOARD_FLAGS) | settings_env(kafka, KAFKA_FLAGS)
    print(
        f"Sentistream dashboard: http://{settings.address}:{settings.port} (reading {kafka.broker})",
        flush=True,
    )
    command = streamlit_command(settings)
    os.execve(command[0], command, env)  # noqa: S606  # Streamlit takes over this process: signals reach it directly
    return 0  # not reached


def settings_env(settings, fields: list[str]) -> dict[str, str]:
    """`SENTISTREAM_*` variables that rebuild `fields` of `settings` in the Streamlit process."""
    return {env_name(type(settings), f): str(getattr(settings, f)) for f in fields}


def streamlit_command(settings) -> list[str]:
    """The `streamlit run` command line for these settings."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(settings.port),
        "--server.address",
        settings.address,
        "--server.headless",
        "true",
        "--server.maxUploadSize",
        str(settings.upload_limit_mb),
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",  # no "Deploy" button on a wall screen
        "--browser.gatherUsageStats",
        "false",
    ]


COMMANDS = {"dashboard": (HELP, add_arguments, run)}
