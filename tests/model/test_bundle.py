"""The bundle: round trip, plain HF directories, Hub ids offline, and load-time failures naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.bundle import META_FILE, ONNX_FILE, ONNX_INT8_FILE, BundleMeta, load_bundle, write_bundle_meta
from model.cleaning import CleaningOptions
from sentistream.errors import SentistreamError, UsageError


def test_round_trip_restores_meta_and_model(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.path == bundle_dir
    assert bundle.ref == "tiny@3"
    assert bundle.labels == ["negative", "neutral", "positive"]
    assert bundle.meta.max_length == 64
    assert bundle.meta.cleaning == CleaningOptions(max_chars=300)
    assert bundle.onnx_path(int8=False) == bundle_dir / ONNX_FILE
    assert bundle.onnx_path(int8=True) == bundle_dir / ONNX_INT8_FILE
    model = bundle.load_torch_model()
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert bundle.load_tokenizer()("hello")["input_ids"][0] == bundle.load_tokenizer().cls_token_id


def test_plain_hf_directory_takes_labels_from_id2label(tiny_model_dir: Path) -> None:
    bundle = load_bundle(str(tiny_model_dir))
    assert bundle.labels == ["negative", "neutral", "positive"]
    assert bundle.meta.version == "0"
    assert bundle.meta.cleaning == CleaningOptions()
    assert bundle.onnx_path(int8=False) is None


def test_hub_id_fails_with_one_line_saying_to_pass_a_directory() -> None:
    with pytest.raises(UsageError, match="pass a local model directory") as info:
        load_bundle("no-such-org/no-such-model-xyz")
    assert "\n" not in str(info.value)


def test_missing_path_that_is_not_a_hub_id_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        load_bundle(tmp_path / "nope" / "..." / "x y")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_files_fail_at_load_naming_what_is_missing(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    if name == "tokenizer.json":
        (bundle_copy / "vocab.txt").unlink()
    with pytest.raises(UsageError, match=str(bundle_copy)):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", [META_FILE, "config.json", "model.safetensors", ONNX_FILE, ONNX_INT8_FILE])
def test_corrupt_files_fail_at_load_naming_the_file(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).write_bytes(b"\x00garbage{")
    with pytest.raises(UsageError, match=name.replace(".", r"\.")):
        load_bundle(bundle_copy)


def test_meta_with_wrong_types_names_the_field(bundle_copy: Path) -> None:
    data = json.loads((bundle_copy / META_FILE).read_text())
    data["max_length"] = "long"
    (bundle_copy / META_FILE).write_text(json.dumps(data))
    with pytest.raises(UsageError, match="max_length"):
        load_bundle(bundle_copy)


def test_labels_that_do_not_match_the_classifier_fail_at_load(bundle_copy: Path) -> None:
    meta = load_bundle(bundle_copy).meta.model_copy(update={"labels": ["negative", "positive"]})
    write_bundle_meta(bundle_copy, meta)
    with pytest.raises(UsageError, match=rf"{META_FILE}: 2 labels .* 3 outputs"):
        load_bundle(bundle_copy)


def test_head_that_does_not_match_the_config_fails_at_load(bundle_copy: Path, tiny_model_dir: Path) -> None:
    config = json.loads((bundle_copy / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    config["label2id"] = {"a": 0, "b": 1}
    (bundle_copy / "config.json").write_text(json.dumps(config))
    (bundle_copy / META_FILE).unlink()
    with pytest.raises(UsageError, match=r"model\.safetensors: classifier has 3 outputs"):
        load_bundle(bundle_copy)


def test_save_bundle_refuses_labels_of_the_wrong_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    from model.bundle import save_bundle

    bundle = load_bundle(tiny_model_dir)
    meta = BundleMeta(name="x", labels=["a", "b"])
    with pytest.raises(SentistreamError, match="2 labels"):
        save_bundle(bundle.load_torch_model(), bundle.load_tokenizer(), tmp_path / "out", meta)
    assert not (tmp_path / "out").exists()
