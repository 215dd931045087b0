"""Who may use the worker's model over HTTP (issue #24): a bearer token for /predict and /explain
whenever the views are bound beyond loopback; probes and Prometheus stay open; Faust's own pages off."""

from __future__ import annotations

import argparse

import pytest
import requests

from sentistream.errors import UsageError
from sentistream.settings import settings_from_args
from stream.worker.cli import add_arguments
from stream.worker.settings import WorkerSettings
from stream.worker.web import authorized, check_web_access, is_loopback
from tests.stream.test_worker_cli import last_line, run_worker
from tests.stream.worker_process import Topics, WorkerProcess

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "0.0.0.0"  # noqa: S104 (binding every interface is what these tests are about)


def worker_settings(*argv: str) -> WorkerSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(WorkerSettings, parser.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), (PUBLIC, False),
     ("::", False), ("10.0.0.5", False), ("worker.example", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_token_is_compared_whole_and_only_as_a_bearer() -> None:
    assert authorized(None, None) and authorized("anything", None)  # no token configured
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer "):
        assert not authorized(header, TOKEN), header


def test_binding_publicly_needs_a_token_or_an_explicit_waiver(tmp_path) -> None:
    with pytest.raises(UsageError, match="--api-token-file"):
        check_web_access(worker_settings("--web-host", PUBLIC))
    assert check_web_access(worker_settings("--web-host", PUBLIC, "--public-web-without-token")) is None
    assert check_web_access(worker_settings()) is None  # loopback: as before
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert (
        check_web_access(worker_settings("--web-host", PUBLIC, "--api-token-file", str(tmp_path / "token")))
        == TOKEN
    )
    (tmp_path / "short").write_text("abc")
    for bad in ("short", "missing"):
        with pytest.raises(UsageError, match="api-token-file"):
            check_web_access(worker_settings("--api-token-file", str(tmp_path / bad)))


def test_the_worker_refuses_a_public_bind_without_a_token_in_one_line_before_kafka(
    dead_port, tmp_path
) -> None:
    result = run_worker(
        "--backend", "vader", "--broker", f"kafka://127.0.0.1:{dead_port}", "--web-host", PUBLIC
    )
    assert result.returncode == 2, result.stderr
    assert "--api-token-file" in last_line(result) and "Traceback" not in result.stderr
    assert "cannot reach the Kafka broker" not in result.stderr

    (tmp_path / "pub.pem").write_text("not a key")
    bad_key = run_worker(
        "--backend",
        "vader",
        "--broker",
        f"kafka://127.0.0.1:{dead_port}",
        "--trusted-key",
        str(tmp_path / "pub.pem"),
    )
    assert bad_key.returncode == 2 and "not an EC public key" in last_line(bad_key)


@pytest.fixture(scope="module")
def public_worker(broker_url: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("public")
    (out / "token").write_text(TOKEN)
    process = WorkerProcess(
        broker_url, Topics(), out, "--web-host", PUBLIC, "--api-token-file", str(out / "token"),
        "--partitions", "1",
    ).start()  # fmt: skip
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("view", ["/predict", "/explain"])
def test_the_model_views_answer_401_without_the_token_and_serve_with_it(public_worker, view: str) -> None:
    body = {"texts": ["what a lovely day"]}
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
        refused = requests.post(public_worker.url + view, json=body, headers=headers, timeout=10)
        assert refused.status_code == 401, (headers, refused.text)
    served = requests.post(
        public_worker.url + view, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    )
    assert served.status_code == 200, served.text


def test_probes_and_metrics_stay_open_and_fausts_own_pages_are_gone(public_worker) -> None:
    for view in ("/live", "/ready", "/health", "/metrics"):
        assert requests.get(public_worker.url + view, timeout=10).status_code == 200, view
    for view in ("/router/", "/table/", "/graph/", "/stats/"):
        assert requests.get(public_worker.url + view, timeout=10).status_code == 404, view
    health = requests.get(public_worker.url + "/health", timeout=10).json()
    assert health["models"]["signatures"] == "not checked"
