"""Ports for the servers tests start: up only once the child itself listens, retried when taken.

`free_port()` names a port that was free a moment ago; the child binds it seconds later, and on a
shared machine anything may take it meanwhile (another test's server, a client's ephemeral port).
So a child counts as up only once *it* listens on its port (never a stranger answering there), and
a child that exits because its port was taken is started again on another one.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from infra.broker import BrokerSettings, LocalBroker, free_port
from sentistream.errors import SentistreamError
from stream.settings import bind_error

ATTEMPTS = 3
# How a child says its port was taken: Python and Java ("Address already in use"), Streamlit
# ("Port 8501 is not available").
PORT_TAKEN = ("address already in use", "is not available")


class PortTaken(Exception):
    """The child exited because something else took its port first."""


def listens_on(process: subprocess.Popen, port: int) -> bool:
    """True when `process` or one of its descendants listens on `port`."""
    try:
        parent = psutil.Process(process.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in member.net_connections(kind="tcp")
            ):
                return True
    return False


def log_since(log: Path, offset: int) -> str:
    """What `log` gained after `offset` (the output of this start, not of an earlier one)."""
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def wait_serving(
    process: subprocess.Popen,
    port: int,
    log: Path,
    since: int,
    ready: Callable[[int], Any],
    timeout: float,
) -> Any:
    """Wait until `process` listens on `port` and `ready(port)` is truthy; returns that value.

    Raises PortTaken when the process exited because its port was taken (start it on another
    one), AssertionError with the log's tail when it exited otherwise or `timeout` passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_since(log, since)
            if any(sign in output.lower() for sign in PORT_TAKEN):
                raise PortTaken(f"port {port} was taken before the child bound it")
            raise AssertionError(f"{process.args[:4]} exited with {process.returncode}:\n{output[-3000:]}")
        if listens_on(process, port) and (answer := ready(port)):
            return answer
        time.sleep(0.2)
    raise AssertionError(f"not serving on port {port} within {timeout}s:\n{log_since(log, since)[-3000:]}")


def free_ports(n: int) -> int:
    """The first of `n` consecutive ports on 127.0.0.1 that nothing has bound right now (for
    `worker --processes N`, which serves on --web-port and the N-1 ports after it)."""
    while True:
        first = free_port()
        if all(bind_error("127.0.0.1", first + i) is None for i in range(1, n)):
            return first


def start_server(
    command: Callable[[int], list[str]],
    log: Path,
    ready: Callable[[int], Any] = bool,
    timeout: float = 180.0,
    **popen: Any,
) -> tuple[subprocess.Popen, int]:
    """Run `command(port)` (output appended to `log`) until it serves on a free port: (process, port).

    `ready(port)` is what "serving" means beyond listening (e.g. /health answers 200).
    """
    for attempt in range(1, ATTEMPTS + 1):
        port, since = free_port(), log_size(log)
        with log.open("ab") as out:
            process = subprocess.Popen(command(port), stdout=out, stderr=subprocess.STDOUT, **popen)
        try:
            wait_serving(process, port, log, since, ready, timeout)
            return process, port
        except PortTaken:
            if attempt == ATTEMPTS:
                raise
        except BaseException:
            stop(process)
            raise
    raise AssertionError("unreachable")


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def start_broker(data_dir: Path, partitions: int = 1) -> LocalBroker:
    """A started broker on a free client port, retried on another when that port was taken.

    (The broker retries its own controller port, see `LocalBroker.start`.)
    """
    for attempt in range(1, ATTEMPTS + 1):
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=data_dir, partitions=partitions))
        since = log_size(broker.log_file)
        try:
            broker.start()
            return broker
        except SentistreamError:  # UsageError included: the port was busy when start() looked
            broker.stop()
            if attempt == ATTEMPTS or not lost_its_port(broker, since):
                raise
    raise AssertionError("unreachable")


def lost_its_port(broker: LocalBroker, since: int) -> bool:
    """Whether a failed start of `broker` (log output after offset `since`) was for its client port:
    busy when it looked, or taken before the JVM bound it."""
    output = log_since(broker.log_file, since) if broker.log_file.exists() else ""
    taken = f"failed to bind to {broker.address}: address already in use" in output.lower()
    return taken or port_answers(broker.settings.port)


def port_answers(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port` now."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses every connection while the block runs: it is bound here, never listened
    on, so no other process can start a server there (a port merely free now could be taken)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]
