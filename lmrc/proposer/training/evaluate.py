"""Offline figures of an artifact on a split: the candidate filter (pair recall, pass rate) and,
with a relation head, its encoder-only relations scored the official way (F1, Ign F1, evidence F1).

The scorer is the ONNX model on onnxruntime (what the service runs) or the torch model on any
device: an artifact trained on a GPU can be judged there before it is exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmrc import docred
from lmrc.bundle import MANIFEST_FILE, load_bundle
from lmrc.docred.dataset import training_documents
from lmrc.docred.evaluation import CandidateScores, Scores, evaluate_relations
from lmrc.proposer.artifact import (
    ProposerConfig,
    evidence_sentences,
    featurizer_for,
    load_config,
    relation_probabilities,
    sentence_attention,
    sigmoid,
    threshold_for,
)
from lmrc.proposer.features import DocumentFeatures
from lmrc.proposer.training.selection import candidate_scores

#: Pair probabilities [pairs], relation probabilities [pairs, relations] or None, sentence
#: attention [pairs, sentences] or None.
Outputs = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class ArtifactFigures:
    version: str
    split: str
    scorer: str
    threshold: float
    candidates: CandidateScores
    relations: Scores | None
    documents: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def onnx_scorer(
    artifact_dir: str | Path, config: ProposerConfig
) -> tuple[str, Callable[[DocumentFeatures], Outputs]]:
    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.training.export import ensure_onnx

    scorer = OnnxPairScorer(ensure_onnx(artifact_dir), pair_width=config.pair_width)

    def score(features: DocumentFeatures) -> Outputs:
        if not config.has_relation_head:
            return scorer.score(features), None, None
        return scorer.score_with_relations(features, config.relation_loss)

    return f"onnxruntime ({scorer.provider})", score


def torch_scorer(artifact_dir: str | Path, device: str) -> tuple[str, Callable[[DocumentFeatures], Outputs]]:
    import torch

    from lmrc.proposer.features import INPUT_NAMES
    from lmrc.proposer.training.torch_model import load_artifact, torch_inputs

    model, config = load_artifact(artifact_dir)
    model.to(device)

    @torch.no_grad()
    def score(features: DocumentFeatures) -> Outputs:
        inputs = torch_inputs(features, device)
        pairs, attention = model.pair_representations_with_attention(*(inputs[n] for n in INPUT_NAMES))
        pair_probabilities = sigmoid(model.bilinear(pairs).squeeze(-1).float().cpu().numpy())
        if model.relation_classifier is None:
            return pair_probabilities, None, None
        logits = model.relation_classifier(pairs).float().cpu().numpy()
        sentences = sentence_attention(
            attention.float().cpu().numpy(), features.token_sentences, features.sentence_count
        )
        return pair_probabilities, relation_probabilities(logits, config.relation_loss), sentences

    return f"torch ({device})", score


def predicted_relations(
    config: ProposerConfig,
    features: DocumentFeatures,
    relations: np.ndarray,
    sentences: np.ndarray | None,
    relation_threshold: float,
) -> list[dict[str, Any]]:
    """The encoder's own relations of one document (``h_idx``, ``t_idx``, ``r``, ``evidence``):
    every relation at ``relation_threshold`` or more, each with its pair's evidence sentences."""
    found = []
    for index, row in enumerate(relations):
        predicted = np.flatnonzero(row >= relation_threshold)
        if len(predicted) == 0:
            continue
        evidence = (  # the pair's evidence, shared by its relations (as the service does)
            evidence_sentences(sentences[index], config.evidence_threshold)
            if sentences is not None and config.evidence_threshold is not None
            else []
        )
        for relation in predicted:
            found.append(
                {
                    "h_idx": int(features.pair_heads[index]),
                    "t_idx": int(features.pair_tails[index]),
                    "r": config.relation_ids[relation],
                    "evidence": evidence,
                }
            )
    return found


def evaluate_artifact(
    artifact_dir: str | Path,
    split: str = "holdout",
    device: str | None = None,
    recall_target: float | None = None,
    threshold: float | None = None,
    limit: int | None = None,
    documents: list[dict[str, Any]] | None = None,
) -> ArtifactFigures:
    """The artifact's figures on ``split`` (its first ``limit`` documents), or on ``documents``
    (a user's DocRED-format file, ``split`` naming it): ONNX when ``device`` is None, else torch on
    it."""
    config = load_config(artifact_dir)
    name, score = onnx_scorer(artifact_dir, config) if device is None else torch_scorer(artifact_dir, device)
    featurizer = featurizer_for(config)
    chosen = threshold_for(config, recall_target) if threshold is None else threshold
    relation_threshold = 0.5 if config.relation_threshold is None else config.relation_threshold
    # Ign F1 leaves out facts seen in training: the train documents of the artifact's bundle
    # (Re-DocRED's train split for an artifact outside any bundle).
    bundle_dir = Path(artifact_dir).resolve().parent
    seen_in_training = (
        training_documents(load_bundle(bundle_dir))
        if (bundle_dir / MANIFEST_FILE).exists()
        else docred.load_split("train")
    )
    if documents is None:
        documents = docred.load_split(split)  # type: ignore[arg-type]
    documents = documents[:limit]
    scored, predictions = [], []
    started = time.perf_counter()
    for raw in documents:
        features = featurizer.featurize(docred.to_document_event(raw))
        pair_probabilities, relations, sentences = score(features)
        scored.append((raw, features, pair_probabilities))
        if relations is not None:
            predictions.extend(
                {"title": raw["title"], **relation}
                for relation in predicted_relations(
                    config, features, relations, sentences, relation_threshold
                )
            )
    seconds = time.perf_counter() - started
    relation_scores = (
        evaluate_relations(documents, predictions, seen_in_training).scores
        if config.has_relation_head
        else None
    )
    return ArtifactFigures(
        version=config.version,
        split=split,
        scorer=name,
        threshold=chosen,
        candidates=candidate_scores(scored, chosen),
        relations=relation_scores,
        documents=len(documents),
        seconds=round(seconds, 2),
    )
