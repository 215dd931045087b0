"""`sentistream dashboard`: serve the live Streamlit page (`streamlit run dashboard/app.py`).

The settings are validated here, then handed to the Streamlit process as `SENTISTREAM_*`
environment variables, which is where the page reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from dashboard.settings import DashboardSettings, HistorySettings
from sentistream.settings import add_settings_arguments, env_name, settings_from_args
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS, ConsumerGroupSettings, KafkaSettings

DASHBOARD_FLAGS = ["port", "address", "worker_url", "buffer_size", "refresh_s", "upload_limit_mb"]
KAFKA_FLAGS = [*CONNECTION_FLAGS, *TOPIC_FLAGS, "alerts_topic"]
APP = Path(__file__).with_name("app.py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `dashboard` flags: its own, the Kafka connection and topics, the workers' group."""
    add_settings_arguments(parser, DashboardSettings, DASHBOARD_FLAGS)
    add_settings_arguments(parser, KafkaSettings, KAFKA_FLAGS)
    add_settings_arguments(parser, ConsumerGroupSettings, ["group_id"])
    add_settings_arguments(parser, HistorySettings, ["history_dir"])  # --history-dir: the History tab


def run(args: argparse.Namespace) -> int:
    """Validate the settings here, then hand them to Streamlit through the environment."""
    settings = settings_from_args(DashboardSettings, args)
    kafka = settings_from_args(KafkaSettings, args)
    group = settings_from_args(ConsumerGroupSettings, args)
    history = settings_from_args(HistorySettings, args)
    env = os.environ | settings_env(settings, DASHBOARD_FLAGS) | settings_env(kafka, KAFKA_FLAGS)
    env |= settings_env(group, ["group_id"]) | settings_env(history, ["history_dir"])
    print(
        f"Sentistream dashboard: http://{settings.address}:{settings.port} (reading {kafka.broker})",
        flush=True,
    )
    command = streamlit_command(settings)
    os.execve(command[0], command, env)  # noqa: S606  # Streamlit takes over this process: signals reach it directly
    return 0  # not reached


def settings_env(settings: BaseSettings, fields: list[str]) -> dict[str, str]:
    """`SENTISTREAM_*` variables that rebuild `fields` of `settings` in the Streamlit process."""
    values = {f: getattr(settings, f) for f in fields}
    return {env_name(type(settings), f): str(v) for f, v in values.items() if v is not None}


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


COMMANDS = {"dashboard": (add_arguments, run)}
