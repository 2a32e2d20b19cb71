"""Scores of an annotator against DocRED's gold entities, on text rebuilt from the gold tokens.

- mentions: exact character spans (untyped; typed: the mention's entity type too);
- entities: a predicted entity counts only when its whole set of mention spans is a gold
  entity's (singletons included); typed: and its type is the gold entity's;
- relations end to end (JEREX's two settings): strict, both entities' whole mention sets and the
  relation right; relaxed, head and tail each share at least one mention span with the gold
  entity and the relation is right. Relaxed precision counts predictions matching some gold
  triple; relaxed recall, gold triples matched by some prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmrc.docred import labels_of
from lmrc.docred.text import RebuiltText, rebuild_text

Span = tuple[int, int]


@dataclass
class Counts:
    """True positives, predictions and gold items, summed over documents."""

    hits: int = 0
    predicted: int = 0
    gold: int = 0
    gold_hits: int | None = None  # where gold matched differs from predictions matched (relaxed)

    def add(self, hits: int, predicted: int, gold: int, gold_hits: int | None = None) -> None:
        self.hits += hits
        self.predicted += predicted
        self.gold += gold
        if gold_hits is not None:
            self.gold_hits = (self.gold_hits or 0) + gold_hits

    def scores(self) -> dict[str, float]:
        precision = self.hits / self.predicted if self.predicted else 0.0
        recall = (self.hits if self.gold_hits is None else self.gold_hits) / self.gold if self.gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def predicted_entities(document: Mapping[str, Any]) -> list[tuple[frozenset[Span], str]]:
    """Each entity of an annotated DocumentEvent (as JSON) as its mention spans and its type."""
    found = []
    for entity in document["entities"]:
        spans = frozenset(
            (m["start_char"], m["end_char"]) for m in entity["mentions"] if m.get("start_char") is not None
        )
        found.append((spans, entity["mentions"][0]["type"]))
    return found


def gold_entities(rebuilt: RebuiltText, raw: Mapping[str, Any]) -> list[tuple[frozenset[Span], str]]:
    spans: dict[int, set[Span]] = {}
    for mention in rebuilt.mentions:
        spans.setdefault(mention.entity, set()).add((mention.start, mention.end))
    return [
        (frozenset(spans.get(index, set())), vertex[0]["type"])
        for index, vertex in enumerate(raw["vertexSet"])
    ]


@dataclass
class AnnotationScores:
    mentions: Counts = field(default_factory=Counts)
    typed_mentions: Counts = field(default_factory=Counts)
    entities: Counts = field(default_factory=Counts)
    typed_entities: Counts = field(default_factory=Counts)

    def add(self, raw: Mapping[str, Any], document: Mapping[str, Any]) -> None:
        rebuilt = rebuild_text(raw)
        gold = gold_entities(rebuilt, raw)
        predicted = predicted_entities(document)
        gold_mentions = {span: kind for spans, kind in gold for span in spans}
        predicted_mentions = {span: kind for spans, kind in predicted for span in spans}
        self.mentions.add(
            len(gold_mentions.keys() & predicted_mentions.keys()), len(predicted_mentions), len(gold_mentions)
        )
        typed = sum(1 for span, kind in predicted_mentions.items() if gold_mentions.get(span) == kind)
        self.typed_mentions.add(typed, len(predicted_mentions), len(gold_mentions))
        gold_sets = {spans: kind for spans, kind in gold}
        predicted_sets = {spans: kind for spans, kind in predicted}
        self.entities.add(len(gold_sets.keys() & predicted_sets.keys()), len(predicted_sets), len(gold_sets))
        typed = sum(1 for spans, kind in predicted_sets.items() if gold_sets.get(spans) == kind)
        self.typed_entities.add(typed, len(predicted_sets), len(gold_sets))

    def as_dict(self) -> dict[str, Any]:
        return {
            "mention_f1": self.mentions.scores()["f1"],
            "entity_f1": self.entities.scores()["f1"],
            "typed_entity_f1": self.typed_entities.scores()["f1"],
            "typed_mention_f1": self.typed_mentions.scores()["f1"],
            "mentions": self.mentions.scores()
            | {"gold": self.mentions.gold, "predicted": self.mentions.predicted},
            "entities": self.entities.scores()
            | {"gold": self.entities.gold, "predicted": self.entities.predicted},
            "typed_entities": self.typed_entities.scores(),
            "typed_mentions": self.typed_mentions.scores(),
        }


def relation_scores(
    gold_documents: Iterable[Mapping[str, Any]],
    documents: Mapping[str, Mapping[str, Any]],
    triples: Iterable[tuple[str, int, int, str]],
) -> dict[str, dict[str, float]]:
    """Strict and relaxed relation P/R/F1 of ``triples`` (doc_id, head, tail, relation P-id; entity
    indices of the annotated ``documents``, keyed by doc_id = the gold title)."""
    by_doc: dict[str, set[tuple[int, int, str]]] = {}
    for doc_id, head, tail, relation in triples:
        by_doc.setdefault(doc_id, set()).add((head, tail, relation))
    strict, relaxed = Counts(), Counts()
    for raw in gold_documents:
        gold_triples = {(label.h, label.t, label.r) for label in labels_of(raw)}
        predicted = by_doc.get(raw["title"], set())
        document = documents.get(raw["title"])
        if document is None:
            strict.add(0, len(predicted), len(gold_triples))
            relaxed.add(0, len(predicted), len(gold_triples), 0)
            continue
        gold = gold_entities(rebuild_text(raw), raw)
        exact = {spans: index for index, (spans, _) in enumerate(gold)}
        entities = predicted_entities(document)
        strict_map = {index: exact.get(spans) for index, (spans, _) in enumerate(entities)}
        relaxed_map = {
            index: {g for g, (gold_spans, _) in enumerate(gold) if spans & gold_spans}
            for index, (spans, _) in enumerate(entities)
        }
        strict_hits = {(strict_map.get(h), strict_map.get(t), r) for h, t, r in predicted} & gold_triples
        strict.add(len(strict_hits), len(predicted), len(gold_triples))
        matched_gold: set[tuple[int, int, str]] = set()
        correct = 0
        for h, t, r in predicted:
            matches = {
                (gh, gt, r) for gh in relaxed_map.get(h, ()) for gt in relaxed_map.get(t, ())
            } & gold_triples
            correct += bool(matches)
            matched_gold |= matches
        relaxed.add(correct, len(predicted), len(gold_triples), len(matched_gold))
    return {"strict": strict.scores(), "relaxed": relaxed.scores()}
