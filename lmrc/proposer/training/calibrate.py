"""Thresholds for several recall targets, chosen on the validation split with the shipped weights.

Operators trade LLM calls against recall without retraining: the service picks the threshold of
``PROPOSER_RECALL_TARGET`` from the artifact's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmrc import docred
from lmrc.docred.dataset import redocred_dataset
from lmrc.proposer.artifact import (
    ProposerConfig,
    evidence_sentences,
    featurizer_for,
    relation_probabilities,
    save_config,
    sentence_attention,
    sigmoid,
)
from lmrc.proposer.training.model import PairScorer
from lmrc.proposer.training.selection import (
    candidate_scores,
    pair_labels,
    relation_labels,
    score_documents,
    threshold_for_recall,
)
from lmrc.proposer.training.torch_model import (
    load_artifact,
    torch_pair_and_relation_logits,
    torch_pair_attention,
    torch_scores,
)

RECALL_TARGETS = (0.90, 0.925, 0.95, 0.975, 0.99)


def target_key(recall_target: float) -> str:
    return f"{recall_target:.3f}"


def calibrate_model(
    model: PairScorer,
    config: ProposerConfig,
    recall_target: float,
    documents: Sequence[dict[str, Any]],
    targets: Sequence[float] = RECALL_TARGETS,
    device: str = "cpu",
) -> ProposerConfig:
    """The config with ``threshold`` for ``recall_target`` and a table for every target, chosen on
    ``documents`` (the validation documents)."""
    featurizer = featurizer_for(config)
    model.eval()
    scored = score_documents(documents, featurizer, lambda f: torch_scores(model, f, device))
    scores = np.concatenate([s for _raw, _f, s in scored])
    labels = np.concatenate([pair_labels(raw, f) for raw, f, _s in scored])
    table: dict[str, dict[str, float]] = {}
    for target in sorted({*targets, recall_target}):
        threshold = threshold_for_recall(scores, labels, target)
        figures = candidate_scores(scored, threshold)
        table[target_key(target)] = {
            "threshold": threshold,
            "pair_recall": figures.pair_recall,
            "pass_rate": figures.pass_rate,
        }
    chosen = table[target_key(recall_target)]
    return config.model_copy(
        update={
            "recall_target": recall_target,
            "threshold": chosen["threshold"],
            "validation": {"pair_recall": chosen["pair_recall"], "pass_rate": chosen["pass_rate"]},
            "thresholds": table,
        }
    )


def calibrate(artifact_dir: str | Path, recall_target: float) -> ProposerConfig:
    """Re-choose a Re-DocRED artifact's thresholds on the fixed split's validation documents."""
    model, config = load_artifact(artifact_dir)
    documents = redocred_dataset().validation
    config = calibrate_model(model, config, recall_target, documents)
    if config.relation_classes:
        config = calibrate_relations(model, config, documents)
        config = calibrate_evidence(model, config, documents)
    save_config(config, artifact_dir)
    return config


#: The relation thresholds tried on validation (the probability at which the encoder predicts).
RELATION_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
#: The shortlist keeps as many relations as the candidate filter keeps pairs (0.95 of the gold).
SHORTLIST_RECALL_TARGET = 0.95
MAX_SHORTLIST = 10


def relation_figures(
    gold: list[np.ndarray], probabilities: list[np.ndarray], threshold: float
) -> tuple[float, float, float]:
    """Micro precision, recall, F1 of the relation head's predictions (probability >= threshold)."""
    predicted = sum(int((p >= threshold).sum()) for p in probabilities)
    correct = sum(int(((p >= threshold) & (g > 0)).sum()) for g, p in zip(gold, probabilities, strict=True))
    total = sum(int(g.sum()) for g in gold)
    precision = correct / predicted if predicted else 0.0
    recall = correct / total if total else 0.0
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def shortlist_recall(
    gold: list[np.ndarray], probabilities: list[np.ndarray], candidates: list[np.ndarray], size: int
) -> float:
    """Share of the gold triples of candidate pairs that are among their pair's top ``size``."""
    covered = total = 0
    for g, p, keep in zip(gold, probabilities, candidates, strict=True):
        if not keep.any():
            continue
        g, p = g[keep], p[keep]
        top = np.argsort(-p, axis=1, kind="stable")[:, :size]
        covered += int(np.take_along_axis(g, top, axis=1).sum())
        total += int(g.sum())
    return covered / total if total else 0.0


def calibrate_relations(
    model: PairScorer, config: ProposerConfig, documents: Sequence[dict[str, Any]], device: str = "cpu"
) -> ProposerConfig:
    """The relation head's decision threshold (best F1 on ``documents``) and the shortlist size
    (the smallest whose recall there reaches the target)."""
    relation_ids = config.relation_ids
    index = {relation: i for i, relation in enumerate(relation_ids)}
    featurizer = featurizer_for(config)
    model.eval()
    gold, probabilities, candidates = [], [], []
    for raw in documents:
        features = featurizer.featurize(docred.to_document_event(raw))
        pair_logits, relation_logits = torch_pair_and_relation_logits(model, features, device)
        gold.append(relation_labels(raw, features, index))
        probabilities.append(relation_probabilities(relation_logits, config.relation_loss))
        candidates.append(sigmoid(pair_logits) >= config.threshold)
    best = max(RELATION_THRESHOLDS, key=lambda t: relation_figures(gold, probabilities, t)[2])
    precision, recall, f1 = relation_figures(gold, probabilities, best)
    recalls = {k: shortlist_recall(gold, probabilities, candidates, k) for k in range(1, MAX_SHORTLIST + 1)}
    size = next((k for k, r in recalls.items() if r >= SHORTLIST_RECALL_TARGET), MAX_SHORTLIST)
    return config.model_copy(
        update={
            "relation_threshold": best,
            "shortlist_size": size,
            "relation_validation": {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                **{f"shortlist_recall@{k}": r for k, r in recalls.items()},
            },
        }
    )


EVIDENCE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.61, 0.05))


def evidence_figures(
    relations: Sequence[tuple[np.ndarray, frozenset[int]]], threshold: float
) -> tuple[float, float, float]:
    """Evidence precision, recall, F1 over gold relations: (pair sentence attention, gold sentences)."""
    correct = predicted = gold = 0
    for attention, evidence in relations:
        chosen = set(evidence_sentences(attention, threshold))
        correct += len(chosen & evidence)
        predicted += len(chosen)
        gold += len(evidence)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def calibrate_evidence(
    model: PairScorer, config: ProposerConfig, documents: Sequence[dict[str, Any]], device: str = "cpu"
) -> ProposerConfig:
    """The evidence threshold with the best evidence F1 on the gold relations of ``documents``
    (every relation of a pair shares the pair's evidence, as in DREEAM); none when they have no
    evidence labels (CDR): the artifact then predicts no evidence."""
    if not any(label.evidence for raw in documents for label in docred.labels_of(raw)):
        return config.model_copy(update={"evidence_threshold": None, "evidence_validation": {}})
    featurizer = featurizer_for(config)
    model.eval()
    relations: list[tuple[np.ndarray, frozenset[int]]] = []
    for raw in documents:
        features = featurizer.featurize(docred.to_document_event(raw))
        pairs = zip(features.pair_heads, features.pair_tails, strict=True)
        pair_index = {(int(h), int(t)): i for i, (h, t) in enumerate(pairs)}
        attention = sentence_attention(
            torch_pair_attention(model, features, device), features.token_sentences, features.sentence_count
        )
        for label in docred.labels_of(raw):
            relations.append((attention[pair_index[(label.h, label.t)]], frozenset(label.evidence)))
    best = max(EVIDENCE_THRESHOLDS, key=lambda t: evidence_figures(relations, t)[2])
    precision, recall, f1 = evidence_figures(relations, best)
    return config.model_copy(
        update={
            "evidence_threshold": best,
            "evidence_validation": {"precision": precision, "recall": recall, "f1": f1},
        }
    )
