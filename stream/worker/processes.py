"""`sentistream worker --processes N`: N worker processes in one consumer group, on one machine.

One worker process feeds its engine from one event loop; a GPU (or a CPU with many cores) can score
more than that loop delivers. N processes, each a whole worker (its own consumer, model copy, web
views), share the device; Kafka gives each its share of the input partitions, so the input topic
needs at least N partitions (the parent creates missing topics with that many, and warns when an
existing topic has fewer).

The parent loads no model. It checks the model's files and the topics once, then starts the
children with the same flags plus, for child i: `--web-port PORT+i`, `--worker-name NAME-i` (when
a name was given) and, on a CPU, `--threads CORES/N` (unless --threads was given), so N ONNX Runtime
pools do not fight over the same cores. It forwards SIGTERM/SIGINT and exits when they have. When a
child exits on its own (a crash, a kill -9), the parent stops the others and exits non-zero: the
orchestrator then restarts the whole set, where a set running one short would hide the crash.
An orchestrator probes one port, so the parent probes the rest: a child that answered /live once and
then fails it LIVE_FAILURES times in a row (a stuck batch, a frozen process) is killed and the set
stopped the same way. Children die with the parent (Linux: PR_SET_PDEATHSIG), so a kill -9 of the
parent leaves no orphan.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

from model.engines.onnx_engine import physical_cores
from model.engines.select import gpu_device_files
from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.settings import flag_name
from stream.retry import Backoff
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS, KafkaSettings
from stream.supervisor import spawn, stop
from stream.worker.settings import WorkerSettings
from stream.worker.topics import ensure_topics

log = logging.getLogger(__name__)

STOP_GRACE_S = 60.0  # a child finishing its batch and committing; then it is killed
POLL_S = 0.2
LIVE_POLL_S = 5.0  # how often each child's /live is asked
LIVE_TIMEOUT_S = 2.0
LIVE_FAILURES = 3  # failed answers in a row, after a child was once live, that stop the set


def run_processes(
    args: argparse.Namespace, kafka: KafkaSettings, settings: WorkerSettings, model: ModelSettings
) -> int:
    """Run `settings.processes` workers as children of this process; returns the exit status."""
    n = settings.processes
    topics = asyncio.run(
        ensure_topics(kafka, settings.model_copy(update={"partitions": max(settings.partitions, n)}))
    )
    if topics.created:
        log.info("created topics %s", topics.created)
    if topics.input_partitions < n:
        log.warning(
            "topic %s has %d partitions, so %d of the %d processes will wait idle; add partitions "
            "(kafka-topics.sh --alter --topic %s --partitions %d)",
            kafka.topic,
            topics.input_partitions,
            n - topics.input_partitions,
            n,
            kafka.topic,
            n,
        )
    threads = model.threads or (cpu_threads(n) if on_cpu(model) else None)
    children = [_start(child_argv(args, child_overrides(settings, i, threads))) for i in range(n)]
    log.info(
        "started %d worker processes (pids %s), web ports %d-%d%s",
        n,
        ", ".join(str(c.pid) for c in children),
        settings.web_port,
        settings.web_port + n - 1,
        f", {threads} CPU threads each" if threads else "",
    )
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host  # noqa: S104
    return supervise(children, [f"http://{host}:{settings.web_port + i}/live" for i in range(n)])


def child_overrides(settings: WorkerSettings, i: int, threads: int | None) -> dict[str, object]:
    """The flags child `i` gets on top of the parent's."""
    overrides: dict[str, object] = {"processes": 1, "web_port": settings.web_port + i}
    if settings.worker_name:
        overrides["worker_name"] = f"{settings.worker_name}-{i}"
    if threads:
        overrides["threads"] = threads
    return overrides


def child_argv(args: argparse.Namespace, overrides: dict[str, object]) -> list[str]:
    """`sentistream` arguments repeating the flags given to this worker, with `overrides` applied."""
    argv = ["-v"] if getattr(args, "verbose", False) else []
    argv.append("worker")
    values = vars(args) | overrides
    for field in _fields():
        value = values.get(field)
        if value is None:
            continue
        flag = flag_name(field)
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    if getattr(args, "json_logs", False):
        argv.append("--json-logs")
    return argv


def _fields() -> Iterable[str]:
    yield from MODEL_FLAGS
    yield from CONNECTION_FLAGS
    yield from TOPIC_FLAGS
    yield from WorkerSettings.model_fields


def on_cpu(model: ModelSettings) -> bool:
    """Whether the children score on the CPU (checked without importing torch)."""
    return model.device == "cpu" or (model.device == "auto" and not gpu_device_files())


def cpu_threads(n: int) -> int:
    """Each child's share of the physical cores."""
    return max(1, physical_cores() // n)


def _start(argv: list[str]) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "sentistream", *argv], die_with_parent=True)


def supervise(children: list[subprocess.Popen], live_urls: list[str]) -> int:
    """Forward SIGTERM/SIGINT to every child; when one exits unasked or stops being live, stop the
    rest. The exit status."""
    supervisor = Supervisor(children, live_urls)
    previous = {s: signal.signal(s, supervisor.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return supervisor.watch()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Supervisor:
    """The children of one `worker --processes N` and whether and why they are to stop."""

    def __init__(self, children: list[subprocess.Popen], live_urls: list[str]) -> None:
        self.children = children
        self.live_urls = live_urls
        self.stopping = False
        self.failed: int | None = None  # the status of a child that exited unasked
        self.was_live = [False] * len(children)
        self.not_live = [0] * len(children)  # failed /live answers in a row
        self.next_live_check = time.monotonic() + LIVE_POLL_S

    def on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("%s: stopping %d worker processes", signal.Signals(signum).name, len(self.children))
            self.stopping = True

    def watch(self) -> int:
        """Poll the children until one fails or a signal asks; then stop them all. The exit status."""
        polls = Backoff(POLL_S).start()
        while not self.stopping:
            polls.wait_sync()
            if not self.stopping:
                self._stop_after_a_crash()
            if not self.stopping and time.monotonic() >= self.next_live_check:
                self.next_live_check = time.monotonic() + LIVE_POLL_S
                self._stop_when_one_is_not_live()
        stop(self.children, STOP_GRACE_S, on_kill=_say_killed)
        if self.failed is not None:
            return self.failed
        return next((code if (code or 0) > 0 else 1 for c in self.children if (code := c.returncode) != 0), 0)

    def _stop_after_a_crash(self) -> None:
        crashed = next((c for c in self.children if c.poll() is not None), None)
        if crashed is None:
            return
        self.failed = crashed.returncode if crashed.returncode > 0 else 1
        log.error(
            "worker process %d exited on its own (status %d); stopping the other %d so the set restarts "
            "together",
            crashed.pid,
            crashed.returncode,
            sum(c.poll() is None for c in self.children),
        )
        self.stopping = True

    def _stop_when_one_is_not_live(self) -> None:
        for i, child in enumerate(self.children):
            if child.poll() is not None:
                continue
            why = not_live(self.live_urls[i])
            if why is None:
                if not self.was_live[i] and sum(self.was_live) == len(self.children) - 1:
                    log.info("all %d worker processes are live", len(self.children))
                self.was_live[i], self.not_live[i] = True, 0
                continue
            if not self.was_live[i]:
                continue  # still starting: a child that cannot start exits by itself
            self.not_live[i] += 1
            if self.not_live[i] >= LIVE_FAILURES:
                log.error(
                    "worker process %d failed %s %d times in a row (%s); killing it and stopping the set",
                    child.pid,
                    self.live_urls[i],
                    LIVE_FAILURES,
                    why,
                )
                child.kill()
                self.failed = 1
                self.stopping = True
                return


def _say_killed(child: subprocess.Popen) -> None:
    log.error("worker process %d did not stop in %.0f s; killing it", child.pid, STOP_GRACE_S)


def not_live(url: str) -> str | None:
    """None when `url` (a child's /live) answers 200, else why not, in a few words."""
    try:
        with urllib.request.urlopen(url, timeout=LIVE_TIMEOUT_S) as answer:  # noqa: S310 (our own http URL)
            return None if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read(300).decode(errors='replace').strip()}"
    except (OSError, TimeoutError) as exc:
        return f"no answer: {exc}"
