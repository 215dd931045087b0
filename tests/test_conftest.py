"""The session fixtures' own promise: a port taken between `free_port()` and the broker's bind is
retried on another port instead of failing every test that needs Kafka."""

from __future__ import annotations

import socket

import pytest

import tests.conftest
from infra.broker import free_port
from tests.conftest import start_broker


@pytest.mark.slow  # a broker of its own
def test_a_port_taken_before_the_broker_binds_it_is_retried(tmp_path, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(tests.conftest, "free_port", lambda: next(ports, None) or free_port())
        broker = start_broker(tmp_path / "kafka")
        try:
            assert broker.status().running and broker.settings.port != taken
        finally:
            broker.stop()
