"""Pseudo-labels: a trained proposer labels documents that have entities but few or no relations,
so that another model (a faster student, or the same one trained longer) can learn from them.

DocRED's own train labels are incomplete (Re-DocRED's revision found many missing), so a document's
labels are kept and the teacher's confident relations joined to them; unlabelled documents get
the teacher's alone. Every label the teacher adds carries its evidence sentences.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.proposer.artifact import featurizer_for, load_config
from lmrc.proposer.training.evaluate import onnx_scorer, predicted_relations


def pseudo_label(
    artifact_dir: str | Path,
    documents: list[dict[str, Any]],
    min_probability: float | None = None,
    keep_labels: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The documents with the teacher's relations at ``min_probability`` or more (default: its own
    decision threshold, chosen on validation) joined to their labels, and a summary."""
    config = load_config(artifact_dir)
    if not config.has_relation_head:
        raise ValueError(f"{artifact_dir}: the proposer has no relation head, so it cannot label relations")
    threshold = min_probability if min_probability is not None else (config.relation_threshold or 0.5)
    _name, score = onnx_scorer(artifact_dir, config)
    featurizer = featurizer_for(config)
    labelled, kept, added = [], 0, 0
    started = time.perf_counter()
    for number, raw in enumerate(documents, start=1):
        features = featurizer.featurize(docred.to_document_event(raw))
        _pairs, relations, sentences = score(features)
        labels = [dict(label) for label in raw.get("labels", [])] if keep_labels else []
        known = {(label["h"], label["t"], label["r"]) for label in labels}
        kept += len(labels)
        if relations is not None:
            for relation in predicted_relations(config, features, relations, sentences, threshold):
                key = (relation["h_idx"], relation["t_idx"], relation["r"])
                if key not in known:
                    known.add(key)
                    labels.append({"h": key[0], "t": key[1], "r": key[2], "evidence": relation["evidence"]})
                    added += 1
        labelled.append({**raw, "labels": labels})
        if progress is not None:
            progress(number, len(documents))
    summary = {
        "teacher": config.version,
        "documents": len(documents),
        "min_probability": threshold,
        "labels_kept": kept,
        "labels_added": added,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return labelled, summary
