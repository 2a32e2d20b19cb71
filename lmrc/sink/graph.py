"""The graph model and the narrow store interface the sink writes through.

Entities are nodes keyed by a stable id (entity type + normalised name), so the same entity
mentioned in many documents is one node. Each relation is a ``RELATION`` edge carrying the
relation id (``relation_id``: a Wikidata P-id, or any schema's) and name, with provenance:
document, confidence, evidence sentences, model versions, source and first/last seen. An edge is
MERGEd on (head, tail, relation_id, doc_id): a re-delivered event rewrites the same edge, so
replaying a topic leaves the graph as it was. Seen times come from the events, not the clock, for the same
reason. Both backends run the same Cypher.

Documents are nodes too (``Document``: id, title, version, content hash, source, models, processed
time), linked by ``MENTIONS`` to every entity they mention; a document's relations are the
``RELATION`` edges carrying its ``doc_id`` (a property graph cannot link a node to an edge).
:meth:`CypherGraphStore.apply` makes the graph hold what each document's latest version says, in
one transaction: the edges and mentions the new version lacks go, entities no document mentions
any more go, and a deleted document leaves a marker (its id and version, nothing else) so that a
late older version cannot bring it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lmrc.contracts import EntityRef, Relation, RelationSetEvent
from lmrc.contracts.text import printable, shorten
from lmrc.sink.entities import entity_id, graph_name, node_id, normalise_name

__all__ = ["entity_id", "graph_name", "node_id", "normalise_name"]  # where callers found them


class StoreUnavailableError(Exception):
    """The store cannot take writes right now (down, timeout, out of memory, read-only, loading,
    refusing our credentials): pause and retry later; the input is not at fault."""


class UnverifiedWriteError(Exception):
    """The store accepted a write but does not hold what was written: never counted as stored."""


def _timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with fixed width, so string order is time order on every backend."""
    if moment.tzinfo is None:  # naive times in events are UTC by contract
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def relation_row(event: Relation) -> dict[str, Any]:
    """Query parameters for one event; empty strings and lists rather than nulls (typed columns)."""
    seen = _timestamp(event.classified_at)
    return {
        "head_id": node_id(event.head.name, event.head.type),
        "tail_id": node_id(event.tail.name, event.tail.type),
        "named_as": [named_pair(event.head.name, event.tail.name)],
        "relation_id": event.relation_id,
        "relation_name": event.relation_name,
        "doc_id": event.doc_id,
        "doc_title": event.doc_title,
        "confidence": float(event.confidence),
        "evidence": list(event.evidence or []),
        "evidence_text": "\n".join(event.evidence_text),
        "proposer_model": event.models.proposer or "",
        "classifier_model": event.models.classifier or "",
        "source_uri": (event.source.uri or "") if event.source else "",
        "event_id": event.event_id,
        "first_seen": seen,
        "last_seen": seen,
    }


def batch_parameters(
    events: Sequence[Relation], mentioned: Sequence[EntityRef] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Fold a batch into one row per entity (the relations' ends and ``mentioned``) and one per
    edge key, whatever its order.

    One row per key keeps the query free of reads of values written earlier in the same query
    (which LadybugDB does not see). The rules are order-free, so any batching of the same events
    gives the same graph: an entity's display name is the smallest name seen; an edge keeps its
    earliest first_seen and takes its other properties from its latest event.
    """
    entities: dict[str, dict[str, Any]] = {}
    for ref in [*(ref for event in events for ref in (event.head, event.tail)), *mentioned]:
        key = node_id(ref.name, ref.type)
        name = graph_name(ref.name, ref.type)
        known = entities.get(key)
        if known is None or name < known["name"]:
            entities[key] = {"id": key, "name": name, "type": ref.type, "norm_name": normalise_name(name)}
    edges: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for event in events:
        row = relation_row(event)
        if row["head_id"] == row["tail_id"]:
            continue  # two entities of the document that are one node ("German" -> "Germany")
        key = (row["head_id"], row["tail_id"], row["relation_id"], row["doc_id"])
        known = edges.get(key)
        if known is None:
            edges[key] = row
            continue
        first_seen = min(known["first_seen"], row["first_seen"])
        latest = max(known, row, key=lambda r: (r["last_seen"], r["event_id"]))
        named_as = sorted(set(known["named_as"]) | set(row["named_as"]))
        edges[key] = {**latest, "first_seen": first_seen, "named_as": named_as}
    return {"entities": list(entities.values()), "rows": list(edges.values())}


@dataclass(frozen=True)
class DocumentChange:
    """What the graph must hold for one document after a batch: its latest relation set (and its
    version), or its deletion (``relations`` None). Built by the sink from the records in order."""

    doc_id: str
    version: int
    relations: RelationSetEvent | None

    @property
    def deleted(self) -> bool:
        return self.relations is None


def _entity_refs(event: RelationSetEvent) -> list[EntityRef]:
    """The document's entities: those the event lists, else its relations' ends."""
    if event.entities:
        return list(event.entities)
    return [ref for relation in event.relations for ref in (relation.head, relation.tail)]


def named_pair(head: str, tail: str) -> str:
    """How an edge stores the names a document gave its head and tail."""
    return f"{head}{KEY_SEPARATOR}{tail}"


def edge_key(head_id: str, tail_id: str, relation_id: str) -> str:
    """An edge's identity within its document, as the queries spell it."""
    return f"{head_id}\x1f{tail_id}\x1f{relation_id}"


#: At most this many relations listed as added or removed on a Document (the counts are exact).
CHANGE_LOG_LIMIT = 200


def _edge_label(head: str, relation: str, tail: str) -> str:
    return f"{head} -[{relation}]-> {tail}"


def change_parameters(
    changes: Sequence[DocumentChange], states: dict[str, DocumentState], processed_at: datetime
) -> dict[str, Any]:
    """The parameters of a batch's statements: documents (with what each version changed), the
    entities and mentions of the new versions, their edges, and the entities that may be orphaned."""
    documents, mentions, relations = [], [], []
    named: list[EntityRef] = []
    orphans: set[str] = set()
    for change in changes:
        event = change.relations
        before = states.get(change.doc_id) or DocumentState(None, False, {}, frozenset())
        edges: dict[str, str] = {}
        entity_ids: list[str] = []
        if event is not None:
            refs = _entity_refs(event)
            named.extend(refs)
            names: dict[str, set[str]] = {}
            for ref in refs:  # the names the document used for each node
                names.setdefault(node_id(ref.name, ref.type), set()).add(ref.name)
            entity_ids = sorted(names)
            mentions.extend(
                {"doc_id": change.doc_id, "entity_id": key, "names": sorted(names[key])} for key in entity_ids
            )
            relations.extend(event.relations)
            for r in event.relations:
                head, tail = node_id(r.head.name, r.head.type), node_id(r.tail.name, r.tail.type)
                if head != tail:
                    label = _edge_label(r.head.name, r.relation_name, r.tail.name)
                    edges[edge_key(head, tail, r.relation_id)] = label
        orphans |= before.entity_ids | {part for key in before.edges for part in key.split(KEY_SEPARATOR)[:2]}
        added = sorted(label for key, label in edges.items() if key not in before.edges)
        removed = sorted(label for key, label in before.edges.items() if key not in edges)
        documents.append(
            {
                "doc_id": change.doc_id,
                "version": change.version,
                "deleted": change.deleted,
                "title": event.doc_title if event else "",
                "content_hash": (event.content_hash or "") if event else "",
                "source_uri": (event.source.uri or "") if event and event.source else "",
                "proposer_model": (event.models.proposer or "") if event else "",
                "classifier_model": (event.models.classifier or "") if event else "",
                "processed_at": _timestamp(event.classified_at if event else processed_at),
                "relation_count": len(edges),
                "previous_version": before.version if before.version is not None else -1,
                "added": added[:CHANGE_LOG_LIMIT],
                "removed": removed[:CHANGE_LOG_LIMIT],
                "entity_ids": entity_ids,
                "edge_keys": sorted(edges),
            }
        )
    parameters = batch_parameters(relations, named)
    return {
        "documents": documents,
        "entities": parameters["entities"],
        "mentions": mentions,
        "rows": parameters["rows"],
        "orphans": sorted(orphans),
        "separator": KEY_SEPARATOR,
    }


UPSERT_ENTITIES = """
UNWIND $entities AS ent
MERGE (n:Entity {id: ent.id})
  ON CREATE SET n.name = ent.name, n.type = ent.type, n.norm_name = ent.norm_name
SET n.name = CASE WHEN ent.name < n.name THEN ent.name ELSE n.name END
"""

UPSERT_RELATIONS = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head_id}), (t:Entity {id: row.tail_id})
MERGE (h)-[e:RELATION {relation_id: row.relation_id, doc_id: row.doc_id}]->(t)
  ON CREATE SET e.relation_name = row.relation_name, e.doc_title = row.doc_title,
    e.confidence = row.confidence, e.evidence = __EVIDENCE__, e.evidence_text = row.evidence_text,
    e.proposer_model = row.proposer_model, e.classifier_model = row.classifier_model,
    e.source_uri = row.source_uri, e.event_id = row.event_id, e.first_seen = row.first_seen,
    e.last_seen = row.last_seen, e.named_as = row.named_as
SET e.first_seen = CASE WHEN row.first_seen < e.first_seen THEN row.first_seen ELSE e.first_seen END
WITH e, row WHERE row.last_seen > e.last_seen
  OR (row.last_seen = e.last_seen AND row.event_id > e.event_id)
SET e.last_seen = row.last_seen, e.relation_name = row.relation_name, e.doc_title = row.doc_title,
  e.confidence = row.confidence, e.evidence = __EVIDENCE__, e.evidence_text = row.evidence_text,
  e.proposer_model = row.proposer_model, e.classifier_model = row.classifier_model,
  e.source_uri = row.source_uri, e.event_id = row.event_id, e.named_as = row.named_as
"""

# A document's edges as its latest version says (the sink has chosen that version): every property
# from it, but first_seen, which keeps the earliest.
REPLACE_RELATIONS = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head_id}), (t:Entity {id: row.tail_id})
MERGE (h)-[e:RELATION {relation_id: row.relation_id, doc_id: row.doc_id}]->(t)
  ON CREATE SET e.first_seen = row.first_seen
SET e.first_seen = CASE WHEN row.first_seen < e.first_seen THEN row.first_seen ELSE e.first_seen END,
  e.last_seen = row.last_seen, e.relation_name = row.relation_name, e.doc_title = row.doc_title,
  e.confidence = row.confidence, e.evidence = __EVIDENCE__, e.evidence_text = row.evidence_text,
  e.proposer_model = row.proposer_model, e.classifier_model = row.classifier_model,
  e.source_uri = row.source_uri, e.event_id = row.event_id, e.named_as = row.named_as
"""

# Every edge of a batch, found again after the write (same transaction where the backend allows).
COUNT_WRITTEN = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head_id})-[e:RELATION {relation_id: row.relation_id, doc_id: row.doc_id}]->
  (t:Entity {id: row.tail_id})
RETURN count(e)
"""

#: How a query spells an edge's identity within its document (edge_key); no name holds it.
KEY_SEPARATOR = "\x1f"

UPSERT_DOCUMENTS = """
UNWIND $documents AS d
MERGE (n:Document {doc_id: d.doc_id})
SET n.version = d.version, n.deleted = d.deleted, n.title = d.title, n.content_hash = d.content_hash,
  n.source_uri = d.source_uri, n.proposer_model = d.proposer_model,
  n.classifier_model = d.classifier_model, n.processed_at = d.processed_at,
  n.relation_count = d.relation_count, n.previous_version = d.previous_version,
  n.added = d.added, n.removed = d.removed
"""

REMOVE_STALE_EDGES = """
UNWIND $documents AS d
MATCH (h:Entity)-[e:RELATION]->(t:Entity)
WHERE e.doc_id = d.doc_id AND NOT (h.id + $separator + t.id + $separator + e.relation_id) IN d.edge_keys
DELETE e
"""

REMOVE_STALE_MENTIONS = """
UNWIND $documents AS d
MATCH (n:Document {doc_id: d.doc_id})-[m:MENTIONS]->(x:Entity)
WHERE NOT x.id IN d.entity_ids
DELETE m
"""

ADD_MENTIONS = """
UNWIND $mentions AS m
MATCH (n:Document {doc_id: m.doc_id}), (x:Entity {id: m.entity_id})
MERGE (n)-[r:MENTIONS]->(x)
SET r.names = m.names
"""

# Entities the batch's documents mentioned before, now mentioned by no document and in no edge.
REMOVE_ORPHANS = """
UNWIND $orphans AS o
MATCH (x:Entity {id: o})
WHERE NOT (x)<-[:MENTIONS]-(:Document) AND NOT (x)-[:RELATION]-(:Entity)
DELETE x
"""

# What each document of a batch holds after the write: its version and its edges.
DOCUMENTS_WRITTEN = """
UNWIND $documents AS d
MATCH (n:Document {doc_id: d.doc_id})
OPTIONAL MATCH (:Entity)-[e:RELATION]->(:Entity)
WHERE e.doc_id = d.doc_id
RETURN n.doc_id, n.version, count(e)
"""

DOCUMENT_COLUMNS = (
    "n.doc_id, n.version, n.deleted, n.title, n.content_hash, n.source_uri, n.proposer_model, "
    "n.classifier_model, n.processed_at, n.relation_count, n.previous_version, n.added, n.removed"
)


RELATION_COLUMNS = (
    "h.id, h.name, h.type, t.id, t.name, t.type, e.relation_id, e.relation_name, e.doc_id, "
    "e.doc_title, e.confidence, e.evidence, e.proposer_model, e.classifier_model, e.source_uri, "
    "e.event_id, e.first_seen, e.last_seen, e.evidence_text, e.named_as"
)


@dataclass(frozen=True)
class StoredRelation:
    head_id: str
    head_name: str
    head_type: str
    tail_id: str
    tail_name: str
    tail_type: str
    relation_id: str
    relation_name: str
    doc_id: str
    doc_title: str
    confidence: float
    evidence: tuple[int, ...]
    proposer_model: str
    classifier_model: str
    source_uri: str
    event_id: str
    first_seen: str
    last_seen: str
    #: The evidence sentences' text, one per line ("" for edges written before it was stored).
    evidence_text: str = ""
    #: The (head, tail) names of the document's entities this edge stands for, each
    #: ``named_pair(head, tail)``: "German" for the node Germany; two entities that are one node
    #: ("Kazakhstan", "Republic of Kazakhstan") give one edge naming both.
    named_as: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredRelation:
        values = list(row)
        values[11] = tuple(values[11] or ())
        values[18] = values[18] or ""
        values[19] = tuple(values[19] or ())
        return cls(*values)

    def named_pairs(self) -> list[tuple[str, str]]:
        """(head name, tail name) as the document named the entities of this edge."""
        return [tuple(pair.split(KEY_SEPARATOR, 1)) for pair in self.named_as]  # type: ignore[misc]


@dataclass(frozen=True)
class StoredEntity:
    id: str
    name: str
    type: str


@dataclass(frozen=True)
class StoredDocument:
    """A Document node: the version the graph holds, and what that version changed."""

    doc_id: str
    version: int
    deleted: bool
    title: str
    content_hash: str
    source_uri: str
    proposer_model: str
    classifier_model: str
    processed_at: str
    relation_count: int
    #: The version this one replaced (-1: none), and the relations it added and removed.
    previous_version: int
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredDocument:
        values = list(row)
        values[11] = tuple(values[11] or ())
        values[12] = tuple(values[12] or ())
        return cls(*values)


@dataclass(frozen=True)
class DocumentState:
    """What the graph holds of a document before a write (read by :meth:`CypherGraphStore.states`)."""

    version: int | None
    deleted: bool
    #: edge key -> "head -[relation]-> tail", for the change log
    edges: dict[str, str]
    entity_ids: frozenset[str]

    @property
    def known(self) -> bool:
        return self.version is not None or bool(self.edges)


@dataclass(frozen=True)
class GraphCounts:
    entities: int
    relations: int
    documents: int


#: The relation id column's title: a Wikidata P-id, CDR's CID, any schema's id.
TABLE_ID_TITLE = "rel-id"


#: The table's columns that give way when it is wider than the terminal (names, relation, document).
_FLEXIBLE_COLUMNS = (0, 2, 3, 5)
_NARROWEST = 8


def format_table(
    relations: list[StoredRelation], total: int | None = None, more: str = "", width: int | None = None
) -> str:
    """Relations as a table for a terminal, control characters shown escaped. Columns are as wide as
    their longest cell; given a ``width`` the table is wider than, the widest of the name, relation
    and document columns give way in turn (cells cut with "…", none below 8 characters). When
    ``total`` says more exist, a last line says how many are shown and ``more`` how to see them all."""
    rows = [
        (
            printable(r.head_name),
            printable(r.relation_id),
            printable(r.relation_name),
            printable(r.tail_name),
            f"{r.confidence:.2f}",
            printable(r.doc_id),
        )
        for r in relations
    ]
    titles = ("head", TABLE_ID_TITLE, "relation", "tail", "conf", "document")
    widths = [max([len(title), *(len(row[column]) for row in rows)]) for column, title in enumerate(titles)]
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        while excess > 0:
            column = max(_FLEXIBLE_COLUMNS, key=lambda c: widths[c])
            if widths[column] <= _NARROWEST:
                break
            widths[column] -= 1
            excess -= 1

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(size) if column == 4 else shorten(cell, size).ljust(size)
            for column, (cell, size) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    lines = [line(titles), "-" * len(line(titles)), *(line(row) for row in rows)]
    if total is not None and total > len(relations):
        lines.append(f"showing {len(relations)} of {total} relations{'; ' + more if more else ''}")
    return "\n".join(lines)


class GraphStore(Protocol):
    backend: str

    def upsert(self, events: Sequence[Relation]) -> int:
        """Add relations in one transaction (all or nothing; no Document bookkeeping: loading
        gold data, benchmarks); the edges written, verified."""

    def relations(
        self,
        entity: str | None = None,
        relation: str | None = None,
        doc_id: str | None = None,
        limit: int | None = 100,
    ) -> list[StoredRelation]: ...

    def states(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]: ...

    def apply(
        self,
        changes: Sequence[DocumentChange],
        states: dict[str, DocumentState] | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Make the graph hold what each document's change says, in one transaction."""

    def documents(
        self, entity: str | None = None, doc_id: str | None = None, deleted: bool = False
    ) -> list[StoredDocument]: ...

    def entities(self) -> list[StoredEntity]: ...

    def counts(self) -> GraphCounts: ...

    def close(self) -> None: ...


class CypherGraphStore:
    """Everything both backends share; a backend supplies ``_read``, ``_write_batch``, its schema."""

    backend = "cypher"
    #: How the query reads a row's evidence list; a backend that cannot type an empty list casts it.
    evidence_expression = "row.evidence"

    def _read(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        raise NotImplementedError

    def _write_batch(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        """Run the statements as one transaction."""
        raise NotImplementedError

    def _write_statements(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        """One transaction of the statements that have work: a statement over an empty list does
        nothing (and LadybugDB cannot type an empty UNWIND)."""
        self._write_batch([(query, params) for query, params in statements if all(params.values())])

    def upsert(self, events: Sequence[Relation]) -> int:
        """Write the events; returns the edges written, each read back (UnverifiedWriteError if one
        is missing: a write the store silently dropped is never counted or committed)."""
        if not events:
            return 0
        parameters = batch_parameters(events)
        statements = [
            (UPSERT_ENTITIES, {"entities": parameters["entities"]}),
            (
                UPSERT_RELATIONS.replace("__EVIDENCE__", self.evidence_expression),
                {"rows": parameters["rows"]},
            ),
        ]
        self._write_statements(statements)
        expected = len(parameters["rows"])
        if not expected:
            return 0
        found = int(self._read(COUNT_WRITTEN, {"rows": parameters["rows"]})[0][0])
        if found != expected:
            raise UnverifiedWriteError(
                f"{self.backend}: {found} of the {expected} edges written are in the graph"
            )
        return expected

    def states(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]:
        """What the graph holds of these documents now (every id gets a state, maybe unknown)."""
        ids = sorted(set(doc_ids))
        versions = {
            row[0]: (row[1], bool(row[2]))
            for row in self._read(
                "UNWIND $ids AS i MATCH (n:Document {doc_id: i}) RETURN n.doc_id, n.version, n.deleted",
                {"ids": ids},
            )
        }
        edges: dict[str, dict[str, str]] = {doc_id: {} for doc_id in ids}
        for doc_id, head_id, tail_id, relation_id, head, relation, tail in self._read(
            "UNWIND $ids AS i MATCH (h:Entity)-[e:RELATION]->(t:Entity) WHERE e.doc_id = i "
            "RETURN i, h.id, t.id, e.relation_id, h.name, e.relation_name, t.name",
            {"ids": ids},
        ):
            edges[doc_id][edge_key(head_id, tail_id, relation_id)] = _edge_label(head, relation, tail)
        mentioned: dict[str, set[str]] = {doc_id: set() for doc_id in ids}
        for doc_id, entity in self._read(
            "UNWIND $ids AS i MATCH (:Document {doc_id: i})-[:MENTIONS]->(x:Entity) RETURN i, x.id",
            {"ids": ids},
        ):
            mentioned[doc_id].add(entity)
        return {
            doc_id: DocumentState(
                versions.get(doc_id, (None, False))[0],
                versions.get(doc_id, (None, False))[1],
                edges[doc_id],
                frozenset(mentioned[doc_id]),
            )
            for doc_id in ids
        }

    def apply(
        self,
        changes: Sequence[DocumentChange],
        states: dict[str, DocumentState] | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Make the graph hold what each change says, in one transaction (all or nothing): a
        document's edges and mentions its version lacks are removed, its new ones MERGEd, entities
        no document mentions any more removed; a deletion keeps a marker (id and version). Each
        document is read back (UnverifiedWriteError when its version or edge count differs).
        Returns the edges the documents hold now."""
        if not changes:
            return 0
        if states is None:
            states = self.states([change.doc_id for change in changes])
        parameters = change_parameters(changes, states, processed_at or datetime.now(UTC))
        statements = [
            (UPSERT_ENTITIES, {"entities": parameters["entities"]}),
            (UPSERT_DOCUMENTS, {"documents": parameters["documents"]}),
            (
                REMOVE_STALE_EDGES,
                {"documents": parameters["documents"], "separator": parameters["separator"]},
            ),
            (REMOVE_STALE_MENTIONS, {"documents": parameters["documents"]}),
            (ADD_MENTIONS, {"mentions": parameters["mentions"]}),
            (
                REPLACE_RELATIONS.replace("__EVIDENCE__", self.evidence_expression),
                {"rows": parameters["rows"]},
            ),
            (REMOVE_ORPHANS, {"orphans": parameters["orphans"]}),
        ]
        self._write_statements(statements)
        expected = {d["doc_id"]: (d["version"], d["relation_count"]) for d in parameters["documents"]}
        found = {
            row[0]: (row[1], row[2])
            for row in self._read(DOCUMENTS_WRITTEN, {"documents": parameters["documents"]})
        }
        if found != expected:
            wrong = sorted(doc for doc in expected if found.get(doc) != expected[doc])
            raise UnverifiedWriteError(
                f"{self.backend}: documents {wrong[:5]} do not hold the version and edges just written"
            )
        return sum(count for _version, count in expected.values())

    def documents(
        self, entity: str | None = None, doc_id: str | None = None, deleted: bool = False
    ) -> list[StoredDocument]:
        """Document nodes (live ones; ``deleted`` adds the markers), or those mentioning ``entity``
        (a name in any case, or an id)."""
        conditions, params = [], {}
        if not deleted:
            conditions.append("NOT n.deleted")
        if doc_id is not None:
            conditions.append("n.doc_id = $doc_id")
            params["doc_id"] = doc_id
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        if entity is None:
            query = f"MATCH (n:Document) {where}RETURN {DOCUMENT_COLUMNS} ORDER BY n.doc_id"
        else:
            params.update(name=normalise_name(entity), entity=entity)
            where = f"{where}{'AND' if where else 'WHERE'} (x.norm_name = $name OR x.id = $entity) "
            query = (
                f"MATCH (n:Document)-[:MENTIONS]->(x:Entity) {where}"
                f"RETURN DISTINCT {DOCUMENT_COLUMNS} ORDER BY n.doc_id"
            )
        return [StoredDocument.from_row(row) for row in self._read(query, params)]

    def relations(
        self,
        entity: str | None = None,
        relation: str | None = None,
        doc_id: str | None = None,
        limit: int | None = 100,
    ) -> list[StoredRelation]:
        conditions, params = [], {}
        if entity is not None:
            conditions.append(
                "(h.norm_name = $name OR t.norm_name = $name OR h.id = $entity OR t.id = $entity)"
            )
            params["name"] = normalise_name(entity)
            params["entity"] = entity
        if relation is not None:
            conditions.append("(e.relation_id = $relation OR e.relation_name = $relation)")
            params["relation"] = relation
        if doc_id is not None:
            conditions.append("e.doc_id = $doc_id")
            params["doc_id"] = doc_id
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        bound = f" LIMIT {int(limit)}" if limit is not None else ""
        query = (
            f"MATCH (h:Entity)-[e:RELATION]->(t:Entity) {where}RETURN {RELATION_COLUMNS} "
            f"ORDER BY e.doc_id, h.id, t.id, e.relation_id{bound}"
        )
        return [StoredRelation.from_row(row) for row in self._read(query, params)]

    def entities(self) -> list[StoredEntity]:
        rows = self._read("MATCH (n:Entity) RETURN n.id, n.name, n.type ORDER BY n.id", {})
        return [StoredEntity(*row) for row in rows]

    def counts(self) -> GraphCounts:
        """Documents: the live Document nodes; a graph written by ``upsert`` alone (no Document
        nodes) counts the documents its edges name."""
        entities = self._read("MATCH (n:Entity) RETURN count(n)", {})[0][0]
        relations, named = self._read(
            "MATCH ()-[e:RELATION]->() RETURN count(e), count(DISTINCT e.doc_id)", {}
        )[0]
        nodes, live = self._read(
            "MATCH (n:Document) RETURN count(n), sum(CASE WHEN n.deleted THEN 0 ELSE 1 END)", {}
        )[0]
        documents = int(live or 0) if int(nodes) else int(named)
        return GraphCounts(int(entities), int(relations), documents)

    def close(self) -> None:
        """Release the connection; nothing to do by default."""
