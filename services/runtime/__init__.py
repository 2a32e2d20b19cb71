"""The runtime shared by every service: Kafka loop, dead letters, settings, metrics, health."""

from services.runtime.deadletter import UnprocessableMessageError
from services.runtime.loop import BatchResult, Consumed, Handler, Output, RetryableError, ServiceRuntime
from services.runtime.settings import KafkaSettings, ServiceSettings

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
]
