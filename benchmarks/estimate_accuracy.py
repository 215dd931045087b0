"""How far accuracy estimated without labels is from the measured one (issue #27).

Runs `sentistream evaluate` with one bundle on labelled sets (a stratified sample of each) and puts
side by side: measured accuracy and macro-recall, the same estimated from the probabilities alone
(`estimated_accuracy` / `estimated_macro_recall` in metrics.json: under shift for bundles with the fit
for it, `model.calibration`), CBPE alone beside it, the ECE, and for a calibrated bundle the
uncalibrated ECE and estimate (softmax(T x log p) undoes the temperature exactly).
Writes `benchmarks/results/estimate_accuracy.json` and `.md`. The data is passed by path and never
committed. Run:

    .venv/bin/python benchmarks/estimate_accuracy.py --model models/latest --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
# name -> (file under --data-dir, what it is)
SETS = {
    "tweets3-validation": ("tweets3/validation.csv", "TweetEval validation tweets, 3 classes (in domain)"),
    "sst2-validation": ("sst2/validation.csv", "SST-2 dev movie-review sentences, 2 classes (other domain)"),
    "imdb-train": ("imdb/train.csv", "IMDb reviews, 2 classes (other domain, long texts)"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the bundle to evaluate")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--limit", type=int, default=2000, help="rows per set (stratified sample)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--output", type=Path, default=Path("/tmp/estimate_accuracy"), help="reports go here")
    parser.add_argument("--note", default="", help="which model, trained on what (for the table)")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="NAME=FILE", help="another labelled set (repeatable)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep reports already under --output")
    parser.add_argument("--results", default="estimate_accuracy", help="file name under benchmarks/results")
    return parser.parse_args()


def evaluate(args: argparse.Namespace, name: str, data: Path) -> dict:
    """One `sentistream evaluate` run; its metrics.json's numbers, and the uncalibrated estimate."""
    out = args.output / name
    command = [
        str(Path(sys.executable).parent / "sentistream"), "evaluate", "--model", str(args.model),
        "--data", str(data), "--limit", str(args.limit), "--output", str(out),
        "--backend", args.backend, "--device", "cpu",
    ]  # fmt: skip
    started = time.perf_counter()
    if not (args.reuse and (out / "metrics.json").exists()):
        subprocess.run(command, check=True, env=os.environ)
    model = json.loads((out / "metrics.json").read_text())["model"]
    row = {key: model.get(key) for key in KEYS}
    row["uncalibrated_estimated_accuracy"] = uncalibrated_estimate(out / "predictions.csv", model)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


KEYS = (
    "n", "accuracy", "estimated_accuracy", "macro_recall", "estimated_macro_recall", "ece",
    "ece_uncalibrated", "temperatures", "mean_confidence", "estimate_method", "cbpe_accuracy",
    "cbpe_macro_recall", "estimated_shares",
)  # fmt: skip


def uncalibrated_estimate(predictions: Path, model: dict) -> float | None:
    """Mean top probability before the temperatures (what the estimate would be without calibration)."""
    from model.calibration import uncalibrated

    temperatures = model.get("temperatures")
    if temperatures is None:
        return None
    frame = pd.read_csv(predictions)
    probs = frame[[f"p_{label}" for label in model["labels"]]].to_numpy(dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(uncalibrated(probs, [temperatures[label] for label in model["labels"]]).max(axis=1).mean())


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Model: `{args.model}` {args.note}; backend {args.backend}, {results['machine']}.",
        "",
        "| data | rows | accuracy | estimated | \\|diff\\| | CBPE alone | \\|diff\\| | macro-recall | estimated | \\|diff\\| | ECE before | ECE after | estimate without calibration |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["sets"].items():
        uncal = r["uncalibrated_estimated_accuracy"]
        cbpe = r.get("cbpe_accuracy") or r["estimated_accuracy"]
        lines.append(
            f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['estimated_accuracy']:.3f} | "
            f"{_diff(r['estimated_accuracy'], r['accuracy'])} | {cbpe:.3f} | {_diff(cbpe, r['accuracy'])} | "
            f"{r['macro_recall']:.3f} | {r['estimated_macro_recall']:.3f} | "
            f"{_diff(r['estimated_macro_recall'], r['macro_recall'])} | "
            f"{_num(r['ece_uncalibrated'])} | {r['ece']:.3f} | {_num(uncal)} |"
        )
    return "\n".join(lines) + "\n"


def _diff(estimated: float, measured: float) -> str:
    """|estimated - measured|, bold within the issue's 0.03."""
    diff = abs(estimated - measured)
    return f"**{diff:.3f}**" if diff <= 0.03 else f"{diff:.3f}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    args = parse_args()
    results = {
        "model": str(args.model),
        "note": args.note,
        "limit": args.limit,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.python_version()}",
        "calibration": json.loads((args.model / "sentistream.json").read_text()).get("calibration"),
        "sets": {name: evaluate(args, name, args.data_dir / SETS[name][0]) for name in args.sets},
    }
    for name, path in (extra.split("=", 1) for extra in args.extra):
        results["sets"][name] = evaluate(args, name, Path(path))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, args)
    (RESULTS / f"{args.results}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
