"""GET /health, GET /metrics, POST /predict on a real worker (Faust's web server, real broker)."""

from __future__ import annotations

import json
import socket

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from stream.worker.web import HttpError, parse_predict
from tests.stream.worker_process import Topics, WorkerProcess, consumed, produce, read_topic, wait_until


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "not JSON"),
        (b'["a"]', 422, "not an object"),
        (b"{}", 422, "'texts' is missing"),
        (b'{"texts": []}', 422, "at least 1"),
        (b'{"texts": "one"}', 422, "valid list"),
        (b'{"texts": ["a", 2]}', 422, "texts.1"),
        (b'{"texts": ["a"], "model": "x"}', 422, "'model'"),
        (json.dumps({"texts": ["a"] * 11}).encode(), 413, "at most 10"),
    ],
)
def test_malformed_predict_bodies_are_client_errors(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse_predict(body, max_texts=10)
    assert caught.value.status == status and reason in caught.value.error


def test_valid_predict_body_gives_its_texts() -> None:
    assert parse_predict(b'{"texts": ["a", ""]}', max_texts=2) == ["a", ""]


@pytest.fixture(scope="module")
def worker(broker_url: str, tmp_path_factory: pytest.TempPathFactory):
    topics = Topics()
    process = WorkerProcess(
        broker_url, topics, tmp_path_factory.mktemp("web"), "--max-predict-texts", "8",
        "--max-predict-bytes", "2000", "--partitions", "2", "--max-predict-concurrency", "1",
        "--predict-read-timeout-s", "2",
    ).start()  # fmt: skip
    try:
        process.wait_ready()
        yield process, topics
    finally:
        process.stop()


def test_health_is_ready_with_model_and_partitions(worker) -> None:
    process, topics = worker
    answer = requests.get(process.url + "/health", timeout=5)
    assert answer.status_code == 200
    health = answer.json()
    assert health["status"] == "ready" and health["model"].startswith("vader@")
    assert health["partitions"] == [f"{topics.tweets}[0]", f"{topics.tweets}[1]"]


def test_metrics_count_what_the_worker_consumed(worker, broker_url: str) -> None:
    process, topics = worker
    messages = [(None, json.dumps({"text": f"good {i}"}).encode()) for i in range(5)] + [(None, b"\xff")]
    produce(broker_url, topics.tweets, messages)
    # Counted only once the outputs are acknowledged, so once all 6 are counted all 6 are written.
    wait_until(lambda: consumed(process) >= 6, 60, "the worker to count 6 messages")
    assert len(read_topic(broker_url, topics.scored, 5, timeout=30, idle_s=0)) == 5
    assert len(read_topic(broker_url, topics.dlq, 1, timeout=30, idle_s=0)) == 1
    answer = requests.get(process.url + "/metrics", timeout=5)
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert samples[("sentistream_consumed_total", ())] == 6
    assert samples[("sentistream_dead_lettered_total", (("stage", "decode"),))] == 1
    scored = sum(v for (name, _), v in samples.items() if name == "sentistream_scored_total")
    assert scored == 5
    assert samples[("sentistream_batch_size_count", ())] >= 1
    assert samples[("sentistream_inference_seconds_count", ())] >= 1
    assert any(name == "sentistream_lag" for name, _ in samples)


def test_predict_scores_with_the_loaded_model(worker) -> None:
    process, _ = worker
    answer = requests.post(
        process.url + "/predict", json={"texts": ["I love this!", "awful, hate it", "  "]}, timeout=10
    )
    assert answer.status_code == 200
    body = answer.json()
    good, bad, blank = body["predictions"]
    assert body["model"].startswith("vader@")
    assert good["label"] == "positive" and bad["label"] == "negative"
    assert abs(sum(good["scores"].values()) - 1) < 1e-6
    assert "error" in blank


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"nope", 400),
        (b'{"texts": [1]}', 422),
        (json.dumps({"texts": ["x"] * 9}).encode(), 413),
        (json.dumps({"texts": ["x" * 3000]}).encode(), 413),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_predict_requests_get_a_json_4xx(worker, body: bytes, status: int) -> None:
    process, _ = worker
    answer = requests.post(process.url + "/predict", data=body, timeout=5)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_chunked_oversized_body_is_refused(worker) -> None:
    process, _ = worker
    chunks = (b"x" * 1000 for _ in range(5))  # no Content-Length: the limit is enforced while reading
    answer = requests.post(process.url + "/predict", data=chunks, timeout=5)
    assert answer.status_code == 413 and "at most 2000" in answer.json()["error"]


def test_live_and_ready_answer_200_on_a_working_worker(worker) -> None:
    process, _ = worker
    for path in ("/live", "/ready"):
        answer = requests.get(process.url + path, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["problems"] == []


def test_a_slow_body_holds_the_only_slot_then_gets_408_and_others_get_429(worker) -> None:
    process, _ = worker
    slow = socket.create_connection(("127.0.0.1", process.port), timeout=30)
    try:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        slow.sendall(head + b'{"texts": [')  # and never the rest
        statuses = []

        def refused() -> bool:
            statuses.append(
                requests.post(process.url + "/predict", json={"texts": ["hi"]}, timeout=10).status_code
            )
            return statuses[-1] == 429

        wait_until(refused, 20, "a 429 while the slow request holds the slot")
        answer = slow.recv(65536).decode()
    finally:
        slow.close()
    assert answer.startswith("HTTP/1.1 408") and "did not arrive" in answer
    assert requests.post(process.url + "/predict", json={"texts": ["hi"]}, timeout=10).status_code == 200


def test_the_api_describes_itself_and_its_answers_follow_the_description(worker) -> None:
    import jsonschema

    process, _ = worker
    spec = requests.get(process.url + "/openapi.json", timeout=10).json()
    assert spec["openapi"] == "3.1.0"
    assert {"/predict", "/explain", "/live", "/ready", "/health", "/metrics"} <= set(spec["paths"])

    def check(instance, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(instance)

    check({"texts": ["hi"]}, "PredictRequest")
    with pytest.raises(jsonschema.ValidationError):
        check({"texts": ["hi"], "lang": "en"}, "PredictRequest")
    refused = requests.post(process.url + "/predict", json={"texts": ["hi"], "lang": "en"}, timeout=10)
    assert refused.status_code == 422 and "422" in spec["paths"]["/predict"]["post"]["responses"]
    check(refused.json(), "ErrorResponse")
    answer = requests.post(process.url + "/predict", json={"texts": ["what a great day", "  "]}, timeout=10)
    assert answer.status_code == 200
    check(answer.json(), "PredictResponse")
    assert [set(p) for p in answer.json()["predictions"]] == [
        {"label", "score", "scores", "truncated"},
        {"error"},
    ]
