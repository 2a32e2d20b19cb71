"""The proposer service: DocumentEvents in, one CandidatePairEvent per likely pair out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from schemas import CandidatePairEvent, DocumentEvent, event_id
from services.proposer import metrics
from services.proposer.artifact import (
    DEFAULT_ARTIFACT_DIR,
    ProposerConfig,
    load_config,
    onnx_path,
    threshold_for,
    tokenizer_file,
)
from services.proposer.features import DocumentFeaturizer
from services.proposer.inference import OnnxPairScorer, preferred_providers
from services.runtime import (
    BatchResult,
    Consumed,
    Output,
    ServiceRuntime,
    ServiceSettings,
    UnprocessableMessageError,
)

log = logging.getLogger(__name__)


class ProposerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROPOSER_", extra="ignore")

    service_name: str = "proposer"
    group_id: str = "lmrc-proposer"
    input_topic: str = "lmrc.documents"
    output_topic: str | None = "lmrc.candidates"
    dead_letter_topic: str = "lmrc.documents.dead-letter"
    max_batch_size: int = Field(default=16, ge=1, le=10_000)
    artifact_dir: Path = DEFAULT_ARTIFACT_DIR
    onnx_path: Path | None = Field(default=None, description="Default: <artifact_dir>/<version>.onnx")
    recall_target: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Pick the artifact's threshold for this target (default: its own).",
    )
    threshold: float | None = Field(default=None, ge=0, le=1, description="Overrides recall_target.")
    max_document_tokens: int = Field(default=8192, ge=16, description="Word pieces, markers included.")
    max_entities: int = Field(default=150, ge=2, description="Pairs grow with the square of this.")
    execution_provider: Literal["auto", "cuda", "cpu"] = "auto"
    inference_threads: int = Field(default=0, ge=0, description="0: onnxruntime decides.")


class ProposerHandler:
    input_model = DocumentEvent

    def __init__(self, settings: ProposerSettings, config: ProposerConfig, scorer: OnnxPairScorer) -> None:
        self.settings = settings
        self.config = config
        self.scorer = scorer
        self.threshold = (
            settings.threshold
            if settings.threshold is not None
            else threshold_for(config, settings.recall_target)
        )
        self.featurizer = DocumentFeaturizer(tokenizer_file(), config.window_length, config.window_stride)
        self.service = settings.service_name
        # At 0 from the start, so that rate() sees the first documents.
        for series in (metrics.DOCUMENTS, metrics.PAIRS_SCORED, metrics.PAIRS_PASSED):
            series.labels(self.service)
        metrics.INFERENCE_SECONDS.labels(self.service)

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        result = BatchResult()
        scored = passed = 0
        for item in batch:
            try:
                candidates = self.propose(item.event)
            except UnprocessableMessageError as error:
                result.rejected.append((item, error))
                continue
            scored += item.event.pair_count()
            passed += len(candidates)
            result.outputs.extend(Output(candidate, key=candidate.doc_id) for candidate in candidates)
        metrics.DOCUMENTS.labels(self.service).inc(len(batch) - len(result.rejected))
        metrics.PAIRS_SCORED.labels(self.service).inc(scored)
        metrics.PAIRS_PASSED.labels(self.service).inc(passed)
        if scored:
            metrics.PASS_RATIO.labels(self.service).set(passed / scored)
        return result

    def propose(self, document: DocumentEvent) -> list[CandidatePairEvent]:
        if len(document.entities) > self.settings.max_entities:
            raise UnprocessableMessageError(
                "TooManyEntities",
                f"document {document.doc_id!r} has {len(document.entities)} entities "
                f"(limit {self.settings.max_entities})",
            )
        started = time.perf_counter()
        features = self.featurizer.featurize(document)
        if features.token_count > self.settings.max_document_tokens:
            raise UnprocessableMessageError(
                "DocumentTooLarge",
                f"document {document.doc_id!r} has {features.token_count} word pieces "
                f"(limit {self.settings.max_document_tokens})",
            )
        scores = self.scorer.score(features)
        metrics.INFERENCE_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        kept = np.flatnonzero(scores >= self.threshold)
        candidates = []
        for index in kept:
            head, tail = int(features.pair_heads[index]), int(features.pair_tails[index])
            candidates.append(
                CandidatePairEvent(
                    event_id=event_id(document.doc_id, head, tail, self.config.version),
                    doc_id=document.doc_id,
                    head=head,
                    tail=tail,
                    score=float(scores[index]),
                    candidates_in_document=len(kept),
                    proposer_model_version=self.config.version,
                    document=document,
                )
            )
        return candidates


def resolve_onnx(settings: ProposerSettings, config: ProposerConfig) -> Path:
    """The ONNX model; exported from the artifact when missing and torch is installed."""
    path = settings.onnx_path or onnx_path(settings.artifact_dir, config)
    if path.exists():
        return path
    try:
        from services.proposer.export import export_onnx
    except ImportError as error:
        raise FileNotFoundError(
            f"{path} is missing; run `lmrc proposer export` where torch is installed, or mount it"
        ) from error
    log.info("exporting %s to %s", settings.artifact_dir, path)
    return export_onnx(settings.artifact_dir, path)


def build_runtime(settings: ProposerSettings) -> ServiceRuntime:
    config = load_config(settings.artifact_dir)
    providers = {
        "auto": preferred_providers(),
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "cpu": ["CPUExecutionProvider"],
    }[settings.execution_provider]
    scorer = OnnxPairScorer(resolve_onnx(settings, config), providers, settings.inference_threads)
    handler = ProposerHandler(settings, config, scorer)
    log.info("proposer %s on %s, threshold %.4f", config.version, scorer.provider, handler.threshold)
    return ServiceRuntime(settings, handler)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(ProposerSettings())
    runtime.install_signal_handlers()
    runtime.run()
