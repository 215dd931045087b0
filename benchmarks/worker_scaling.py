"""How a worker's throughput scales with `sentistream worker --processes N`, N = 1 .. the cores.

For each N, on a local broker: start `sentistream worker --processes N` (one consumer group, the
input topic with max(4, N) partitions), wait until every process serves /health (all have joined
the group), then produce a backlog and measure the events/s of the scored events stamped after
that moment (broker timestamps) and the CPU time of the whole process family per event. Default
model: VADER (pure Python, so one process is bound to one core); `--model DIR` adds a bundle,
`--device cuda` runs it on a GPU (that machine needs a broker too).

    .venv/bin/python benchmarks/worker_scaling.py [--model DIR] [--device cpu|cuda] [--max-processes N]

Writes benchmarks/results/worker_scaling.json and worker_scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from infra.broker import BrokerSettings, LocalBroker, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.stream_throughput import DEFAULT_TEXTS, load_texts, messages
from tests.stream.worker_process import Topics, WorkerProcess, create_topics, produce, read_topic

RESULTS = Path(__file__).resolve().parent / "results"


def family_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    parent = psutil.Process(pid)
    total = 0.0
    for p in [parent, *parent.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_once(url: str, texts: list[str], flags: list[str], n: int, log_dir: Path) -> dict:
    topics = Topics()
    create_topics(url, [topics.tweets], max(4, n))
    worker = WorkerProcess(url, topics, log_dir, *flags, "--processes", str(n), name=f"p{n}").start()
    try:
        worker.wait_ready(180)  # every process serves /health
        time.sleep(2)  # the group's last rebalance settles
        began_ms, cpu_before = time.time() * 1000, family_cpu_s(worker.process.pid)
        produce(url, topics.tweets, messages(texts, "s"))
        records = read_topic(url, topics.scored, len(texts), timeout=900, idle_s=2)
        cpu_s = family_cpu_s(worker.process.pid) - cpu_before
    finally:
        worker.stop()
    stamps = sorted(r.timestamp for r in records if r.timestamp >= began_ms)
    seconds = max((stamps[-1] - stamps[0]) / 1000.0, 1e-9)
    return {
        "processes": n,
        "events": len(records),
        "events_per_s": round((len(stamps) - 1) / seconds, 1),
        "cpu_us_per_event": round(cpu_s * 1e6 / max(len(records), 1)),
        "load_average": round(os.getloadavg()[0], 2),
    }


def scale(url: str, texts: list[str], flags: list[str], most: int, log_dir: Path, label: str) -> list[dict]:
    rows = []
    for n in range(1, most + 1):
        row = run_once(url, texts, flags, n, log_dir)
        row["speedup"] = round(row["events_per_s"] / rows[0]["events_per_s"], 2) if rows else 1.0
        print(label, row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="CSV with a text column")
    parser.add_argument("--n", type=int, default=20_000, help="backlog per run with VADER")
    parser.add_argument("--model", help="also scale this bundle (its backend picked by auto)")
    parser.add_argument("--model-n", type=int, default=4_000, help="backlog per run with --model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where --model runs")
    cores = psutil.cpu_count(logical=False) or 1
    parser.add_argument("--max-processes", type=int, default=cores, help=f"largest N (default {cores})")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: dict = {
        "machine": f"{psutil.cpu_count(logical=False)} physical cores ({os.cpu_count()} logical), "
        f"{platform.machine()}, device {args.device}",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", heap="1g"))
        broker.start()
        try:
            vader = ["--backend", "vader"]
            results["runs"]["vader"] = scale(
                broker.url, load_texts(args.texts, args.n), vader, args.max_processes, Path(tmp), "vader"
            )
            if args.model:
                flags = ["--model", args.model, "--backend", "auto", "--device", args.device]
                name = Path(args.model).name
                texts = load_texts(args.texts, args.model_n)
                results["runs"][name] = scale(broker.url, texts, flags, args.max_processes, Path(tmp), name)
        finally:
            broker.stop()
    write(results)


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"Machine: {results['machine']}; {results['measured_at']}", ""]
    lines += [
        "| model | processes | events/s | speedup | CPU µs/event | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, rows in results["runs"].items():
        lines += [
            f"| {model} | {r['processes']} | {r['events_per_s']:,.0f} | {r['speedup']:.2f}x | "
            f"{r['cpu_us_per_event']:,} | {r['load_average']} |"
            for r in rows
        ]
    table = "\n".join(lines) + "\n"
    (RESULTS / "worker_scaling.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
