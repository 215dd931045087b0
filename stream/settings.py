"""Where the stream is: broker addresses (and whether one answers), topic names and Kafka security,
shared by every client.

The worker, the producers, the dashboard and the infra manifests all read this one class, so a
topic renamed here (or by `SENTISTREAM_SCORED_TOPIC`) is renamed everywhere.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BROKER = "kafka://127.0.0.1:9092"
# The connection flags of every command that talks to Kafka (worker, produce, replay, dashboard).
# The SASL password is deliberately not among them: a flag shows in `ps` to every user of the
# machine, so it comes from SENTISTREAM_SASL_PASSWORD or from --sasl-password-file.
CONNECTION_FLAGS = [
    "broker",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_file",
    "ssl_cafile",
]
TOPIC_FLAGS = ["topic", "scored_topic", "dlq_topic", "stats_topic", "models_topic"]


class KafkaSettings(BaseSettings):
    """Connection to Kafka and the names of the topics (docs/ARCHITECTURE.md, "Topics")."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True)

    broker: str = Field(default=DEFAULT_BROKER, description="kafka://HOST:PORT (comma-separate several)")
    topic: str = Field(default="tweets", description="raw input topic")
    scored_topic: str = Field(default="tweets-scored", description="scored events topic")
    dlq_topic: str = Field(default="tweets-dlq", description="dead-letter topic")
    stats_topic: str = Field(default="sentiment-stats", description="windowed aggregates topic")
    models_topic: str = Field(
        default="sentistream-models", description="compacted control topic of model deployments"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, when the protocol is SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password: environment only, never a flag (never logged)"
    )
    sasl_password_file: Path | None = Field(
        default=None, description="file holding the SASL password (e.g. a mounted secret)"
    )
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signed the brokers' TLS certificates"
    )

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        """Read --sasl-password-file once, into `sasl_password`; one source of the password only."""
        path = data.get("sasl_password_file") if isinstance(data, dict) else None
        if not path:
            return data
        if data.get("sasl_password") is not None:
            raise ValueError(
                "the SASL password is set twice: unset SENTISTREAM_SASL_PASSWORD or drop --sasl-password-file"
            )
        try:
            password = Path(path).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(
                f"cannot read --sasl-password-file / SENTISTREAM_SASL_PASSWORD_FILE {path}: {reason}"
            ) from None
        return {**data, "sasl_password": password}

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        """Refuse, before any connection, a security setup that cannot work (aiokafka would raise
        a ValueError or a TLS error deep in a client)."""
        if self.security_protocol.startswith("SASL_"):
            missing = [
                flag
                for flag, value in (
                    ("--sasl-mechanism", self.sasl_mechanism),
                    ("--sasl-username", self.sasl_username),
                    ("--sasl-password-file (or SENTISTREAM_SASL_PASSWORD)", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"--security-protocol {self.security_protocol} needs {', '.join(missing)}")
        if self.ssl_cafile is not None:
            path = Path(self.ssl_cafile).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"--ssl-cafile {self.ssl_cafile}: no such file; give the CA bundle (PEM) that signed the brokers' certificates"
                )
        return self

    @field_validator("broker")
    @classmethod
    def _valid_broker(cls, value: str) -> str:
        bootstrap_servers(value)  # raises ValueError with a message that says the expected form
        return value

    def unreachable(self, why: str = "") -> str:
        """The one line every command prints when the broker does not answer (`why`: what failed)."""
        return f"cannot reach the Kafka broker at {self.broker}{why}; start it (`sentistream kafka start`) or fix --broker"

    def reachable(self, timeout: float = 1.0) -> bool:
        """True when any bootstrap server accepts a TCP connection (cheap: no Kafka request)."""
        return any(port_open(server, timeout) for server in bootstrap_servers(self.broker))

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


def port_open(address: str, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection at `host:port` (a broker, a worker, a dashboard)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not bind `host:port` now (None when it could). Unlike `port_open`, this
    also sees a port held by a client's connection, which no one answers on but no server can bind.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


class ConsumerGroupSettings(BaseSettings):
    """The workers' consumer group: the worker joins it, the dashboard shows its lag."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_", frozen=True)

    group_id: str = Field(default="sentistream-worker", description="Kafka consumer group of the workers")
