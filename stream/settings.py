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
