"""Thresholds for several recall targets, chosen on the validation split with the shipped weights.

Operators trade LLM calls against recall without retraining: the service picks the threshold of
``PROPOSER_RECALL_TARGET`` from the artifact's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmrc import docred
from services.proposer.artifact import ProposerConfig, save_config, tokenizer_file
from services.proposer.features import DocumentFeaturizer
from services.proposer.model import PairScorer
from services.proposer.selection import candidate_scores, pair_labels, score_documents, threshold_for_recall
from services.proposer.torch_model import load_artifact, torch_scores

RECALL_TARGETS = (0.90, 0.925, 0.95, 0.975, 0.99)


def target_key(recall_target: float) -> str:
    return f"{recall_target:.3f}"


def calibrate_model(
    model: PairScorer,
    config: ProposerConfig,
    recall_target: float,
    targets: Sequence[float] = RECALL_TARGETS,
    device: str = "cpu",
) -> ProposerConfig:
    """The config with ``threshold`` for ``recall_target`` and a table for every target."""
    featurizer = DocumentFeaturizer(tokenizer_file(), config.window_length, config.window_stride)
    model.eval()
    scored = score_documents(
        docred.load_split("validation"), featurizer, lambda f: torch_scores(model, f, device)
    )
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
    model, config = load_artifact(artifact_dir)
    config = calibrate_model(model, config, recall_target)
    save_config(config, artifact_dir)
    return config
