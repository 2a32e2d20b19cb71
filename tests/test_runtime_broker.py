"""The shared runtime on the real broker: flow, dead letters, retries, restart, shutdown, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pydantic import BaseModel

from lmrc import docred
from lmrc.contracts import DeadLetterEvent, DocumentEvent
from lmrc.local.broker import LocalBroker
from lmrc.local.relay import RelaySettings, build_runtime
from lmrc.runtime import (
    BatchResult,
    Consumed,
    Handler,
    Output,
    RetryableError,
    ServiceRuntime,
)
from lmrc.runtime.topics import ensure_topics
from tests.helpers import (
    committed_offsets,
    http_get,
    metric_value,
    produce,
    read_topic,
    running,
    scaled,
    service_test_fields,
    wait_committed,
)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def documents() -> list[DocumentEvent]:
    return [docred.to_document_event(raw, dataset="redocred") for raw in docred.load_split("holdout")]


def relay_settings(broker: LocalBroker, stem: str, **overrides: object) -> RelaySettings:
    fields = service_test_fields(broker.bootstrap_servers, "relay", stem, "in")
    fields.update(output_topic=f"{stem}.out", topic_partitions=2, retry_backoff_initial_seconds=0.05)
    fields.update(overrides)
    return RelaySettings(**fields)


def encoded(events: Sequence[BaseModel]) -> list[bytes | None]:
    return [event.model_dump_json().encode() for event in events]


def test_documents_flow_through_with_their_keys(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(documents[:30]))
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=30)
        port = runtime.http_port
        assert (
            metric_value(
                port,
                "lmrc_messages_consumed_total",
                service=settings.service_name,
                topic=settings.input_topic,
            )
            == 30
        )
        assert (
            metric_value(
                port,
                "lmrc_messages_produced_total",
                service=settings.service_name,
                topic=settings.output_topic,
            )
            == 30
        )
        assert metric_value(port, "lmrc_batch_size_messages_sum", service=settings.service_name) == 30
    by_key = {r.key: DocumentEvent.model_validate_json(r.value or b"") for r in out}
    assert len(out) == 30 and by_key == {d.doc_id: d for d in documents[:30]}
    assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 2) == {0: 30}


def test_tombstones_pass_through_in_order_with_their_documents_and_keyless_ones_are_dead_lettered(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    """A tombstone (a key, a null value) deletes its document downstream: every stage passes it on
    under its key, between the records it came between, so a document published, deleted and
    published again arrives in that order. A null value without a key names nothing to delete."""
    settings = relay_settings(broker, unique)
    first, second = documents[0], documents[1]
    inputs: list[tuple[str | None, bytes | None]] = [
        (first.doc_id, first.model_dump_json().encode()),
        (first.doc_id, None),
        (second.doc_id, second.model_dump_json().encode()),
        (None, None),
        (first.doc_id, first.model_dump_json().encode()),
        (second.doc_id, None),
    ]
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [settings.input_topic], 1)
    for key, value in inputs:
        producer.produce(settings.input_topic, key=key, value=value, partition=0)
    assert producer.flush(scaled(15)) == 0
    runtime = build_runtime(settings)
    with running(runtime):
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 6})
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=5)
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1)
        tombstones = metric_value(runtime.http_port, "lmrc_tombstones_total", service=settings.service_name)
    by_key: dict[str | None, list[str | None]] = {}
    for record in out:  # order holds per key (a key's records share a partition)
        value = None if record.value is None else DocumentEvent.model_validate_json(record.value).doc_id
        by_key.setdefault(record.key, []).append(value)
    assert by_key == {
        first.doc_id: [first.doc_id, None, first.doc_id],
        second.doc_id: [second.doc_id, None],
    }
    (letter,) = [DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq]
    assert (letter.error_class, letter.origin.offset) == ("TombstoneWithoutKey", 3)
    assert tombstones == 3


def test_bad_messages_are_dead_lettered_with_reasons_and_the_partition_keeps_flowing(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique, max_message_bytes=100_000, dead_letter_payload_max_bytes=50_000)
    wrong = json.loads(documents[1].model_dump_json())
    wrong["entities"][2]["mentions"][0]["sent_id"] = 99
    inputs = [
        documents[0].model_dump_json().encode(),
        b'{"doc_id": "broken", ',
        json.dumps(wrong).encode(),
        b"",
        b"x" * 100_001,
        documents[2].model_dump_json().encode(),
    ]
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, inputs)
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=2)
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=4)
        port = runtime.http_port
        counted = {
            error_class: metric_value(
                port,
                "lmrc_messages_dead_lettered_total",
                service=settings.service_name,
                error_class=error_class,
            )
            for error_class in ("MalformedJSON", "SchemaValidationError", "EmptyMessage", "MessageTooLarge")
        }
    assert sorted(r.key or "" for r in out) == sorted([documents[0].doc_id, documents[2].doc_id])
    letters = [DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq]
    assert [(letter.origin.offset, letter.error_class) for letter in letters] == [
        (1, "MalformedJSON"),
        (2, "SchemaValidationError"),
        (3, "EmptyMessage"),
        (4, "MessageTooLarge"),
    ]
    assert all(letter.service == settings.service_name for letter in letters)
    assert all(letter.origin.topic == settings.input_topic for letter in letters)
    assert letters[0].payload == '{"doc_id": "broken", '
    assert "entities[2].mentions[0]: sent_id 99 out of range (document has" in letters[1].error_message
    assert letters[1].payload == json.dumps(wrong)
    assert not letters[1].payload_truncated
    assert letters[3].payload_truncated and letters[3].payload == "x" * 50_000
    assert "100001 bytes exceeds the limit of 100000" in letters[3].error_message
    assert counted == {
        "MalformedJSON": 1,
        "SchemaValidationError": 1,
        "EmptyMessage": 1,
        "MessageTooLarge": 1,
    }
    assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 2) == {0: 6}


def test_a_dead_letter_never_exceeds_the_message_limit(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    """Escaped in JSON, a payload of control bytes grows sixfold: the dead letter of an input just
    under the limit would exceed it and the broker refuse it. The payload is cut until it fits."""
    limit = 20_000
    settings = relay_settings(broker, unique, max_message_bytes=limit)
    hostile = b"\x01" * 19_000  # not JSON
    with running(build_runtime(settings)):
        produce(
            broker.bootstrap_servers, settings.input_topic, [hostile, documents[0].model_dump_json().encode()]
        )
        (letter_record,) = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1)
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=1)
    assert len(letter_record.value or b"") <= limit
    letter = DeadLetterEvent.model_validate_json(letter_record.value or b"")
    assert letter.error_class == "MalformedJSON" and letter.payload_truncated
    assert 1_000 < len(letter.payload) < 19_000 and set(letter.payload) == {"\x01"}
    assert [r.key for r in out] == [documents[0].doc_id]


def test_a_huge_key_is_cut_in_its_dead_letter_and_cannot_stall_the_partition(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    """A key is copied into its letter's origin and used as the letter's record key, and JSON
    escapes control bytes sixfold: a 700 KB key (or 180 KB of control bytes) on a malformed value
    made every dead-letter produce fail, the service exit on every start and the good messages
    behind it never run. The letter now keeps the key's first 1,024 bytes and its SHA-256."""
    settings = relay_settings(broker, unique)
    keys = [b"k" * 700_000, b"\x01" * 180_000]
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 2_000_000})
    for key in keys:
        producer.produce(settings.input_topic, value=b'{"doc_id":', key=key, partition=0)
    producer.produce(
        settings.input_topic, value=documents[0].model_dump_json().encode(), key=b"good", partition=0
    )
    assert producer.flush(scaled(15)) == 0
    with running(build_runtime(settings)):
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 3})
    out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=1)
    dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=2)
    assert [r.key for r in out] == [documents[0].doc_id]
    letters = [DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq]
    assert [letter.error_class for letter in letters] == ["MalformedJSON", "MalformedJSON"]
    for letter, record, key in zip(letters, dlq, keys, strict=True):
        assert letter.origin.key_truncated and letter.origin.key_sha256 == hashlib.sha256(key).hexdigest()
        assert letter.origin.key == key[:1024].decode() and record.key == letter.origin.key
        assert len(record.value or b"") <= settings.max_message_bytes


def test_a_broker_that_lost_its_state_is_caught_up_with_by_a_fresh_producer(
    unique: str, documents: list[DocumentEvent], tmp_path: Path
) -> None:
    """The memory-backed broker restarted and its topics re-created: the idempotent producer's id
    was unknown to the new broker, every delivery timed out, and the service retried with the
    same producer for good, never passing the new documents on, while /readyz said 200. Now a
    failed delivery replaces the producer, and the document goes through."""
    with LocalBroker(log_path=tmp_path / "broker.log") as own_broker:
        bootstrap = own_broker.bootstrap_servers
        settings = relay_settings(own_broker, unique, topic_partitions=1, delivery_timeout_seconds=3.0)
        topics = [settings.input_topic, settings.output_topic, settings.dead_letter_topic]
        runtime = build_runtime(settings)
        with running(runtime):
            produce(bootstrap, settings.input_topic, encoded(documents[:1]))
            assert len(read_topic(bootstrap, [settings.output_topic], expect=1)) == 1
            own_broker.kill()
            own_broker.start()  # empty: the topics, offsets and producer ids are gone
            ensure_topics({"bootstrap.servers": bootstrap}, topics, 1)
            produce(bootstrap, settings.input_topic, encoded(documents[1:2]))
            (record,) = read_topic(bootstrap, [settings.output_topic], expect=1, timeout=60)
            ready, body = http_get(runtime.http_port, "/readyz")
            resets = metric_value(
                runtime.http_port, "lmrc_producer_resets_total", service=settings.service_name
            )
    assert record.key == documents[1].doc_id and resets >= 1
    assert ready == 200 and json.loads(body)["group_joined"] is True


class _FlakyHandler(Handler[DocumentEvent]):
    """Fails like an unreachable dependency for the first ``failures`` calls, then forwards."""

    input_model = DocumentEvent

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise RetryableError("dependency unreachable")
        return BatchResult(outputs=[Output(item.event, key=item.event.doc_id) for item in batch])


def test_transient_failure_rewinds_and_retries_without_committing_or_losing(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique)
    handler = _FlakyHandler(failures=3)
    runtime = ServiceRuntime(settings, handler)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(documents[:5]))
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=5)
        retries = metric_value(
            runtime.http_port,
            "lmrc_batch_retries_total",
            service=settings.service_name,
            error_class="RetryableError",
        )
    assert sorted(r.key or "" for r in out) == sorted(d.doc_id for d in documents[:5])
    assert retries >= 3
    assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 2) == {0: 5}


class _RecordingHandler(_FlakyHandler):
    """A flaky handler that notes the bytes of each batch it is given."""

    def __init__(self, failures: int) -> None:
        super().__init__(failures)
        self.batch_bytes: list[int] = []

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        self.batch_bytes.append(sum(len(item.message.value() or b"") for item in batch))
        return super().handle(batch)


def test_a_batch_is_bounded_by_bytes_and_a_failed_one_puts_the_rest_back(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    """64 relation sets of 1 MB each were one batch (6.5 GB in the sink): now what one consume
    returns is cut into batches of at most max_batch_bytes. When one of them fails, the ones after
    it are put back too, so nothing is skipped and nothing is committed past the failure."""
    values = encoded(documents[:12])
    limit = 3 * max(len(value or b"") for value in values)
    settings = relay_settings(broker, unique, max_batch_bytes=limit, max_batch_wait_seconds=1.0)
    handler = _RecordingHandler(failures=2)
    runtime = ServiceRuntime(settings, handler)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, values)
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 12})
    out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=12)
    assert sorted(r.key or "" for r in out) == sorted(d.doc_id for d in documents[:12])  # once each
    assert max(handler.batch_bytes) <= limit
    # After the two failures, every message was handled exactly once.
    assert sum(handler.batch_bytes[2:]) == sum(len(value or b"") for value in values)


class _LifecycleHandler(Handler[DocumentEvent]):
    """Notes when the runtime starts and closes it, and whether a batch came outside that window."""

    input_model = DocumentEvent

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        self.calls.append("handle")
        return BatchResult(outputs=[Output(item.event, key=item.event.doc_id) for item in batch])

    def close(self) -> None:
        self.calls.append("close")


def test_the_runtime_starts_the_handler_before_its_first_batch_and_closes_it_once_after_the_last(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique)
    handler = _LifecycleHandler()
    with running(ServiceRuntime(settings, handler)):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(documents[:3]))
        read_topic(broker.bootstrap_servers, [settings.output_topic], expect=3)
    assert handler.calls[0] == "start" and handler.calls[-1] == "close"
    assert handler.calls.count("start") == handler.calls.count("close") == 1
    assert set(handler.calls[1:-1]) == {"handle"}


class _SlowHandler(Handler[DocumentEvent]):
    """Takes ``seconds`` over its first batch (a model server answering slowly), then forwards."""

    input_model = DocumentEvent

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[list[str]] = []
        self.busy = threading.Event()

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        self.batches.append([item.event.doc_id for item in batch])
        if len(self.batches) == 1:
            self.busy.set()
            time.sleep(self.seconds)
        return BatchResult(outputs=[Output(item.event, key=item.event.doc_id) for item in batch])


def test_a_batch_slower_than_the_poll_interval_keeps_the_group_and_the_liveness_probe(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    """A batch used to block the loop: past max.poll.interval.ms the consumer left its group, the
    batch's commit failed and it was handled again (duplicates), and /healthz failed meanwhile."""
    settings = relay_settings(
        broker, unique, max_poll_interval_ms=4000, liveness_timeout_seconds=4.0, max_batch_size=5
    )
    handler = _SlowHandler(seconds=9.0)  # over twice the poll interval and the liveness timeout
    runtime = ServiceRuntime(settings, handler)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(documents[:5]))
        assert handler.busy.wait(scaled(60)), "the batch never started"
        time.sleep(5.0)  # past the liveness timeout, inside the batch
        status, body = http_get(runtime.http_port, "/healthz")
        assert status == 200 and json.loads(body)["seconds_in_batch"] >= 4.0, body
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=5)
        committed = committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 2)
    assert sorted(r.key or "" for r in out) == sorted(d.doc_id for d in documents[:5])
    assert sum(len(batch) for batch in handler.batches) == 5, handler.batches  # none handled twice
    assert committed == {0: 5}


class _PoisonSensitiveHandler(Handler[DocumentEvent]):
    """A handler with a bug that one particular document triggers."""

    input_model = DocumentEvent

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        if any(item.event.doc_id == "poison" for item in batch):
            raise ZeroDivisionError("division by zero while handling poison")
        return BatchResult(outputs=[Output(item.event, key=item.event.doc_id) for item in batch])


def test_a_message_that_crashes_the_handler_is_isolated_and_dead_lettered(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique, max_batch_size=50)
    poison = documents[1].model_copy(update={"doc_id": "poison"})
    runtime = ServiceRuntime(settings, _PoisonSensitiveHandler())
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded([documents[0], poison, documents[2]]))
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=2)
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1)
    assert sorted(r.key or "" for r in out) == sorted([documents[0].doc_id, documents[2].doc_id])
    letter = DeadLetterEvent.model_validate_json(dlq[0].value or b"")
    assert (letter.error_class, letter.origin.offset) == ("ZeroDivisionError", 1)
    assert "while handling poison" in letter.error_message


def test_health_and_metrics_endpoints(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(documents[:3]))
        read_topic(broker.bootstrap_servers, [settings.output_topic], expect=3)
        port = runtime.http_port
        assert http_get(port, "/healthz")[0] == 200
        status, body = http_get(port, "/readyz")
        assert status == 200 and json.loads(body)["service"] == settings.service_name
        deadline = time.monotonic() + 10
        lag_labels = {"service": settings.service_name, "topic": settings.input_topic, "partition": "0"}
        while (
            "lmrc_consumer_lag_messages{" not in http_get(port, "/metrics")[1] and time.monotonic() < deadline
        ):
            time.sleep(scaled(0.2))
        assert metric_value(port, "lmrc_consumer_lag_messages", **lag_labels) == 0
        text = http_get(port, "/metrics")[1]
        assert f'lmrc_batch_processing_seconds_count{{service="{settings.service_name}"}}' in text
        assert (
            metric_value(
                port, "lmrc_offset_commits_total", service=settings.service_name, outcome="committed"
            )
            >= 1
        )
        assert http_get(port, "/nope")[0] == 404


def _start_relay_process(settings: RelaySettings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RELAY_SERVICE_NAME": settings.service_name,
        "RELAY_GROUP_ID": settings.group_id,
        "RELAY_INPUT_TOPIC": settings.input_topic,
        "RELAY_OUTPUT_TOPIC": settings.output_topic,
        "RELAY_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "RELAY_HTTP_PORT": "0",
        "RELAY_CREATE_TOPICS": "true",
        "RELAY_TOPIC_PARTITIONS": "2",
        "RELAY_MAX_BATCH_WAIT_SECONDS": "0.1",
        "RELAY_SESSION_TIMEOUT_MS": "6000",
    }
    return subprocess.Popen([sys.executable, "-m", "lmrc.local.relay"], env=env)


def test_sigterm_commits_and_a_restarted_service_resumes_where_it_stopped(
    broker: LocalBroker, unique: str, documents: list[DocumentEvent]
) -> None:
    settings = relay_settings(broker, unique)
    bootstrap = broker.bootstrap_servers
    # Topics first: the test must not race the process (a topic produced to first is auto-created
    # with other partitions, and one read before it exists is skipped).
    topics = [settings.input_topic, settings.output_topic or "", settings.dead_letter_topic]
    ensure_topics(settings.kafka.client_config(), topics, partitions=2)
    first = _start_relay_process(settings)
    try:
        produce(bootstrap, settings.input_topic, encoded(documents[:10]))
        assert len(read_topic(bootstrap, [settings.output_topic], expect=10, timeout=90, settle=0)) == 10
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        first.kill()
    assert committed_offsets(bootstrap, settings.group_id, settings.input_topic, 2) == {0: 10}

    produce(bootstrap, settings.input_topic, encoded(documents[10:20]))
    second = _start_relay_process(settings)
    try:
        out = read_topic(bootstrap, [settings.output_topic], expect=20, timeout=90)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        second.kill()
    assert sorted(r.key or "" for r in out) == sorted(d.doc_id for d in documents[:20]), "each exactly once"
    assert committed_offsets(bootstrap, settings.group_id, settings.input_topic, 2) == {0: 20}
