"""The runtime shared by every service: Kafka loop, dead letters, settings, metrics, health."""

from lmrc.runtime.deadletter import UnprocessableMessageError
from lmrc.runtime.loop import (
    BatchResult,
    Consumed,
    Handler,
    Output,
    RetryableError,
    ServiceRuntime,
    Tombstone,
    produce_when_room,
    record_time_ms,
)
from lmrc.runtime.settings import KafkaSettings, ServiceSettings

__all__ = [
    "BatchResult",
    "Consumed",
    "Handler",
    "KafkaSettings",
    "Output",
    "UnprocessableMessageError",
    "RetryableError",
    "ServiceRuntime",
    "ServiceSettings",
    "Tombstone",
    "produce_when_room",
    "record_time_ms",
]
