"""The offline commands' flags, bad-input exits, the EDA report and the two-phase freezing helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentistream.cli import build_parser, main
from tests.training.synthetic import write_synthetic_csv

REQUIRED_FLAGS = {
    "train": ["--data", "--format", "--text-col", "--label-col", "--base-model", "--epochs", "--batch-size",
              "--lr", "--max-length", "--seed", "--output", "--freeze-base-epochs", "--unfreeze-last",
              "--resume", "--balance", "--drop-label", "--label-map"],
    "evaluate": ["--model", "--data", "--output"],
    "export": ["--model"],
    "eda": ["--data", "--output"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(REQUIRED_FLAGS))
def test_flags_of_the_architecture_table_exist(command: str) -> None:
    subparsers = next(a for a in build_parser(command)._actions if a.dest == "command")
    flags = {flag for action in subparsers.choices[command]._actions for flag in action.option_strings}
    assert set(REQUIRED_FLAGS[command]) <= flags


def test_train_with_a_missing_column_exits_2_naming_the_columns(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text("words,sentiment\nok,positive\n")
    assert main(["train", "--data", str(data), "--text-col", "body", "--output", str(tmp_path / "o")]) == 2
    assert "words, sentiment" in capsys.readouterr().err


def test_train_with_an_unloadable_base_model_says_to_pass_a_directory(tmp_path: Path, capsys) -> None:
    data = write_synthetic_csv(tmp_path / "d.csv", rows=60)
    args = [
        "train",
        "--data",
        str(data),
        "--base-model",
        str(tmp_path / "no-such-model"),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "local model directory" in err and len(err.splitlines()) == 1


def test_train_without_data_is_a_usage_error(capsys) -> None:
    assert main(["train"]) == 2
    assert "--data" in capsys.readouterr().err


def test_resume_without_a_checkpoint_is_a_usage_error(tmp_path: Path, capsys) -> None:
    data = write_synthetic_csv(tmp_path / "d.csv", rows=60)
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "o"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_eda_writes_a_report_with_images(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    data.write_text(
        "text,label\n"
        "i love this wonderful film,positive\n"
        "a wonderful and lovely day,positive\n"
        "awful awful service,negative\n"
        "terrible food and awful staff,negative\n"
        "terrible food and awful staff,negative\n"
        ",negative\n"
    )
    out = tmp_path / "eda"
    assert main(["eda", "--data", str(data), "--output", str(out)]) == 0
    summary = json.loads((out / "eda.json").read_text())
    assert summary["class_balance"] == {"negative": 2, "positive": 2}
    assert summary["rows"]["exact_duplicates"] == 1 and summary["rows"]["empty_text"] == 1
    assert summary["top_tokens"]["negative"][0] == ["awful", 3]
    assert summary["top_tokens"]["positive"][0] == ["wonderful", 2]
    assert summary["words_per_text"]["positive"]["max"] == 5
    for image in ("class_balance.png", "text_length.png", "wordcloud_negative.png", "wordcloud_positive.png"):
        assert (out / image).read_bytes()[:4] == b"\x89PNG"
        assert f"]({image})" in (out / "report.md").read_text()


def test_freezing_finds_distilbert_layers_and_unfreezes_only_the_top(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from training.freezing import encoder_layers, freeze_encoder, trainable_parameters, unfreeze_top_layers

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    total = trainable_parameters(model)
    head_only = freeze_encoder(model)
    assert 0 < head_only < total
    assert all(not p.requires_grad for p in model.base_model.parameters())
    layers = encoder_layers(model)
    assert len(layers) == 2
    top = unfreeze_top_layers(model, 1)
    assert top == head_only + sum(p.numel() for p in layers[1].parameters())
    assert all(not p.requires_grad for p in layers[0].parameters())
    assert unfreeze_top_layers(model, None) == total


def test_freezing_finds_bert_layers_and_its_pooler(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from training.freezing import encoder_layers, freeze_encoder, unfreeze_top_layers

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config)
    assert len(encoder_layers(model)) == 3
    head_only = freeze_encoder(model)
    pooler = sum(p.numel() for p in model.bert.pooler.parameters())
    layer = sum(p.numel() for p in model.bert.encoder.layer[2].parameters())
    assert unfreeze_top_layers(model, 1) == head_only + layer + pooler


def test_eda_suggests_a_max_length_from_token_percentiles(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = ["text,label"] + [f"{' '.join(['great'] * n)},positive" for n in range(1, 101)]
    data = tmp_path / "d.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "eda"
    assert main(["eda", "--data", str(data), "--output", str(out), "--base-model", str(tiny_model_dir)]) == 0
    tokens = json.loads((out / "eda.json").read_text())["tokens_per_text"]
    # n words of one known token each, plus [CLS] and [SEP]: lengths 3..102.
    assert (tokens["p50"], tokens["max"]) == (pytest.approx(52.5), 102)
    assert tokens["p99"] == pytest.approx(101.01)
    assert tokens["suggested_max_length"] == 104  # the multiple of 8 at or above p99
    assert tokens["truncated_share_at_suggested"] == 0.0
    assert "Suggested `--max-length 104`" in (out / "report.md").read_text()
