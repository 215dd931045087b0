"""Dashboard settings: the port, the worker to ask, and the bounds that keep memory flat.

The broker and topic names are not repeated here: they come from `stream.settings.KafkaSettings`,
the class every Kafka client of the project reads; the workers' consumer group (for the lag KPI)
is `stream.settings.ConsumerGroupSettings` (`SENTISTREAM_GROUP_ID`), which the worker shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.settings import HistorySettings  # the History tab's folder: the sink's, one setting for both


class DashboardSettings(BaseSettings):
    """How the dashboard serves and how much it keeps (env prefix SENTISTREAM_DASHBOARD_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_DASHBOARD_", frozen=True)

    port: int = Field(default=8501, ge=1, le=65535, description="port the dashboard serves on")
    address: str = Field(default="127.0.0.1", description="interface to bind (0.0.0.0 in containers)")
    worker_url: str = Field(
        default="http://127.0.0.1:6066", description="worker web views (/predict, /health) for 'Try it'"
    )
    worker_token_file: Path | None = Field(
        default=None,
        description="file holding the workers' bearer token (their --api-token-file) for /predict and /explain",
    )

    @field_validator("worker_token_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable means no token file, not the current directory."""
        return None if value == "" else value

    buffer_size: int = Field(
        default=20_000, ge=100, le=1_000_000, description="recent scored events kept in memory"
    )
    backlog: int = Field(
        default=2_000, ge=0, description="events per partition read back from history when starting"
    )
    stats_windows: int = Field(
        default=2_000,
        ge=10,
        le=100_000,
        description="sentiment-stats windows kept in memory, for the model charts over time",
    )
    refresh_s: float = Field(default=1.0, gt=0, description="seconds between live refreshes of the page")
    retry_s: float = Field(default=2.0, gt=0, description="seconds between attempts to reach the broker")
    upload_limit_mb: int = Field(default=10, ge=1, le=200, description="largest CSV upload, in MB")
    upload_max_rows: int = Field(default=20_000, ge=1, description="most rows of an uploaded CSV scored")
    upload_max_columns: int = Field(default=100, ge=1, description="most columns an uploaded CSV may have")
    upload_max_cells: int = Field(
        default=1_000_000, ge=1, description="most cells (rows x columns) of an uploaded CSV kept"
    )
    upload_max_cell_chars: int = Field(
        default=10_000, ge=10, description="characters kept per cell of an uploaded CSV (longer is cut)"
    )
    max_text_chars: int = Field(default=1_000, ge=50, description="tweet text kept per event (longer is cut)")


__all__ = ["DashboardSettings", "HistorySettings", "bearer", "worker_token"]


def worker_token(settings: DashboardSettings) -> str | None:
    """The bearer token of `settings.worker_token_file` (None: none, or it cannot be read: the
    worker then answers 401 and 'Try it' says so)."""
    if settings.worker_token_file is None:
        return None
    try:
        return settings.worker_token_file.expanduser().read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for `token` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
