"""Topic creation for local runs and tests (production creates topics with the Helm Job)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def compaction_config(tombstone_retention_ms: int) -> dict[str, str]:
    """A compacted topic's settings: the latest record per key is kept, and a tombstone for
    ``tombstone_retention_ms`` (any consumer further behind than that would miss the deletion)."""
    return {"cleanup.policy": "compact", "delete.retention.ms": str(tombstone_retention_ms)}


def ensure_topics(
    client_config: dict[str, Any],
    topics: Iterable[str],
    partitions: int,
    timeout: float = 15.0,
    replication_factor: int = -1,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Returns the topics created. ``replication_factor`` -1 takes the broker's default; ``configs``
    gives a topic its settings when it is created (compaction).
    """
    # log_level 5: librdkafka's informational lines ("Purging 1 unserved events from background
    # queue" when the client goes) are not for the user; warnings and errors still are.
    admin = AdminClient({**client_config, "log_level": 5})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=(configs or {}).get(topic, {}),
        )
        for topic in dict.fromkeys(topics)
        if topic not in existing
    ]
    if not wanted:
        return []
    for topic, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {topic!r}: {error}") from error
    return [topic.topic for topic in wanted]
