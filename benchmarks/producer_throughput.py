"""Producer throughput and pacing: how fast tweets reach Kafka, and how steady `--rate` is.

Three measurements against one real broker (a fresh `LocalBroker` on a free port unless --broker):
(a) `TweetProducer.send_many` from Python dicts (validate through `Tweet`, serialise, batch, lz4,
acks=all, idempotent) until every message is acknowledged; (b) `replay` of a CSV, unthrottled, the
same path `sentistream replay` takes; (c) `replay --rate R` for D seconds, with the achieved rate
read back from the broker's record timestamps (first to last) and the per-second spread.

    .venv/bin/python benchmarks/producer_throughput.py [--broker kafka://HOST:PORT] [--messages 300000]
        [--rate 1000] [--duration 30]

Writes benchmarks/results/producer_throughput.json and producer_throughput.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from stream.feeders.producer import ProducerSettings, TweetProducer
from stream.feeders.replay import ReplaySettings, replay
from stream.settings import KafkaSettings

RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATES = (
    "Honestly the new phone from @AcmeMobile is amazing 😍 #win https://t.co/a8Xk2pQ ({i})",
    "Waited 45 minutes for the train again. Not good at all 😡 #commute ({i})",
    "Service update: delays expected on the north line this morning https://example.com/news/{i}",
)
LABELS = ("positive", "negative", "neutral")


def rows(count: int) -> list[dict[str, str]]:
    """Tweet-sized rows (about 90 characters), unique so the loader keeps them all."""
    return [{"text": TEMPLATES[i % 3].format(i=i), "true_label": LABELS[i % 3]} for i in range(count)]


async def bulk_send(kafka: KafkaSettings, count: int, chunk: int = 5000) -> dict[str, Any]:
    """(a) send_many in chunks, timed until the last acknowledgement."""
    items = rows(count)
    async with TweetProducer(kafka, ProducerSettings()) as producer:
        began, cpu_began = time.perf_counter(), time.process_time()
        for start in range(0, count, chunk):
            await producer.send_many(items[start : start + chunk])
        await producer.flush()
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(count / elapsed),
        # CPU time of this process only: what the producer costs, whatever else the machine is doing.
        "cpu_seconds": round(cpu, 3),
        "messages_per_cpu_s": round(count / cpu),
    }


def write_csv(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((row["text"], row["true_label"]) for row in rows(count))
    return path


async def replay_unthrottled(kafka: KafkaSettings, csv_path: Path) -> dict[str, Any]:
    """(b) the replay path with no pacing; loading the CSV is timed apart from sending."""
    began, cpu_began = time.perf_counter(), time.process_time()
    result = await replay(csv_path, kafka, ProducerSettings(), ReplaySettings(), progress=True)
    total, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return {
        "messages": result.sent,
        "cpu_seconds_with_load": round(cpu, 3),
        "send_seconds": round(result.elapsed_s, 3),
        "messages_per_s": round(result.rate),
        "load_and_connect_seconds": round(total - result.elapsed_s, 3),
    }


async def replay_paced(kafka: KafkaSettings, csv_path: Path, rate: float, duration: float) -> dict[str, Any]:
    """(c) `--rate` over `duration` seconds, judged by the broker's record timestamps."""
    settings = ReplaySettings(rate=rate, limit=int(rate * duration), loop=True)
    result = await replay(csv_path, kafka, ProducerSettings(), settings, progress=True)
    stamps = sorted(await record_timestamps(kafka, result.sent))
    span_s = (stamps[-1] - stamps[0]) / 1000
    achieved = (len(stamps) - 1) / span_s
    per_second = Counter((t - stamps[0]) // 1000 for t in stamps)
    full_seconds = [per_second[s] for s in range(int(span_s))]  # the last, partial second is left out
    return {
        "target_per_s": rate,
        "seconds": round(span_s, 2),
        "messages": len(stamps),
        "achieved_per_s": round(achieved, 1),
        "error_percent": round(100 * abs(achieved - rate) / rate, 2),
        "per_second_min": min(full_seconds),
        "per_second_max": max(full_seconds),
        "producer_side_per_s": round(result.rate, 1),
    }


async def record_timestamps(kafka: KafkaSettings, expected: int, timeout: float = 60.0) -> list[int]:
    """CreateTime (ms) of every record in the topic; the producer stamps each when it is batched."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(kafka.topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10000)
            stamps += [r.timestamp for batch in batches.values() for r in batch]
    finally:
        await consumer.stop()
    return stamps


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": "none",
        "python": platform.python_version(),
    }


async def measure(broker: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    def kafka() -> KafkaSettings:  # a fresh topic per measurement, so each reads back only its own
        return KafkaSettings(broker=broker, topic=f"bench-{uuid.uuid4().hex[:8]}")

    csv_path = write_csv(workdir / "bench.csv", args.messages)
    results: dict[str, Any] = {"send_many": await bulk_send(kafka(), args.messages)}
    results["replay_unthrottled"] = await replay_unthrottled(kafka(), csv_path)
    if args.duration > 0:
        results["replay_rate"] = await replay_paced(kafka(), csv_path, args.rate, args.duration)
    return results


def markdown(report: dict[str, Any]) -> str:
    m, r = report["machine"], report["results"]
    lines = [
        f"Machine: {m['cpus']}-core CPU ({m['cpu']}), no GPU, load average {m['load_average_1m']} at the start "
        "(shared with other work; the broker runs on the same cores). Settings: lz4, acks=all, idempotent, "
        "linger 10 ms, 512 KiB batches, 1 partition.",
        "",
        "| measurement | messages | seconds | messages/s | target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| `TweetProducer.send_many` (validate + serialise + send, until acked) | {r['send_many']['messages']:,} "
        f"| {r['send_many']['seconds']} | {r['send_many']['messages_per_s']:,} | ≥ 50,000 |",
        f"| same, per second of the producer's own CPU time | {r['send_many']['messages']:,} "
        f"| {r['send_many']['cpu_seconds']} (CPU) | {r['send_many']['messages_per_cpu_s']:,} | |",
        f"| `replay` CSV, unthrottled (send only; load + connect "
        f"{r['replay_unthrottled']['load_and_connect_seconds']} s) | {r['replay_unthrottled']['messages']:,} "
        f"| {r['replay_unthrottled']['send_seconds']} | {r['replay_unthrottled']['messages_per_s']:,} | ≥ 50,000 |",
    ]
    if "replay_rate" in r:
        p = r["replay_rate"]
        lines.append(
            f"| `replay --rate {p['target_per_s']:g}` (broker timestamps; per-second min/max "
            f"{p['per_second_min']}/{p['per_second_max']}) | {p['messages']:,} | {p['seconds']} "
            f"| {p['achieved_per_s']:,} ({p['error_percent']}% off) | within 5% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the measurements and write the JSON and markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="kafka://HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--messages", type=int, default=300_000, help="messages for (a) and (b)")
    parser.add_argument("--rate", type=float, default=1000.0, help="target of (c), messages/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of (c); 0 skips it")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentistream-bench-") as tmp:
        report = {"machine": machine(), "when": datetime.now(UTC).isoformat(timespec="seconds")}
        report["results"] = with_broker(args, Path(tmp))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "producer_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "producer_throughput.md").write_text(markdown(report))
    print(markdown(report))


def with_broker(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Measure against --broker, or a broker started here (before the event loop: start() runs its own)."""
    if args.broker:
        return asyncio.run(measure(args.broker, args, workdir))
    from infra.broker import BrokerSettings, LocalBroker, free_port

    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=workdir / "kafka", heap="1g"))
    broker.start()
    try:
        return asyncio.run(measure(broker.url, args, workdir))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
