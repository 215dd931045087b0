"""`--model` that looks like a local path fails at once (exit 2) instead of asking the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import bundle
from model.settings import LATEST_LINK, ModelSettings, looks_like_local_path
from sentistream.cli import main

LOCAL_LOOKING = [
    "models/latest",
    "./x",
    "/abs/sentistream-no-such",
    "~/sentistream-no-such",
    "a/b/c",
    "..\\x",
]


@pytest.fixture
def hub_calls(monkeypatch, tmp_path):
    """Record every attempt to load from the Hub; run from an empty directory."""
    calls: list[str] = []
    monkeypatch.setattr(
        bundle, "_load_hub", lambda ref: calls.append(ref) or pytest.fail(f"asked the Hub for {ref}")
    )
    monkeypatch.chdir(tmp_path)
    return calls


@pytest.mark.parametrize("ref", LOCAL_LOOKING)
@pytest.mark.parametrize("command", ["predict", "worker"])
def test_missing_local_looking_model_exits_2_with_one_line_and_no_hub(ref, command, hub_calls, capsys):
    args = [
        command,
        "--model",
        ref,
        *(["hello"] if command == "predict" else ["--broker", "kafka://127.0.0.1:1"]),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and ref in err and "no such directory" in err and "Hub is not asked" in err
    )
    assert hub_calls == []


def test_plausible_hub_ids_and_existing_directories_are_left_to_the_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for hub_id in ["distilbert-base-uncased", "cardiffnlp/twitter-roberta-base-sentiment-latest"]:
        assert not looks_like_local_path(hub_id)
        assert ModelSettings(model=hub_id).model == hub_id
    (tmp_path / "models" / "latest").mkdir(parents=True)
    assert ModelSettings(model="models/latest").model == "models/latest"
    # A first part that is a local directory makes `org/name` a path: `runs/best` is under ./runs.
    (tmp_path / "runs").mkdir()
    assert looks_like_local_path("runs/best") and not looks_like_local_path("runz/best")


@pytest.mark.parametrize("backend", ["vader", "constant"])
def test_a_missing_model_path_is_ignored_by_backends_that_read_no_model(backend, hub_calls):
    """compose's worker: SENTISTREAM_MODEL=/models/bundle with nothing mounted, SENTISTREAM_BACKEND=vader."""
    assert ModelSettings(model="/models/sentistream-no-such", backend=backend).backend == backend
    with pytest.raises(ValueError, match="no such directory"):
        ModelSettings(model="/models/sentistream-no-such", backend="onnx")


def test_predict_with_vader_and_a_stale_model_path_scores(hub_calls, capsys):
    assert main(["predict", "--backend", "vader", "--model", "/models/sentistream-no-such", "great"]) == 0
    assert "great" in capsys.readouterr().out


def test_a_missing_models_latest_points_at_train_without_output(hub_calls):
    """`models/latest` is the link `train` makes only when --output is unset: advising
    `--output models/latest` would leave the next `train` unable to relink it."""
    from training.train import MODELS_DIR

    assert Path(LATEST_LINK) == MODELS_DIR / "latest"  # the link train makes (training/train.py)
    with pytest.raises(ValueError, match="without --output") as caught:
        ModelSettings(model=LATEST_LINK)
    assert "--output models/latest" not in str(caught.value)
    with pytest.raises(ValueError, match="sentistream train --output models/other"):
        ModelSettings(model="models/other")
