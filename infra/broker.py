"""A real Apache Kafka broker on 127.0.0.1, with no Docker: jars from Maven Central, KRaft mode.

`LocalBroker.start()` resolves `org.apache.kafka:kafka_2.13` with the machine's Maven (once; the
classpath is cached), formats a single-node KRaft log dir (once), launches `java kafka.Kafka` in
its own process session, and returns only when the broker answers a metadata request.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psutil
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import SentistreamError, UsageError
from stream.retry import Backoff
from stream.settings import port_open

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
CONTROLLER_PORT_ATTEMPTS = 3


def default_data_dir() -> Path:
    """Per-user state dir (never the repo): ~/.local/state/sentistream/kafka on Linux."""
    return Path(platformdirs.user_state_dir("sentistream")) / "kafka"


class BrokerSettings(BaseSettings):
    """Settings of the local broker (`sentistream kafka ...`)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_KAFKA_", frozen=True)

    port: int = Field(default=9092, ge=1, le=65535, description="client port on 127.0.0.1")
    advertised_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port clients are told to connect to, when a proxy or port forward sits in front "
        "(default: port)",
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="log dir, pid file and broker log")
    partitions: int = Field(default=1, ge=1, description="default partition count of new topics")
    heap: str = Field(default="512m", description="JVM heap (-Xmx)")
    start_timeout: float = Field(default=90.0, gt=0, description="seconds to wait for the broker to answer")


@dataclass(frozen=True)
class BrokerStatus:
    """What `sentistream kafka status` reports."""

    running: bool
    pid: int | None
    address: str
    data_dir: Path
    log_file: Path


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64, never starting with '-' (as Kafka's Uuid)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """Start, stop and inspect one single-node KRaft broker rooted at `settings.data_dir`."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).expanduser().resolve()
        self.pid_file = self.data_dir / "broker.pid"
        self.lock_file = self.data_dir / "broker.lock"
        self.properties_file = self.data_dir / "server.properties"
        self.log_file = self.data_dir / "logs" / "server.log"
        self.console_file = self.data_dir / "logs" / "console.out"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    @property
    def url(self) -> str:
        """The broker as `--broker` takes it."""
        return f"kafka://{self.address}"

    # -- public verbs ---------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        pid = self._running_pid()
        return BrokerStatus(pid is not None, pid, self.address, self.data_dir, self.log_file)

    def start(self) -> tuple[bool, float]:
        """Start the broker; returns (already_running, seconds it took to answer).

        Holds the data dir's lock throughout, so a second `start` waits for the first and then
        finds its broker running, instead of launching another that orphans one of them.
        """
        began = time.monotonic()
        with self._locked():
            if self._running_pid() is not None:
                return True, 0.0
            _require_tools()
            self._refuse_busy_port()
            classpath = resolve_classpath()
            self._format_once(classpath)
            self._launch_until_ready(classpath, began)
        return False, time.monotonic() - began

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout`); False if none ran."""
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            return self._stop(timeout)

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive `flock` on the data dir's lock file (released by the kernel if we die)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _stop(self, timeout: float) -> bool:
        pid = self._running_pid()
        if pid is None:
            return False
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            log.warning("broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
            proc.kill()
            proc.wait(10)
        self.pid_file.unlink(missing_ok=True)
        return True

    # -- steps of start -------------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The pid in the pid file if that process is our broker; clears a stale pid file."""
        try:
            pid = int(self.pid_file.read_text().strip())
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
            # Exact arguments: a broker of /data/kafka2 must not pass for the one of /data/kafka.
            ours = MAIN_CLASS in cmdline and str(self.properties_file) in cmdline
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                return pid
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        if self.pid_file.exists():
            log.info("removing stale pid file %s (no broker runs with that pid)", self.pid_file)
            self.pid_file.unlink(missing_ok=True)
        return None

    def _refuse_busy_port(self) -> None:
        if port_open(self.address):
            raise UsageError(
                f"port {self.settings.port} on 127.0.0.1 is already in use by another process; "
                f"pick a free one with --port (or SENTISTREAM_KAFKA_PORT)"
            )

    def _properties(self, controller_port: int) -> str:
        s = self.settings
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{s.port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.advertised_port or s.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir / 'kraft-logs'}",
                f"num.partitions={s.partitions}",
                "auto.create.topics.enable=true",
                # One node: every internal topic has one replica. Few partitions keep startup fast.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                # Consumer groups form at once instead of after the default 3 s.
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    def _write_properties(self, controller_port: int) -> Path:
        self.properties_file.write_text(self._properties(controller_port))
        return self.properties_file

    def _format_once(self, classpath: str) -> None:
        """Format the KRaft log dir the first time only; data then survives stop/start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return
        props = self._write_properties(free_port())  # formatting binds nothing
        cmd = [
            *self._java(classpath),
            STORAGE_TOOL,
            "format",
            f"--cluster-id={new_cluster_id()}",
            "-c",
            str(props),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SentistreamError(f"formatting the Kafka log dir {self.data_dir} failed: {last[0]}")

    def _java(self, classpath: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            classpath,
        ]

    def _launch_until_ready(self, classpath: str, began: float) -> None:
        """Launch the broker and wait until it answers. Its controller port comes from `free_port()`,
        free a moment ago but bound by the JVM seconds later: one taken meanwhile is retried."""
        for attempt in range(1, CONTROLLER_PORT_ATTEMPTS + 1):
            controller_port, since = free_port(), _size(self.log_file)
            process = self._launch(classpath, controller_port)
            try:
                self._wait_until_ready(process, began)
                return
            except SentistreamError:
                taken = f"failed to bind to 127.0.0.1:{controller_port}: address already in use"
                if attempt == CONTROLLER_PORT_ATTEMPTS or taken not in _read_from(self.log_file, since):
                    raise
                log.info("controller port %d was taken before the broker bound it; retrying", controller_port)

    def _launch(self, classpath: str, controller_port: int) -> subprocess.Popen:
        props = self._write_properties(controller_port)
        with open(self.console_file, "ab") as console:
            process = subprocess.Popen(
                [*self._java(classpath), MAIN_CLASS, str(props)],
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the CLI; Ctrl-C in the shell does not reach it
                cwd=self.data_dir,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process

    def _wait_until_ready(self, process: subprocess.Popen, began: float) -> None:
        polls = Backoff(0.25, deadline_s=self.settings.start_timeout).start(began)
        while not polls.expired():
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise SentistreamError(
                    f"the Kafka broker exited during startup (status {process.returncode}); "
                    f"see {self.console_file} and {self.log_file}"
                )
            if answers_metadata(self.address):
                return
            polls.wait_sync()
        self._stop(30.0)  # the lock is already held by start()
        raise SentistreamError(
            f"the Kafka broker did not answer on {self.address} within {self.settings.start_timeout:.0f}s; "
            f"see {self.log_file}"
        )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _read_from(path: Path, offset: int) -> str:
    """`path`'s text after `offset`, lower-cased (what this launch wrote to an appended log)."""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").lower()


def answers_metadata(address: str, timeout: float = 2.0) -> bool:
    """True when a broker at `address` answers a Kafka Metadata request (not just an open port)."""
    import asyncio

    if not port_open(address):  # cheap check first; aiokafka logs every refused connection
        return False
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=address, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return bool(client.cluster.brokers())
        except (TimeoutError, KafkaError, OSError):
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


# -- Maven -------------------------------------------------------------------------------------


def classpath_cache() -> Path:
    """Where the resolved classpath is cached, keyed by the pom's content."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("sentistream")) / "kafka" / f"classpath-{digest}.txt"


def resolve_classpath() -> str:
    """The broker's classpath; runs Maven only when no complete cached classpath exists."""
    cache = classpath_cache()
    if cache.exists():
        classpath = cache.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
            return classpath
    _require_tools()
    cache.parent.mkdir(parents=True, exist_ok=True)
    log.info("resolving Apache Kafka from Maven Central (first run only; about 60 MB)")
    cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:build-classpath", f"-Dmdep.outputFile={cache}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SentistreamError(_maven_failure(result.stdout + result.stderr))
    return cache.read_text().strip()


def _maven_failure(output: str) -> str:
    if any(
        s in output
        for s in ("Could not transfer", "UnknownHost", "Connection refused", "Network is unreachable")
    ):
        return "Maven could not download Apache Kafka from Maven Central and no jars are cached; check the network or Maven proxy settings (~/.m2/settings.xml), then retry"
    errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
    return "Maven failed to resolve Apache Kafka: " + (errors[0] if errors else output.strip()[-200:])


def _require_tools() -> None:
    if shutil.which("java") is None:
        raise SentistreamError(
            "Java not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)"
        )
    if shutil.which("mvn") is None:
        raise SentistreamError("Maven not found: install it (Debian: apt-get install maven)")
