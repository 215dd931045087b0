"""infra/prometheus/alerts.yml reads only metrics the monitor really exposes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from stream.monitor.app import MonitorMetrics
from stream.monitor.detector import ShiftDetector, WindowCounts
from stream.monitor.settings import MonitorSettings

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yml"


def exposed_metrics() -> set[str]:
    """Metric names in the monitor's /metrics text after a few windows."""
    metrics, detector = MonitorMetrics(), ShiftDetector(MonitorSettings())
    start = datetime(2026, 11, 30, tzinfo=UTC)
    for i in range(8):
        window = WindowCounts(start + timedelta(seconds=10 * i), start + timedelta(seconds=10 * (i + 1)), {"a": 5, "b": 5})  # fmt: skip
        detector.observe(window)
        metrics.record(detector.last, window)
    metrics.alerts.labels("share").inc()
    metrics.last_stats.set(1.0)
    text = metrics.render().decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_every_rule_reads_an_exposed_metric() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "SentimentShareShift",
        "SentimentVolumeShift",
        "SentimentStatsStalled",
    }
    exposed = exposed_metrics()
    for rule in rules:
        used = set(re.findall(r"sentistream_monitor_\w+", rule["expr"]))
        assert used and used <= exposed, (rule["alert"], used - exposed)
