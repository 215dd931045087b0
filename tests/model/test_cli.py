"""`sentistream predict` end to end through the real dispatcher."""

from __future__ import annotations

import io
import json
import subprocess
import sys
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


# ---- first contact: every mistake is one line and exit 2, before any work (issue #25) -------------


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console command in a fresh interpreter, as a user runs it (a traceback would show here)."""
    return subprocess.run(
        [sys.executable, "-m", "sentistream", *argv], cwd=cwd, capture_output=True, text=True, timeout=240
    )


@pytest.fixture
def ok_csv(tmp_path: Path) -> Path:
    source = tmp_path / "ok.csv"
    source.write_text("text\ngreat\nawful\n", encoding="utf-8")
    return source


@pytest.mark.parametrize(
    ("argv", "command", "says"),
    [
        (["predict", "--backend", "vader", "--input", "{tmp}"], "predict", "is a folder; pass one file"),
        (
            ["predict", "--backend", "vader", "--input", "{ok}", "--output", "{tmp}/missing/x.csv"],
            "predict",
            "missing does not exist; create it",
        ),
        (
            ["predict", "--backend", "vader", "--input", "{ok}", "--output", "{tmp}"],
            "predict",
            "is a folder; give a file name",
        ),
        (["evaluate", "--data", "{tmp}/missing.csv"], "evaluate", "dataset not found"),
    ],
)
def test_a_mistake_exits_2_with_one_line_and_no_traceback(argv, command, says, tmp_path, ok_csv):
    result = run_cli(*(a.format(tmp=tmp_path, ok=ok_csv) for a in argv), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # nothing scored first: no progress bar, no traceback
    assert lines[0].startswith(f"sentistream {command}: error:") and says in lines[0], lines[0]
    assert "needs a model" not in lines[0]


def test_a_bad_output_is_refused_before_the_model_loads(tmp_path, ok_csv, monkeypatch, capsys):
    from model.settings import ModelSettings

    monkeypatch.setattr(ModelSettings, "load_engine", lambda self: pytest.fail("loaded the model first"))
    assert main(["predict", "--input", str(ok_csv), "--output", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("data.jsonl", '{"text": "great", "id": 1}\n{"text": "awful", "id": 2}\n'),
        ("data.tsv", "id\ttext\n1\tgreat\n2\tawful\n"),
    ],
)
def test_predict_input_reads_what_train_reads(name, content, tmp_path, capsys):
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["predict", "--backend", "vader", "--input", str(source), "--output", str(out)]) == 0
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert scored["text"].tolist() == ["great", "awful"]
    assert scored["predicted_label"].tolist() == ["positive", "negative"]
    assert scored["id"].tolist() == ["1", "2"]


def test_predict_input_reports_malformed_rows_instead_of_failing(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,great\n2,too,many,fields\n3,awful\n", encoding="utf-8")
    assert main(["predict", "--backend", "vader", "--input", str(source)]) == 0
    out, err = capsys.readouterr()
    assert len(pd.read_csv(io.StringIO(out))) == 2
    assert "skipped 1 malformed rows" in err and "lines 3" in err


def test_predict_json_prints_one_object_per_text(capsys):
    assert main(["predict", "--backend", "vader", "--json", "great", "   "]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["great", "   "]
    assert records[0]["label"] == "positive" and set(records[0]["scores"]) == {
        "negative",
        "neutral",
        "positive",
    }
    assert records[1]["label"] is None and records[1]["error"] == "text is only whitespace"
    assert records[0]["model"].startswith("vader")


def test_predict_json_with_input_writes_json_lines(tmp_path, ok_csv, capsys):
    assert main(["predict", "--backend", "vader", "--input", str(ok_csv), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["predicted_label"]) for r in records] == [
        ("great", "positive"),
        ("awful", "negative"),
    ]


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u3164 \u2800", "<br /><p></p>"])
def test_predict_refuses_what_the_stream_dead_letters(text, capsys):
    """Invisible-only and markup-only texts: an error with the stream's own reason, not a label."""
    from stream.decode import Source, decode_tweet

    letter = decode_tweet(json.dumps({"text": text}).encode(), Source("tweets", 0, 0, None))
    assert letter.stage == "validate"
    assert main(["predict", "--backend", "vader", text, "fine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    label, reason, _ = lines[0].split("\t")
    assert label == "error" and reason in letter.error
    assert lines[1].split("\t")[0] in {"positive", "neutral", "negative"}


def test_evaluate_without_a_model_scores_with_vader_as_its_help_says(tmp_path, monkeypatch, capsys):
    source = tmp_path / "labelled.csv"
    rows = ["great, I love it,positive", "awful and terrible,negative", "the bus comes at nine,neutral"] * 4
    source.write_text(
        "text,label\n" + "\n".join(f'"{r.rsplit(",", 1)[0]}",{r.rsplit(",", 1)[1]}' for r in rows) + "\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTISTREAM_MODEL", raising=False)
    assert main(["evaluate", "--data", str(source)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert (tmp_path / "eval-vader-labelled" / "report.md").is_file()
