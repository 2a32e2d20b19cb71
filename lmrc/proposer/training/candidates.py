"""The shipped proposer's candidate pairs for DocRED documents, offline (no broker): the pairs the
classifier is trained and evaluated on."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from lmrc import docred
from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, load_config, threshold_for, tokenizer_file
from lmrc.proposer.features import DocumentFeaturizer
from lmrc.proposer.inference import OnnxPairScorer
from lmrc.proposer.training.export import ensure_onnx


def proposer_candidates(documents: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """The pairs the shipped proposer passes on (at its default threshold), per document title."""
    config = load_config(DEFAULT_ARTIFACT_DIR)
    scorer = OnnxPairScorer(ensure_onnx(DEFAULT_ARTIFACT_DIR))
    featurizer = DocumentFeaturizer(tokenizer_file(), config.window_length, config.window_stride)
    threshold = threshold_for(config, None)
    candidates: dict[str, list[tuple[int, int]]] = {}
    for raw in tqdm(documents, desc="proposer", unit="doc"):
        features = featurizer.featurize(docred.to_document_event(raw))
        scores = scorer.score(features)
        candidates[raw["title"]] = [
            (int(h), int(t))
            for h, t, score in zip(features.pair_heads, features.pair_tails, scores, strict=True)
            if score >= threshold
        ]
    return candidates
