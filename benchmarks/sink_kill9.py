"""The history sink killed -9 while a worker scores (issue #23), checked from outside the test suite.

Each round, on one local broker: a VADER worker scores N tweets on 4 partitions (fed over about
10 s), `sentistream sink --flush-interval-s 2` starts while it scores, is killed -9 after 6 s and
restarted; once every event is in a file, the sink gets SIGTERM and the files are read back. Each
event must be there once, with `model_version` on every row.

    .venv/bin/python benchmarks/sink_kill9.py                # 5,000 tweets, 3 rounds
    .venv/bin/python benchmarks/sink_kill9.py --rounds 10

Writes benchmarks/results/sink_kill9.json; exits 1 when a round fails.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from infra.broker import BrokerSettings, LocalBroker, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.stream.worker_process import Topics, WorkerProcess, create_topics, produce, tweets

RESULTS = Path(__file__).resolve().parent / "results"
SENTISTREAM = str(Path(sys.executable).parent / "sentistream")


def start_sink(broker_url: str, topic: str, output: Path, log: Path) -> subprocess.Popen:
    args = [
        SENTISTREAM, "sink", "--broker", broker_url, "--scored-topic", topic, "--output", str(output),
        "--group-id", f"{topic}-sink", "--flush-interval-s", "2",
    ]  # fmt: skip
    with open(log, "ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT)


def read_rows(output: Path) -> list[dict]:
    """id and model_version of every row in the finished files (temporary files do not match);
    model_version None where a file has no such column (sinks before issue #23)."""
    import pyarrow.parquet as pq

    rows = []
    for path in output.rglob("*.parquet"):
        columns = [c for c in ("id", "model_version") if c in pq.read_schema(path).names]
        rows += [{"model_version": None, **r} for r in pq.read_table(path, columns=columns).to_pylist()]
    return rows


def wait_for_ids(output: Path, ids: set[str], sink: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sink.poll() is None:
        try:
            if ids <= {r["id"] for r in read_rows(output)}:
                return
        except OSError:  # a file renamed or cleaned while listed
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the sink did not write every event within {timeout} s (exit {sink.poll()})")


def one_round(broker_url: str, work: Path, events: int) -> dict:
    topics, output, log = Topics(), work / "history", work / "sink.log"
    create_topics(broker_url, [topics.tweets, topics.scored], partitions=4)
    worker = WorkerProcess(broker_url, topics, work).start()
    began = time.monotonic()
    try:
        worker.wait_ready()
        feeder = threading.Thread(target=produce, args=(broker_url, topics.tweets, tweets("t", events), 0.1))
        feeder.start()
        first = start_sink(broker_url, topics.scored, output, log)
        time.sleep(6)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = len(read_rows(output))
        feeder.join(300)
        second = start_sink(broker_url, topics.scored, output, log)
        try:
            wait_for_ids(output, {f"t-{i}" for i in range(events)}, second, 300)
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        worker.stop()
    rows = read_rows(output)
    ids = Counter(r["id"] for r in rows)
    return {
        "rows_at_kill": at_kill,
        "rows": len(rows),
        "ids": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
        "missing": events - len(ids),
        "rows_without_model_version": sum(1 for r in rows if not r["model_version"]),
        "model_versions": sorted({str(r["model_version"]) for r in rows}),
        "seconds": round(time.monotonic() - began, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", partitions=4))
        broker.start()
        try:
            for n in range(1, args.rounds + 1):
                work = Path(tmp) / f"round-{n}"
                work.mkdir()
                rounds.append(one_round(broker.url, work, args.events))
                print(f"round {n}: {json.dumps(rounds[-1])}", flush=True)
        finally:
            broker.stop()
    good = [
        r
        for r in rounds
        if (r["rows"], r["ids"], r["rows_without_model_version"]) == (args.events, args.events, 0)
    ]
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "rounds": rounds,
        "rounds_exactly_once": f"{len(good)} of {len(rounds)}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink_kill9.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    return 0 if len(good) == len(rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
