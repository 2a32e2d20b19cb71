"""Both graph store backends, for real: LadybugDB embedded on disk, FalkorDB as a server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from lmrc import docred
from lmrc.contracts import EntityRef, Relation, event_id
from lmrc.contracts.events import MAX_INDEX
from lmrc.local.graph_server import LocalFalkorDB
from lmrc.sink.falkordb_store import FalkorDBGraphStore
from lmrc.sink.graph import (
    GraphStore,
    StoreUnavailableError,
    UnverifiedWriteError,
    batch_parameters,
    entity_id,
    node_id,
)
from lmrc.sink.ladybug_store import LadybugGraphStore
from tests.helpers import gold_relation_events

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def gold_events() -> list[Relation]:
    documents = docred.load_split("holdout")[:10]
    return gold_relation_events(documents, docred.load_relation_names(), T0)


@pytest.fixture(params=["ladybug", "falkordb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    if request.param == "ladybug":
        opened: GraphStore = LadybugGraphStore(tmp_path / "graph.lbug")
        yield opened
        opened.close()
        return
    with LocalFalkorDB(data_dir=tmp_path / "falkordb") as server:
        opened = FalkorDBGraphStore(port=server.port)
        yield opened
        opened.close()


def relation(
    head: str, tail: str, doc: str, seen: datetime, confidence: float = 0.5, evidence=None
) -> Relation:
    return Relation(
        event_id=event_id(doc, head, tail, "P19", seen.isoformat()),
        doc_id=doc,
        head=EntityRef(index=0, name=head, type="PER"),
        tail=EntityRef(index=1, name=tail, type="LOC"),
        relation_id="P19",
        relation_name="place of birth",
        confidence=confidence,
        evidence=evidence,
        classified_at=seen,
    )


def test_replaying_events_leaves_the_same_graph(store: GraphStore, gold_events: list[Relation]) -> None:
    assert store.counts().relations == 0
    for start in range(0, len(gold_events), 50):
        store.upsert(gold_events[start : start + 50])
    first = (store.counts(), store.relations(limit=None), store.entities())
    store.upsert(gold_events)  # everything again, as one batch
    store.upsert(list(reversed(gold_events)))  # and again, in another order
    assert (store.counts(), store.relations(limit=None), store.entities()) == first
    unique_edges = {
        (node_id(e.head.name, e.head.type), node_id(e.tail.name, e.tail.type), e.relation_id, e.doc_id)
        for e in gold_events
        if node_id(e.head.name, e.head.type) != node_id(e.tail.name, e.tail.type)  # "German", "Germany"
    }
    assert first[0].relations == len(unique_edges)
    assert first[0].documents == 10


def test_queries_by_entity_relation_and_document(store: GraphStore, gold_events: list[Relation]) -> None:
    store.upsert(gold_events)
    some = gold_events[0]
    by_entity = store.relations(entity=some.head.name.upper(), limit=None)
    assert by_entity and all(
        some.head.name.casefold() in (r.head_name.casefold(), r.tail_name.casefold()) for r in by_entity
    )
    by_id = store.relations(entity=node_id(some.head.name, some.head.type), limit=None)
    assert {r.event_id for r in by_id} <= {r.event_id for r in by_entity}
    by_relation = store.relations(relation=some.relation_id, limit=None)
    assert by_relation == store.relations(relation=some.relation_name, limit=None)
    assert {r.relation_id for r in by_relation} == {some.relation_id}
    by_doc = store.relations(doc_id=some.doc_id, limit=None)
    assert {r.doc_id for r in by_doc} == {some.doc_id}
    assert len(store.relations(limit=3)) == 3
    stored = next(r for r in by_doc if r.event_id == some.event_id)
    assert (stored.evidence, stored.confidence, stored.proposer_model) == (
        tuple(some.evidence or ()),
        1.0,
        "gold",
    )


def test_provenance_keeps_first_seen_and_the_latest_event(store: GraphStore) -> None:
    events = [
        relation("Ada Lovelace", "London", "d1", T0, 0.6, [0]),
        relation("ada  lovelace", "London", "d1", T0 + timedelta(days=1), 0.9, [1, 2]),
        relation("Ada Lovelace", "London", "d1", T0 - timedelta(days=1), 0.3),
        relation("Ada Lovelace", "London", "d2", T0, 0.7),
    ]
    store.upsert(events[:2])
    store.upsert(events[2:])
    edges = store.relations(limit=None)
    assert [(r.doc_id, r.confidence, r.evidence) for r in edges] == [("d1", 0.9, (1, 2)), ("d2", 0.7, ())]
    assert edges[0].first_seen == "2026-10-31T00:00:00.000000Z"
    assert edges[0].last_seen == "2026-11-02T00:00:00.000000Z"
    assert [e.name for e in store.entities()] == ["London", "Ada Lovelace"]  # one node per entity
    assert store.counts().entities == 2


def test_batches_fold_to_one_row_per_edge_whatever_their_order() -> None:
    events = [relation("A", "B", "d", T0 + timedelta(hours=h), confidence=h / 10) for h in (3, 1, 2)]
    forward, backward = batch_parameters(events), batch_parameters(events[::-1])
    assert forward == backward
    assert len(forward["rows"]) == 1 and forward["rows"][0]["confidence"] == 0.3


def test_ladybug_graph_persists_across_reopen(tmp_path: Path, gold_events: list[Relation]) -> None:
    path = tmp_path / "graph.lbug"
    writer = LadybugGraphStore(path)
    writer.upsert(gold_events)
    counts = writer.counts()
    writer.close()
    reader = LadybugGraphStore(path, read_only=True)
    try:
        assert reader.counts() == counts
    finally:
        reader.close()


def test_falkordb_graph_survives_a_restart_and_reports_outages(
    tmp_path: Path, gold_events: list[Relation]
) -> None:
    server = LocalFalkorDB(data_dir=tmp_path / "falkordb").start()
    store = FalkorDBGraphStore(port=server.port, timeout_seconds=2)
    try:
        store.upsert(gold_events)
        counts = store.counts()
        server.stop()
        with pytest.raises(StoreUnavailableError):
            store.upsert(gold_events[:1])
        server.start()
        assert store.counts() == counts
    finally:
        store.close()
        server.stop()


def test_entity_ids_are_unambiguous() -> None:
    assert entity_id("b:c", "A") != entity_id("c", "A:b")  # they were both "A:b:c"
    assert entity_id("Lord  Byron", "PER") == entity_id("lord byron", "PER") == "PER:lord byron"
    assert entity_id("x", "100%:y").startswith("100%25%3Ay:")


def test_names_with_line_breaks_are_normalised_and_other_control_characters_refused() -> None:
    """At the contract, before anything reaches a store: DocRED has mention names spanning a line
    break (kept, as a space); a name with \x01 or NUL is refused with the character and position."""
    event = relation("Ada\nLovelace", "London", "d", T0)
    assert event.head.name == "Ada Lovelace"
    for hostile in ("Ada\x01", "Ada\x00Lovelace", "\x9bAda"):
        with pytest.raises(ValueError, match=r"control character \\x[0-9a-f]{2} at position \d+"):
            relation(hostile, "London", "d", T0)


@pytest.mark.parametrize("store", ["falkordb"], indirect=True)
def test_a_write_the_store_does_not_keep_is_an_error_not_a_silent_loss(store: GraphStore) -> None:
    """FalkorDB's client inlines parameters into the query: a name with \x01 (one that bypassed the
    contract, as an older producer's) made MERGE create another node and MATCH find nothing, the
    edge was dropped and the sink counted and committed it. Now the write is read back."""
    good = relation("Ada Lovelace", "London", "d1", T0)
    assert store.upsert([good]) == 1
    bypassed = good.model_copy(
        update={"doc_id": "d2", "head": good.head.model_copy(update={"name": "Ada\x01Lovelace"})}
    )
    try:
        written = store.upsert([bypassed])
    except UnverifiedWriteError as error:
        assert "0 of the 1 edges" in str(error)
    else:  # a backend that keeps the edge must really hold it
        assert written == 1 and len(store.relations(doc_id="d2")) == 1


def test_falkordb_out_of_memory_or_read_only_pauses_the_sink_instead_of_blaming_the_input(
    tmp_path: Path,
) -> None:
    """OOM, READONLY, LOADING answers mean the store is sick: StoreUnavailableError (the sink rewinds
    and retries) rather than an error that dead-letters every document."""
    with LocalFalkorDB(data_dir=tmp_path / "falkordb") as server:
        store = FalkorDBGraphStore(port=server.port)
        admin = store._db.connection
        try:
            assert store.upsert([relation("Ada Lovelace", "London", "d1", T0)]) == 1
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
            with pytest.raises(StoreUnavailableError, match="OutOfMemory"):
                store.upsert([relation("Alan Turing", "London", "d2", T0)])
            admin.config_set("maxmemory", "0")  # recovered: the same write goes through
            assert store.upsert([relation("Alan Turing", "London", "d2", T0)]) == 1
        finally:
            store.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("evidence_text", ["a NUL \x00 in the evidence"]),
        ("models", {"proposer": "rcp\x00v1"}),
        ("event_id", "id\x00"),
        ("evidence", [2**63]),
        ("evidence", [2**64]),
        ("evidence", [-1]),
    ],
)
def test_the_contract_refuses_what_one_store_would_keep_and_the_other_refuse(
    field: str, value: object
) -> None:
    """A NUL in evidence text or a model version was kept by LadybugDB and dead-lettered by
    FalkorDB (a Cypher parse error); evidence ids of 2**63 and 2**64 were stored as 2**63-1 by
    FalkorDB and refused by LadybugDB; negative ones were kept by both. The contract decides."""
    good = relation("Ada Lovelace", "London", "d1", T0).model_dump()
    with pytest.raises(ValidationError):
        Relation.model_validate({**good, field: value})


def test_the_largest_evidence_id_the_contract_admits_is_stored_exactly(store: GraphStore) -> None:
    """What passes the contract, both stores keep as it is."""
    admitted = relation("Ada Lovelace", "London", "d1", T0, evidence=[0, MAX_INDEX])
    assert store.upsert([admitted]) == 1
    (stored,) = store.relations(doc_id="d1")
    assert stored.evidence == (0, MAX_INDEX)


def test_a_country_and_its_people_s_adjective_are_one_node_and_the_document_s_names_are_kept(
    store: GraphStore,
) -> None:
    """DocRED types "German" as a place beside "Germany": the graph holds one node, named for the
    country, and keeps the name each document used (on the edge); a relation between the two is a
    self-loop of the one node and is not stored. Case and spacing variants of a name meet too."""

    def ref(index: int, name: str, entity_type: str) -> EntityRef:
        return EntityRef(index=index, name=name, type=entity_type)

    def relation(head: EntityRef, tail: EntityRef, relation_id: str) -> Relation:
        return Relation(
            event_id=f"{head.index}-{tail.index}-{relation_id}",
            doc_id="politics",
            head=head,
            tail=tail,
            relation_id=relation_id,
            relation_name=relation_id,
            confidence=0.9,
            classified_at=T0,
        )

    scholz, german, germany, spaced = (
        ref(0, "Olaf Scholz", "PER"),
        ref(1, "German", "LOC"),
        ref(2, "Germany", "LOC"),
        ref(3, "olaf  scholz", "PER"),
    )
    written = store.upsert(
        [relation(scholz, german, "P27"), relation(german, germany, "P17"), relation(spaced, germany, "P27")]
    )
    assert written == 1  # Scholz -P27-> Germany, from both names; the self-loop is gone
    (edge,) = store.relations(limit=None)
    assert (edge.head_id, edge.tail_id, edge.tail_name) == ("PER:olaf scholz", "LOC:germany", "Germany")
    assert edge.named_pairs() == [("Olaf Scholz", "German"), ("olaf  scholz", "Germany")]
    assert {e.id for e in store.entities()} == {"PER:olaf scholz", "LOC:germany"}
    assert node_id("French", "LOC") == node_id("france", "LOC") != node_id("French", "MISC")
