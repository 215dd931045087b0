"""Models with 2 and with 5 labels, end to end: train, export, predict with each backend, a real
worker on the session broker, the dashboard's summary of what it scored, and evaluate's shared labels.

Everything goes through the command line or public functions, so the pieces are checked as a user
chains them. The task is learnable (each label has its own keywords), so a label that changes
place anywhere between training and the dashboard shows up as a wrong answer, not only a wrong count.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import requests

from dashboard.feed import Feed
from dashboard.settings import DashboardSettings
from dashboard.summary import Filters, compute_kpis, filter_rows, label_shares
from model.bundle import load_bundle
from sentistream.cli import main
from stream.feeders.producer import ProducerSettings, produce_texts
from stream.settings import KafkaSettings
from tests.kafka_reader import read_topic
from tests.ports import start_server
from tests.tiny_model import build_tiny_classifier
from tests.training.synthetic import FILLER

# Training two models dominates: minutes on a loaded 2-core machine, so the default 300 s would cut it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEYWORDS = {
    2: {"negative": ["awful", "hate"], "positive": ["great", "love"]},
    5: {
        "very_negative": ["horrible", "disgusting"],
        "negative": ["bad", "annoying"],
        "neutral": ["schedule", "report"],
        "positive": ["nice", "pleasant"],
        "very_positive": ["wonderful", "amazing"],
    },
}
TRAIN = ["--epochs", "6", "--patience", "6", "--lr", "3e-3", "--batch-size", "16", "--max-length", "32",
         "--device", "cpu"]  # fmt: skip


def label_map(labels) -> list[str]:
    """The data loader knows negative/neutral/positive; any other label is named with --label-map."""
    own = [f"{label}={label}" for label in labels if label not in ("negative", "neutral", "positive")]
    return ["--label-map", ",".join(own)] if own else []


def labelled_texts(keywords: dict[str, list[str]], rows: int, seed: int) -> pd.DataFrame:
    """Filler words around one keyword of the row's label."""
    rng = random.Random(seed)
    labels = list(keywords)
    records = []
    for i in range(rows):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, rng.randint(3, 6))
        words.insert(rng.randrange(len(words) + 1), rng.choice(keywords[label]))
        records.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(records)


def probes(keywords: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(text, label it must get): every keyword in a short sentence the model never saw."""
    return [(f"my {word} day", label) for label, words in keywords.items() for word in words]


@pytest.fixture(scope="module", params=[2, 5], ids=["2-labels", "5-labels"])
def trained(request, tmp_path_factory) -> tuple[dict[str, list[str]], Path, Path]:
    """(keywords, training CSV, bundle) for a model trained by `sentistream train` and exported."""
    keywords = KEYWORDS[request.param]
    root = tmp_path_factory.mktemp(f"labels-{request.param}")
    data = root / "train.csv"
    labelled_texts(keywords, 150 * len(keywords), seed=1).to_csv(data, index=False)
    corpus = [" ".join([*FILLER, "my", *(w for ws in keywords.values() for w in ws)])] * 3
    base = build_tiny_classifier(root / "base", corpus=corpus, dim=64)
    bundle = root / "bundle"
    train = ["train", "--data", str(data), "--base-model", str(base), "--output", str(bundle), "--no-export"]
    assert main([*train, *TRAIN, *label_map(keywords)]) == 0
    assert main(["export", "--model", str(bundle)]) == 0  # the export command, once
    return keywords, data, bundle


def test_the_bundle_records_the_labels_of_the_data(trained):
    keywords, _, bundle = trained
    assert sorted(load_bundle(bundle).labels) == sorted(keywords)
    assert {"model.onnx", "model.int8.onnx", "sentistream.json"} <= {p.name for p in bundle.iterdir()}


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_predict_gives_each_keyword_its_label_with_every_backend(trained, backend, capsys):
    keywords, _, bundle = trained
    cases = probes(keywords)
    args = [
        "predict",
        *(t for t, _ in cases),
        "--model",
        str(bundle),
        "--backend",
        backend,
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [label for _, label in cases]


def test_predict_writes_one_score_column_per_label(trained, tmp_path):
    keywords, _, bundle = trained
    texts = tmp_path / "in.csv"
    pd.DataFrame({"text": [t for t, _ in probes(keywords)]}).to_csv(texts, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", "--input", str(texts), "--output", str(out), "--model", str(bundle)]) == 0
    scored = pd.read_csv(out)
    columns = [f"score_{label}" for label in keywords]
    assert set(columns) <= set(scored.columns) and len([c for c in scored if c.startswith("score_")]) == len(
        keywords
    )
    assert scored[columns].sum(axis=1).round(4).eq(1.0).all()


# ---- served by a real worker, summarised by the dashboard -----------------------------------------


def start_worker(broker_url: str, bundle: Path, prefix: str, log: Path) -> subprocess.Popen:
    """`sentistream worker` serving `bundle` on ONNX, once its /health answers 200."""
    topics = ["--topic", f"{prefix}-in", "--scored-topic", f"{prefix}-scored", "--dlq-topic", f"{prefix}-dlq",
              "--stats-topic", f"{prefix}-stats", "--models-topic", f"{prefix}-models",
              "--group-id", f"{prefix}-group"]  # fmt: skip
    command = [sys.executable, "-m", "sentistream.cli", "worker", "--broker", broker_url, "--model", str(bundle),
               "--backend", "onnx", "--device", "cpu", *topics]  # fmt: skip
    process, _ = start_server(
        lambda port: [*command, "--web-port", str(port)], log, healthy,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    return process


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_worker_serves_the_model_and_the_dashboard_sums_up_its_labels(trained, broker_url, tmp_path):
    keywords, _, bundle = trained
    cases = probes(keywords)
    prefix = f"labels-{uuid.uuid4().hex[:8]}"
    process = start_worker(broker_url, bundle, prefix, tmp_path / "worker.log")
    try:
        kafka = KafkaSettings(broker=broker_url, topic=f"{prefix}-in")
        tweets = [{"text": text, "id": f"p{i}", "true_label": label} for i, (text, label) in enumerate(cases)]
        produce_texts(tweets, kafka, ProducerSettings())
        records = read_topic(broker_url, f"{prefix}-scored", len(cases), idle_s=0)
    finally:
        process.terminate()
        process.wait(60)

    events = {e["id"]: e for e in (json.loads(r.value) for r in records)}
    assert len(events) == len(cases)
    for i, (_, label) in enumerate(cases):
        assert events[f"p{i}"]["label"] == label
        assert set(events[f"p{i}"]["scores"]) == set(keywords)

    feed = Feed(kafka, DashboardSettings())
    for record in records:
        assert feed.ingest_scored(record.value)
    snapshot = feed.snapshot()
    everything = Filters()
    rows = filter_rows(snapshot.rows, everything, snapshot.taken_at)
    kpis = compute_kpis(snapshot, rows, everything)
    share = 1 / len(keywords)  # the probes hold the same number of texts per label
    assert kpis.shares == pytest.approx(dict.fromkeys(sorted(keywords), share))
    assert (kpis.accuracy, kpis.labelled) == (1.0, len(cases))
    only_first = Filters(keyword=next(iter(keywords.values()))[0])
    filtered = filter_rows(snapshot.rows, only_first, snapshot.taken_at)
    assert label_shares(snapshot, filtered, only_first) == {next(iter(keywords)): 1.0}


# ---- evaluate: the labels the data and the model share -----------------------------------------


def test_evaluate_scores_a_subset_of_labels_among_those_only(trained, tmp_path, capsys):
    keywords, _, bundle = trained
    chosen = list(keywords)[:2] if len(keywords) > 2 else list(keywords)
    data = tmp_path / "test.csv"
    labelled_texts({k: keywords[k] for k in chosen}, 60, seed=2).to_csv(data, index=False)
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--model", str(bundle), "--data", str(data), "--output", str(out)]
    assert main([*evaluate, *label_map(chosen)]) == 0
    assert "accuracy 1.0000" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())["model"]
    assert sorted(metrics["labels"]) == sorted(chosen)  # a 5-label model picks between the 2 used
    assert len(metrics["confusion_matrix"]) == len(chosen)


def test_evaluate_refuses_labels_the_model_does_not_have(trained, tmp_path, capsys):
    keywords, _, bundle = trained
    data = tmp_path / "other.csv"
    labels = [next(iter(keywords)), "mixed"]
    pd.DataFrame({"text": ["a text", "another one"], "label": labels}).to_csv(data, index=False)
    evaluate = ["evaluate", "--model", str(bundle), "--data", str(data), "--output", str(tmp_path / "e")]
    assert main([*evaluate, *label_map(labels)]) == 2
    err = capsys.readouterr().err
    assert (
        "labels ['mixed'] are not among the model's" in err and "--label-map" in err and err.count("\n") == 1
    )
