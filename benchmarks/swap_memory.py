"""Resident memory across 5 model swaps in one worker process (issue #24).

Before #24 a swapped-out engine stayed referenced (the start-up engine by `stream/worker/cli.py`, the last
explained one by the /explain service), so each swap could leave one more model resident. This loads
5 deployments of a real encoder (MiniLM-L6 by default, copies whose checksums differ) one after the
other through `ServingModels`, with an /explain service that explains between swaps, and prints
the process' RSS after each swap: `released` is the code as it is; `kept` also holds every
swapped-out engine, which is what an unreleased reference costs. Run:

    .venv/bin/python benchmarks/swap_memory.py [--model DIR] [--backend torch|onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil


def rss_mb() -> float:
    gc.collect()
    with contextlib.suppress(OSError):  # glibc: give freed arenas back, so RSS shows what is held
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20


def copies(model: Path, out: Path, n: int) -> list[Path]:
    """`n` bundles with the model's files hard-linked and a note of their own (distinct checksums)."""
    made = []
    for i in range(n):
        target = out / f"v{i}"
        shutil.copytree(model, target, copy_function=os.link)
        (target / "NOTES.txt").write_text(f"deployment {i}")
        made.append(target)
    return made


def run(model: Path, backend: str, keep: bool, scratch: Path) -> list[float]:
    from model.bundle import checksum
    from model.engines import load_engine
    from model.settings import ModelSettings
    from stream.events import Deployment
    from stream.worker.explain_view import ExplainService
    from stream.worker.inference import WEB
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.serving import ServingModels
    from stream.worker.stats import TumblingStats

    settings = ModelSettings(backend=backend, device="cpu")
    models = ServingModels(
        load_engine(None, backend="vader"),
        WorkerMetrics(),
        TumblingStats(10, "w"),
        None,
        settings,
        scratch / "cache",
    )
    service = ExplainService(models.engine, settings, current=lambda: (models.engine, models.model_path))
    models.on_swap.append(lambda: service.thread.submit(WEB, service.forget))
    held, rss = [], [rss_mb()]
    for i, bundle in enumerate(copies(model, scratch / ("kept" if keep else "released"), 5)):
        digest = checksum(bundle)
        record = Deployment(uri=str(bundle), model="m", model_version=f"m+{digest[:12]}", checksum=digest,
                            deployed_by="bench", deployed_at=datetime.now(UTC))  # fmt: skip
        before = models.engine
        models.offer("champion", record)
        while models.take() is before:
            time.sleep(0.05)
        if keep and i:
            held.append(before)
        del before
        asyncio.run(service.answer(orjson.dumps({"texts": ["a lovely day, explained"]})))
        service.thread.submit(WEB, lambda: None).result(120)
        rss.append(rss_mb())
    service.close()
    models.close()
    return rss


def main() -> None:
    from benchmarks.hot_swap import default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for keep in (False, True):
            rss = run(args.model, args.backend, keep, Path(tmp))
            steps = " -> ".join(f"{r:.0f}" for r in rss)
            print(f"{'kept' if keep else 'released'}: RSS MB at start, then after each of 5 swaps: {steps}")


if __name__ == "__main__":
    main()
