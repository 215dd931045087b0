"""Progress bars on stderr for predict, evaluate, export and eda; stdout keeps the result."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import progress
from model.engines.base import Prediction
from sentistream.cli import main


class CountingEngine:
    def __init__(self) -> None:
        self.labels = ["negative", "positive"]
        self.calls: list[int] = []

    def predict(self, texts):
        self.calls.append(len(texts))
        return [Prediction("positive", 1.0, {"positive": 1.0}) for _ in texts]


def test_predict_in_chunks_keeps_order_and_calls_the_engine_a_chunk_at_a_time(monkeypatch, capsys):
    monkeypatch.setattr(progress, "CHUNK_ROWS", 2)
    engine = CountingEngine()
    seen: list[object] = []

    def predict(chunk):
        seen.extend(chunk)
        return engine.predict(chunk)

    assert len(progress.predict_in_chunks(engine, list("abcde"), "scoring", predict)) == 5
    assert engine.calls == [2, 2, 1] and seen == list("abcde")
    out, err = capsys.readouterr()
    assert out == "" and "scoring: 100%" in err and "5/5" in err


def test_steps_counts_each_named_step_once(capsys):
    with progress.steps("job", 3) as step:
        step("one")
        step("two")
        step("three")
    err = capsys.readouterr().err
    assert "job: 100%" in err and "3/3" in err and "three" in err


def labelled_csv(tmp_path: Path) -> Path:
    source = tmp_path / "labelled.csv"
    rows = [
        ("great, I love it", "positive"),
        ("awful and terrible", "negative"),
        ("the bus is at nine", "neutral"),
    ]
    # Distinct texts: the loader drops exact duplicates.
    source.write_text("text,label\n" + "".join(f'"{t} {i}",{label}\n' for i in range(4) for t, label in rows))
    return source


def test_evaluate_shows_scoring_progress_for_the_model_and_the_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--data", str(labelled_csv(tmp_path)), "--backend", "vader"]) == 0
    out, err = capsys.readouterr()
    assert err.count("scoring (vader): 100%") == 2 and "12/12" in err  # the model, then the baseline
    assert "accuracy" in out and "%|" not in out


@pytest.mark.parametrize("base_model", [None])
def test_eda_shows_its_steps(tmp_path, monkeypatch, capsys, base_model):
    monkeypatch.chdir(tmp_path)
    assert main(["eda", "--data", str(labelled_csv(tmp_path)), "--output", str(tmp_path / "eda")]) == 0
    out, err = capsys.readouterr()
    assert "eda: 100%" in err and "4/4" in err and "report" in err
    assert out.strip().endswith("report.md")
