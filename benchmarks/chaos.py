"""Chaos: messages stream into a 4-partition topic while workers are SIGKILLed, the broker restarts
and workers join and leave; afterwards every message must be scored (lost = 0), and with
exactly_once read `read_committed`, exactly once (duplicates = 0).

    .venv/bin/python benchmarks/chaos.py                       # 100,000 messages, both guarantees
    .venv/bin/python benchmarks/chaos.py --messages 3000 --guarantee exactly_once
    .venv/bin/python benchmarks/chaos.py --rounds 50           # 50 rounds per guarantee (below)

`--rounds N`: one broker and two named workers (static members) for N consecutive rounds; each
round streams `--round-messages` (3,000) at `--rate` (150/s) and, meanwhile, SIGKILLs one worker (restarted at
once, as Kubernetes would), restarts the broker, and has a third worker join and leave (SIGTERM).
Per round: lost, duplicates, and the recovery time: from the SIGKILL until every message produced
before it is readable. Writes benchmarks/results/chaos_rounds.json.

A worker that dies (killed, or exiting 1 on its own when the broker is gone past its retry budget)
is restarted, as Kubernetes would. The constant engine keeps the model out of the measurement: this
is about the delivery path. Writes benchmarks/results/chaos.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from infra.broker import BrokerSettings, LocalBroker, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stream.worker_process import Topics, WorkerProcess, create_topics

RESULTS = Path(__file__).resolve().parent / "results"
WORKER_FLAGS = (
    "--backend", "constant", "--session-timeout-s", "6", "--batch-size", "200",
    "--commit-interval-s", "0.5", "--send-retry-s", "60", "--partitions", "4",
)  # fmt: skip


@dataclass
class Plan:
    """What to run: how many messages at what rate, and which faults."""

    messages: int = 100_000
    partitions: int = 4
    guarantee: str = "at_least_once"
    rate: float = 1500.0  # messages/s produced
    kill_every_s: tuple[float, float] = (4.0, 10.0)  # a SIGKILL after a random pause in this range
    broker_restarts: int = 2
    seed: int = 11
    timeout_s: float = 900.0


@dataclass
class Outcome:
    guarantee: str
    messages: int
    kills: int = 0
    broker_restarts: int = 0
    worker_exits: dict[str, int] = field(default_factory=dict)  # exit status -> count (not our kills)
    scored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates: int = 0
    seconds: float = 0.0


class Collector:
    """Reads the scored and dead-letter topics (read_committed) in a thread of its own, counting keys."""

    def __init__(self, broker_url: str, topics: list[str]) -> None:
        self.broker_url, self.topics = broker_url, topics
        self.keys: Counter = Counter()
        self.first_seen: dict[bytes, float] = {}  # key -> monotonic time it became readable
        self.per_topic: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.broker_url.removeprefix("kafka://"),
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
            isolation_level="read_committed", metadata_max_age_ms=2000,
        )  # fmt: skip
        await consumer.start()
        try:
            while not self._stop.is_set():
                for tp, rows in (await consumer.getmany(timeout_ms=300, max_records=5000)).items():
                    self.per_topic[tp.topic] += len(rows)
                    self.keys.update(r.key for r in rows)
                    now = time.monotonic()
                    for r in rows:
                        self.first_seen.setdefault(r.key, now)
        finally:
            await consumer.stop()


def produce_paced(
    broker_url: str,
    topic: str,
    n: int,
    rate: float,
    done: threading.Event,
    prefix: str = "m",
    sent_at: dict | None = None,
) -> None:
    """Send `n` messages (keys `{prefix}{j}`) at `rate`/s with an idempotent producer (a broker
    restart must not duplicate inputs, or duplicates downstream would not be the worker's);
    `sent_at` gets each key's monotonic send time."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker_url.removeprefix("kafka://"), enable_idempotence=True,
            linger_ms=5, request_timeout_ms=120_000,
        )  # fmt: skip
        await producer.start()
        began, futures, slice_n = time.monotonic(), [], max(1, round(rate * 0.05))
        try:
            for k, i in enumerate(range(0, n, slice_n)):
                await asyncio.sleep(max(0.0, began + k * 0.05 - time.monotonic()))
                for j in range(i, min(n, i + slice_n)):
                    key = f"{prefix}{j}"
                    value = orjson.dumps({"id": key, "text": f"message {j} is a fine one"})
                    futures.append(await producer.send(topic, value, key=key.encode()))
                    if sent_at is not None:
                        sent_at[key.encode()] = time.monotonic()
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
            done.set()

    asyncio.run(send())


def stop_all(workers, collector: Collector | None, broker: LocalBroker) -> None:
    """SIGTERM the workers, then stop the reader and the broker (the end of every chaos run)."""
    for w in workers:
        w.stop()
    if collector:
        collector.stop()
    broker.stop()


def run_chaos(plan: Plan, work_dir: Path, log=print) -> Outcome:
    """Run one chaos round on a broker of its own; returns what was delivered and what was not."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # reconnect noise while the broker restarts
    rng = random.Random(plan.seed)
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=work_dir / "kafka"))
    broker.start()
    topics = Topics()
    outcome = Outcome(plan.guarantee, plan.messages)
    flags = (*WORKER_FLAGS, "--guarantee", plan.guarantee)
    workers = [WorkerProcess(broker.url, topics, work_dir, *flags, name=f"w{i}") for i in range(2)]
    collector = None
    began = time.monotonic()
    try:
        create_topics(broker.url, [topics.tweets], plan.partitions)
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready(180)
        collector = Collector(broker.url, [topics.scored, topics.dlq]).start()
        produced = threading.Event()
        producer = threading.Thread(
            target=produce_paced, args=(broker.url, topics.tweets, plan.messages, plan.rate, produced)
        )
        producer.start()
        production_s = plan.messages / plan.rate
        restarts_at = [
            began + production_s * (i + 1) / (plan.broker_restarts + 1) for i in range(plan.broker_restarts)
        ]
        next_kill = time.monotonic() + rng.uniform(*plan.kill_every_s)
        deadline = began + plan.timeout_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            if produced.is_set() and len(collector.keys) >= plan.messages:
                break
            if (not produced.is_set() or outcome.kills == 0) and now >= next_kill:
                victim = rng.choice(workers)
                log(f"  t={now - began:5.1f}s SIGKILL {victim.log_path.name}")
                victim.process.kill()
                victim.process.wait(10)
                outcome.kills += 1
                next_kill = now + rng.uniform(*plan.kill_every_s)
            if restarts_at and now >= restarts_at[0]:
                restarts_at.pop(0)
                log(f"  t={now - began:5.1f}s broker restart")
                broker.stop()
                time.sleep(1.0)
                broker.start()
                outcome.broker_restarts += 1
            for w in workers:
                if w.process.poll() is not None:
                    code = w.process.returncode
                    if code != -9:
                        outcome.worker_exits[str(code)] = outcome.worker_exits.get(str(code), 0) + 1
                        log(
                            f"  t={time.monotonic() - began:5.1f}s {w.log_path.name} exited {code}; restarting"
                        )
                    w.start()
            time.sleep(0.2)
        time.sleep(3.0)  # late duplicates, if any, arrive now
        producer.join(60)
    finally:
        stop_all(workers, collector, broker)
    expected = {f"m{j}".encode() for j in range(plan.messages)}
    seen = collector.keys if collector else Counter()
    outcome.scored = collector.per_topic[topics.scored] if collector else 0
    outcome.dead_lettered = collector.per_topic[topics.dlq] if collector else 0
    outcome.lost = len(expected - set(seen))
    outcome.duplicates = sum(count - 1 for count in seen.values())
    outcome.seconds = round(time.monotonic() - began, 1)
    return outcome


@dataclass
class Round:
    """One round of `run_rounds`."""

    round: int
    messages: int
    lost: int = 0
    duplicates: int = 0
    recovery_s: float | None = None  # SIGKILL -> every message produced before it readable
    worker_exits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class Fleet:
    """Two named workers (restarted under their names when they die) and an occasional third."""

    def __init__(self, broker_url: str, topics: Topics, work_dir: Path, flags: tuple[str, ...]) -> None:
        self.workers = [
            WorkerProcess(broker_url, topics, work_dir, *flags, "--worker-name", f"w{i}", name=f"w{i}")
            for i in range(2)
        ]
        self.extra = WorkerProcess(broker_url, topics, work_dir, *flags, "--worker-name", "w2", name="w2")

    def start(self) -> None:
        for w in self.workers:
            w.start()
        for w in self.workers:
            w.wait_ready(180)

    def restart_dead(self, exits: dict[str, int]) -> None:
        for w in self.workers:
            if w.process.poll() is not None:
                code = w.process.returncode
                if code != -9:
                    exits[str(code)] = exits.get(str(code), 0) + 1
                w.start()

    @property
    def everyone(self) -> list[WorkerProcess]:
        return [*self.workers, self.extra]


def run_rounds(
    rounds: int,
    guarantee: str,
    work_dir: Path,
    messages: int = 1500,
    rate: float = 150.0,
    seed: int = 11,
    log=print,
) -> list[Round]:
    """`rounds` chaos rounds on one broker and one fleet; see the module docstring."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    rng = random.Random(seed)
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=work_dir / "kafka"))
    broker.start()
    topics = Topics()
    fleet = Fleet(broker.url, topics, work_dir, (*WORKER_FLAGS, "--guarantee", guarantee))
    collector = None
    results = []
    try:
        create_topics(broker.url, [topics.tweets], 4)
        fleet.start()
        collector = Collector(broker.url, [topics.scored, topics.dlq]).start()
        for n in range(1, rounds + 1):
            result = _one_round(n, broker, fleet, collector, topics, messages, rate, rng)
            log(f"  round {n}: {asdict(result)}")
            results.append(result)
    finally:
        stop_all(fleet.everyone, collector, broker)
    return results


def _one_round(n, broker, fleet: Fleet, collector: Collector, topics, messages, rate, rng) -> Round:
    """Stream `messages`; SIGKILL at 10%, the third worker joins at 30%, the broker restarts at
    60%, the third worker leaves at 80%; then wait for every output."""
    result, began = Round(n, messages), time.monotonic()
    production_s = messages / rate
    prefix, sent_at, produced = f"r{n}-", {}, threading.Event()
    producer = threading.Thread(
        target=produce_paced, args=(broker.url, topics.tweets, messages, rate, produced, prefix, sent_at)
    )
    producer.start()
    steps = [(0.10, "kill"), (0.30, "join"), (0.60, "broker"), (0.80, "leave")]
    killed_at = None
    while steps or not produced.is_set():
        if steps and time.monotonic() >= began + steps[0][0] * production_s:
            _, step = steps.pop(0)
            if step == "kill":
                victim = rng.choice(fleet.workers)
                victim.process.kill()
                victim.process.wait(10)
                killed_at = time.monotonic()
            elif step == "join":
                fleet.extra.start()
            elif step == "broker":
                broker.stop()
                time.sleep(1.0)
                broker.start()
            elif step == "leave":
                fleet.extra.stop()
        fleet.restart_dead(result.worker_exits)
        time.sleep(0.1)
    producer.join(120)
    keys = [f"{prefix}{j}".encode() for j in range(messages)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and any(k not in collector.first_seen for k in keys):
        fleet.restart_dead(result.worker_exits)
        time.sleep(0.2)
    time.sleep(2.0)  # late duplicates, if any, arrive now
    result.lost = sum(1 for k in keys if k not in collector.first_seen)
    result.duplicates = sum(collector.keys[k] - 1 for k in keys if collector.keys[k] > 1)
    before_kill = [k for k in keys if killed_at is not None and sent_at.get(k, killed_at + 1) <= killed_at]
    if before_kill and all(k in collector.first_seen for k in before_kill):
        result.recovery_s = round(max(0.0, max(collector.first_seen[k] for k in before_kill) - killed_at), 2)
    result.seconds = round(time.monotonic() - began, 1)
    return result


def rounds_main(args) -> int:
    guarantees = ["at_least_once", "exactly_once"] if args.guarantee == "both" else [args.guarantee]
    report = {
        "benchmark": "chaos rounds",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, 2-core shared CPU, no GPU",
        "engine": "constant",
        "worker_flags": [*WORKER_FLAGS, "--worker-name wN (static membership)"],
        "per_round": "SIGKILL at 10% (restarted at once), a third worker joins at 30%, broker restart "
        "at 60%, the third worker leaves (SIGTERM) at 80%",
        "results": {},
    }
    bad = False
    for guarantee in guarantees:
        print(f"{guarantee}: {args.rounds} rounds of {args.round_messages} messages at {args.rate:.0f}/s")
        with tempfile.TemporaryDirectory(prefix="chaos-rounds-") as work:
            rounds = run_rounds(args.rounds, guarantee, Path(work), args.round_messages, args.rate, args.seed)
        recoveries = sorted(r.recovery_s for r in rounds if r.recovery_s is not None)
        summary = {
            "rounds": len(rounds),
            "lost": sum(r.lost for r in rounds),
            "duplicates": sum(r.duplicates for r in rounds),
            "recovery_s_median": recoveries[len(recoveries) // 2] if recoveries else None,
            "recovery_s_max": recoveries[-1] if recoveries else None,
            "rounds_detail": [asdict(r) for r in rounds],
        }
        print({k: v for k, v in summary.items() if k != "rounds_detail"})
        report["results"][guarantee] = summary
        bad |= bool(summary["lost"] or (guarantee == "exactly_once" and summary["duplicates"]))
    out = args.out if args.out != RESULTS / "chaos.json" else RESULTS / "chaos_rounds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, help="messages/s produced (default 1500; 150 with --rounds)")
    parser.add_argument("--guarantee", choices=["at_least_once", "exactly_once", "both"], default="both")
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    parser.add_argument("--rounds", type=int, default=0, help="run this many chaos rounds instead")
    parser.add_argument("--round-messages", type=int, default=3000, help="messages per round")
    args = parser.parse_args(argv)
    if args.rounds:
        args.rate = args.rate or 150.0
        return rounds_main(args)
    args.rate = args.rate or 1500.0
    guarantees = ["at_least_once", "exactly_once"] if args.guarantee == "both" else [args.guarantee]
    outcomes = []
    for guarantee in guarantees:
        plan = Plan(
            args.messages,
            guarantee=guarantee,
            rate=args.rate,
            broker_restarts=args.broker_restarts,
            seed=args.seed,
        )
        print(f"{guarantee}: {plan.messages} messages at {plan.rate:.0f}/s")
        with tempfile.TemporaryDirectory(prefix="chaos-") as work:
            outcome = run_chaos(plan, Path(work))
        print(f"  {asdict(outcome)}")
        outcomes.append(asdict(outcome))
    report = {
        "benchmark": "chaos",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, 2-core shared CPU (six engineers' jobs running), no GPU",
        "engine": "constant",
        "results": outcomes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    bad = [o for o in outcomes if o["lost"] or (o["guarantee"] == "exactly_once" and o["duplicates"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
