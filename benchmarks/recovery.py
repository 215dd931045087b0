"""Recovery after kill -9: how long from a SIGKILL until every message produced before it is readable.

Two named workers with the default settings (30 s session timeout, commit interval 1 s) share a
4-partition topic while messages stream in at a steady rate; one is SIGKILLed mid-stream and
started again at once under the same name (as Kubernetes restarts a container). Measured per
guarantee, with static membership (the default for a named worker) and without it
(`--no-static-membership`, the behaviour before it existed). Scored outputs are read
`read_committed`.

    .venv/bin/python benchmarks/recovery.py                 # both guarantees, static on and off
    .venv/bin/python benchmarks/recovery.py --repeat 3

`--code DIR` runs the workers from another checkout of the project (e.g. a `git worktree` of an
older commit) to measure "before"; it must accept the same flags except `--static-membership`.
Writes benchmarks/results/recovery.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.chaos import Collector, produce_paced, stop_all
from infra.broker import BrokerSettings, LocalBroker, free_port
from tests.stream.worker_process import Topics, WorkerProcess, create_topics

RESULTS = Path(__file__).resolve().parent / "results"


def measure(
    guarantee: str, static: bool | None, work_dir: Path, rate: float = 100.0, seconds: float = 90.0
) -> dict:
    """One run: SIGKILL at 25% of the stream, restart at once; returns the recovery time.

    `static`: None leaves the flag out (code that predates it)."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=work_dir / "kafka"))
    broker.start()
    topics = Topics()
    flags = ["--backend", "constant", "--partitions", "4", "--guarantee", guarantee]
    if static is not None:
        flags.append("--static-membership" if static else "--no-static-membership")
    workers = [
        WorkerProcess(broker.url, topics, work_dir, *flags, "--worker-name", f"w{i}", name=f"w{i}")
        for i in range(2)
    ]
    collector = None
    try:
        create_topics(broker.url, [topics.tweets], 4)
        for w in workers:
            w.start()
        for w in workers:
            w.wait_ready(180)
        collector = Collector(broker.url, [topics.scored, topics.dlq]).start()
        n, sent_at, produced = int(rate * seconds), {}, threading.Event()
        producer = threading.Thread(
            target=produce_paced, args=(broker.url, topics.tweets, n, rate, produced, "m", sent_at)
        )
        producer.start()
        time.sleep(seconds * 0.25)
        victim = workers[0]
        victim.process.kill()
        victim.process.wait(10)
        killed_at = time.monotonic()
        victim.start()
        before = [k for k, t in list(sent_at.items()) if t <= killed_at]
        deadline = killed_at + 240
        while time.monotonic() < deadline and any(k not in collector.first_seen for k in before):
            time.sleep(0.1)
        readable_at = max(collector.first_seen.get(k, float("inf")) for k in before)
        producer.join(seconds + 60)
        return {
            "guarantee": guarantee,
            "static_membership": static,
            "messages_before_kill": len(before),
            "recovery_s": round(readable_at - killed_at, 2) if readable_at != float("inf") else None,
        }
    finally:
        stop_all(workers, collector, broker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--guarantee", choices=["at_least_once", "exactly_once", "both"], default="both")
    parser.add_argument("--static", choices=["on", "off", "both"], default="both")
    parser.add_argument("--code", type=Path, help="run the workers from this checkout (measures 'before')")
    parser.add_argument("--label", default="", help="what this run measures, kept in the results")
    parser.add_argument("--out", type=Path, default=RESULTS / "recovery.json")
    args = parser.parse_args(argv)
    if args.code:
        os.environ["PYTHONPATH"] = str(args.code.resolve())
    guarantees = ["at_least_once", "exactly_once"] if args.guarantee == "both" else [args.guarantee]
    statics = {"on": [True], "off": [False], "both": [True, False]}[args.static] if not args.code else [None]
    runs = []
    for guarantee in guarantees:
        for static in statics:
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="recovery-") as work:
                    run = measure(guarantee, static, Path(work))
                print(run)
                runs.append(run)
    report = {
        "benchmark": "recovery after SIGKILL",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, 2-core shared CPU, no GPU",
        "label": args.label,
        "settings": "defaults (session timeout 30 s), constant engine, 2 named workers, 4 partitions, 100 msg/s",
        "runs": runs,
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    reports = previous.get("reports", []) if isinstance(previous, dict) else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reports": [*reports, report]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
