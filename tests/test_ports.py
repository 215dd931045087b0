"""The port helpers' own promise: a port taken between `free_port()` and the child's bind is retried
on another port, and a stranger answering on the port never passes for the child."""

from __future__ import annotations

import socket
import sys

import pytest
import requests

import tests.ports
from infra.broker import free_port
from tests.ports import listens_on, refused_port, start_broker, start_server, stop

# A stranger on the port: it answers HTTP 200 to anything.
STRANGER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


def http_ok(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok
    except requests.RequestException:
        return False


def ports_starting_with(taken: int):
    """A stand-in for `free_port()` whose first answer is `taken`."""
    ports = iter([taken])
    return lambda: next(ports, None) or free_port()


def test_a_port_taken_by_a_server_is_retried_and_the_server_never_passes_for_the_child(tmp_path, monkeypatch):
    stranger, taken = start_server(lambda port: [*STRANGER, str(port)], tmp_path / "stranger.log", http_ok)
    try:
        monkeypatch.setattr(tests.ports, "free_port", ports_starting_with(taken))
        child, port = start_server(lambda port: [*STRANGER, str(port)], tmp_path / "child.log", http_ok)
        try:
            assert port != taken and listens_on(child, port) and not listens_on(child, taken)
        finally:
            stop(child)
    finally:
        stop(stranger)
    assert "Address already in use" in (tmp_path / "child.log").read_text()  # the retry did happen


def test_a_refused_port_refuses_and_no_server_can_take_it_while_held():
    with refused_port() as port:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        # Not even a server that asks to reuse the address, as Java's and aiohttp's do.
        with socket.socket() as server, pytest.raises(OSError, match="in use"):
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))


@pytest.mark.slow  # a broker of its own
def test_a_client_port_taken_before_the_broker_binds_it_is_retried(tmp_path, monkeypatch):
    # Bound but not listening: the broker's own "is the port busy" check passes, its bind fails.
    with refused_port() as taken:
        monkeypatch.setattr(tests.ports, "free_port", ports_starting_with(taken))
        broker = start_broker(tmp_path / "kafka")
        try:
            assert broker.status().running and broker.settings.port != taken
        finally:
            broker.stop()
