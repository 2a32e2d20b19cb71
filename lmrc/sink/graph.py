"""The graph model and the narrow store interface the sink writes through.

Entities are nodes keyed by a stable id (entity type + normalised name), so the same entity
mentioned in many documents is one node. Each relation is a ``RELATION`` edge carrying the
relation id (``relation_id``: a Wikidata P-id, or any schema's) and name, with provenance:
document, confidence, evidence sentences, model versions, source and first/last seen. An edge is
MERGEd on (head, tail, relation_id, doc_id): a re-delivered event rewrites the same edge, so
replaying a topic leaves the graph as it was. Seen times come from the events, not the clock, for the same
reason. Both backends run the same Cypher.
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lmrc.contracts import Relation
from lmrc.contracts.text import printable


class StoreUnavailableError(Exception):
    """The store cannot take writes right now (down, timeout, out of memory, read-only, loading,
    refusing our credentials): pause and retry later; the input is not at fault."""


class UnverifiedWriteError(Exception):
    """The store accepted a write but does not hold what was written: never counted as stored."""


def normalise_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def entity_id(name: str, entity_type: str) -> str:
    """``TYPE:normalised name``; the type is percent-encoded, so the first ``:`` always ends it and
    no two (name, type) pairs share an id (``("b:c", "A")`` and ``("c", "A:b")`` did)."""
    return f"{urllib.parse.quote(entity_type, safe='')}:{normalise_name(name)}"


def _timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with fixed width, so string order is time order on every backend."""
    if moment.tzinfo is None:  # naive times in events are UTC by contract
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def relation_row(event: Relation) -> dict[str, Any]:
    """Query parameters for one event; empty strings and lists rather than nulls (typed columns)."""
    seen = _timestamp(event.classified_at)
    return {
        "head_id": entity_id(event.head.name, event.head.type),
        "tail_id": entity_id(event.tail.name, event.tail.type),
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


def batch_parameters(events: Sequence[Relation]) -> dict[str, list[dict[str, Any]]]:
    """Fold a batch into one row per entity and one per edge key, whatever its order.

    One row per key keeps the query free of reads of values written earlier in the same query
    (which LadybugDB does not see). The rules are order-free, so any batching of the same events
    gives the same graph: an entity's display name is the smallest name seen; an edge keeps its
    earliest first_seen and takes its other properties from its latest event.
    """
    entities: dict[str, dict[str, Any]] = {}
    for event in events:
        for ref in (event.head, event.tail):
            key = entity_id(ref.name, ref.type)
            known = entities.get(key)
            if known is None or ref.name < known["name"]:
                entities[key] = {
                    "id": key,
                    "name": ref.name,
                    "type": ref.type,
                    "norm_name": normalise_name(ref.name),
                }
    edges: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for event in events:
        row = relation_row(event)
        key = (row["head_id"], row["tail_id"], row["relation_id"], row["doc_id"])
        known = edges.get(key)
        if known is None:
            edges[key] = row
            continue
        first_seen = min(known["first_seen"], row["first_seen"])
        latest = max(known, row, key=lambda r: (r["last_seen"], r["event_id"]))
        edges[key] = {**latest, "first_seen": first_seen}
    return {"entities": list(entities.values()), "rows": list(edges.values())}


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
    e.last_seen = row.last_seen
SET e.first_seen = CASE WHEN row.first_seen < e.first_seen THEN row.first_seen ELSE e.first_seen END
WITH e, row WHERE row.last_seen > e.last_seen
  OR (row.last_seen = e.last_seen AND row.event_id > e.event_id)
SET e.last_seen = row.last_seen, e.relation_name = row.relation_name, e.doc_title = row.doc_title,
  e.confidence = row.confidence, e.evidence = __EVIDENCE__, e.evidence_text = row.evidence_text,
  e.proposer_model = row.proposer_model, e.classifier_model = row.classifier_model,
  e.source_uri = row.source_uri, e.event_id = row.event_id
"""

# Every edge of a batch, found again after the write (same transaction where the backend allows).
COUNT_WRITTEN = """
UNWIND $rows AS row
MATCH (h:Entity {id: row.head_id})-[e:RELATION {relation_id: row.relation_id, doc_id: row.doc_id}]->
  (t:Entity {id: row.tail_id})
RETURN count(e)
"""

RELATION_COLUMNS = (
    "h.id, h.name, h.type, t.id, t.name, t.type, e.relation_id, e.relation_name, e.doc_id, "
    "e.doc_title, e.confidence, e.evidence, e.proposer_model, e.classifier_model, e.source_uri, "
    "e.event_id, e.first_seen, e.last_seen, e.evidence_text"
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

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredRelation:
        values = list(row)
        values[11] = tuple(values[11] or ())
        values[18] = values[18] or ""
        return cls(*values)


@dataclass(frozen=True)
class StoredEntity:
    id: str
    name: str
    type: str


@dataclass(frozen=True)
class GraphCounts:
    entities: int
    relations: int
    documents: int


#: The relation id column's title: a Wikidata P-id, CDR's CID, any schema's id.
TABLE_ID_TITLE = "rel-id"


def format_table(relations: list[StoredRelation], total: int | None = None, more: str = "") -> str:
    """Relations as a table for a terminal: names in full (columns as wide as their longest),
    control characters shown escaped; when ``total`` says more exist, a last line says how many
    are shown and ``more`` how to see them all."""
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

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(width) if column == 4 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    lines = [line(titles), "-" * len(line(titles)), *(line(row) for row in rows)]
    if total is not None and total > len(relations):
        lines.append(f"showing {len(relations)} of {total} relations{'; ' + more if more else ''}")
    return "\n".join(lines)


class GraphStore(Protocol):
    backend: str

    def upsert(self, events: Sequence[Relation]) -> int:
        """Write a batch in one transaction (all or nothing); the edges written, verified."""

    def relations(
        self,
        entity: str | None = None,
        relation: str | None = None,
        doc_id: str | None = None,
        limit: int | None = 100,
    ) -> list[StoredRelation]: ...

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

    def upsert(self, events: Sequence[Relation]) -> int:
        """Write the events; returns the edges written, each read back (UnverifiedWriteError if one
        is missing: a write the store silently dropped is never counted or committed)."""
        if not events:
            return 0
        parameters = batch_parameters(events)
        self._write_batch(
            [
                (UPSERT_ENTITIES, {"entities": parameters["entities"]}),
                (
                    UPSERT_RELATIONS.replace("__EVIDENCE__", self.evidence_expression),
                    {"rows": parameters["rows"]},
                ),
            ]
        )
        expected = len(parameters["rows"])
        found = int(self._read(COUNT_WRITTEN, {"rows": parameters["rows"]})[0][0])
        if found != expected:
            raise UnverifiedWriteError(
                f"{self.backend}: {found} of the {expected} edges written are in the graph"
            )
        return expected

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
        entities = self._read("MATCH (n:Entity) RETURN count(n)", {})[0][0]
        relations, documents = self._read(
            "MATCH ()-[e:RELATION]->() RETURN count(e), count(DISTINCT e.doc_id)", {}
        )[0]
        return GraphCounts(int(entities), int(relations), int(documents))

    def close(self) -> None:
        """Release the connection; nothing to do by default."""
