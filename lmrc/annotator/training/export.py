"""ONNX export of the mention tagger (encoder + tag layer), dynamic in windows and length."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmrc.annotator.tagger import INPUT_NAMES, load_tagger_config, tagger_onnx_path
from lmrc.annotator.training.tagger_model import load_tagger

OPSET = 18
log = logging.getLogger(__name__)


def ensure_tagger_onnx(tagger_dir: str | Path, path: Path | None = None) -> Path:
    """The tagger's ONNX model at ``path`` (default: beside it), exported first when missing."""
    target = path or tagger_onnx_path(tagger_dir, load_tagger_config(tagger_dir))
    if target.exists():
        return target
    log.info("exporting the mention tagger %s to ONNX at %s (once)", tagger_dir, target)
    return export_tagger(tagger_dir, target)


def export_tagger(tagger_dir: str | Path, out: Path | None = None) -> Path:
    model, config = load_tagger(tagger_dir)
    target = out or tagger_onnx_path(tagger_dir, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(1000, 2000, (2, 37), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    dims = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    torch.onnx.export(
        model,
        (ids, mask),
        str(target),
        input_names=list(INPUT_NAMES),
        output_names=["logits"],
        dynamic_shapes=(dims, dims),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return target
