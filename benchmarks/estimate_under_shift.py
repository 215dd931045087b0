"""Which label-free accuracy estimate holds up under shift (issue #27): the shipped CBPE against ATC,
DoC, BBSE and CBPE after a label-shift (prior) adjustment, every one fitted only on the bundle's own
validation split and measured on sets it never saw.

Steps: re-derive the bundle's train/validation/test splits from its training file (the same
`--max-rows` and `--seed` it was trained with; the test split is checked against the bundle's report),
build tweet sets with a shift from the training-file rows the bundle never used (other class shares,
short tweets, no hashtags or mentions, two labels), score each with `sentistream evaluate` (next to
tweets3 validation, SST-2 validation and an IMDb sample), then put every estimate beside the measured
accuracy and macro-recall. Writes `benchmarks/results/estimate_under_shift.json` and `.md`. The data
is passed by path and never committed. Run:

    .venv/bin/python benchmarks/estimate_under_shift.py --model BUNDLE --data-dir ../shared/data \
        --max-rows 6000 --seed 42

Estimators (p: the served, calibrated probabilities; a row's prediction is always its arg-max of p):
- cbpe: what ships (`model.calibration.estimate`): mean top probability, expected confusion matrix.
- atc-mc / atc-ne (Garg et al., 2022): threshold t on the validation split so that the share of rows
  scoring above t equals its accuracy; the estimate is the share of new rows above t. Score: top
  probability (mc) or negative entropy (ne). Macro-recall from the same expected confusion matrix
  with each row right (1) or wrong (0) by the threshold, wrong rows spread by p over the other labels.
- doc (Guillory et al., 2021): validation accuracy + (mean top probability here - there). Accuracy only.
- bbse (Lipton et al., 2018, soft confusion): assumes pure label shift; class shares solved from the
  mean probability vector, accuracy = sum of share x validation recall; macro-recall stays validation's.
- em-cbpe (Saerens et al., 2002): class shares by EM on p, p re-weighted by new share / validation
  share, then CBPE on the re-weighted p.
- bcts-em (Alexandari et al., 2020): like em-cbpe, on probabilities re-calibrated for the estimate only
  (one T and a bias per label fitted by NLL on the validation logits), so the shares EM starts from match.
- shrunk-em, what `evaluate` and the stream report since it was measured here: bcts-em with every EM
  step pulled towards the validation shares (`model.calibration.SHARE_SHRINK`), because pure EM reads a
  change of wording as a change of shares (on tweets from another source it drove a class to 0%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
OTHER_SETS = {  # name -> file under --data-dir (labelled; sampled to --limit rows)
    "tweets3-validation": "tweets3/validation.csv",
    "sst2-validation": "sst2/validation.csv",
    "imdb-train": "imdb/train.csv",
}
# class shares of the sets the acceptance uses, copied from their public descriptions
AIRLINE_SHARES = {"negative": 0.63, "neutral": 0.21, "positive": 0.16}  # Kaggle airline tweets
TWEETEVAL_TEST_SHARES = {"negative": 0.32, "neutral": 0.48, "positive": 0.19}  # TweetEval test


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the bundle (trained on tweets3/train.csv)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--max-rows", type=int, help="the bundle's training --max-rows (when its splits are re-derived)"
    )
    parser.add_argument(
        "--validation",
        type=Path,
        help="the labelled file the bundle was calibrated on (its --validation-data); then the unseen pool "
        "is the bundle's own test split (report/predictions.csv) instead of re-derived splits",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the sets already scored under --output (to re-run estimators)",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="another labelled set to score as is (repeatable), e.g. tweets from another source",
    )
    parser.add_argument("--seed", type=int, default=42, help="the bundle's training --seed")
    parser.add_argument("--limit", type=int, default=2000, help="rows per set")
    parser.add_argument("--output", type=Path, default=Path("/tmp/estimate_under_shift"))
    parser.add_argument("--note", default="", help="which model, trained how (for the table)")
    parser.add_argument(
        "--results", default="estimate_under_shift", help="file name under benchmarks/results"
    )
    return parser.parse_args()


def bundle_splits(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The bundle's splits, re-derived exactly as `train` made them, and the training rows it never used."""
    from training.settings import TrainSettings
    from training.train import load_training_data, prepare_splits

    settings = TrainSettings(
        data=[args.data_dir / "tweets3/train.csv"], max_rows=args.max_rows, seed=args.seed, epochs=1.0
    )
    data = load_training_data(settings)
    splits = prepare_splits(data, settings)
    reported = pd.read_csv(args.model / "report/predictions.csv")["text"]
    if sorted(reported) != sorted(splits["test"]["text"]):
        raise SystemExit("the re-derived test split is not the bundle's: check --max-rows and --seed")
    used = set(pd.concat(splits.values())["text"])
    return splits, data.frame[~data.frame["text"].isin(used)]


def shifted_sets(unseen: pd.DataFrame, n: int) -> dict[str, pd.DataFrame]:
    """Tweet sets the estimators were not fitted on, each with one kind of shift or two (fixed seeds;
    the sets with two take n/2 rows: the short tweets have too few negatives for more)."""
    words = unseen["text"].str.split().str.len()
    short, long = unseen[words <= words.quantile(0.2)], unseen[words >= words.quantile(0.8)]
    no_tags = unseen[~unseen["text"].str.contains("#|@user", regex=True)]
    return {
        "t-random": take(unseen, n, seed=1),
        "t-airline-shares": with_shares(unseen, AIRLINE_SHARES, n, seed=2),
        "t-tweeteval-test-shares": with_shares(unseen, TWEETEVAL_TEST_SHARES, n, seed=3),
        "t-two-labels": take(unseen[unseen["label"] != "neutral"], n, seed=4),
        "t-short": take(short, n, seed=5),
        "t-no-tags": take(no_tags, n, seed=6),
        "t-short+airline-shares": with_shares(short, AIRLINE_SHARES, n // 2, seed=8),
        "t-no-tags+airline-shares": with_shares(no_tags, AIRLINE_SHARES, n // 2, seed=9),
        "t-long+tweeteval-test-shares": with_shares(long, TWEETEVAL_TEST_SHARES, n // 2, seed=10),
    }


def take(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A random `n` rows, or all of them where there are fewer."""
    return frame.sample(min(n, len(frame)), random_state=seed)


def with_shares(frame: pd.DataFrame, shares: dict[str, float], n: int, seed: int) -> pd.DataFrame:
    """`n` rows in `shares`, or fewer where a label has too few rows for `n`."""
    counts = frame["label"].value_counts()
    n = min(n, *(int(counts.get(label, 0) / s) for label, s in shares.items()))
    parts = [
        frame[frame["label"] == label].sample(round(n * s), random_state=seed) for label, s in shares.items()
    ]
    return pd.concat(parts).sample(frac=1, random_state=seed)


def score_set(args: argparse.Namespace, name: str, data: Path) -> Path:
    """`sentistream evaluate` on one labelled file; the report folder."""
    out = args.output / "eval" / name
    if args.reuse and (out / "predictions.csv").exists():
        return out
    command = [
        str(Path(sys.executable).parent / "sentistream"), "evaluate", "--model", str(args.model),
        "--data", str(data), "--limit", str(args.limit), "--output", str(out), "--backend", "torch",
        "--device", "cpu",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=os.environ)
    return out


@dataclass
class Rows:
    """A scored set: the served probabilities over all the model's labels, and the set's labels."""

    probs: np.ndarray  # (rows, model labels), as served
    truth: np.ndarray  # index into `labels`
    labels: list[str]  # the labels the set uses (the evaluation picks among them)
    model_labels: list[str]

    @property
    def view(self) -> np.ndarray:
        """The probabilities the evaluation sees: the set's labels, renormalised."""
        return _view(self.probs, self.model_labels, self.labels)

    def measured(self) -> tuple[float, float]:
        predicted = self.view.argmax(axis=1)
        recalls = [
            np.mean(predicted[self.truth == j] == j)
            for j in range(len(self.labels))
            if (self.truth == j).any()
        ]
        return float(np.mean(predicted == self.truth)), float(np.mean(recalls))


def _view(probs: np.ndarray, model_labels: list[str], labels: list[str]) -> np.ndarray:
    p = probs[:, [model_labels.index(label) for label in labels]]
    return p / p.sum(axis=1, keepdims=True)


def read_scored(report: Path, model_labels: list[str]) -> Rows:
    """predictions.csv back to full served probabilities: on a two-label set the left-out label's
    probability is 1 minus the two written (the file keeps them as served, not renormalised)."""
    frame = pd.read_csv(report / "predictions.csv")
    labels = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
    probs = np.zeros((len(frame), len(model_labels)))
    for label in labels:
        probs[:, model_labels.index(label)] = frame[f"p_{label}"]
    missing = [model_labels.index(label) for label in model_labels if label not in labels]
    if len(missing) == 1:
        probs[:, missing[0]] = np.clip(1 - probs.sum(axis=1), 0, 1)
    truth = np.array([labels.index(label) for label in frame["label"]])
    return Rows(probs, truth, labels, model_labels)


@dataclass
class Fit:
    """What the estimators learn from the validation split (served probabilities and logits)."""

    validation: Rows
    temperatures: list[float]
    bcts: tuple[float, np.ndarray]  # (T, bias per label) for the estimate-only re-calibration

    def on(self, labels: list[str]) -> Rows:
        """The validation rows whose true label the set uses (for a two-label set)."""
        v = self.validation
        keep = np.isin([v.labels[t] for t in v.truth], labels)
        truth = np.array([labels.index(v.labels[t]) for t in v.truth[keep]])
        return Rows(v.probs[keep], truth, labels, v.model_labels)


def fit(validation: Rows, temperatures: list[float]) -> Fit:
    from model.calibration import fit_label_shift

    return Fit(
        validation,
        temperatures,
        fit_label_shift(served_logits(validation.probs, temperatures), validation.truth),
    )


def served_logits(probs: np.ndarray, temperatures: list[float]) -> np.ndarray:
    """Logits up to a constant per row (`model.calibration.uncalibrated` undoes the temperatures)."""
    from model.calibration import uncalibrated

    return np.log(np.clip(uncalibrated(probs, temperatures), 1e-300, None))


def bcts_probs(logits: np.ndarray, temperature: float, bias: np.ndarray) -> np.ndarray:
    from model.calibration import softmax

    return softmax(logits / temperature + bias)


# --- the estimators: (fit, rows) -> (estimated accuracy, estimated macro-recall or None) ---


def cbpe(f: Fit, rows: Rows) -> tuple[float, float | None]:
    from model.calibration import estimate

    e = estimate(rows.view, rows.labels)
    return e.accuracy, e.macro_recall  # type: ignore[return-value]


def expected_confusion(p: np.ndarray, right: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-recall when a row predicted k is right with probability `right` and its
    wrong share goes to the other labels in proportion to p."""
    n, m = p.shape
    top = p[np.arange(n), predicted]
    share = p / np.maximum(1 - top, 1e-12)[:, None] * (1 - right)[:, None]
    share[np.arange(n), predicted] = right
    correct = np.array([right[predicted == k].sum() for k in range(m)])
    support = share.sum(axis=0)
    return float(correct.sum() / n), float(
        np.mean([correct[k] / support[k] for k in range(m) if support[k] > 0])
    )


def atc(score: Callable[[np.ndarray], np.ndarray]) -> Callable[[Fit, Rows], tuple[float, float | None]]:
    def estimator(f: Fit, rows: Rows) -> tuple[float, float | None]:
        v = f.on(rows.labels)
        accuracy = v.measured()[0]
        threshold = np.quantile(score(v.view), 1 - accuracy)  # share above it == validation accuracy
        right = (score(rows.view) > threshold).astype(float)
        return expected_confusion(rows.view, right, rows.view.argmax(axis=1))

    return estimator


def top_probability(p: np.ndarray) -> np.ndarray:
    return p.max(axis=1)


def negative_entropy(p: np.ndarray) -> np.ndarray:
    return (p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def doc(f: Fit, rows: Rows) -> tuple[float, float | None]:
    v = f.on(rows.labels)
    return v.measured()[0] + rows.view.max(axis=1).mean() - v.view.max(axis=1).mean(), None


def bbse(f: Fit, rows: Rows) -> tuple[float, float | None]:
    from scipy.optimize import nnls

    v = f.on(rows.labels)
    m, predicted = len(rows.labels), v.view.argmax(axis=1)
    recall = np.array([np.mean(predicted[v.truth == j] == j) for j in range(m)])
    mean_probs = np.array([v.view[v.truth == j].mean(axis=0) for j in range(m)])  # row j: E[p | y = j]
    # mean p here = shares @ mean_probs; the heavy last row holds the shares to a sum of 1
    shares, _ = nnls(np.vstack([mean_probs.T, np.full(m, 10.0)]), np.append(rows.view.mean(axis=0), 10.0))
    return float(shares / shares.sum() @ recall), float(recall.mean())


def prior_adjusted(p: np.ndarray, prior: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    """Saerens' EM (`shrink` 0) or the shipped shrunk EM: p re-weighted to the class shares found."""
    from model.calibration import adapt_shares

    return adapt_shares(p, prior, shrink=shrink)[1]


def cbpe_on(q: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    n, m = q.shape
    correct = np.array([q[predicted == k, k].sum() for k in range(m)])
    return float(correct.sum() / n), float(np.mean(correct / q.sum(axis=0)))


def em_cbpe(f: Fit, rows: Rows) -> tuple[float, float | None]:
    v = f.on(rows.labels)
    prior = np.bincount(v.truth, minlength=len(rows.labels)) / len(v.truth)
    return cbpe_on(prior_adjusted(rows.view, prior), rows.view.argmax(axis=1))


def bcts_em(f: Fit, rows: Rows, shrink: float = 0.0) -> tuple[float, float | None]:
    def recalibrated(r: Rows) -> np.ndarray:
        q = bcts_probs(served_logits(r.probs, f.temperatures), *f.bcts)
        return _view(q, r.model_labels, r.labels)

    prior = recalibrated(f.on(rows.labels)).mean(axis=0)  # == the validation shares at the NLL optimum
    return cbpe_on(prior_adjusted(recalibrated(rows), prior, shrink), rows.view.argmax(axis=1))


def shipped(f: Fit, rows: Rows) -> tuple[float, float | None]:
    """What `evaluate` and the stream report (`model.calibration.estimate_under_shift`): bcts-em with
    each EM step pulled towards the validation shares."""
    from model.calibration import SHARE_SHRINK

    return bcts_em(f, rows, SHARE_SHRINK)


ESTIMATORS = {
    "cbpe": cbpe, "atc-mc": atc(top_probability), "atc-ne": atc(negative_entropy), "doc": doc,
    "bbse": bbse, "em-cbpe": em_cbpe, "bcts-em": bcts_em, "shrunk-em": shipped,
}  # fmt: skip


def compare(f: Fit, name: str, rows: Rows) -> dict:
    accuracy, macro_recall = rows.measured()
    row = {"set": name, "n": len(rows.truth), "accuracy": accuracy, "macro_recall": macro_recall}
    for method, estimator in ESTIMATORS.items():
        est_accuracy, est_recall = estimator(f, rows)
        row[method] = {
            "accuracy": float(est_accuracy), "macro_recall": est_recall,
            "accuracy_diff": abs(float(est_accuracy) - accuracy),
            "macro_recall_diff": None if est_recall is None else abs(est_recall - macro_recall),
        }  # fmt: skip
    return row


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Model: `{args.model}` {args.note}; {results['machine']}.", ""]
    for what in ("accuracy", "macro_recall"):
        lines += [
            f"\\|estimated - measured\\| {what.replace('_', '-')} (bold: within 0.03):",
            "",
            f"| set | rows | measured | {' | '.join(ESTIMATORS)} |",
            f"| --- | ---: | ---: | {' | '.join('---:' for _ in ESTIMATORS)} |",
        ]
        for r in results["sets"]:
            cells = [_cell(r[m][f"{what}_diff"]) for m in ESTIMATORS]
            lines.append(f"| {r['set']} | {r['n']} | {r[what]:.3f} | {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def _cell(diff: float | None) -> str:
    if diff is None:
        return "n/a"
    return f"**{diff:.3f}**" if diff <= 0.03 else f"{diff:.3f}"


def main() -> None:
    args = parse_args()
    meta = json.loads((args.model / "sentistream.json").read_text())
    model_labels, calibration = meta["labels"], meta["calibration"]
    temperatures = [
        calibration.get("temperatures", {}).get(label, calibration["temperature"]) for label in model_labels
    ]
    if args.validation:
        validation = pd.read_csv(args.validation)
        unseen = pd.read_csv(args.model / "report/predictions.csv")[["text", "label"]]
    else:
        splits, unseen = bundle_splits(args)
        validation = splits["validation"]
    files = {"bundle-validation": validation} | shifted_sets(unseen, args.limit)
    (args.output / "sets").mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, frame in files.items():
        frame[["text", "label"]].to_csv(args.output / "sets" / f"{name}.csv", index=False)
        reports[name] = score_set(args, name, args.output / "sets" / f"{name}.csv")
    reports |= {name: score_set(args, name, args.data_dir / path) for name, path in OTHER_SETS.items()}
    for name, path in (extra.split("=", 1) for extra in args.extra):
        reports[name] = score_set(args, name, Path(path))
    scored = {name: read_scored(report, model_labels) for name, report in reports.items()}
    f = fit(scored["bundle-validation"], temperatures)
    results = {
        "model": str(args.model), "note": args.note, "limit": args.limit, "fitted_on": "bundle-validation",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.python_version()}",
        "temperatures": dict(zip(model_labels, temperatures, strict=True)),
        "bcts": {"temperature": f.bcts[0], "bias": f.bcts[1].tolist()},
        "sets": [compare(f, name, rows) for name, rows in scored.items()],
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, args)
    (RESULTS / f"{args.results}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
