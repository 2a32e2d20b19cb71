"""The one assembly of the pipeline on this machine, shared by ``lmrc run``, ``lmrc benchmark`` and
the tests: the stages' settings on one set of topics, their runtimes, and following each
document to the end through the pipeline's own per-document records.

A document is through a stage when that stage's record of it exists: a CandidateSetEvent (or a
proposer or annotator dead letter keyed by its ``doc_id``) for the proposer, a RelationSetEvent (or
a classifier dead letter) for the classifier. The sink writes to the graph and produces nothing, so it is
through when its group has committed the relation records (it commits only after the store
confirmed the write).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from lmrc.annotator.service import AnnotatorSettings
from lmrc.annotator.service import build_runtime as build_annotator
from lmrc.annotator.training.export import ensure_tagger_onnx
from lmrc.classifier.service import ClassifierSettings
from lmrc.classifier.service import build_runtime as build_classifier
from lmrc.local.publish import beginning_of, committed_offsets
from lmrc.proposer.service import ProposerSettings
from lmrc.proposer.service import build_runtime as build_proposer
from lmrc.proposer.training.export import ensure_onnx
from lmrc.runtime import KafkaSettings, ServiceRuntime, ServiceSettings
from lmrc.runtime.topics import ensure_topics
from lmrc.sink.graph import GraphStore
from lmrc.sink.service import build_runtime as build_sink
from lmrc.sink.settings import SinkSettings
from lmrc.topology import TOPICS, TopicNames, dead_letter_topic

STAGES = ("proposer", "classifier", "sink")


@dataclass
class LocalPipeline:
    """The stages' settings and runtimes on one broker, one model server and one set of topics."""

    kafka: KafkaSettings
    tgi_url: str
    adapter_id: str | None  # None: the LLM as it is, no adapter (a zero- or few-shot classifier)
    graph_path: Path
    topics: TopicNames = TOPICS
    batch_wait_seconds: float = 0.2
    partitions: int = 4
    encoder_only: bool = False  # the proposer writes relation sets; no classifier, no LLM
    annotate: bool = False  # plain texts in: the annotator stage runs first
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage
    models: Path | None = None  # a model bundle (lmrc train); None: the default, models/

    @property
    def stages(self) -> tuple[str, ...]:
        stages = ("proposer", "sink") if self.encoder_only else STAGES
        return ("annotator", *stages) if self.annotate else stages

    @property
    def input_topic(self) -> str:
        """Where the run's input is published: texts when annotating, else documents."""
        return self.topics.texts if self.annotate else self.topics.documents

    def settings(self, stage: str) -> ServiceSettings:
        placed = self.topics.stage(stage)
        common: dict[str, Any] = {
            "kafka": self.kafka,
            "service_name": stage if self.topics == TOPICS else f"{stage}-{self.topics.prefix}",
            "group_id": placed.group_id if self.topics == TOPICS else f"{self.topics.prefix}-{stage}",
            "input_topic": placed.input,
            "output_topic": placed.output,
            "dead_letter_topic": placed.dead_letter,
            "http_port": 0,
            "create_topics": True,
            "topic_partitions": self.partitions,
            "max_batch_wait_seconds": self.batch_wait_seconds,
            "session_timeout_ms": 2000,
            **self.overrides.get(stage, {}),
        }
        if self.models is not None and stage in ("annotator", "proposer", "classifier"):
            common.setdefault("models", self.models)
        if stage == "annotator":
            return AnnotatorSettings(**common)
        if stage == "proposer":
            if self.encoder_only:
                common.update(output_topic=self.topics.relations, mode="encoder_only")
            return ProposerSettings(**common)
        if stage == "classifier":
            return ClassifierSettings(**common, tgi_url=self.tgi_url, tgi_adapter_id=self.adapter_id)
        if stage == "sink":
            return SinkSettings(**common, ladybug_path=self.graph_path)
        raise KeyError(stage)

    def build(self, stage: str, store: GraphStore | None = None) -> ServiceRuntime:
        """A stage's runtime; the proposer's ONNX model is exported first when it is missing."""
        settings = self.settings(stage)
        if isinstance(settings, AnnotatorSettings):
            if settings.engine == "tagger":
                with quiet_export():
                    ensure_tagger_onnx(settings.tagger_dir, settings.onnx_path)
            return build_annotator(settings)
        if isinstance(settings, ProposerSettings):
            with quiet_export():
                ensure_onnx(settings.artifact_dir, settings.onnx_path, settings.chosen_precision())
            return build_proposer(settings)
        if isinstance(settings, ClassifierSettings):
            return build_classifier(settings)
        assert isinstance(settings, SinkSettings)
        return build_sink(settings, store=store)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """torch's ONNX exporter prints its passes and warnings; the run says what it prepares instead
    (an export that fails still raises)."""
    # torch.onnx: "torchvision is not installed. Skipping ..."; onnx_ir: "Attribute type is ambiguous".
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def start_thread(runtime: ServiceRuntime) -> threading.Thread:
    thread = threading.Thread(target=runtime.run, name=runtime.service, daemon=True)
    thread.start()
    return thread


def stop_all(
    runtimes: list[ServiceRuntime], threads: list[threading.Thread], timeout: float = 60.0
) -> list[str]:
    """Stop the in-process services; each runtime closes its handler (TGI client, graph store).

    Waits ``timeout`` seconds in all; returns the services still busy then (their threads are
    daemons: an interrupted run does not wait for an LLM batch to end)."""
    for runtime in runtimes:
        runtime.stop()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


@dataclass
class DocumentProgress:
    """Which documents each stage has finished, from the records the stages wrote."""

    documents: set[str]
    encoder_only: bool = False  # the proposer's record of a document is its relation set
    annotated: dict[str, Any] = field(default_factory=dict)  # doc_id -> the document annotated from its text
    proposed: dict[str, Any] = field(default_factory=dict)  # doc_id -> its candidate set
    classified: dict[str, Any] = field(default_factory=dict)  # doc_id -> its relation set
    dead_letters: dict[str, list[Any]] = field(default_factory=dict)  # stage -> dead letters
    relation_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # doc_id -> its record
    written: set[str] = field(default_factory=set)  # documents whose relation set the sink committed

    def rejected_at(self, stage: str) -> set[str]:
        return {letter["origin"]["key"] for letter in self.dead_letters.get(stage, [])}

    @property
    def accepted(self) -> set[str]:
        """Documents the proposer wrote its record of (a candidate set, or encoder-only a relation set)."""
        return set(self.classified if self.encoder_only else self.proposed) & self.documents

    @property
    def through_annotator(self) -> set[str]:
        """Texts the annotator turned into documents or dead-lettered (when it runs)."""
        return (set(self.annotated) | self.rejected_at("annotator")) & self.documents

    @property
    def through_proposer(self) -> set[str]:
        return (self.accepted | self.rejected_at("proposer") | self.rejected_at("annotator")) & self.documents

    @property
    def through_classifier(self) -> set[str]:
        return (set(self.classified) | self.rejected_at("classifier")) & self.accepted

    @property
    def stored(self) -> bool:
        """The sink has committed every relation set seen so far."""
        return set(self.relation_offsets) <= self.written

    @property
    def done(self) -> bool:
        return (
            self.through_proposer == self.documents
            and self.through_classifier == self.accepted
            and self.stored
        )

    def pairs(self) -> tuple[int, int]:
        """Candidate pairs the classifier has classified, of those proposed (for progress)."""
        proposed = sum(len(s["pairs"]) for d, s in self.proposed.items() if d in self.documents)
        classified = sum(len(self.proposed[d]["pairs"]) for d in self.classified if d in self.proposed)
        return classified, proposed


class CompletionTracker:
    """Reads the candidate, relation and dead-letter topics (no consumer group) and the sink's
    committed offsets until every document is through, reporting progress as it goes."""

    def __init__(self, client: dict[str, Any], pipeline: LocalPipeline, documents: set[str]) -> None:
        self.client = client
        self.pipeline = pipeline
        topics = pipeline.topics
        self.by_topic = {
            dead_letter_topic(topics.texts): "annotator",
            topics.candidates: "proposed",
            topics.relations: "classified",
            dead_letter_topic(topics.documents): "proposer",
            dead_letter_topic(topics.candidates): "classifier",
            dead_letter_topic(topics.relations): "sink",
        }
        if pipeline.annotate:
            self.by_topic[topics.documents] = "annotated"
        self.progress = DocumentProgress(documents, encoder_only=pipeline.encoder_only)
        # The stages create their topics as they start; create them here too, so that the reader
        # is assigned every partition from the beginning whichever comes first.
        ensure_topics(client, list(self.by_topic), pipeline.partitions)
        self._consumer = Consumer(
            {**client, "group.id": "lmrc-local-completion", "enable.auto.commit": False}
        )
        self._consumer.assign(beginning_of(self._consumer, list(self.by_topic)))

    def close(self) -> None:
        self._consumer.close()

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._consumer.poll(max(0.0, min(0.1, deadline - time.monotonic())))
            if message is None or message.error():
                continue
            kind = self.by_topic[message.topic() or ""]
            try:
                value = json.loads(message.value() or b"null")
            except ValueError:
                continue  # poison a user published; the stage dead-letters it
            if kind == "annotated" and isinstance(value, dict) and "doc_id" in value:
                self.progress.annotated[value["doc_id"]] = value
            elif kind == "proposed" and isinstance(value, dict) and "doc_id" in value:
                self.progress.proposed[value["doc_id"]] = value
            elif kind == "classified" and isinstance(value, dict) and "doc_id" in value:
                self.progress.classified[value["doc_id"]] = value
                self.progress.relation_offsets[value["doc_id"]] = (
                    message.partition() or 0,
                    message.offset() or 0,
                )
            elif isinstance(value, dict):
                self.progress.dead_letters.setdefault(kind, []).append(value)
        self._check_sink()

    def _check_sink(self) -> None:
        sink = self.pipeline.settings("sink")
        if not self.progress.relation_offsets:
            return
        committed = committed_offsets(self.client, sink.group_id, sink.input_topic, self.pipeline.partitions)
        self.progress.written = {
            doc for doc, (p, offset) in self.progress.relation_offsets.items() if committed.get(p, 0) > offset
        }

    def wait(
        self,
        timeout: float,
        report: Callable[[DocumentProgress], None] | None = None,
        poll_seconds: float = 0.5,
    ) -> DocumentProgress:
        started = time.monotonic()
        while True:
            self.poll(poll_seconds)
            if report is not None:
                report(self.progress)
            if self.progress.done:
                return self.progress
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the pipeline did not finish within {timeout:.0f}s")
