"""DocRED's official scores (F1, Ign F1, evidence F1), per-relation F1, and proposer figures.

The relation scoring follows DocRED's official ``evaluation.py`` exactly, so numbers compare with
published ones:
- predictions are de-duplicated on (title, h_idx, t_idx, r); every remaining prediction counts in
  the precision denominator, also one whose title is not in the gold file;
- a correct prediction is "in train" when some mention-name pair of its head and tail entities
  carries the same relation in the training file; Ign precision drops those facts from both
  numerator and denominator, and Ign F1 combines it with the ordinary recall.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmrc.docred import entity_count, labels_of


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    ign_f1: float | None
    evidence_f1: float
    predictions: int
    gold: int
    correct: int
    correct_in_train: int | None


@dataclass(frozen=True)
class RelationScore:
    relation: str
    precision: float
    recall: float
    f1: float
    gold: int
    predicted: int
    correct: int


@dataclass(frozen=True)
class CandidateScores:
    """How well a proposer keeps gold pairs while passing few pairs on."""

    pair_recall: float
    triple_recall: float
    pass_rate: float
    candidates: int
    all_pairs: int
    gold_pairs: int
    gold_pairs_kept: int
    unknown_titles: int = 0


@dataclass(frozen=True)
class Report:
    scores: Scores
    per_relation: list[RelationScore] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def facts_in_train(train_documents: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(head mention name, tail mention name, relation) for every labelled training fact."""
    facts: set[tuple[str, str, str]] = set()
    for doc in train_documents:
        vertex_set = doc["vertexSet"]
        for label in labels_of(doc):
            for head in vertex_set[label.h]:
                for tail in vertex_set[label.t]:
                    facts.add((head["name"], tail["name"], label.r))
    return facts


def type_prior(train_documents: Iterable[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The most frequent train relation for each (head type, tail type): the baseline that
    answers every pair with its types' usual relation (an entity's type is its first mention's)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for doc in train_documents:
        vertex_set = doc["vertexSet"]
        for label in labels_of(doc):
            types = (vertex_set[label.h][0]["type"], vertex_set[label.t][0]["type"])
            counts.setdefault(types, Counter())[label.r] += 1
    return {types: counter.most_common(1)[0][0] for types, counter in counts.items()}


def _unique_predictions(predictions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, int, int, str]] = set()
    unique = []
    ordered = sorted(predictions, key=lambda p: (p["title"], p["h_idx"], p["t_idx"], p["r"]))
    for prediction in ordered:
        key = (prediction["title"], prediction["h_idx"], prediction["t_idx"], prediction["r"])
        if key not in seen:
            seen.add(key)
            unique.append(prediction)
    return unique


def evaluate_relations(
    gold_documents: Sequence[dict[str, Any]],
    predictions: Iterable[dict[str, Any]],
    train_documents: Sequence[dict[str, Any]] | None = None,
) -> Report:
    """Score DocRED-format predictions (``title``, ``h_idx``, ``t_idx``, ``r``, ``evidence``)."""
    gold: dict[tuple[str, str, int, int], set[int]] = {}
    vertex_sets: dict[str, list[list[dict[str, Any]]]] = {}
    gold_evidence = 0
    for doc in gold_documents:
        vertex_sets[doc["title"]] = doc["vertexSet"]
        for label in labels_of(doc):
            evidence = set(label.evidence)
            gold[(doc["title"], label.r, label.h, label.t)] = evidence
            gold_evidence += len(evidence)

    train_facts = facts_in_train(train_documents) if train_documents is not None else None
    unique = _unique_predictions(predictions)
    correct = correct_evidence = predicted_evidence = correct_in_train = 0
    predicted_by_relation: Counter[str] = Counter()
    correct_by_relation: Counter[str] = Counter()
    for prediction in unique:
        title, h, t, r = prediction["title"], prediction["h_idx"], prediction["t_idx"], prediction["r"]
        predicted_by_relation[r] += 1
        if title not in vertex_sets:
            continue
        evidence = set(prediction.get("evidence") or [])
        predicted_evidence += len(evidence)
        key = (title, r, h, t)
        if key not in gold:
            continue
        correct += 1
        correct_by_relation[r] += 1
        correct_evidence += len(gold[key] & evidence)
        if train_facts is not None:
            vertex_set = vertex_sets[title]
            if any(
                (head["name"], tail["name"], r) in train_facts
                for head in vertex_set[h]
                for tail in vertex_set[t]
            ):
                correct_in_train += 1

    precision = _ratio(correct, len(unique))
    recall = _ratio(correct, len(gold))
    ign_f1 = None
    if train_facts is not None:
        ign_precision = _ratio(correct - correct_in_train, len(unique) - correct_in_train)
        ign_f1 = _f1(ign_precision, recall)
    evidence_f1 = _f1(_ratio(correct_evidence, predicted_evidence), _ratio(correct_evidence, gold_evidence))
    scores = Scores(
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        ign_f1=ign_f1,
        evidence_f1=evidence_f1,
        predictions=len(unique),
        gold=len(gold),
        correct=correct,
        correct_in_train=correct_in_train if train_facts is not None else None,
    )
    gold_by_relation = Counter(key[1] for key in gold)
    per_relation = []
    for relation in sorted(set(gold_by_relation) | set(predicted_by_relation)):
        p = _ratio(correct_by_relation[relation], predicted_by_relation[relation])
        r = _ratio(correct_by_relation[relation], gold_by_relation[relation])
        per_relation.append(
            RelationScore(
                relation=relation,
                precision=p,
                recall=r,
                f1=_f1(p, r),
                gold=gold_by_relation[relation],
                predicted=predicted_by_relation[relation],
                correct=correct_by_relation[relation],
            )
        )
    return Report(scores=scores, per_relation=per_relation)


def evaluate_candidates(
    gold_documents: Sequence[dict[str, Any]], candidates: Iterable[dict[str, Any]]
) -> CandidateScores:
    """Recall of gold relation pairs (and triples) among proposed pairs, and the share passed on.

    ``candidates`` hold ``title``, ``h_idx``, ``t_idx``; duplicates count once.
    """
    titles = {doc["title"] for doc in gold_documents}
    proposed = {(c["title"], c["h_idx"], c["t_idx"]) for c in candidates}
    known = {pair for pair in proposed if pair[0] in titles}
    gold_pairs: set[tuple[str, int, int]] = set()
    gold_triples = 0
    triples_kept = 0
    for doc in gold_documents:
        for label in labels_of(doc):
            pair = (doc["title"], label.h, label.t)
            gold_pairs.add(pair)
            gold_triples += 1
            triples_kept += pair in known
    all_pairs = sum(entity_count(doc) * (entity_count(doc) - 1) for doc in gold_documents)
    kept = len(gold_pairs & known)
    return CandidateScores(
        pair_recall=_ratio(kept, len(gold_pairs)),
        triple_recall=_ratio(triples_kept, gold_triples),
        pass_rate=_ratio(len(known), all_pairs),
        candidates=len(known),
        all_pairs=all_pairs,
        gold_pairs=len(gold_pairs),
        gold_pairs_kept=kept,
        unknown_titles=len(proposed) - len(known),
    )


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list (DocRED's submission format) or JSON lines, one prediction per line."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def format_report(report: Report, relation_names: dict[str, str] | None = None) -> str:
    s = report.scores
    lines = [
        f"precision   {s.precision:.4f}",
        f"recall      {s.recall:.4f}",
        f"F1          {s.f1:.4f}",
        f"Ign F1      {s.ign_f1:.4f}" if s.ign_f1 is not None else "Ign F1      n/a (no --train file)",
        f"evidence F1 {s.evidence_f1:.4f}",
        f"predictions {s.predictions}  gold {s.gold}  correct {s.correct}",
    ]
    if report.per_relation:
        names = relation_names or {}
        lines.append("")
        lines.append(f"{'relation':<8} {'name':<40} {'P':>6} {'R':>6} {'F1':>6} {'gold':>5} {'pred':>5}")
        for row in sorted(report.per_relation, key=lambda row: (-row.gold, row.relation)):
            lines.append(
                f"{row.relation:<8} {names.get(row.relation, '')[:40]:<40} {row.precision:6.3f} "
                f"{row.recall:6.3f} {row.f1:6.3f} {row.gold:5d} {row.predicted:5d}"
            )
    return "\n".join(lines)


def format_candidates(scores: CandidateScores) -> str:
    return "\n".join(
        [
            f"pair recall   {scores.pair_recall:.4f}  "
            f"({scores.gold_pairs_kept}/{scores.gold_pairs} gold pairs kept)",
            f"triple recall {scores.triple_recall:.4f}",
            f"pass rate     {scores.pass_rate:.4f}  ({scores.candidates}/{scores.all_pairs} pairs passed on)",
        ]
    )
