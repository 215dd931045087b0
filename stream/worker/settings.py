"""How the stream worker consumes, batches, scores and serves: `WorkerSettings` (`sentistream worker`).

Where the broker is and what the topics are called is the contract's (`stream.settings`); what one
worker does with them is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from sentistream.errors import UsageError
from stream.settings import ConsumerGroupSettings, bind_error
from stream.worker_api import MAX_PREDICT_BYTES, MAX_PREDICT_TEXTS

# Texts per stream micro-batch when --batch-size is unset. A CPU scores best in small passes; a GPU
# wants its whole token budget per pass (16,384 tokens, model/engines/batching.py) and a tweet is
# about 32 tokens, so a GPU worker takes 512 events at a time and the engine cuts them by tokens.
CPU_STREAM_BATCH = 64
GPU_STREAM_BATCH = 16_384 // 32


class WorkerSettings(ConsumerGroupSettings):
    """How the stream worker consumes, batches, scores and serves (`sentistream worker`)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True)
    partitions: int = Field(default=4, ge=1, description="partition count of the topics the worker creates")
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes this command runs, one consumer-group member each, sharing the "
        "machine's GPU or cores; process i serves its web views on web_port+i",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="replication factor of topics the worker creates"
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description=f"max texts per micro-batch; unset: {CPU_STREAM_BATCH} on a CPU, {GPU_STREAM_BATCH} on a GPU "
        "(its token budget of one pass / 32 tokens a tweet)",
    )
    max_wait_ms: int = Field(default=50, ge=1, description="max milliseconds to wait to fill a micro-batch")
    guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once", description="processing guarantee: at_least_once or exactly_once"
    )
    web_port: int = Field(default=6066, ge=1, le=65535, description="port of /health, /metrics, /predict")
    web_host: str = Field(
        default="127.0.0.1", description="interface the web views bind (0.0.0.0 in containers)"
    )
    stats_window_s: float = Field(
        default=10.0, gt=0, description="tumbling window of sentiment-stats, seconds"
    )
    max_predict_texts: int = Field(
        default=MAX_PREDICT_TEXTS, ge=1, description="max texts in one POST /predict request"
    )
    max_predict_bytes: int = Field(
        default=MAX_PREDICT_BYTES, ge=1, description="max body bytes of POST /predict"
    )
    max_text_chars: int = Field(
        default=10_000,
        ge=1,
        description="texts longer than this are cut in the scored event (truncated=true)",
    )
    commit_interval_s: float = Field(default=1.0, gt=0, description="seconds between offset commits")
    session_timeout_s: float = Field(
        default=30.0,
        ge=6.0,
        description="seconds without heartbeat before the group gives a dead worker's partitions away",
    )
    startup_timeout_s: float = Field(default=5.0, gt=0, description="seconds to wait for the broker at start")
    worker_name: str | None = Field(
        default=None,
        description="name in stats and logs (default host:pid); with static membership also the "
        "worker's consumer-group instance id, so give each worker its own stable name (the pod name)",
    )
    static_membership: bool = Field(
        default=True,
        description="with a --worker-name, join the group as that static member: a worker restarted "
        "under its name resumes its partitions at once; a stopped one's wait session_timeout_s",
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=16_384,
        description="largest output message (key + value); outputs are cut or dead-lettered to fit "
        "(the output topics' max.message.bytes lowers it)",
    )
    send_retry_s: float = Field(
        default=120.0,
        gt=0,
        description="seconds to retry unacknowledged outputs before the worker exits 1 without committing",
    )
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="/live fails when no batch completed for this long while messages wait",
    )
    inference_timeout_s: float = Field(
        default=300.0, gt=0, description="/live fails when one batch holds the inference thread this long"
    )
    max_predict_concurrency: int = Field(
        default=4, ge=1, description="POST /predict requests served at once; more get 429"
    )
    follow_deployments: bool = Field(
        default=True,
        description="serve the model `sentistream deploy` publishes (swapped between batches) instead "
        "of --model; --no-follow-deployments pins --model",
    )
    shadow: str | None = Field(
        default=None,
        description="a challenger model scored on the same batches off the critical path, compared "
        "with the champion in sentiment-stats (deploy --shadow sets one for every worker)",
    )
    model_cache_dir: Path = Field(
        default=Path("~/.cache/sentistream/models"),
        description="where bundles deployed by URI (s3://, gs://, https://...) are cached by checksum",
    )
    predict_read_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds to receive a POST /predict body before answering 408"
    )
    trusted_key: Path | None = Field(
        default=None,
        description="EC public key (PEM): serve only model bundles signed by its private key "
        "(deploy --signing-key); unset, whoever can write to the models topic decides what is served",
    )
    model_uri_prefixes: str = Field(
        default="",
        max_length=4096,
        description="comma-separated prefixes a deployed bundle's URI must start with (e.g. "
        "s3://models/,/models/); empty: any path or known store",
    )
    max_bundle_bytes: int = Field(
        default=8 << 30, ge=1, description="largest model bundle a deployment may make the worker fetch"
    )
    model_cache_keep: int = Field(
        default=3, ge=1, le=100, description="fetched bundles kept in model_cache_dir (the newest used)"
    )
    api_token_file: Path | None = Field(
        default=None,
        description="file holding the bearer token POST /predict and /explain require (a mounted "
        "secret); required when web_host is not a loopback address",
    )
    public_web_without_token: bool = Field(
        default=False,
        description="serve /predict and /explain beyond loopback without a token (anyone who reaches "
        "the port may use the model): only behind a NetworkPolicy or proxy that authenticates",
    )
    explain_timeout_s: float = Field(
        default=30.0, gt=0, description="POST /explain answers 503 when one explanation takes longer"
    )

    @field_validator("trusted_key", "api_token_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`SENTISTREAM_TRUSTED_KEY=` (compose's `${VAR:-}`) means no key, not the current directory."""
        return None if value == "" else value


def stream_batch_size(settings: WorkerSettings, device: str) -> int:
    """Texts per micro-batch: --batch-size, else the device's default."""
    return settings.batch_size or (GPU_STREAM_BATCH if device == "cuda" else CPU_STREAM_BATCH)


def refuse_busy_web_ports(settings: WorkerSettings) -> None:
    """Fail in one line, before Kafka is touched, when a web port the worker (or one of its
    --processes) would serve on is taken; without this the web server fails after the consumer
    joined, with a traceback. (A port taken later, before the bind, still stops the worker.)
    """
    n, first = settings.processes, settings.web_port
    for i in range(n):
        if (exc := bind_error(settings.web_host, first + i)) is None:
            continue
        if n == 1:
            raise UsageError(
                f"web port {first} on {settings.web_host}: {exc.strerror}; "
                "stop what uses it or pick another --web-port"
            )
        raise UsageError(
            f"web port {first + i} (worker process {i}) on {settings.web_host}: {exc.strerror}; "
            f"--processes {n} needs ports {first}-{first + n - 1} free, so pick another --web-port"
        )
