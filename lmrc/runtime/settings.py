"""Typed settings from environment variables: Kafka connection (``KAFKA_*``) and per service."""

from __future__ import annotations

import os
import sys
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A directory of secret files, one per setting, named as its environment variable
#: (``KAFKA_SASL_PASSWORD``, ``CLASSIFIER_TGI_API_TOKEN``...): how Kubernetes mounts a Secret as
#: files (the chart's ``credentials.asFiles``). An environment variable still wins over a file.
SECRETS_DIR: str | None = os.environ.get("LMRC_SECRETS_DIR") or None


class KafkaSettings(BaseSettings):
    """How every service reaches Kafka; shared by all services (``KAFKA_*`` variables)."""

    model_config = SettingsConfigDict(
        env_prefix="KAFKA_", extra="ignore", secrets_dir=SECRETS_DIR, hide_input_in_errors=True
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    ssl_key_location: str | None = Field(default=None, description="Client key (mutual TLS).")
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties common to consumers, producers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


#: While a batch runs, the loop polls the (paused) consumer and beats the liveness heartbeat this
#: often: a batch may take as long as it must without leaving the group or failing /healthz.
BUSY_POLL_SECONDS = 1.0


class ServiceSettings(BaseSettings):
    """What the shared runtime needs; each service subclasses it with its own ``env_prefix``."""

    # hide_input_in_errors: a validation error must not print what was given (a password in a URL,
    # a token): every service's settings inherit it.
    model_config = SettingsConfigDict(env_prefix="LMRC_", extra="ignore", hide_input_in_errors=True)

    service_name: str = "service"
    group_id: str = "lmrc-service"
    input_topic: str = "lmrc.input"
    output_topic: str | None = Field(default="lmrc.output", description="None: the service emits nothing.")
    dead_letter_topic: str = "lmrc.dead-letter"
    max_batch_size: int = Field(default=64, ge=1, le=10_000)
    max_batch_wait_seconds: float = Field(default=0.5, gt=0, le=60)
    max_batch_bytes: int = Field(
        default=8_000_000,
        ge=1024,
        description="What one batch's messages add up to at most (bytes): memory bounded by size, "
        "not only by max_batch_size. A larger message makes a batch of its own.",
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        description="The one message-size limit, the broker's (Kafka's default message.max.bytes): "
        "larger inputs are dead-lettered, the producer refuses larger records, an output that would "
        "be larger dead-letters its input, and a dead letter is cut to fit it.",
    )
    dead_letter_payload_max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Cap on the input kept in a dead letter; None: as much as fits max_message_bytes.",
    )
    delivery_timeout_seconds: float = Field(default=30.0, gt=0)
    retry_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    retry_backoff_max_seconds: float = Field(default=30.0, gt=0)
    session_timeout_ms: int = Field(default=30_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    create_topics: bool = Field(default=False, description="Create missing topics at start.")
    topic_partitions: int = Field(default=4, ge=1)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=9100, ge=0, le=65535, description="0 picks a free port.")
    liveness_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="/healthz fails when the loop has not polled for this long (it polls while a "
        "batch runs too, every BUSY_POLL_SECONDS).",
    )
    max_batch_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="/healthz fails when one batch has run this long (a handler stuck for good; "
        "every dependency call has its own timeout well below it).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        """Limits that only work together (librdkafka refuses the first; the others would make a
        healthy but busy service look dead or leave its group)."""
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError("max_poll_interval_ms must be at least session_timeout_ms")
        if self.liveness_timeout_seconds * 1000 < 4 * BUSY_POLL_SECONDS * 1000:
            raise ValueError(f"liveness_timeout_seconds must be at least {4 * BUSY_POLL_SECONDS}")
        if self.max_poll_interval_ms < 4 * BUSY_POLL_SECONDS * 1000:
            raise ValueError(f"max_poll_interval_ms must be at least {int(4 * BUSY_POLL_SECONDS * 1000)}")
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """A service's settings from its environment, or exit with one line per problem (status 2):
    where (the variable's field) and what, never the value given, which may be a secret."""
    try:
        return settings_class()
    except ValidationError as error:
        # The Kafka settings are built by their own class (a default factory): their prefix then.
        failing = KafkaSettings if error.title == KafkaSettings.__name__ else settings_class
        prefix = str(failing.model_config.get("env_prefix", "")).upper()
        problems = "; ".join(
            f"{prefix}{'_'.join(str(part) for part in problem['loc']).upper() or '(settings)'}: "
            f"{problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False, include_context=False)
        )
        print(f"error: invalid configuration: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
