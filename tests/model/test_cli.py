"""`sentistream predict` end to end through the real dispatcher."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sentistream.cli import main


def test_predict_texts_prints_one_line_per_text(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["predict", "--backend", "vader", "I love it!", "   ", "This is terrible."])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [line.split("\t")[0] for line in lines] == ["positive", "error", "negative"]
    assert lines[1].split("\t")[1] == "text is only whitespace"


def test_predict_csv_scores_good_rows_and_marks_the_bad_one(bundle_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        'id,body,label\n1,i love this,positive\n2,"",neutral\n3,"worst service, never again",negative\n4,ok,neutral\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.csv"
    status = main(["predict", "--model", str(bundle_dir), "--device", "cpu", "--input", str(source),
                   "--text-col", "body", "--output", str(out)])  # fmt: skip
    scored = pd.read_csv(out, dtype={"id": str}, keep_default_na=False)
    assert status == 0
    assert scored["id"].tolist() == ["1", "2", "3", "4"]
    assert scored["error"].tolist() == ["", "text is empty", "", ""]
    assert set(scored.loc[scored.error == "", "predicted_label"]) <= {"negative", "neutral", "positive"}
    assert scored.loc[1, "predicted_label"] == ""
    # The input's own labels survive next to the model's verdict.
    assert scored["label"].tolist() == ["positive", "neutral", "negative", "neutral"]
    assert (scored["model"] == "tiny@3").all()
    row = scored.loc[0]
    assert row[f"score_{row.predicted_label}"] == pytest.approx(row.predicted_score)


def test_predict_settings_come_from_the_environment(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTISTREAM_MODEL", str(bundle_dir))
    monkeypatch.setenv("SENTISTREAM_BACKEND", "onnx")
    monkeypatch.setenv("SENTISTREAM_DEVICE", "cpu")
    assert main(["predict", "great"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in {"negative", "neutral", "positive"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict"], "give texts to score"),
        (["predict", "--input", "missing.csv"], "no such file"),
        (["predict", "--backend", "tensorflow", "hi"], "--backend"),
        (["predict", "--model", "/no/such dir", "hi"], "no such directory"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    argv: list[str], message: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sentistream predict: error:") and message in err


def test_missing_text_column_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.csv"
    source.write_text("review\nnice\n", encoding="utf-8")
    assert main(["predict", "--backend", "vader", "--input", str(source)]) == 2
    assert "no column 'text'" in capsys.readouterr().err
