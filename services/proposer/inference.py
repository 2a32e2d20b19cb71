"""Scoring documents with the ONNX model through onnxruntime (CUDA when there, else CPU).

No torch here: the service needs onnxruntime (or onnxruntime-gpu), tokenizers and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.proposer.artifact import sigmoid
from services.proposer.features import DocumentFeatures


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

    @staticmethod
    def available_providers() -> list[str]:
        return list(ort.get_available_providers())

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def score(self, features: DocumentFeatures) -> np.ndarray:
        """Pair probabilities, in the order of ``features.pair_heads`` / ``pair_tails``."""
        if len(features.pair_heads) == 0:
            return np.zeros(0)
        inputs = features.as_inputs()
        (logits,) = self.session.run(None, {name: inputs[name] for name in self.input_names})
        return sigmoid(logits)
