"""The proposer service: DocumentEvents in, one CandidateSetEvent per document out (its likely pairs,
each with the encoder's ranked relation shortlist and its own predictions).

In encoder-only mode (``PROPOSER_MODE=encoder_only``) it emits the encoder's predicted relations
as one RelationSetEvent per document instead, for the sink: the pipeline without an LLM, and the
baseline every quality report shows beside the full pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lmrc.bundle import bundle_model_dir
from lmrc.contracts import (
    CandidatePair,
    CandidateSetEvent,
    DocumentEvent,
    EntityRef,
    ModelVersions,
    Relation,
    RelationSetEvent,
    ScoredRelation,
    event_id,
)
from lmrc.proposer import metrics
from lmrc.proposer.artifact import (
    DEFAULT_ARTIFACT_DIR,
    Precision,
    ProposerConfig,
    evidence_sentences,
    featurizer_for,
    load_config,
    onnx_path,
    pair_graph_path,
    precision_for,
    threshold_for,
)
from lmrc.proposer.features import DocumentFeatures
from lmrc.proposer.inference import OnnxPairScorer, ProposerModel, preferred_providers
from lmrc.runtime import (
    BatchResult,
    Consumed,
    Handler,
    Output,
    ServiceRuntime,
    ServiceSettings,
    UnprocessableMessageError,
    record_time_ms,
)
from lmrc.runtime.settings import load_settings
from lmrc.topology import TOPICS

log = logging.getLogger(__name__)


class ProposerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROPOSER_", extra="ignore")

    service_name: str = "proposer"
    group_id: str = TOPICS.stage("proposer").group_id
    input_topic: str = TOPICS.stage("proposer").input
    output_topic: str | None = TOPICS.stage("proposer").output
    dead_letter_topic: str = TOPICS.stage("proposer").dead_letter
    max_batch_size: int = Field(default=16, ge=1, le=10_000)
    artifact_dir: Path = DEFAULT_ARTIFACT_DIR
    models: Path | None = Field(
        default=None, description="A model bundle (lmrc train): serve its proposer (overrides artifact_dir)."
    )
    onnx_path: Path | None = Field(
        default=None,
        description="The exported document graph, its pair graph beside it as <name>.pairs.onnx "
        "(default: the artifact's export for `precision`).",
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="auto: int8 on the CPU (the export quantized: fastest, F1 as fp32's), fp32 on CUDA; "
        "or fp32 (as trained) or int8.",
    )

    recall_target: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Pick the artifact's threshold for this target (default: its own).",
    )
    threshold: float | None = Field(default=None, ge=0, le=1, description="Overrides recall_target.")
    mode: Literal["candidates", "encoder_only"] = Field(
        default="candidates",
        description="candidates: CandidateSetEvents for the classifier; encoder_only: RelationSetEvents "
        "of the encoder's own predictions (point the output topic at the relations topic).",
    )
    shortlist_size: int | None = Field(
        default=None, ge=1, le=96, description="Relations per candidate pair (default: the artifact's)."
    )
    relation_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The encoder predicts a relation at this probability (default: the artifact's).",
    )
    max_document_tokens: int = Field(default=8192, ge=16, description="Word pieces, markers included.")
    max_entities: int = Field(default=150, ge=2, description="Pairs grow with the square of this.")
    max_mention_slots: int = Field(
        default=512,
        ge=1,
        description="Entities times the mentions of the most mentioned one (the padded mention table "
        "whose attention rows are kept over the whole text).",
    )
    pair_budget_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Activations one run of the graph may spend on pairs; more pairs take more runs.",
    )
    execution_provider: Literal["auto", "cuda", "cpu"] = "auto"
    inference_threads: int = Field(default=0, ge=0, description="0: onnxruntime decides.")
    ensemble: list[Path] = Field(
        default_factory=list,
        description="Other proposers (artifact folders of the same schema, exported for the same "
        "precision) whose relation probabilities are averaged with this one's; each costs its own "
        "pass per document. `lmrc proposer levers --member` measures what one adds first.",
    )
    ensemble_weight: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="This proposer's share of the ensemble's average; the members share the rest.",
    )

    @model_validator(mode="after")
    def _from_bundle(self) -> ProposerSettings:
        if self.models is not None:
            self.artifact_dir = bundle_model_dir(self.models, "proposer")
        return self

    def chosen_precision(self) -> Precision:
        """The export this service serves: ``precision``, with auto decided by the provider."""
        if self.precision != "auto":
            return self.precision
        return precision_for(self.providers()[0])

    def providers(self) -> list[str]:
        return {
            "auto": preferred_providers(),
            "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "cpu": ["CPUExecutionProvider"],
        }[self.execution_provider]


class ProposerHandler(Handler[DocumentEvent]):
    input_model = DocumentEvent

    def __init__(
        self,
        settings: ProposerSettings,
        config: ProposerConfig,
        scorer: OnnxPairScorer,
        members: Sequence[ProposerModel] = (),
    ) -> None:
        self.settings = settings
        self.config = config
        self.scorer = scorer
        self.members = list(members)
        # Every event names what decided it: the proposer, and its ensemble's members.
        self.version = "+".join([config.version, *(member.config.version for member in self.members)])
        self.threshold = (
            settings.threshold
            if settings.threshold is not None
            else threshold_for(config, settings.recall_target)
        )
        # The relation head, when the artifact and its ONNX export have one.
        self.relations = config.has_relation_head and scorer.has_relation_head
        if settings.mode == "encoder_only" and not self.relations:
            raise ValueError(
                f"encoder-only mode needs a proposer with a relation head; {config.version} has none"
            )
        self.shortlist_size = settings.shortlist_size or config.shortlist_size
        relation_threshold = settings.relation_threshold or config.relation_threshold
        self.relation_threshold = 0.5 if relation_threshold is None else relation_threshold
        self.featurizer = featurizer_for(config)
        self.known_types = set(config.entity_types)
        self.service = settings.service_name
        # At 0 from the start, so that rate() sees the first documents.
        for series in (metrics.DOCUMENTS, metrics.PAIRS_SCORED, metrics.PAIRS_PASSED):
            series.labels(self.service)
        metrics.INFERENCE_SECONDS.labels(self.service)

    def handle(self, batch: Sequence[Consumed[DocumentEvent]]) -> BatchResult:
        result = BatchResult()
        scored = passed = 0
        for item in batch:
            document = item.event
            if document.version is None:  # published without one: the record's time orders versions
                document = document.model_copy(update={"version": record_time_ms(item.message)})
            try:
                candidates = self.propose(document)
            except UnprocessableMessageError as error:
                result.rejected.append((item, error))
                continue
            scored += candidates.pairs_scored
            passed += len(candidates.pairs)
            output = (
                self.encoder_relations(candidates) if self.settings.mode == "encoder_only" else candidates
            )
            result.outputs.append(Output(output, key=candidates.doc_id, source=item))
        metrics.DOCUMENTS.labels(self.service).inc(len(batch) - len(result.rejected))
        metrics.PAIRS_SCORED.labels(self.service).inc(scored)
        metrics.PAIRS_PASSED.labels(self.service).inc(passed)
        if scored:
            metrics.PASS_RATIO.labels(self.service).set(passed / scored)
        return result

    def propose(self, document: DocumentEvent) -> CandidateSetEvent:
        if len(document.entities) > self.settings.max_entities:
            raise UnprocessableMessageError(
                "TooManyEntities",
                f"document {document.doc_id!r} has {len(document.entities)} entities "
                f"(limit {self.settings.max_entities})",
            )
        most_mentions = max((len(entity.mentions) for entity in document.entities), default=0)
        if len(document.entities) * most_mentions > self.settings.max_mention_slots:
            raise UnprocessableMessageError(
                "TooManyMentions",
                f"document {document.doc_id!r} has {len(document.entities)} entities with up to "
                f"{most_mentions} mentions each (limit {self.settings.max_mention_slots} "
                "entity x mention slots)",
            )
        if document.token_count > self.settings.max_document_tokens:  # words: at most the word pieces
            raise UnprocessableMessageError(
                "DocumentTooLarge",
                f"document {document.doc_id!r} has {document.token_count} words "
                f"(limit {self.settings.max_document_tokens} word pieces)",
            )
        unknown = sorted({entity.type for entity in document.entities} - self.known_types)
        if unknown:
            raise UnprocessableMessageError(
                "SchemaMismatch",
                f"document {document.doc_id!r} has entity types {', '.join(unknown)} that the schema of "
                f"proposer {self.config.version} lacks (it knows {', '.join(self.config.entity_types)})",
            )
        started = time.perf_counter()
        features = self.featurizer.featurize(document)
        if features.token_count > self.settings.max_document_tokens:
            raise UnprocessableMessageError(
                "DocumentTooLarge",
                f"document {document.doc_id!r} has {features.token_count} word pieces "
                f"(limit {self.settings.max_document_tokens})",
            )
        evidence: np.ndarray | None = None
        if self.relations:
            loss = self.config.relation_loss
            scores, relations, evidence = self.scorer.score_with_relations(features, loss)
            if self.members and len(scores):
                relations = self.ensemble_relations(document, features, relations)
        else:
            scores, relations = self.scorer.score(features), None
        metrics.INFERENCE_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        # Encoder-only mode judges every pair by its relations; otherwise the pair score selects.
        selected = scores >= self.threshold
        if self.settings.mode == "encoder_only" and relations is not None:
            selected = (relations >= self.relation_threshold).any(axis=1)
        kept = np.flatnonzero(selected)
        kept = kept[np.argsort(-scores[kept], kind="stable")]  # best first
        return CandidateSetEvent(
            event_id=event_id(document.doc_id, document.content_hash(), self.version),
            doc_id=document.doc_id,
            pairs=[
                self.pair(
                    int(features.pair_heads[index]),
                    int(features.pair_tails[index]),
                    float(scores[index]),
                    None if relations is None else relations[index],
                    None if evidence is None else evidence[index],
                )
                for index in kept
            ],
            pairs_scored=len(scores),
            proposer_model_version=self.version,
            document=document,
        )

    def ensemble_relations(
        self, document: DocumentEvent, features: DocumentFeatures, relations: np.ndarray
    ) -> np.ndarray:
        """The relation probabilities averaged with the members' (the pair scores, the candidate
        filter's and the evidence stay this proposer's, as calibrated)."""
        share = (1 - self.settings.ensemble_weight) / len(self.members)
        averaged = self.settings.ensemble_weight * relations
        for member in self.members:
            theirs, their_relations, _evidence = member.relations(document)
            if not (
                np.array_equal(theirs.pair_heads, features.pair_heads)
                and np.array_equal(theirs.pair_tails, features.pair_tails)
            ):
                raise UnprocessableMessageError(
                    "EnsembleMismatch",
                    f"document {document.doc_id!r}: ensemble member {member.config.version} scores "
                    f"other pairs than {self.config.version}",
                )
            averaged = averaged + share * their_relations
        return averaged

    def pair(
        self,
        head: int,
        tail: int,
        score: float,
        relations: np.ndarray | None,
        sentence_attention: np.ndarray | None = None,
    ) -> CandidatePair:
        """A candidate pair with its shortlist (top k, best first), the encoder's predictions and
        its evidence sentences (when the artifact has an evidence threshold)."""
        if relations is None:
            return CandidatePair(head=head, tail=tail, score=score)
        ids = self.config.relation_ids
        ranked = np.argsort(-relations, kind="stable")
        threshold = self.config.evidence_threshold
        return CandidatePair(
            head=head,
            tail=tail,
            score=score,
            evidence=[]
            if sentence_attention is None or threshold is None
            else evidence_sentences(sentence_attention, threshold),
            shortlist=[
                ScoredRelation(relation_id=ids[i], probability=float(relations[i]))
                for i in ranked[: self.shortlist_size]
            ],
            predicted=[
                ScoredRelation(relation_id=ids[i], probability=float(relations[i]))
                for i in ranked
                if relations[i] >= self.relation_threshold
            ],
        )

    def encoder_relations(self, candidates: CandidateSetEvent) -> RelationSetEvent:
        """The encoder's own predictions as the document's relation set (encoder-only mode)."""
        document = candidates.document
        content = document.content_hash()
        models = ModelVersions(proposer=self.version)

        def ref(index: int) -> EntityRef:
            entity = document.entities[index]
            return EntityRef(index=index, name=entity.name, type=entity.type)

        relations = [
            Relation(
                event_id=event_id(document.doc_id, content, pair.head, pair.tail, scored.relation_id),
                doc_id=document.doc_id,
                doc_title=document.title,
                head=ref(pair.head),
                tail=ref(pair.tail),
                relation_id=scored.relation_id,
                relation_name=self.config.relation_names[scored.relation_id],
                confidence=scored.probability,
                evidence=pair.evidence,
                evidence_text=document.sentence_texts(pair.evidence),
                models=models,
                source=document.source,
                proposed_at=candidates.proposed_at,
            )
            for pair in candidates.pairs
            for scored in pair.predicted
        ]
        return RelationSetEvent(
            event_id=event_id(candidates.event_id, "encoder-only"),
            doc_id=document.doc_id,
            version=document.version,
            content_hash=content,
            doc_title=document.title,
            relations=relations,
            entities=[ref(index) for index in range(len(document.entities))],
            candidate_pairs=len(candidates.pairs),
            models=models,
            source=document.source,
            proposed_at=candidates.proposed_at,
        )


def onnx_file(settings: ProposerSettings, config: ProposerConfig) -> Path:
    """The ONNX model the service serves: exported beforehand (the service holds no torch)."""
    precision = settings.chosen_precision()
    path = settings.onnx_path or onnx_path(settings.artifact_dir, config, precision)
    for graph in (path, pair_graph_path(path)):
        if not graph.exists():
            raise FileNotFoundError(
                f"{graph} is missing; run `lmrc proposer export --artifact {settings.artifact_dir} "
                f"--precision {precision}` where the train extra is installed, or mount the export"
            )
    return path


def ensemble_members(settings: ProposerSettings, config: ProposerConfig) -> list[ProposerModel]:
    """The members of ``settings.ensemble``, each checked against ``config`` before any loads."""
    members = []
    for directory in settings.ensemble:
        theirs = load_config(directory)
        if not theirs.same_labels(config):
            raise ValueError(
                f"ensemble member {directory} ({theirs.version}): its relations and entity types are "
                f"not those of {config.version}; an ensemble averages one schema's relations"
            )
        if not theirs.has_relation_head:
            raise ValueError(f"ensemble member {directory} ({theirs.version}) has no relation head")
        member_settings = settings.model_copy(update={"artifact_dir": directory, "onnx_path": None})
        scorer = OnnxPairScorer(
            onnx_file(member_settings, theirs),
            settings.providers(),
            settings.inference_threads,
            settings.pair_budget_bytes,
            pair_width=theirs.pair_width,
        )
        members.append(ProposerModel(theirs, featurizer_for(theirs), scorer))
    return members


def build_runtime(settings: ProposerSettings) -> ServiceRuntime:
    config = load_config(settings.artifact_dir)
    providers = settings.providers()
    members = ensemble_members(settings, config)
    scorer = OnnxPairScorer(
        onnx_file(settings, config),
        providers,
        settings.inference_threads,
        settings.pair_budget_bytes,
        pair_width=config.pair_width,
    )
    handler = ProposerHandler(settings, config, scorer, members)
    log.info("proposer %s on %s, threshold %.4f", handler.version, scorer.provider, handler.threshold)
    return ServiceRuntime(settings, handler)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(load_settings(ProposerSettings))
    runtime.install_signal_handlers()
    runtime.run()
