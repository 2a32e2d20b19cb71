"""Scoring documents with the ONNX model through onnxruntime (CUDA when there, else CPU).

No torch here: the service needs onnxruntime (or onnxruntime-gpu), tokenizers and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from lmrc.proposer.artifact import relation_probabilities, sigmoid
from lmrc.proposer.features import DocumentFeatures


def preferred_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxPairScorer:
    def __init__(self, model_path: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model_path), options, providers=providers or preferred_providers()
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def available_providers() -> list[str]:
        return list(ort.get_available_providers())

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def has_relation_head(self) -> bool:
        return "relation_logits" in self.output_names

    def score(self, features: DocumentFeatures) -> np.ndarray:
        """Pair probabilities, in the order of ``features.pair_heads`` / ``pair_tails``."""
        if len(features.pair_heads) == 0:
            return np.zeros(0)
        inputs = features.as_inputs()
        (logits,) = self.session.run(["pair_logits"], {name: inputs[name] for name in self.input_names})
        return sigmoid(logits)

    def score_with_relations(
        self, features: DocumentFeatures, relation_loss: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pair probabilities [pairs] and relation probabilities [pairs, relations], one pass."""
        if not self.has_relation_head:
            raise ValueError(
                "this ONNX model has no relation output; export an artifact with a relation head"
            )
        if len(features.pair_heads) == 0:
            return np.zeros(0), np.zeros((0, 0))
        inputs = features.as_inputs()
        pair_logits, relation_logits = self.session.run(
            ["pair_logits", "relation_logits"], {name: inputs[name] for name in self.input_names}
        )
        return sigmoid(pair_logits), relation_probabilities(relation_logits, relation_loss)
