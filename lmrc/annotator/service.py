"""The annotator service: TextDocumentEvents in, one DocumentEvent per text out (same ``doc_id``),
entities found by the annotator's engine; every mention keeps its character offsets.

A text it cannot read goes to the dead-letter topic with the reason: empty, too long, binary
(rejected by the contract), a declared language other than English, English stop words missing
from a long text, letters mostly not Latin, or another language found by py3langid (the engine
reads English only). A text with no entity, or one, is a
document with fewer than two entities: it goes on and completes with zero relations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lmrc.annotator import metrics
from lmrc.annotator.engine import Annotator, EngineName
from lmrc.annotator.language import detected_language, latin_letters
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR, ENTITY_TYPES
from lmrc.bundle import load_bundle
from lmrc.contracts import MAX_TEXT_CHARS, DocumentEvent, SourceMetadata, TextDocumentEvent
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


class AnnotatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOTATOR_", extra="ignore")

    service_name: str = "annotator"
    group_id: str = TOPICS.stage("annotator").group_id
    input_topic: str = TOPICS.stage("annotator").input
    output_topic: str | None = TOPICS.stage("annotator").output
    dead_letter_topic: str = TOPICS.stage("annotator").dead_letter
    max_batch_size: int = Field(default=16, ge=1, le=10_000)
    engine: EngineName = Field(
        default="tagger", description="tagger: the trained mention tagger; spacy: spaCy's NER."
    )
    tagger_dir: Path = DEFAULT_TAGGER_DIR
    models: Path | None = Field(
        default=None, description="A model bundle (lmrc train): serve its tagger (overrides tagger_dir)."
    )
    onnx_path: Path | None = Field(default=None, description="Default: <tagger_dir>/<version>.onnx")
    inference_threads: int = Field(default=0, ge=0, description="0: onnxruntime decides.")
    max_text_chars: int = Field(
        default=MAX_TEXT_CHARS, ge=1, le=MAX_TEXT_CHARS, description="Longer texts are dead-lettered."
    )
    min_english_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Texts of 30 or more words with fewer English stop words than this share are "
        "dead-lettered as not English (0: no check).",
    )
    other_language_probability: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Texts of 200 or more characters in which py3langid finds another language with "
        "at least this probability, or whose letters are mostly not Latin, are dead-lettered as not "
        "English (0: no check).",
    )

    @model_validator(mode="after")
    def _from_bundle(self) -> AnnotatorSettings:
        if self.models is not None:
            bundle = load_bundle(self.models)
            self.tagger_dir = bundle.require("annotator")
            types = bundle.schema.entity_types
            if self.engine == "spacy" and set(types) != set(ENTITY_TYPES):
                raise ValueError(
                    f"engine spacy tags DocRED's entity types; the bundle's schema has {', '.join(types)}"
                )
        return self


class AnnotatorHandler(Handler[TextDocumentEvent]):
    input_model = TextDocumentEvent

    def __init__(self, settings: AnnotatorSettings, annotator: Annotator) -> None:
        self.settings = settings
        self.annotator = annotator
        self.service = settings.service_name
        for series in (metrics.DOCUMENTS, metrics.MENTIONS):
            series.labels(self.service)
        metrics.ANNOTATION_SECONDS.labels(self.service)

    def handle(self, batch: Sequence[Consumed[TextDocumentEvent]]) -> BatchResult:
        result = BatchResult()
        for item in batch:
            try:
                document = self.annotate(item.event)
            except UnprocessableMessageError as error:
                result.rejected.append((item, error))
                continue
            except ValueError as error:  # what was found breaks the document contract: say so, go on
                reason = str(error).splitlines()[0][:1000]
                result.rejected.append((item, UnprocessableMessageError("AnnotationFailed", reason)))
                continue
            version = item.event.version if item.event.version is not None else record_time_ms(item.message)
            document = document.model_copy(update={"version": version})
            result.outputs.append(Output(document, key=document.doc_id, source=item))
        return result

    def check(self, event: TextDocumentEvent) -> None:
        if len(event.text) > self.settings.max_text_chars:
            raise UnprocessableMessageError(
                "TextTooLong",
                f"text {event.doc_id!r} has {len(event.text)} characters "
                f"(limit {self.settings.max_text_chars}); split it into several documents",
            )
        language = (event.language or "en").lower()
        if language != "en" and not language.startswith("en-"):
            raise UnprocessableMessageError(
                "UnsupportedLanguage",
                f"text {event.doc_id!r} is in {event.language!r}; the annotator reads English (en)",
            )
        if self.settings.min_english_share > 0:
            common, words = self.annotator.english_share(event.text)
            if words >= 30 and common / words < self.settings.min_english_share:
                raise UnprocessableMessageError(
                    "UnsupportedLanguage",
                    f"text {event.doc_id!r} does not look like English ({common} of its first {words} "
                    "words are common English words); the annotator reads English only",
                )
        if self.settings.other_language_probability > 0:
            latin, letters = latin_letters(event.text)
            if letters >= 20 and latin < letters / 2:
                raise UnprocessableMessageError(
                    "UnsupportedLanguage",
                    f"text {event.doc_id!r} is mostly not in Latin letters ({latin} of its first {letters} "
                    "letters); the annotator reads English only",
                )
            detected = detected_language(event.text)
            if detected and detected[0] != "en" and detected[1] >= self.settings.other_language_probability:
                raise UnprocessableMessageError(
                    "UnsupportedLanguage",
                    f"text {event.doc_id!r} looks like language {detected[0]!r} (probability "
                    f"{detected[1]:.2f}); the annotator reads English only",
                )

    def annotate(self, event: TextDocumentEvent) -> DocumentEvent:
        self.check(event)
        started = time.perf_counter()
        source = event.source
        if source is None:
            source = SourceMetadata(attributes={"annotator": self.annotator.version})
        else:
            source = source.model_copy(
                update={"attributes": {**source.attributes, "annotator": self.annotator.version}}
            )
        document = self.annotator.annotate(event.doc_id, event.title, event.text, source)
        metrics.ANNOTATION_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        metrics.DOCUMENTS.labels(self.service).inc()
        metrics.MENTIONS.labels(self.service).inc(sum(len(entity.mentions) for entity in document.entities))
        metrics.ENTITIES.labels(self.service).observe(len(document.entities))
        return document


def build_runtime(settings: AnnotatorSettings) -> ServiceRuntime:
    annotator = Annotator(
        settings.engine, settings.tagger_dir, settings.onnx_path, settings.inference_threads
    )
    log.info("annotator %s (engine %s)", annotator.version, settings.engine)
    return ServiceRuntime(settings, AnnotatorHandler(settings, annotator))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(load_settings(AnnotatorSettings))
    runtime.install_signal_handlers()
    runtime.run()
