"""Prometheus metrics of the shared runtime, labelled by service (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "lmrc_messages_consumed_total", "Messages read from the input topic.", ["service", "topic"]
)
MESSAGES_PRODUCED = Counter(
    "lmrc_messages_produced_total",
    "Messages produced and confirmed by the broker (outputs and dead letters).",
    ["service", "topic"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "lmrc_messages_dead_lettered_total",
    "Input messages sent to the dead-letter topic, by error class.",
    ["service", "error_class"],
)
BATCH_SIZE = Histogram(
    "lmrc_batch_size_messages",
    "Messages per processed batch.",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_PROCESSING_SECONDS = Histogram(
    "lmrc_batch_processing_seconds",
    "Seconds from a batch's arrival to its offsets being committed.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BATCH_RETRIES = Counter(
    "lmrc_batch_retries_total",
    "Batches rewound and retried after a transient failure, by error class.",
    ["service", "error_class"],
)
PRODUCER_RESETS = Counter(
    "lmrc_producer_resets_total",
    "Producers replaced by a fresh one (a new idempotent producer id) after a failed delivery.",
    ["service"],
)
TOMBSTONES = Counter(
    "lmrc_tombstones_total",
    "Tombstones read (a key with a null value: delete that document), passed on or applied.",
    ["service"],
)
OFFSET_COMMITS = Counter("lmrc_offset_commits_total", "Offset commits, by outcome.", ["service", "outcome"])
KAFKA_ERRORS = Counter(
    "lmrc_kafka_errors_total", "Errors reported by the Kafka client, by code.", ["service", "code"]
)
CONSUMER_LAG = Gauge(
    "lmrc_consumer_lag_messages",
    "High watermark minus the consumer's position, per assigned partition.",
    ["service", "topic", "partition"],
)
LAST_COMMIT_TIMESTAMP = Gauge(
    "lmrc_last_commit_timestamp_seconds",
    "Unix time of the last successful offset commit.",
    ["service"],
)


def initialize(service: str) -> None:
    """Create the series whose label values are known in advance at 0, so that the first event is
    an increase that ``rate()`` sees, and ratios read 0 rather than nothing before it."""
    for outcome in ("committed", "failed"):
        OFFSET_COMMITS.labels(service, outcome)
    BATCH_SIZE.labels(service)
    BATCH_PROCESSING_SECONDS.labels(service)
    PRODUCER_RESETS.labels(service)
    TOMBSTONES.labels(service)
