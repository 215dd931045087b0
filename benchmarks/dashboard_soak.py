"""Soak the dashboard's feed: 100,000 scored events through the same ingestion path the consumer
thread takes, with page-style snapshots in between; memory after 100k must stay within 20% of
memory after 10k (the ring buffer and the running totals are bounded).

    python benchmarks/dashboard_soak.py [--events 100000] [--buffer-size 20000]

Writes benchmarks/results/dashboard_soak.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
from tqdm import tqdm

from dashboard.feed import Feed
from dashboard.settings import DashboardSettings
from dashboard.summary import Filters, compute_kpis, filter_rows
from stream.events import ScoredTweet
from stream.settings import KafkaSettings

RESULTS = Path(__file__).parent / "results"
WORDS = [
    "love",
    "hate",
    "delay",
    "service",
    "app",
    "train",
    "late",
    "great",
    "worst",
    "thanks",
    "update",
    "refund",
    "crash",
    "fast",
    "slow",
]
LABELS = ["negative", "neutral", "positive"]
CHECKPOINT = 10_000
LIMIT = 1.20


def event(rng: random.Random) -> bytes:
    """A realistic, always different scored event (unique id, text, user and true label)."""
    label = rng.choice(LABELS)
    score = rng.uniform(0.34, 1.0)
    text = (
        " ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + f" #{rng.choice(WORDS)} {uuid.uuid4().hex[:8]}"
    )
    return (
        ScoredTweet(
            id=uuid.uuid4().hex,
            text=text,
            user=f"user{rng.randint(0, 10**6)}",
            label=label,
            score=score,
            scores={name: (score if name == label else (1 - score) / 2) for name in LABELS},
            model="soak@1",
            scored_at=datetime.now(UTC),
            latency_ms=rng.uniform(1, 200),
            true_label=rng.choice(LABELS),
        )
        .model_dump_json()
        .encode()
    )


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def soak(events: int, buffer_size: int) -> dict:
    """Feed `events` messages, taking a snapshot + KPIs every 1,000 (as a refreshing page would)."""
    rng = random.Random(0)
    feed = Feed(KafkaSettings(), DashboardSettings(buffer_size=buffer_size))
    filters = Filters(keyword="#love", window_s=900)
    rss: dict[int, float] = {0: rss_mb()}
    began = time.perf_counter()
    for i in tqdm(range(1, events + 1), desc="soak", unit="ev", mininterval=1):
        feed.ingest(feed.kafka.scored_topic, event(rng))
        if i % 1_000 == 0:
            snap = feed.snapshot()
            compute_kpis(snap, filter_rows(snap.rows, filters, snap.taken_at), filters)
        if i in (CHECKPOINT, events):
            rss[i] = rss_mb()
    seconds = time.perf_counter() - began
    return {"rss": rss, "seconds": seconds, "totals": feed.snapshot().totals.scored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--buffer-size", type=int, default=DashboardSettings().buffer_size)
    args = parser.parse_args()
    out = soak(args.events, args.buffer_size)
    at_10k, at_end = out["rss"][CHECKPOINT], out["rss"][args.events]
    result = {
        "benchmark": "dashboard_soak",
        "events": args.events,
        "buffer_size": args.buffer_size,
        "rss_mb_start": round(out["rss"][0], 1),
        "rss_mb_after_10k": round(at_10k, 1),
        f"rss_mb_after_{args.events // 1000}k": round(at_end, 1),
        "growth_ratio": round(at_end / at_10k, 3),
        "limit_ratio": LIMIT,
        "passed": at_end <= at_10k * LIMIT,
        "ingest_events_per_s": round(args.events / out["seconds"]),
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, no GPU",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| events | buffer | RSS after 10k | RSS after end | growth | ingest ev/s | within 20% |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.events:,} | {args.buffer_size:,} | {at_10k:.1f} MB | {at_end:.1f} MB "
        f"| {result['growth_ratio']:.3f} | {result['ingest_events_per_s']:,} | {result['passed']} |"
    )
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
