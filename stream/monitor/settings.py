"""`MonitorSettings`: how the monitor windows and when it alerts (`sentistream monitor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """How the monitor windows and when it alerts (`sentistream monitor`; env prefix SENTISTREAM_MONITOR_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_MONITOR_", frozen=True)

    app_id: str = Field(
        default="sentistream-monitor", description="Faust app id (consumer group, table topics)"
    )
    alerts_topic: str = Field(default="sentiment-alerts", description="topic the alerts go to")
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="replication factor of the topics the monitor creates (stats and alerts when "
        "missing, its table's changelog and leader topics)",
    )
    window_s: float = Field(
        default=10.0, gt=0, description="window size; must equal the workers' stats window"
    )
    baseline_windows: int = Field(default=30, ge=3, description="windows in the rolling baseline")
    min_baseline_windows: int = Field(
        default=6, ge=2, description="windows with events needed in the baseline before alerting"
    )
    grace_windows: int = Field(
        default=1,
        ge=1,
        description="a window is complete once every stats partition carried one this many windows later",
    )
    partition_idle_s: float = Field(
        default=30.0, gt=0, description="a stats partition silent this long no longer holds windows open"
    )
    max_future_s: float = Field(
        default=300.0,
        gt=0,
        description="stats of a window starting more than this after the monitor's clock are ignored",
    )
    z_threshold: float = Field(
        default=4.0, gt=0, description="share shift alert: |z| of a label's share at least this"
    )
    min_share_change: float = Field(
        default=0.10, ge=0, le=1, description="share shift alert: and its share moved at least this much"
    )
    min_window_events: int = Field(
        default=20, ge=1, description="windows with fewer events are not checked for share shifts"
    )
    volume_z_threshold: float = Field(
        default=4.0, gt=0, description="volume alert: |z| of the event count at least this"
    )
    min_volume_change: float = Field(
        default=0.5, ge=0, description="volume alert: and the count moved at least this fraction"
    )
    stall_after_s: float = Field(
        default=60.0, gt=0, description="stalled alert when no stats arrive for this long"
    )
    examples: int = Field(
        default=3, ge=0, description="example tweets per label kept for alerts (0: do not read tweets-scored)"
    )
    web_port: int = Field(
        default=6067, ge=1, le=65535, description="port of the monitor's /health and /metrics"
    )
    web_host: str = Field(
        default="127.0.0.1", description="interface the web views bind (0.0.0.0 in containers)"
    )
    from_beginning: bool = Field(
        default=False, description="on first start, read the stats topic from its beginning"
    )
    estimate_floor: float | None = Field(
        default=None, ge=0, le=1, description="estimated-accuracy alert: a window's estimate below this"
    )
    estimate_drop: float = Field(
        default=0.05, gt=0, le=1, description="estimated-accuracy alert: or this far below its baseline"
    )
    min_estimate_events: int = Field(
        default=50, ge=1, description="windows with fewer estimated events are not judged on the estimate"
    )
    worker_url: str | None = Field(
        default=None,
        description="a worker's base URL (http://HOST:6066): share alerts then carry the words that "
        "drove the label that rose, from its POST /explain on a few of the window's examples; unset: none",
    )
    api_token_file: Path | None = Field(
        default=None, description="file holding the bearer token the worker's /explain requires"
    )
    explain_texts: int = Field(
        default=8, ge=1, le=32, description="examples of the risen label explained per alert (one request)"
    )
    explain_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="an alert waits at most this long for its drivers, then goes without",
    )
    drivers: int = Field(default=5, ge=1, le=20, description="words attached to a share alert")

    @field_validator("api_token_file", "worker_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`SENTISTREAM_MONITOR_WORKER_URL=` (compose's `${VAR:-}`) means none."""
        return None if value == "" else value
