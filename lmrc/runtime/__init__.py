"""The runtime shared by every service: Kafka loop, dead letters, settings, metrics, health."""

from lmrc.runtime.deadletter import UnprocessableMessageError
from lmrc.runtime.loop import (
    BatchResult,
    Consumed,
    Handler,
    Output,
    RetryableError,
    ServiceRuntime,
    produce_when_room,
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
    "produce_when_room",
]
