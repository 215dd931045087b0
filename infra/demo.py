"""`sentistream demo` (what `make demo` runs): broker, one worker, a gentle looping replay of the
sample tweets and the dashboard, started together; Ctrl-C stops everything it started, nothing else.

Each child runs in its own process session, so the terminal's Ctrl-C reaches only this process,
which then stops the children in reverse order (SIGTERM to each session, SIGKILL after a grace
period). A broker that was already running is used and left running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import requests
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dashboard.settings import DashboardSettings
from infra.broker import BrokerSettings, LocalBroker, answers_metadata
from model.hub import hub_reachable
from model.settings import ModelSettings
from sentistream.errors import SentistreamError, UsageError
from sentistream.settings import add_settings_arguments, env_name, settings_from_args
from stream.retry import Backoff
from stream.settings import HistorySettings, port_open
from stream.supervisor import spawn, stop
from stream.worker.settings import WorkerSettings

HUB_MODEL = "cardiffnlp/twitter-roberta-base-sentiment-latest"
# No --output: only then does `train` link models/latest (the demo's model) to the new bundle.
TRAIN_HINT = (
    "Train a better one: sentistream train --data YOUR.csv --base-model distilbert-base-uncased  "
    "(it links models/latest to the new bundle; then run `make demo` again)"
)
# The demo takes settings that other components own, under names that say whose they are: one
# field, one owner, one default and one environment variable (e.g. SENTISTREAM_KAFKA_PORT).
BROKER_FLAGS = {"port": "--kafka-port"}
WORKER_FLAGS = {"web_port": "--worker-port"}
DASHBOARD_FLAGS = {"port": "--dashboard-port"}
WATCH_S = 0.5  # how often the demo looks at its children and, while starting, at their health


class DemoSettings(BaseSettings):
    """What only the demo decides: its pace, fallback model and lifetime (env prefix SENTISTREAM_DEMO_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_DEMO_", frozen=True)

    rate: float = Field(default=5.0, gt=0, description="tweets per second the replay sends")
    hub_model: str = Field(default=HUB_MODEL, description="Hub model used when no trained bundle exists")
    duration: float | None = Field(default=None, gt=0, description="stop by itself after this many seconds")
    log_dir: Path | None = Field(
        default=None, description="where the children's logs go (default: DATA_DIR/../demo)"
    )


@dataclass(frozen=True)
class DemoPlan:
    """Every setting the demo runs with, each from the class that owns it."""

    demo: DemoSettings
    broker: BrokerSettings
    worker_port: int
    dashboard_port: int


@dataclass(frozen=True)
class ModelChoice:
    """What the worker will score with, and why (printed for the user)."""

    model: str | None
    backend: str
    why: str


@dataclass
class Child:
    """One process the demo started."""

    name: str
    process: subprocess.Popen
    log: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` flags: its own, plus the ports, data dir and model their owners declare."""
    parser.epilog = (
        "Model: --model or SENTISTREAM_MODEL, else ./models/latest when it exists, else a Hub model "
        "when the Hub answers, else the VADER lexicon baseline."
    )
    add_settings_arguments(parser, BrokerSettings, ["port", "data_dir"], BROKER_FLAGS)
    add_settings_arguments(parser, WorkerSettings, ["web_port"], WORKER_FLAGS)
    add_settings_arguments(parser, DashboardSettings, ["port"], DASHBOARD_FLAGS)
    add_settings_arguments(parser, ModelSettings, ["model"])
    add_settings_arguments(parser, DemoSettings)


def run(args: argparse.Namespace) -> int:
    """Choose the model, start everything, run until Ctrl-C / SIGTERM / --duration."""
    plan, model = settings_of(args)
    choice = choose_model(model, plan.demo.hub_model)
    print(f"Model: {choice.why}", flush=True)
    if choice.backend == "vader" or choice.model == plan.demo.hub_model:
        print(TRAIN_HINT, flush=True)
    return Demo(plan, choice).run()


def settings_of(args: argparse.Namespace) -> tuple[DemoPlan, str | None]:
    """The demo's plan and the model asked for (None: the demo chooses), each from its owner class."""
    plan = DemoPlan(
        demo=settings_from_args(DemoSettings, args),
        broker=settings_from_args(BrokerSettings, args, BROKER_FLAGS),
        worker_port=settings_from_args(WorkerSettings, args, WORKER_FLAGS).web_port,
        dashboard_port=settings_from_args(DashboardSettings, args, DASHBOARD_FLAGS).port,
    )
    return plan, settings_from_args(ModelSettings, args).model


def choose_model(given: str | None, hub_model: str) -> ModelChoice:
    """The user's model, else models/latest, else the Hub model if the Hub answers, else VADER."""
    if given:
        return ModelChoice(given, "auto", f"{given} (from --model / SENTISTREAM_MODEL)")
    if Path("models/latest").exists():
        return ModelChoice("models/latest", "auto", "models/latest (your trained bundle)")
    if hub_reachable(timeout=2.0):
        return ModelChoice(
            hub_model, "auto", f"{hub_model} from the Hugging Face Hub (no trained bundle found)"
        )
    return ModelChoice(
        None,
        "vader",
        "VADER lexicon baseline (no trained bundle in models/latest and the Hub is unreachable)",
    )


class Demo:
    """Start, watch and stop the demo's processes."""

    def __init__(self, plan: DemoPlan, choice: ModelChoice) -> None:
        self.plan = plan
        self.settings = plan.demo
        self.choice = choice
        self.children: list[Child] = []
        self.broker = LocalBroker(plan.broker)
        self.started_broker = False
        self.log_dir = self.settings.log_dir or self.broker.data_dir.parent / "demo"

    def run(self) -> int:
        """Everything up, then wait for Ctrl-C, `duration`, or a child that dies; always clean up."""
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the demo as cleanly as Ctrl-C
        try:
            self._start_all()
            return self._watch()
        except KeyboardInterrupt:
            print("\nCtrl-C: stopping what the demo started…", flush=True)
            return 0
        finally:
            self._stop_all()

    # -- starting --------------------------------------------------------------------------------

    def _start_all(self) -> None:
        self._refuse_busy_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        broker_url = self._start_broker()
        worker_url = f"http://127.0.0.1:{self.plan.worker_port}"
        self._spawn("worker", self._worker_args(broker_url))
        _wait_http(f"{worker_url}/health", 180, "the worker", self.children[-1], need_ok=True)
        sample = files("stream") / "data" / "sample_tweets.csv"
        replay = ["replay", str(sample), "--loop", "--rate", str(self.settings.rate), "--broker", broker_url]
        self._spawn("replay", replay)
        # History and shift alerts: the sink writes the scored topic to Parquet (flushed every 10 s so a
        # newcomer sees history within seconds), the monitor watches sentiment-stats.
        # One setting for both: the sink and the dashboard children inherit SENTISTREAM_HISTORY_DIR.
        os.environ[env_name(HistorySettings, "history_dir")] = str(self.log_dir.parent / "history")
        self._spawn("sink", ["sink", "--broker", broker_url, "--flush-interval-s", "10"])
        # The monitor asks the worker's /explain which words drove a shift (loopback: no token needed).
        self._spawn(
            "monitor", ["monitor", "--broker", broker_url, "--from-beginning", "--worker-url", worker_url]
        )
        port = str(self.plan.dashboard_port)
        self._spawn(
            "dashboard", ["dashboard", "--port", port, "--broker", broker_url, "--worker-url", worker_url]
        )
        dashboard_url = f"http://127.0.0.1:{port}"
        _wait_http(f"{dashboard_url}/_stcore/health", 120, "the dashboard", self.children[-1])
        self._say_ready(dashboard_url)

    def _refuse_busy_ports(self) -> None:
        for what, port, flag in (
            ("dashboard", self.plan.dashboard_port, DASHBOARD_FLAGS["port"]),
            ("worker", self.plan.worker_port, WORKER_FLAGS["web_port"]),
        ):
            if port_open(f"127.0.0.1:{port}"):
                raise UsageError(f"port {port} for the {what} is already in use; pick another with {flag}")

    def _start_broker(self) -> str:
        if answers_metadata(self.broker.address):
            print(
                f"Kafka: using the broker already running at {self.broker.address} (left running)", flush=True
            )
            return self.broker.url
        print(
            f"Kafka: starting a local broker at {self.broker.address} (first run downloads it)…", flush=True
        )
        self.started_broker = True  # before start(): a Ctrl-C during startup must still stop it
        self.broker.start()
        return self.broker.url

    def _worker_args(self, broker_url: str) -> list[str]:
        args = ["worker", "--broker", broker_url, "--web-port", str(self.plan.worker_port)]
        args += ["--backend", self.choice.backend]
        return args + (["--model", self.choice.model] if self.choice.model else [])

    def _spawn(self, name: str, args: list[str]) -> Child:
        log = self.log_dir / f"{name}.log"
        # Its own session: Ctrl-C reaches the demo only, which stops the children in order. Dies with
        # the demo: a demo killed with SIGKILL (no clean-up of its own) leaves no child holding a port.
        process = spawn(
            [sys.executable, "-m", "sentistream.cli", *args], log=log, own_session=True, die_with_parent=True
        )
        child = Child(name, process, log)
        self.children.append(child)
        print(f"Started {name} (pid {process.pid}), log: {log}", flush=True)
        return child

    def _say_ready(self, dashboard_url: str) -> None:
        print(
            f"\n  Dashboard: {dashboard_url}\n"
            f"  Replaying the sample tweets at {self.settings.rate:g}/s on a loop; scoring with "
            f"{self.choice.model or 'VADER'}.\n"
            f"  Press Ctrl-C to stop everything the demo started.\n",
            flush=True,
        )

    # -- watching and stopping -------------------------------------------------------------------

    def _watch(self) -> int:
        polls = Backoff(WATCH_S, deadline_s=self.settings.duration).start()
        while not polls.expired():
            for child in self.children:
                if child.process.poll() is not None:
                    print(f"The {child.name} exited (status {child.process.returncode}); see {child.log}:")
                    print(_tail(child.log), flush=True)
                    return 1
            polls.wait_sync()
        print(f"Ran for {self.settings.duration:g}s as asked; stopping.", flush=True)
        return 0

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            _stop_child(child)
        if self.started_broker:
            print(f"Stopping the Kafka broker the demo started at {self.broker.address}", flush=True)
            self.broker.stop()
        print("Demo stopped.", flush=True)


def _stop_child(child: Child, grace: float = 15.0) -> None:
    """SIGTERM the child's session (Streamlit, Faust helpers), SIGKILL after `grace`, then reap leftovers."""
    stop([child.process], grace, group=True)
    print(f"Stopped {child.name} (pid {child.process.pid})", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_http(url: str, timeout: float, what: str, child: Child, need_ok: bool = False) -> None:
    """Wait until `url` answers (200 when `need_ok`); fail early with the log when the child dies."""
    polls = Backoff(WATCH_S, deadline_s=timeout).start()
    while not polls.expired():
        if child.process.poll() is not None:
            raise SentistreamError(f"{what} exited during startup; see {child.log}: {_tail(child.log, 1)}")
        try:
            response = requests.get(url, timeout=2)
            if response.ok or not need_ok:
                return
        except requests.RequestException:
            pass
        polls.wait_sync()
    raise SentistreamError(f"{what} did not answer {url} within {timeout:.0f}s; see {child.log}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


COMMANDS = {"demo": (add_arguments, run)}
