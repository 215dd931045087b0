"""The recipe's options: mean pooling (train -> export -> every engine), class weights, layer-wise lr."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.training.test_train import LABELS, quick_settings


@pytest.fixture(scope="module")
def mean_bundle(task, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained with every recipe option on: mean pooling, class weights, layer-wise decay."""
    from training.train import train

    data, base = task
    out = tmp_path_factory.mktemp("mean") / "bundle"
    return train(
        quick_settings(
            data, base, out, epochs=2, pooling="mean", class_weights="balanced", layer_lr_decay=0.8
        )
    )


@pytest.mark.slow  # the module's real training run (mean_bundle)
def test_mean_pooling_bundle_learns_and_saves_its_head(mean_bundle: Path) -> None:
    config = json.loads((mean_bundle / "config.json").read_text())
    meta = json.loads((mean_bundle / "sentistream.json").read_text())
    assert config["model_type"] == "sentistream-mean-pooling"
    assert config["encoder"]["model_type"] == "distilbert"
    # Two epochs of a mean over 32 tokens, most of them filler: well above chance (1/3), not yet perfect.
    assert meta["metrics"]["test"]["accuracy"] >= 0.6


@pytest.mark.slow  # the module's real training run (mean_bundle)
def test_mean_pooling_bundle_scores_alike_in_every_engine(mean_bundle: Path) -> None:
    from model.engines import load_engine

    predictions = pd.read_csv(mean_bundle / "report" / "predictions.csv")
    trained = predictions[[f"p_{label}" for label in LABELS]].to_numpy()
    for backend, int8, atol in (("torch", None, 1e-4), ("onnx", False, 1e-4), ("onnx", True, 0.2)):
        engine = load_engine(mean_bundle, backend=backend, device="cpu", int8=int8)
        scored = engine.predict(predictions["text"].tolist())
        engine.close()
        probs = np.array([[p.scores[label] for label in LABELS] for p in scored])
        np.testing.assert_allclose(probs, trained, atol=atol, err_msg=f"{backend} int8={int8}")
        agreement = np.mean([p.label for p in scored] == predictions["predicted"].to_numpy())
        assert agreement >= (1.0 if not int8 else 0.95), (backend, int8)


@pytest.mark.slow  # the module's real training run (mean_bundle)
def test_mean_pooling_averages_the_real_tokens_only(mean_bundle: Path) -> None:
    """Logits equal the head applied to the masked mean of the encoder's vectors: padding changes nothing."""
    import torch

    from model.bundle import load_bundle

    bundle = load_bundle(mean_bundle)
    model, tokenizer = bundle.load_torch_model(), bundle.load_tokenizer()
    alone = tokenizer(["great day"], return_tensors="pt")
    padded = tokenizer(["great day", "a much longer text about the old red train today"], padding=True,
                       return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        hidden = model.encoder(**alone).last_hidden_state
        expected = model.classifier(hidden.mean(dim=1))
        np.testing.assert_allclose(model(**alone).logits, expected, atol=1e-5)
        np.testing.assert_allclose(model(**padded).logits[:1], expected, atol=1e-5)


@pytest.mark.slow  # the module's real training run (mean_bundle)
def test_report_states_time_memory_size_and_training_accuracy(mean_bundle: Path) -> None:
    markdown = (mean_bundle / "report" / "report.md").read_text()
    resources = json.loads((mean_bundle / "sentistream.json").read_text())["metrics"]["resources"]
    assert resources["train_seconds"] > 0 and resources["peak_rss_mib"] > 0 and resources["parameters"] > 0
    assert f"{resources['parameters'] / 1e6:.1f} M parameters" in markdown
    assert "- training time: " in markdown and "- peak memory: " in markdown
    history = json.loads((mean_bundle / "report" / "metrics.json").read_text())["context"]
    assert "leakage" in history["extra"]
    curves = [h for h in trainer_history(mean_bundle) if "train_accuracy" in h]
    evaluations = [h for h in trainer_history(mean_bundle) if "eval_accuracy" in h]
    assert len(curves) == len(evaluations) == 2  # one training-sample score per evaluation (epoch)
    assert all(0.0 <= h["train_accuracy"] <= 1.0 and "train_macro_recall" in h for h in curves)


def trainer_history(bundle: Path) -> list[dict]:
    """The log history the report's curves were drawn from (kept in the bundle's report)."""
    return json.loads((bundle / "report" / "history.json").read_text())


def tiny_model(task) -> tuple:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, base = task
    return AutoModelForSequenceClassification.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(
        base
    )


def test_balanced_class_weights_are_inverse_class_frequency() -> None:
    from training.recipe import balanced_class_weights

    weights = balanced_class_weights([0, 0, 0, 1, 0, 1], 3)
    np.testing.assert_allclose(weights.numpy(), [6 / (3 * 4), 6 / (3 * 2), 6 / (3 * 1)])


def test_the_trainer_minimises_the_class_weighted_loss(task, tmp_path: Path) -> None:
    import torch
    from transformers import TrainingArguments

    from training.recipe import RecipeTrainer

    model, tokenizer = tiny_model(task)
    weights = torch.tensor([0.5, 1.0, 4.0])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = RecipeTrainer(model=model, args=args, class_weights=weights)
    batch = dict(tokenizer(["great day", "the meeting", "awful film"], padding=True, return_tensors="pt"))
    labels = torch.tensor([2, 1, 0])
    with torch.no_grad():
        loss = trainer.compute_loss(model, {**batch, "labels": labels})
        logits = model(**batch).logits
    weighted = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(weighted.item(), rel=1e-5)
    assert abs(loss.item() - plain.item()) > 1e-4


def test_layer_wise_decay_gives_lower_layers_smaller_steps(task) -> None:
    from training.recipe import layerwise_param_groups

    model, _ = tiny_model(task)
    groups = layerwise_param_groups(model, lr=1e-3, decay=0.5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert sorted(lr_of) == sorted(id(p) for p in model.parameters())  # every weight, exactly once
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert lr_of[id(named["classifier.weight"])] == 1e-3
    assert lr_of[id(named["distilbert.transformer.layer.1.attention.q_lin.weight"])] == 1e-3
    assert lr_of[id(named["distilbert.transformer.layer.0.attention.q_lin.weight"])] == 5e-4
    assert lr_of[id(named["distilbert.embeddings.word_embeddings.weight"])] == 2.5e-4
    assert decay_of[id(named["distilbert.transformer.layer.0.attention.q_lin.bias"])] == 0.0
    assert decay_of[id(named["distilbert.transformer.layer.0.attention.q_lin.weight"])] == 0.01


def test_build_trainer_wires_class_weights_and_layer_decay(task, tmp_path: Path) -> None:
    from training.train import EncodedTexts, Phase, build_trainer

    model, tokenizer = tiny_model(task)
    data, base = task
    settings = quick_settings(data, base, tmp_path, class_weights="balanced", layer_lr_decay=0.5, lr=1e-3)
    rows = EncodedTexts({"input_ids": [[2, 3]] * 4, "attention_mask": [[1, 1]] * 4}, [0, 0, 0, 2])
    encoded = {"train": rows, "validation": rows, "test": rows}
    trainer = build_trainer(
        model, tokenizer, encoded, settings, tmp_path, Phase("finetune", 1, 1e-3, None), LABELS
    )
    np.testing.assert_allclose(trainer.class_weights.numpy(), [4 / 9, 4 / 3, 4 / 3])  # missing class: as if 1
    assert sorted({g["lr"] for g in trainer.create_optimizer().param_groups}) == [2.5e-4, 5e-4, 1e-3]
