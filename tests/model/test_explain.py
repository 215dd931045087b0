"""Explanations: the word that decides the label weighs most, and integrated gradients add up.

The bundle is trained in the fixture (a few seconds on a CPU) on the synthetic task of
tests/training/synthetic.py, where one keyword per text decides the label; so the right answer
is known: that keyword.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.explain import (
    IntegratedGradientsExplainer,
    OcclusionExplainer,
    cleaned_to_input,
    input_words,
    word_weights,
)
from sentistream.cli import main
from tests.tiny_model import build_tiny_classifier
from tests.training.synthetic import synthetic_corpus, synthetic_texts

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DistilBERT trained on the keyword task until it gets the training texts right."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model.bundle import BundleMeta, save_bundle

    root = tmp_path_factory.mktemp("explain")
    base = build_tiny_classifier(root / "base", corpus=synthetic_corpus(), dim=32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    data = synthetic_texts(384, seed=1)
    encoded = tokenizer(list(data["text"]), padding=True, truncation=True, max_length=32, return_tensors="pt")
    targets = torch.tensor([LABELS.index(label) for label in data["label"]])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(6):
        for start in range(0, len(targets), 32):
            batch = slice(start, start + 32)
            loss = model(
                input_ids=encoded["input_ids"][batch], attention_mask=encoded["attention_mask"][batch],
                labels=targets[batch],
            ).loss  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    meta = BundleMeta(name="keywords", version="1", labels=LABELS, max_length=32)
    return save_bundle(model, tokenizer, root / "bundle", meta)


@pytest.fixture(scope="module")
def integrated(trained_bundle: Path) -> IntegratedGradientsExplainer:
    from model.bundle import load_bundle

    return IntegratedGradientsExplainer(load_bundle(trained_bundle), "cpu", steps=64)


@pytest.mark.parametrize(
    ("text", "word", "label"),
    [
        ("the old train today wonderful city", "wonderful", "positive"),
        ("my blue phone excellent week", "excellent", "positive"),
        ("our small film awful day", "awful", "negative"),
    ],
)
def test_the_deciding_word_weighs_most(integrated, text: str, word: str, label: str) -> None:
    (explanation,) = integrated.explain([text])
    assert explanation.label == label
    assert [t.token for t in explanation.tokens] == text.split()
    top = max(explanation.tokens, key=lambda t: t.weight)
    assert top.token == word, explanation.tokens


def test_integrated_gradients_add_up_to_prediction_minus_baseline(integrated) -> None:
    texts = ["the big red train wonderful day", "a report on our new phone", "hate this small city"]
    explanations = integrated.explain(texts)
    for e in explanations:
        total = sum(t.weight for t in e.tokens)
        assert abs(e.delta) < 0.02, e
        assert total == pytest.approx(e.score - e.baseline_score, abs=0.02)
    # Not trivially 0 == 0: some texts move far from the all-[PAD] baseline.
    assert max(abs(e.score - e.baseline_score) for e in explanations) > 0.5


def test_occlusion_finds_the_same_word_on_any_engine(trained_bundle: Path) -> None:
    from model.engines import load_engine

    engine = load_engine(trained_bundle, backend="torch", device="cpu")
    try:
        (e,) = OcclusionExplainer(engine).explain(["the old train today wonderful city"])
    finally:
        engine.close()
    assert e.label == "positive" and max(e.tokens, key=lambda t: t.weight).token == "wonderful"


def test_occlusion_over_vader() -> None:
    from model.engines.vader_engine import VaderEngine

    e, bad = OcclusionExplainer(VaderEngine()).explain(["the train was great today", "  "])
    assert e.label == "positive" and max(e.tokens, key=lambda t: t.weight).token == "great"
    assert bad.error and bad.label is None


def test_weights_of_cleaned_pieces_land_on_the_input_words() -> None:
    original = "@someone LOVED it http://example.com/x 😂"
    cleaned = "@user LOVED it http face with tears of joy"
    assert [original[s:e] for s, e in input_words(original)] == original.split()
    assert cleaned_to_input(original, cleaned)[cleaned.index("LOVED")] == original.index("LOVED")
    spans = [(0, 5), (6, 11), (12, 14), (15, 19), (20, 24), (25, 29), (36, 39)]
    weights = word_weights(original, cleaned, spans, [0.1, 0.5, 0.0, 0.2, 0.05, 0.05, 0.1])
    assert [t.token for t in weights] == original.split()
    assert [round(t.weight, 3) for t in weights] == [0.1, 0.5, 0.0, 0.2, 0.2]


@pytest.mark.slow
def test_predict_explain_json_is_one_object_per_text(trained_bundle: Path, capsys) -> None:
    texts = ["my new phone wonderful", "awful week"]
    # In this process: a subprocess would spend most of its time importing torch again.
    status = main(["predict", "--explain", "--json", *texts, "--model", str(trained_bundle), "--backend", "torch",
                   "--device", "cpu"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert set(lines[0]) == {"text", "label", "score", "tokens"}
    assert [t["token"] for t in lines[1]["tokens"]] == ["awful", "week"]
    assert lines[1]["label"] == "negative"


def test_predict_explain_rejects_a_csv_input(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("text\nhi\n")
    status = main(["predict", "--explain", "--input", str(csv), "--backend", "vader"])
    assert status == 2 and "--explain" in capsys.readouterr().err
