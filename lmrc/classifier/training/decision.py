"""How the LLM's answers and the encoder's probabilities combine, chosen on validation answers.

The answers come from the server (``lmrc classifier evaluate --decision llm --outcomes``) or from
the model in-process (``offline``: what ``lmrc train --classifier`` tunes on); either way the grid
below is searched for the combination with the best DocRED F1 on the validation documents.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.classifier.artifact import Decision
from lmrc.docred import evaluation


@dataclass
class PairOutcome:
    title: str
    head: int
    tail: int
    gold: set[str]  # relation ids
    predicted: dict[str, float] | None  # relation id -> confidence; None: no usable answer
    shortlist: list[tuple[str, float]]
    seconds: float
    error: str | None = None


def docred_scores(
    raw_documents: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    train_documents: Sequence[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """DocRED's F1, Ign F1 (against ``train_documents``' facts; default Re-DocRED's train split), P, R."""
    train = docred.load_split("train") if train_documents is None else train_documents
    scores = evaluation.evaluate_relations(raw_documents, predictions, train).scores
    return {
        "f1": round(scores.f1, 4),
        "ign_f1": round(scores.ign_f1 or 0.0, 4),
        "precision": round(scores.precision, 4),
        "recall": round(scores.recall, 4),
    }


def decided_predictions(outcomes: list[PairOutcome], decision: Decision) -> list[dict[str, Any]]:
    return [
        {"title": o.title, "h_idx": o.head, "t_idx": o.tail, "r": relation_id, "evidence": []}
        for o in outcomes
        if o.predicted is not None
        for relation_id, probability in o.shortlist
        if decision.keep(relation_id in o.predicted, probability)
    ]


def tune_decision(
    outcomes: list[PairOutcome],
    raw_documents: list[dict[str, Any]],
    train_documents: Sequence[dict[str, Any]] | None = None,
) -> tuple[Decision, list[dict[str, Any]]]:
    """The decision with the best DocRED F1 on these (validation) outcomes, and the whole grid."""
    train = docred.load_split("train") if train_documents is None else train_documents
    grid = []
    # Around the encoder's own decision threshold (0.4 for the shipped proposer) and above it.
    for keep in [None, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]:
        for floor in [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]:
            decision = Decision(encoder_keep_probability=keep, llm_min_probability=floor)
            scores = docred_scores(raw_documents, decided_predictions(outcomes, decision), train)
            grid.append({"encoder_keep_probability": keep, "llm_min_probability": floor, **scores})
    best = max(grid, key=lambda row: (row["f1"], row["encoder_keep_probability"] is None))
    decision = Decision(
        encoder_keep_probability=best["encoder_keep_probability"],
        llm_min_probability=best["llm_min_probability"],
        validation={"f1": best["f1"], "ign_f1": best["ign_f1"], "llm_alone_f1": grid[0]["f1"]},
    )
    return decision, grid


def load_outcomes(path: Path) -> list[PairOutcome]:
    """Per-pair answers written by ``lmrc classifier evaluate --outcomes --decision llm``."""
    outcomes = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            record["gold"] = set(record["gold"])
            record["shortlist"] = [tuple(item) for item in record["shortlist"]]
            outcomes.append(PairOutcome(**record))
    return outcomes
