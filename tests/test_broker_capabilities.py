"""What the local broker (Tansu) supports, checked with confluent-kafka; see docs/broker.md."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from lmrc.local.broker import LocalBroker
from lmrc.local.publish import beginning_of
from lmrc.runtime.topics import ensure_topics
from tests.helpers import committed_offsets, produce, read_topic

pytestmark = pytest.mark.broker


def test_topics_are_created_with_the_requested_partitions(broker: LocalBroker, unique: str) -> None:
    config = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(config, [f"{unique}.a", f"{unique}.b"], partitions=3)
    ensure_topics(config, [f"{unique}.a"], partitions=3)  # existing: left alone
    consumer = Consumer({**config, "group.id": "unused"})
    try:
        partitions = beginning_of(consumer, [f"{unique}.a", f"{unique}.b"])
    finally:
        consumer.close()
    assert sorted((tp.topic, tp.partition) for tp in partitions) == [
        (f"{unique}.{name}", p) for name in "ab" for p in range(3)
    ]


def test_topics_command_creates_missing_topics_and_leaves_existing_ones(
    broker: LocalBroker, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lmrc topics`, what the Helm chart's Job runs."""
    from lmrc.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    assert main(["topics", "--partitions", "2", f"{unique}.x"]) == 0
    assert main(["topics", "--partitions", "2", f"{unique}.x", f"{unique}.y"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [[f"{unique}.x", "created"], [f"{unique}.x", "exists"], [f"{unique}.y", "created"]]
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "unused"})
    try:
        assert len(beginning_of(consumer, [f"{unique}.x", f"{unique}.y"])) == 4
    finally:
        consumer.close()


def test_idempotent_producer_and_group_commits(broker: LocalBroker, unique: str) -> None:
    topic = f"{unique}.in"
    produce(broker.bootstrap_servers, topic, [b"1", b"2", b"3"])
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"{unique}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 600,
        }
    )
    try:
        consumer.subscribe([topic])
        seen = []
        while len(seen) < 3:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen.append(message.value())
        consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        consumer.close()
    assert seen == [b"1", b"2", b"3"]
    assert committed_offsets(broker.bootstrap_servers, f"{unique}-group", topic, 1) == {0: 2}


def test_transactions_commit_and_abort(broker: LocalBroker, unique: str) -> None:
    topic = f"{unique}.tx"
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "transactional.id": f"{unique}-tx"})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed", partition=0)
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted", partition=0)
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"after", partition=0)
    producer.commit_transaction(10)
    values = [record.value for record in read_topic(broker.bootstrap_servers, [topic], expect=2)]
    assert values == [b"committed", b"after"]
