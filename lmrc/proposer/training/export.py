"""ONNX export of the whole proposer (encoder, window merge, pooling, head) with dynamic axes,
through torch.export (the TorchScript-based exporter is deprecated)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmrc.contracts import DocumentEvent, Entity, Mention
from lmrc.proposer.artifact import load_config, onnx_path, tokenizer_file
from lmrc.proposer.features import INPUT_NAMES, OUTPUT_NAMES, DocumentFeaturizer
from lmrc.proposer.training.torch_model import load_artifact, torch_inputs

DYNAMIC_AXES = {
    "window_input_ids": {0: "windows", 1: "window_length"},
    "window_attention_mask": {0: "windows", 1: "window_length"},
    "window_offsets": {0: "windows"},
    "token_mask": {0: "tokens"},
    "mention_positions": {0: "entities", 1: "mentions"},
    "mention_mask": {0: "entities", 1: "mentions"},
    "entity_types": {0: "entities"},
    "pair_heads": {0: "pairs"},
    "pair_tails": {0: "pairs"},
}
OPSET = 18

log = logging.getLogger(__name__)


def _example_document() -> DocumentEvent:
    """Two windows, several multi-mention entities: every path of the graph is traced."""
    words = [f"word{i}" for i in range(700)]
    sentences = [words[i : i + 20] for i in range(0, 700, 20)]
    entities = [
        Entity(
            mentions=[Mention(sent_id=s, start=k, end=k + 2, name=f"e{k}", type="MISC") for s in (k, k + 20)]
        )
        for k in range(3)
    ]
    return DocumentEvent(doc_id="export", sentences=sentences, entities=entities)


def ensure_onnx(artifact_dir: str | Path, path: Path | None = None) -> Path:
    """The artifact's ONNX model at ``path`` (default: beside it), exported first when missing."""
    target = path or onnx_path(artifact_dir, load_config(artifact_dir))
    if target.exists():
        return target
    log.info("exporting the proposer %s to ONNX at %s (once)", artifact_dir, target)
    return export_onnx(artifact_dir, target)


def export_onnx(artifact_dir: str | Path, out: Path | None = None) -> Path:
    model, config = load_artifact(artifact_dir)
    featurizer = DocumentFeaturizer(
        tokenizer_file(config.encoder), config.window_length, config.window_stride, config.entity_types
    )
    features = featurizer.featurize(_example_document())
    inputs = torch_inputs(features)
    target = out or onnx_path(artifact_dir, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    dynamic = tuple({axis: torch.export.Dim.AUTO for axis in DYNAMIC_AXES[name]} for name in INPUT_NAMES)
    torch.onnx.export(
        model,
        tuple(inputs[name] for name in INPUT_NAMES),
        str(target),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES if model.relation_classifier is not None else OUTPUT_NAMES[:1]),
        dynamic_shapes=(dynamic,),  # forward(*inputs): one variadic argument
        opset_version=OPSET,
        dynamo=True,
        external_data=False,  # one self-contained file (~92 MB) to mount or bake into an image
        verbose=False,
    )
    return target
