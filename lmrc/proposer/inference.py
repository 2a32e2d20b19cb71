"""Scoring documents with the ONNX model through onnxruntime (CUDA when there, else CPU).

No torch here: the service needs onnxruntime (or onnxruntime-gpu), tokenizers and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lmrc.contracts import DocumentEvent
from lmrc.proposer.artifact import (
    ProposerConfig,
    pair_graph_path,
    relation_probabilities,
    sentence_attention,
    sigmoid,
)
from lmrc.proposer.features import DOCUMENT_OUTPUT_NAMES, DocumentFeatures, DocumentFeaturizer


def preferred_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


#: What one pair costs in activations: a few live float copies of its attention over the text (per
#: word piece) and of its grouped representation (emb x block floats), measured on CPU.
PAIR_BYTES_PER_TOKEN = 16
PAIR_BYTES_PER_WIDTH = 4 * 4
#: The grouped representation's width of the default MiniLM-sized head (emb 384 x block 32).
DEFAULT_PAIR_WIDTH = 384 * 32
#: Activations the pairs of one run may take; a document with more pairs is scored in several runs.
DEFAULT_PAIR_BUDGET_BYTES = 256 * 1024 * 1024


def pairs_per_run(
    tokens: int, budget_bytes: int = DEFAULT_PAIR_BUDGET_BYTES, pair_width: int = DEFAULT_PAIR_WIDTH
) -> int:
    """How many pairs one run of the graph may score within ``budget_bytes``."""
    return max(1, budget_bytes // (PAIR_BYTES_PER_TOKEN * tokens + PAIR_BYTES_PER_WIDTH * pair_width))


class OnnxPairScorer:
    """The exported graphs on onnxruntime: the document graph reads a document's text once, and
    the pair graph scores its pairs from that in runs of at most :func:`pairs_per_run`, so memory
    is bounded whatever the number of entities and the text is never re-encoded.

    ``model_path``: the document graph; the pair graph lies beside it (``pair_graph_path``).
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: list[str] | None = None,
        threads: int = 0,
        pair_budget_bytes: int = DEFAULT_PAIR_BUDGET_BYTES,
        pair_width: int = DEFAULT_PAIR_WIDTH,
    ) -> None:
        self.pair_budget_bytes = pair_budget_bytes
        self.pair_width = pair_width
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        chosen = providers or preferred_providers()
        self.document_session = ort.InferenceSession(str(model_path), options, providers=chosen)
        self.session = ort.InferenceSession(str(pair_graph_path(model_path)), options, providers=chosen)
        self.document_input_names = [i.name for i in self.document_session.get_inputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: Document graph runs so far: one per document with pairs (a benchmark's check).
        self.document_runs = 0

    @staticmethod
    def available_providers() -> list[str]:
        return list(ort.get_available_providers())

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def has_relation_head(self) -> bool:
        return "relation_logits" in self.output_names

    def _run(self, outputs: list[str], features: DocumentFeatures) -> list[np.ndarray]:
        """The pair graph's ``outputs`` for every pair: the document graph once, then the pairs in
        runs of at most ``pairs_per_run``."""
        given = features.as_inputs()
        encoded = self.document_session.run(
            list(DOCUMENT_OUTPUT_NAMES), {name: given[name] for name in self.document_input_names}
        )
        self.document_runs += 1
        given.update(zip(DOCUMENT_OUTPUT_NAMES, encoded, strict=True))
        inputs = {name: given[name] for name in self.input_names}
        step = pairs_per_run(features.token_count, self.pair_budget_bytes, self.pair_width)
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(features.pair_heads), step):
            inputs["pair_heads"] = features.pair_heads[start : start + step]
            inputs["pair_tails"] = features.pair_tails[start : start + step]
            parts.append(self.session.run(outputs, inputs))
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]

    def score(self, features: DocumentFeatures) -> np.ndarray:
        """Pair probabilities, in the order of ``features.pair_heads`` / ``pair_tails``."""
        if len(features.pair_heads) == 0:
            return np.zeros(0)
        (logits,) = self._run(["pair_logits"], features)
        return sigmoid(logits)

    @property
    def has_evidence(self) -> bool:
        return "pair_attention" in self.output_names

    def score_with_relations(
        self, features: DocumentFeatures, relation_loss: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Pair probabilities [pairs], relation probabilities [pairs, relations] and, when the graph
        has it, each pair's context attention summed per sentence [pairs, sentences]; one pass."""
        if not self.has_relation_head:
            raise ValueError(
                "this ONNX model has no relation output; export an artifact with a relation head"
            )
        if len(features.pair_heads) == 0:
            return np.zeros(0), np.zeros((0, 0)), None
        outputs = ["pair_logits", "relation_logits"] + (["pair_attention"] if self.has_evidence else [])
        pair_logits, relation_logits, *attention = self._run(outputs, features)
        sentences = (
            sentence_attention(attention[0], features.token_sentences, features.sentence_count)
            if attention
            else None
        )
        return sigmoid(pair_logits), relation_probabilities(relation_logits, relation_loss), sentences


@dataclass(frozen=True)
class ProposerModel:
    """A proposer ready to score documents: its config, its featurizer and its ONNX graphs (an
    ensemble's member in the service, each proposer `lmrc proposer levers` compares)."""

    config: ProposerConfig
    featurizer: DocumentFeaturizer
    scorer: OnnxPairScorer

    def relations(self, document: DocumentEvent) -> tuple[DocumentFeatures, np.ndarray, np.ndarray | None]:
        """The document's features, its pairs' relation probabilities [pairs, relations] and their
        sentence attention [pairs, sentences] (None when the graph has no evidence output)."""
        features = self.featurizer.featurize(document)
        _scores, relations, sentences = self.scorer.score_with_relations(features, self.config.relation_loss)
        return features, relations, sentences
