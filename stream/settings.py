"""Where the stream is: broker addresses, topic names and Kafka security, shared by every client.

The worker, the producers, the dashboard and the infra manifests all read this one class, so a
topic renamed here (or by `SENTISTREAM_SCORED_TOPIC`) is renamed everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BROKER = "kafka://127.0.0.1:9092"


class KafkaSettings(BaseSettings):
    """Connection to Kafka and the names of the four topics (ARCHITECTURE.md, "Topics")."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True)

    broker: str = Field(default=DEFAULT_BROKER, description="kafka://HOST:PORT (comma-separate several)")
    topic: str = Field(default="tweets", description="raw input topic")
    scored_topic: str = Field(default="tweets-scored", description="scored events topic")
    dlq_topic: str = Field(default="tweets-dlq", description="dead-letter topic")
    stats_topic: str = Field(default="sentiment-stats", description="windowed aggregates topic")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, when the protocol is SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signed the brokers' TLS certificates"
    )

    @field_validator("broker")
    @classmethod
    def _valid_broker(cls, value: str) -> str:
        bootstrap_servers(value)  # raises ValueError with a message that says the expected form
        return value

    @property
    def bootstrap(self) -> str:
        """`host:port,host:port`, as aiokafka takes it."""
        return ",".join(bootstrap_servers(self.broker))

    def aiokafka_security(self) -> dict:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
        return kwargs


def bootstrap_servers(url: str) -> list[str]:
    """`kafka://a:9092,b:9092` (or `kafka://a:9092,kafka://b:9092`) -> ["a:9092", "b:9092"]."""
    servers = []
    for part in url.split(","):
        part = part.strip()
        parsed = urlparse(part if "://" in part else f"kafka://{part}")
        if parsed.scheme != "kafka" or not parsed.hostname or parsed.port is None:
            raise ValueError(
                f"{part!r} is not a broker address; use kafka://HOST:PORT, e.g. {DEFAULT_BROKER}"
            )
        servers.append(f"{parsed.hostname}:{parsed.port}")
    return servers


class WorkerSettings(BaseSettings):
    """How the stream worker consumes, batches, scores and serves (`sentistream worker`)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True)

    group_id: str = Field(default="sentistream-worker", description="Kafka consumer group of the workers")
    partitions: int = Field(default=4, ge=1, description="partition count of the topics the worker creates")
    replication_factor: int = Field(
        default=1, ge=1, description="replication factor of topics the worker creates"
    )
    batch_size: int = Field(default=64, ge=1, le=10_000, description="max texts per micro-batch")
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
    max_predict_texts: int = Field(default=256, ge=1, description="max texts in one POST /predict request")
    max_predict_bytes: int = Field(default=1_048_576, ge=1, description="max body bytes of POST /predict")
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
    worker_name: str | None = Field(default=None, description="name in stats and logs (default host:pid)")
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
    predict_read_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds to receive a POST /predict body before answering 408"
    )
