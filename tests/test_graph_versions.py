"""A graph true to its sources: updates replace, late versions are skipped, tombstones delete, and a
crash mid-write leaves the old version or the new one, never a mix. Real broker, both real stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from lmrc import docred
from lmrc.cli import main as lmrc_main
from lmrc.contracts import EntityRef, ModelVersions, Relation, RelationSetEvent
from lmrc.local.broker import LocalBroker
from lmrc.local.graph_server import LocalFalkorDB
from lmrc.runtime.topics import ensure_topics
from lmrc.sink.falkordb_store import FalkorDBGraphStore
from lmrc.sink.graph import DocumentChange, GraphStore, node_id
from lmrc.sink.ladybug_store import LadybugGraphStore
from lmrc.sink.service import build_runtime
from lmrc.sink.settings import SinkSettings
from tests.helpers import (
    gold_relation_events,
    metric_value,
    read_topic,
    relation_sets,
    running,
    scaled,
    service_test_fields,
    wait_committed,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def documents() -> tuple[RelationSetEvent, RelationSetEvent]:
    """Two holdout documents as relation sets with every entity listed; the second also mentions
    an entity of the first, which must outlive the first's deletion."""
    raw = docred.load_split("holdout")[:2]
    sets = relation_sets(gold_relation_events(raw, docred.load_relation_names(), T0))
    with_entities = []
    for event, doc in zip(sets, raw, strict=True):
        refs = [
            EntityRef(index=i, name=mentions[0]["name"], type=mentions[0]["type"])
            for i, mentions in enumerate(doc["vertexSet"])
        ]
        with_entities.append(event.model_copy(update={"entities": refs, "version": 1}))
    first, second = with_entities
    shared = first.entities[0].model_copy(update={"index": len(second.entities)})
    return first, second.model_copy(update={"entities": [*second.entities, shared]})


def edited(event: RelationSetEvent, version: int, keep: int, model: str = "gold") -> RelationSetEvent:
    """The document edited: its first ``keep`` relations, one new one, its last entity gone."""
    kept = event.relations[:keep]
    head, tail = event.entities[1], event.entities[2]
    new = Relation(
        event_id=f"{event.doc_id}-new-{version}",
        doc_id=event.doc_id,
        doc_title=event.doc_title,
        head=head,
        tail=tail,
        relation_id="P9999",
        relation_name="a relation the edit added",
        confidence=0.75,
        models=ModelVersions(proposer=model, classifier=model),
        classified_at=T0,
    )
    used = {r.head.index for r in [*kept, new]} | {r.tail.index for r in [*kept, new]}
    last = event.entities[-1]
    entities = [*event.entities[:-1], *([last] if last.index in used else [])]
    return event.model_copy(
        update={
            "version": version,
            "relations": [
                r.model_copy(update={"models": ModelVersions(proposer=model, classifier=model)}) for r in kept
            ]
            + [new],
            "entities": entities,
            "models": ModelVersions(proposer=model, classifier=model),
        }
    )


def expected_graph(*latest: RelationSetEvent) -> tuple[set[tuple[str, str, str, str]], set[str]]:
    """Exactly what the latest versions say: their edges and every entity they mention."""
    edges = {
        (node_id(r.head.name, r.head.type), node_id(r.tail.name, r.tail.type), r.relation_id, e.doc_id)
        for e in latest
        for r in e.relations
        if node_id(r.head.name, r.head.type) != node_id(r.tail.name, r.tail.type)
    }
    entities = {node_id(ref.name, ref.type) for e in latest for ref in e.entities}
    entities |= {part for edge in edges for part in edge[:2]}
    return edges, entities


def graph_of(store: GraphStore) -> tuple[set[tuple[str, str, str, str]], set[str]]:
    edges = {(r.head_id, r.tail_id, r.relation_id, r.doc_id) for r in store.relations(limit=None)}
    return edges, {entity.id for entity in store.entities()}


def publish(bootstrap: str, topic: str, records: list[tuple[str, RelationSetEvent | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, event in records:
        producer.produce(
            topic, key=key, value=None if event is None else event.model_dump_json(), partition=0
        )
    assert producer.flush(scaled(15)) == 0


def test_updates_replace_late_versions_are_skipped_and_tombstones_delete(
    broker: LocalBroker, unique: str, backend: tuple[str, GraphStore, dict]
) -> None:
    name, store, store_settings = backend
    fields = service_test_fields(broker.bootstrap_servers, "sink", unique, "relations")
    settings = SinkSettings(**{**fields, **store_settings})
    first, second = documents()
    bootstrap, topic, group = broker.bootstrap_servers, settings.input_topic, settings.group_id
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], 1)
    runtime = build_runtime(settings, store)
    sent = 0

    def step(records: list[tuple[str, RelationSetEvent | None]], *latest: RelationSetEvent) -> None:
        nonlocal sent
        publish(bootstrap, topic, records)
        sent += len(records)
        wait_committed(bootstrap, group, topic, {0: sent}, what=f"commit of {sent} records")
        assert graph_of(store) == expected_graph(*latest)

    def counted(metric: str) -> float:
        return metric_value(runtime.http_port, metric, service=settings.service_name, backend=name)

    with running(runtime):
        step([(first.doc_id, first), (second.doc_id, second)], first, second)
        assert [(d.doc_id, d.version) for d in store.documents()] == sorted(
            [(first.doc_id, 1), (second.doc_id, 1)]
        )

        second_version = edited(first, 2, keep=3)
        step([(first.doc_id, second_version)], second_version, second)
        (document,) = store.documents(doc_id=first.doc_id)
        assert document.previous_version == 1 and document.relation_count == 4
        assert len(document.removed) == len(first.relations) - 3 and len(document.added) == 1

        step([(first.doc_id, first)], second_version, second)  # version 1 again, late: skipped
        assert counted("lmrc_sink_stale_versions_total") == 1
        assert store.documents(doc_id=first.doc_id)[0].version == 2

        reprocessed = edited(first, 2, keep=2, model="rcp-newer-v2")  # same version, newer models
        step([(first.doc_id, reprocessed)], reprocessed, second)
        assert {r.proposer_model for r in store.relations(doc_id=first.doc_id, limit=None)} == {
            "rcp-newer-v2"
        }

        step([(first.doc_id, None)], second)  # the tombstone
        shared = first.entities[0]
        assert node_id(shared.name, shared.type) in graph_of(store)[1]  # the other document mentions it
        assert [d.doc_id for d in store.documents()] == [second.doc_id]
        (marker,) = store.documents(doc_id=first.doc_id, deleted=True)
        assert marker.deleted and marker.version == 2 and marker.title == "" and marker.relation_count == 0

        step([(first.doc_id, first)], second)  # version 1 after the deletion: stays deleted
        step([("never-published", None)], second)  # an unknown document's tombstone: a no-op
        assert counted("lmrc_sink_documents_deleted_total") == 1
        assert counted("lmrc_sink_stale_versions_total") == 2
        assert read_topic(bootstrap, [settings.dead_letter_topic], expect=0, settle=0.5) == []

        republished = edited(first, 3, keep=1)  # a newer version brings it back
        step([(first.doc_id, republished)], republished, second)
    assert store.counts().documents == 2


WRITER = """
import json, os, sys, time
from lmrc.contracts import RelationSetEvent
from lmrc.sink.graph import DocumentChange
backend, where, payload = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
if backend == "ladybug":
    from lmrc.sink.ladybug_store import LadybugGraphStore
    store = LadybugGraphStore(where)
else:
    from lmrc.sink.falkordb_store import FalkorDBGraphStore
    store = FalkorDBGraphStore(port=int(where))
for version, event in enumerate(payload, start=1):
    change = DocumentChange("big", version, RelationSetEvent.model_validate(event))
    if version == len(payload):
        print("writing", flush=True)
        started = time.monotonic()
    store.apply([change])
print(f"done {time.monotonic() - started:.3f}", flush=True)
store.close()
"""


def big_document(relations: int, offset: int) -> RelationSetEvent:
    """One document of many relations among many entities; ``offset`` makes another version."""
    refs = [EntityRef(index=i, name=f"Entity {i + offset}", type="ORG") for i in range(relations + 1)]
    return RelationSetEvent(
        event_id=f"big-{offset}",
        doc_id="big",
        relations=[
            Relation(
                event_id=f"big-{offset}-{i}",
                doc_id="big",
                head=refs[i],
                tail=refs[i + 1],
                relation_id="P127",
                relation_name="owned by",
                confidence=0.5,
                evidence_text=["x" * 200],
                models=ModelVersions(proposer=f"v{offset}"),
                classified_at=T0,
            )
            for i in range(relations)
        ],
        candidate_pairs=relations,
        entities=refs,
    )


@pytest.mark.parametrize("backend_name", ["ladybug", "falkordb"])
def test_a_sink_killed_mid_transaction_leaves_the_old_version_or_the_new_one(
    backend_name: str, tmp_path: Path
) -> None:
    """A writer process is killed (SIGKILL) halfway through replacing a large document; reopened,
    the store holds exactly the old version or exactly the new one. Where the kill comes too late
    (the write finished), it comes earlier the next round; a round that killed mid-write is needed."""
    old, new = big_document(3000, 0), big_document(3000, 5000)
    payload = tmp_path / "versions.json"
    payload.write_text(json.dumps([old.model_dump(mode="json"), new.model_dump(mode="json")]))
    server = LocalFalkorDB(data_dir=tmp_path / "falkordb").start() if backend_name == "falkordb" else None

    def where(round_: int) -> str:
        return str(server.port) if server else str(tmp_path / f"graph-{round_}.lbug")

    def open_store(round_: int) -> GraphStore:
        return FalkorDBGraphStore(port=server.port) if server else LadybugGraphStore(where(round_))

    def run_writer(round_: int, kill_after: float | None) -> tuple[bool, float]:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, backend_name, where(round_), str(payload)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
        if kill_after is None:
            line = writer.stdout.readline()
            writer.wait(timeout=scaled(300))
            return False, float(line.split()[1])
        time.sleep(kill_after)  # the fault's timing, not a wait for a condition
        writer.send_signal(signal.SIGKILL)
        rest = writer.communicate(timeout=scaled(60))[0]
        return "done" not in rest, 0.0

    try:
        _, duration = run_writer(0, None)  # how long the replacement takes here
        old_graph, new_graph = expected_graph(old), expected_graph(new)
        store = open_store(0)
        assert graph_of(store) == new_graph
        store.close()
        fraction, killed_mid_write = 0.5, False
        for round_ in range(1, 5):
            if server:  # start again from an empty graph
                import redis

                redis.Redis(port=server.port).flushall()
            killed, _ = run_writer(round_, duration * fraction)
            store = open_store(round_)
            state = graph_of(store)
            store.close()
            assert state in (old_graph, new_graph), "a mix of the two versions"
            if killed and (backend_name == "falkordb" or state == old_graph):
                killed_mid_write = True
                break
            fraction /= 2
        assert killed_mid_write, "the writer was never killed before its write finished"
    finally:
        if server:
            server.stop()


def test_publish_delete_sends_a_tombstone_keyed_by_the_document(broker: LocalBroker, unique: str) -> None:
    topic = f"{unique}.documents"
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic], 1)
    assert (
        lmrc_main(
            [
                "publish",
                "--delete",
                "doc-1",
                "--topic",
                topic,
                "--bootstrap-servers",
                broker.bootstrap_servers,
            ]
        )
        == 0
    )
    (record,) = read_topic(broker.bootstrap_servers, [topic], expect=1)
    assert (record.key, record.value) == ("doc-1", None)
    assert (
        lmrc_main(["publish", "--bootstrap-servers", broker.bootstrap_servers]) == 2
    )  # no FILE, no --delete


def test_a_store_applies_a_document_change_exactly(backend: tuple[str, GraphStore, dict]) -> None:
    """The store alone: a change of a document that shares entities with another keeps them."""
    _name, store, _settings = backend
    first, second = documents()
    store.apply([DocumentChange(first.doc_id, 1, first), DocumentChange(second.doc_id, 1, second)])
    assert graph_of(store) == expected_graph(first, second)
    store.apply([DocumentChange(first.doc_id, 1, None)])
    assert graph_of(store) == expected_graph(second)
    assert store.states([first.doc_id])[first.doc_id].deleted


def test_graph_cli_answers_which_documents_say_x_and_what_a_version_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "graph.lbug"
    store = LadybugGraphStore(path)
    first, second = documents()
    store.apply([DocumentChange(first.doc_id, 1, first), DocumentChange(second.doc_id, 1, second)])
    store.apply([DocumentChange(first.doc_id, 2, edited(first, 2, keep=3))])
    store.close()
    graph = ["graph", "--backend", "ladybug", "--path", str(path)]

    assert lmrc_main([*graph, "documents", "--entity", first.entities[0].name.upper()]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]  # under the header: both mention the shared entity
    assert [row.startswith((first.doc_id, second.doc_id)) for row in rows] == [True, True]
    own = first.entities[1].name  # in the first document only
    assert lmrc_main([*graph, "documents", "--entity", own]) == 0
    (row,) = capsys.readouterr().out.splitlines()[2:]
    assert row.startswith(first.doc_id) and " 2 " in row
    assert lmrc_main([*graph, "document", first.doc_id]) == 0
    shown = capsys.readouterr().out
    assert f"{first.doc_id}: version 2, replaced version 1; 4 relations" in shown
    assert "+ " in shown and f"removed {len(first.relations) - 3} relations" in shown
    assert lmrc_main([*graph, "document", "nothing-like-it"]) == 0
    assert "no document 'nothing-like-it'" in capsys.readouterr().out
