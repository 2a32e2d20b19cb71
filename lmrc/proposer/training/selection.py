"""Choosing the decision threshold and scoring candidates (shared by training, tests, benchmark)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lmrc.docred import gold_pairs, labels_of, to_document_event
from lmrc.docred.evaluation import CandidateScores, evaluate_candidates
from lmrc.proposer.features import DocumentFeatures, DocumentFeaturizer


def pair_labels(raw_document: dict[str, Any], features: DocumentFeatures) -> np.ndarray:
    """1 for every ordered pair that holds at least one gold relation."""
    gold = gold_pairs(raw_document)
    return np.asarray(
        [(int(h), int(t)) in gold for h, t in zip(features.pair_heads, features.pair_tails, strict=True)],
        dtype=np.float32,
    )


def relation_labels(
    raw_document: dict[str, Any], features: DocumentFeatures, relation_index: dict[str, int]
) -> np.ndarray:
    """Multi-hot [pairs, relations]: which relations each ordered pair holds."""
    pair_index = {
        (int(h), int(t)): i
        for i, (h, t) in enumerate(zip(features.pair_heads, features.pair_tails, strict=True))
    }
    labels = np.zeros((len(pair_index), len(relation_index)), dtype=np.float32)
    for label in labels_of(raw_document):
        labels[pair_index[(label.h, label.t)], relation_index[label.r]] = 1.0
    return labels


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, recall_target: float) -> float:
    """The highest threshold that keeps at least ``recall_target`` of the positive pairs."""
    positives = np.sort(scores[labels > 0])[::-1]
    if len(positives) == 0:
        return 0.5
    keep = min(len(positives), max(1, math.ceil(recall_target * len(positives))))
    return float(positives[keep - 1])


def score_documents(
    raw_documents: Sequence[dict[str, Any]],
    featurizer: DocumentFeaturizer,
    score: Callable[[DocumentFeatures], np.ndarray],
) -> list[tuple[dict[str, Any], DocumentFeatures, np.ndarray]]:
    results = []
    for raw in raw_documents:
        features = featurizer.featurize(to_document_event(raw))
        results.append((raw, features, score(features)))
    return results


def candidate_scores(
    scored: Sequence[tuple[dict[str, Any], DocumentFeatures, np.ndarray]], threshold: float
) -> CandidateScores:
    """The official proposer figures (pair recall, pass rate) for the pairs at or above threshold."""
    candidates = [
        {"title": raw["title"], "h_idx": int(h), "t_idx": int(t)}
        for raw, features, scores in scored
        for h, t, s in zip(features.pair_heads, features.pair_tails, scores, strict=True)
        if s >= threshold
    ]
    return evaluate_candidates([raw for raw, _features, _scores in scored], candidates)


def evidence_targets(raw_document: dict[str, Any], features: DocumentFeatures) -> np.ndarray:
    """[pairs, sentences]: each related pair's gold evidence as a distribution over sentences
    (DREEAM: the evidence of all its relations pooled, then normalised); zero rows for pairs with
    no relation or no annotated evidence."""
    pair_index = {
        (int(h), int(t)): i
        for i, (h, t) in enumerate(zip(features.pair_heads, features.pair_tails, strict=True))
    }
    targets = np.zeros((len(pair_index), features.sentence_count), dtype=np.float32)
    for label in labels_of(raw_document):
        for sentence in label.evidence:
            if 0 <= sentence < features.sentence_count:
                targets[pair_index[(label.h, label.t)], sentence] += 1.0
    totals = targets.sum(1, keepdims=True)
    return np.divide(targets, totals, out=np.zeros_like(targets), where=totals > 0)
