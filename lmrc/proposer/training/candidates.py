"""A proposer's candidate pairs for DocRED documents, offline (no broker): the pairs, shortlists and
encoder-only predictions the classifier is trained and evaluated on.

Out-of-fold: the train documents are split into folds by position; the proposer trained without
fold ``i`` (``lmrc proposer train --fold i``) scores fold ``i``. A proposer's shortlist on its own
training documents is near-perfect, so an LLM trained on it would learn to copy the top option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lmrc import docred
from lmrc.proposer.artifact import (
    ProposerConfig,
    featurizer_for,
    relation_probabilities,
    sigmoid,
    threshold_for,
)


def in_fold(position: int, fold: int, folds: int) -> bool:
    """Whether the train document at ``position`` (in the dataset's train order) is in ``fold``."""
    return position % folds == fold


@dataclass(frozen=True)
class ScoredPair:
    """A candidate pair as the proposer service emits it: score, shortlist (best first)."""

    head: int
    tail: int
    score: float
    shortlist: tuple[tuple[str, float], ...]  # (relation P-id, probability)


@dataclass
class DocumentCandidates:
    title: str
    pairs: list[ScoredPair] = field(default_factory=list)
    # What encoder-only mode would emit for the document: (head, tail, P-id, probability).
    encoder_predictions: list[tuple[int, int, str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "pairs": [[p.head, p.tail, p.score, [list(s) for s in p.shortlist]] for p in self.pairs],
            "encoder_predictions": [list(p) for p in self.encoder_predictions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocumentCandidates:
        return cls(
            title=data["title"],
            pairs=[
                ScoredPair(int(h), int(t), float(s), tuple((str(r), float(p)) for r, p in shortlist))
                for h, t, s, shortlist in data["pairs"]
            ],
            encoder_predictions=[
                (int(h), int(t), str(r), float(p)) for h, t, r, p in data["encoder_predictions"]
            ],
        )


def document_candidates(
    title: str,
    config: ProposerConfig,
    heads: np.ndarray,
    tails: np.ndarray,
    pair_probabilities: np.ndarray,
    relation_probs: np.ndarray,
    shortlist_size: int,
) -> DocumentCandidates:
    """The service's selection, offline: pairs at or above the threshold, best first, top-k each."""
    threshold = threshold_for(config, None)
    relation_threshold = config.relation_threshold if config.relation_threshold is not None else 0.5
    kept = np.flatnonzero(pair_probabilities >= threshold)
    kept = kept[np.argsort(-pair_probabilities[kept], kind="stable")]
    ids = config.relation_ids
    pairs = []
    for index in kept:
        ranked = np.argsort(-relation_probs[index], kind="stable")[:shortlist_size]
        shortlist = tuple((ids[i], float(relation_probs[index, i])) for i in ranked)
        pairs.append(
            ScoredPair(int(heads[index]), int(tails[index]), float(pair_probabilities[index]), shortlist)
        )
    predicted = [
        (int(heads[p]), int(tails[p]), ids[r], float(relation_probs[p, r]))
        for p, r in zip(*np.nonzero(relation_probs >= relation_threshold), strict=True)
    ]
    return DocumentCandidates(title, pairs, predicted)


def score_candidates(
    artifact_dir: Path,
    documents: Sequence[dict[str, Any]],
    shortlist_size: int | None = None,
    device: str = "cpu",
) -> list[DocumentCandidates]:
    """Candidates of ``documents`` from the proposer in ``artifact_dir`` (torch; any device)."""
    from lmrc.proposer.training.torch_model import load_artifact, torch_pair_and_relation_logits

    model, config = load_artifact(artifact_dir)
    model.to(device)
    featurizer = featurizer_for(config)
    size = shortlist_size or config.shortlist_size
    results = []
    for raw in tqdm(documents, desc=f"proposer {config.version}", unit="doc"):
        features = featurizer.featurize(docred.to_document_event(raw))
        pair_logits, relation_logits = torch_pair_and_relation_logits(model, features, device)
        results.append(
            document_candidates(
                raw["title"],
                config,
                features.pair_heads,
                features.pair_tails,
                sigmoid(pair_logits),
                relation_probabilities(relation_logits, config.relation_loss),
                size,
            )
        )
    return results


def out_of_fold_candidates(
    fold_dirs: Sequence[Path],
    shortlist_size: int,
    device: str = "cpu",
    documents: Sequence[dict[str, Any]] | None = None,
) -> list[tuple[dict[str, Any], DocumentCandidates]]:
    """Every train document (``documents``, in the order the folds were cut from; default
    Re-DocRED's train split) with the candidates of the fold proposer that did not train on it."""
    documents = docred.load_split("train") if documents is None else documents
    results: list[tuple[dict[str, Any], DocumentCandidates]] = []
    for fold, fold_dir in enumerate(fold_dirs):
        held_out = [raw for i, raw in enumerate(documents) if in_fold(i, fold, len(fold_dirs))]
        results += zip(held_out, score_candidates(fold_dir, held_out, shortlist_size, device), strict=True)
    return results
