"""History: how fast the Parquet sink drains `tweets-scored`, and how fast the History tab's queries run.

Against one real broker (a fresh `LocalBroker` on a free port): N scored events are produced to a
4-partition topic first, then `ParquetSink` (what `sentistream sink` runs) drains them with its
default flush size; timed from start to the last file written. Then the History tab's three
queries (`dashboard/history.py`) run over the files, best of 3.

    .venv/bin/python benchmarks/sink_throughput.py [--events 200000]

Writes benchmarks/results/sink_throughput.json and sink_throughput.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil

from dashboard.history import History, Span
from stream.settings import KafkaSettings
from stream.sink.writer import ParquetSink, SinkSettings

RESULTS = Path(__file__).resolve().parent / "results"
TEXTS = (
    "Honestly the new phone from @user is amazing #win http ({i})",
    "Waited 45 minutes for the train again. Not good at all #commute ({i})",
    "Service update: delays expected on the north line this morning #news ({i})",
)


def events(count: int, hours: float = 48.0) -> list[tuple[bytes, bytes]]:
    """Scored events spread over `hours` (so the files span many hour folders)."""
    start = datetime.now(UTC) - timedelta(hours=hours)
    out = []
    for i in range(count):
        label = ("positive", "negative", "neutral")[i % 3]
        at = start + timedelta(seconds=hours * 3600 * i / count)
        value = {"id": f"b{i}", "text": TEXTS[i % 3].format(i=i), "label": label, "score": 0.9,
                 "scores": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}, "model": "bench@1",
                 "scored_at": at.isoformat(), "latency_ms": 20.0}  # fmt: skip
        out.append((f"b{i}".encode(), orjson.dumps(value)))
    return out


async def produce(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20, compression_type="lz4")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def drain(kafka: KafkaSettings, settings: SinkSettings, expected: int) -> float:
    """Seconds until the sink has written `expected` rows."""
    sink, stop = ParquetSink(kafka, settings), asyncio.Event()
    began = time.perf_counter()
    task = asyncio.create_task(sink.run(stop))
    while sink.rows_written < expected:
        await asyncio.sleep(0.05)
        if task.done():
            task.result()
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    return elapsed


def best_ms(call, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return min(times)


def main() -> None:
    from infra.broker import BrokerSettings, LocalBroker, free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", partitions=4))
        broker.start()
        try:
            topic = "bench-scored"
            kafka = KafkaSettings(broker=broker.url, scored_topic=topic)
            asyncio.run(produce(kafka, topic, events(args.events)))
            settings = SinkSettings(output=Path(tmp) / "history", group_id="bench-sink", flush_interval_s=2.0)
            seconds = asyncio.run(drain(kafka, settings, args.events))
        finally:
            broker.stop()
        history, span = History(settings.output), Span.last(timedelta(days=3))
        files = list(settings.output.rglob("*.parquet"))
        result = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "events": args.events,
            "sink_seconds": round(seconds, 2),
            "sink_events_per_s": round(args.events / seconds),
            "files": len(files),
            "bytes_on_disk": sum(f.stat().st_size for f in files),
            "query_ms": {
                "share_over_time": round(best_ms(lambda: history.share_over_time(span)), 1),
                "top_hashtags": round(best_ms(lambda: history.top_hashtags(span)), 1),
                "search": round(best_ms(lambda: history.search(span, "north line")), 1),
            },
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    q = result["query_ms"]
    (RESULTS / "sink_throughput.md").write_text(
        f"| events | sink events/s | files | MB on disk | share over time | top hashtags | search |\n"
        f"| --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {args.events:,} | {result['sink_events_per_s']:,} | {result['files']} | "
        f"{result['bytes_on_disk'] / 1e6:.1f} | {q['share_over_time']} ms | {q['top_hashtags']} ms | {q['search']} ms |\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
