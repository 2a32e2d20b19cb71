"""Event contracts exchanged on the Kafka topics.

Every event carries ``schema_version`` so consumers can reject (dead-letter) what they do not
understand instead of mis-reading it. Bump the version, never change a field's meaning in place.

Version 2 makes the document the unit of work downstream of the users' DocumentEvents (which
keep version 1, unchanged): the proposer emits one CandidateSetEvent per document (the document
once, all its candidate pairs, possibly none) and the classifier one RelationSetEvent per
document (all its relations, possibly none). The relation set is the record that a document is
complete: a subscriber needs no correlation, no counting and no timeout to know it has
everything about a document, and the sink writes a document's relations in one transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from lmrc.contracts.schema import RELATION_ID_PATTERN
from lmrc.contracts.text import graph_text, sentence_text

DOCUMENT_SCHEMA_VERSION = 1
SCHEMA_VERSION = 2
#: A relation carries the text of at most this many evidence sentences, each at most this long.
MAX_EVIDENCE_SENTENCES = 64
MAX_EVIDENCE_CHARS = 8192

#: Text that ends up in the graph: line breaks become spaces, other control characters are refused.
GraphText = Annotated[str, AfterValidator(graph_text)]
DocId = Annotated[GraphText, Field(min_length=1, max_length=512, description="Stable document id.")]
#: The largest index an event may carry: both graph stores hold it exactly (FalkorDB kept 2**63 and
#: 2**64 as 2**63-1, LadybugDB refused them), and no document comes near it.
MAX_INDEX = 2**31 - 1
EntityIndex = Annotated[int, Field(ge=0, le=MAX_INDEX, description="Index into the document's entities.")]
SentenceIndex = Annotated[int, Field(ge=0, le=MAX_INDEX, description="Index into the document's sentences.")]
RelationId = Annotated[
    str,
    Field(pattern=RELATION_ID_PATTERN, description="A relation id of the schema (Wikidata P-id, CID...)."),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def event_id(*parts: object) -> str:
    """Deterministic id: the same logical event re-delivered or re-computed gets the same id."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8"))
    return digest.hexdigest()[:32]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mention(_Event):
    """One mention of an entity: a token span ``[start, end)`` within sentence ``sent_id``."""

    sent_id: int = Field(ge=0)
    start: int = Field(ge=0, description="First token of the span within the sentence.")
    end: int = Field(ge=1, description="One past the last token of the span.")
    name: GraphText = Field(min_length=1, max_length=1024)
    type: GraphText = Field(min_length=1, max_length=64, description="Entity type, e.g. PER, ORG, LOC.")
    start_char: int | None = Field(
        default=None, ge=0, description="Where the mention starts in the original text (annotated text only)."
    )
    end_char: int | None = Field(default=None, ge=1, description="One past its last character in that text.")

    @model_validator(mode="after")
    def _span_not_empty(self) -> Mention:
        if self.end <= self.start:
            raise ValueError(f"empty token span [{self.start}, {self.end})")
        if (self.start_char is None) != (self.end_char is None):
            raise ValueError("start_char and end_char come together")
        if self.start_char is not None and self.end_char is not None and self.end_char <= self.start_char:
            raise ValueError(f"empty character span [{self.start_char}, {self.end_char})")
        return self


class Entity(_Event):
    """An entity is the set of its mentions (DocRED's ``vertexSet`` item)."""

    mentions: list[Mention] = Field(min_length=1)

    @property
    def name(self) -> str:
        return self.mentions[0].name

    @property
    def type(self) -> str:
        return self.mentions[0].type


class SourceMetadata(_Event):
    """Where a document came from; carried through to the graph as provenance."""

    uri: GraphText | None = None
    dataset: str | None = None
    published_at: datetime | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


#: A document's version: a later one replaces an earlier one in the graph, an earlier one arriving
#: late is skipped. Users may set it (an edit counter, a revision id, a Unix time in milliseconds);
#: without it the first stage takes the record's timestamp on the input topic (milliseconds).
DocumentVersion = Annotated[
    int,
    Field(
        ge=0,
        le=2**63 - 1,
        description="Larger replaces smaller; absent: the record's timestamp (ms) where it entered.",
    ),
]


class DocumentEvent(_Event):
    """A tokenised document with its entities, published by users to the documents topic."""

    schema_version: Literal[1] = DOCUMENT_SCHEMA_VERSION
    doc_id: DocId
    version: DocumentVersion | None = None
    title: GraphText = Field(default="", max_length=4096)
    sentences: list[list[str]] = Field(min_length=1, description="Sentences as token lists.")
    original_sentences: list[str] | None = Field(
        default=None,
        description='Each sentence as the original text writes it (its spacing kept: "company\'s", '
        'not "company \'s"), one per sentence; the annotator sets it from its sentence offsets.',
    )
    entities: list[Entity] = Field(default_factory=list)
    source: SourceMetadata | None = None

    @model_validator(mode="after")
    def _mentions_inside_document(self) -> DocumentEvent:
        for sent_id, sentence in enumerate(self.sentences):
            if not sentence:
                raise ValueError(f"sentences[{sent_id}] is empty")
        if self.original_sentences is not None and len(self.original_sentences) != len(self.sentences):
            raise ValueError(
                f"original_sentences has {len(self.original_sentences)} sentences, "
                f"sentences {len(self.sentences)}"
            )
        for entity_index, entity in enumerate(self.entities):
            for mention_index, mention in enumerate(entity.mentions):
                where = f"entities[{entity_index}].mentions[{mention_index}]"
                if mention.sent_id >= len(self.sentences):
                    raise ValueError(
                        f"{where}: sent_id {mention.sent_id} out of range "
                        f"(document has {len(self.sentences)} sentences)"
                    )
                length = len(self.sentences[mention.sent_id])
                if mention.end > length:
                    raise ValueError(
                        f"{where}: token span [{mention.start}, {mention.end}) out of range "
                        f"(sentence {mention.sent_id} has {length} tokens)"
                    )
        return self

    @property
    def token_count(self) -> int:
        return sum(len(sentence) for sentence in self.sentences)

    def pair_count(self) -> int:
        """Ordered entity pairs (h != t): the candidate space the proposer scores."""
        n = len(self.entities)
        return n * (n - 1)

    def sentence_texts(self, sentence_ids: list[int] | None) -> list[str]:
        """The text of these sentences, in that order, within a relation's ``evidence_text`` limits
        (the first 64 sentences, each cut at 8,192 characters)."""
        wanted = [i for i in sentence_ids or [] if i < len(self.sentences)][:MAX_EVIDENCE_SENTENCES]
        if self.original_sentences is not None:  # as written, white space runs as one space
            return [sentence_text(self.original_sentences[i].split())[:MAX_EVIDENCE_CHARS] for i in wanted]
        return [sentence_text(self.sentences[i])[:MAX_EVIDENCE_CHARS] for i in wanted]

    def content_hash(self) -> str:
        """What the pipeline reads of the document (title, sentences, entities), hashed: part of
        every event id made from it, so that a doc_id reused for other content gets other ids."""
        content = self.model_dump_json(include={"title", "sentences", "entities"})
        return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


#: The largest text the annotator takes (characters): about 40 DocRED documents, far beyond what
#: the proposer's window merging is measured on. Longer texts are dead-lettered: split them.
MAX_TEXT_CHARS = 100_000


def _readable_text(text: str) -> str:
    """Refuse what is not text: NUL and other C0/C1 control characters besides tab and line ends."""
    for position, char in enumerate(text):
        code = ord(char)
        if (code < 32 and char not in "\t\n\r\f") or 0x7F <= code < 0xA0:
            raise ValueError(f"control character U+{code:04X} at offset {position}: binary data, not text")
    if not text.strip():
        raise ValueError("the text is empty")
    return text


class TextDocumentEvent(_Event):
    """A plain-text document, published by users to the texts topic; the annotator finds its
    sentences, tokens and entities and passes it on as a DocumentEvent with the same ``doc_id``."""

    schema_version: Literal[1] = DOCUMENT_SCHEMA_VERSION
    doc_id: DocId
    version: DocumentVersion | None = None
    title: GraphText = Field(default="", max_length=4096)
    text: Annotated[str, AfterValidator(_readable_text)] = Field(max_length=MAX_TEXT_CHARS)
    language: str | None = Field(
        default=None, max_length=16, description="BCP 47 tag (``en``); absent: assumed English."
    )
    source: SourceMetadata | None = None


class EntityRef(_Event):
    """An entity of a document as seen downstream: its index plus a readable name and type."""

    index: EntityIndex
    name: GraphText = Field(min_length=1, max_length=1024)
    type: GraphText = Field(min_length=1, max_length=64)


class ScoredRelation(_Event):
    """A relation with the encoder's probability that it holds for a pair."""

    relation_id: RelationId
    probability: Probability


class CandidatePair(_Event):
    """An ordered entity pair the proposer judged likely to hold a relation."""

    head: EntityIndex
    tail: EntityIndex
    score: Probability = Field(description="Proposer probability that some relation holds.")
    shortlist: list[ScoredRelation] = Field(
        default_factory=list,
        description="The encoder's most likely relations for the pair, best first (its relation head).",
    )
    predicted: list[ScoredRelation] = Field(
        default_factory=list,
        description="The relations the encoder alone predicts for the pair (at or above its threshold).",
    )
    evidence: list[SentenceIndex] = Field(
        default_factory=list,
        description="Sentence ids the pair's relations rest on (the encoder's context attention); "
        "every relation found for the pair carries them.",
    )


class CandidateSetEvent(_Event):
    """Every candidate pair of one document, with the document itself, once.

    Emitted for every document the proposer accepts, also when no pair passed its threshold, so
    that the document reaches the end of the pipeline. Keyed by ``doc_id``.
    """

    schema_version: Literal[2] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=64, description="Deterministic: document, model.")
    doc_id: DocId
    pairs: list[CandidatePair] = Field(description="Best first; empty when no pair passed.")
    pairs_scored: int = Field(ge=0, description="Ordered entity pairs the proposer scored.")
    proposer_model_version: GraphText = Field(min_length=1, max_length=256)
    proposed_at: datetime = Field(default_factory=utc_now)
    document: DocumentEvent

    @model_validator(mode="after")
    def _pairs_inside_document(self) -> CandidateSetEvent:
        if self.document.doc_id != self.doc_id:
            raise ValueError(f"doc_id {self.doc_id!r} differs from document.doc_id")
        count = len(self.document.entities)
        seen: set[tuple[int, int]] = set()
        for position, pair in enumerate(self.pairs):
            where = f"pairs[{position}]"
            if pair.head == pair.tail:
                raise ValueError(f"{where}: head and tail are the same entity ({pair.head})")
            for role, index in (("head", pair.head), ("tail", pair.tail)):
                if index >= count:
                    raise ValueError(f"{where}: {role} {index} out of range (document has {count} entities)")
            if (pair.head, pair.tail) in seen:
                raise ValueError(f"{where}: pair ({pair.head}, {pair.tail}) listed twice")
            outside = [sentence for sentence in pair.evidence if sentence >= len(self.document.sentences)]
            if outside:
                raise ValueError(
                    f"{where}: evidence sentence {outside[0]} out of range "
                    f"(document has {len(self.document.sentences)} sentences)"
                )
            seen.add((pair.head, pair.tail))
        return self


class ModelVersions(_Event):
    proposer: GraphText | None = Field(default=None, max_length=256)
    classifier: GraphText | None = Field(default=None, max_length=256)


class Relation(_Event):
    """A relation the classifier found between two entities of a document, with its provenance."""

    event_id: GraphText = Field(
        min_length=1, max_length=64, description="Deterministic: doc, head, tail, relation."
    )
    doc_id: DocId
    doc_title: GraphText = Field(default="", max_length=4096)
    head: EntityRef
    tail: EntityRef
    relation_id: RelationId
    relation_name: GraphText = Field(min_length=1, max_length=256)
    confidence: Probability
    evidence: list[SentenceIndex] | None = Field(default=None, description="Supporting sentence ids.")
    evidence_text: list[Annotated[GraphText, Field(max_length=MAX_EVIDENCE_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_EVIDENCE_SENTENCES,
        description="The evidence sentences' text, in ``evidence`` order (tokens joined by spaces), "
        "so that whoever reads the relation or the graph sees the words it rests on.",
    )
    models: ModelVersions = Field(default_factory=ModelVersions)
    source: SourceMetadata | None = None
    proposed_at: datetime | None = None
    classified_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _distinct_entities(self) -> Relation:
        if self.head.index == self.tail.index:
            raise ValueError(f"head and tail are the same entity ({self.head.index})")
        return self


class FailedPair(_Event):
    """A candidate pair the classifier could not classify on its own (the model's answer, not the
    server, was at fault), kept in the document's record instead of being silently dropped."""

    head: EntityIndex
    tail: EntityIndex
    error_class: str = Field(min_length=1, max_length=256)
    error_message: str = Field(max_length=4096)


class RelationSetEvent(_Event):
    """Every relation found in one document: the record that the document went through the pipeline.

    Exactly one per document the proposer accepted (re-deliveries carry the same ``event_id``),
    also when the document had no candidate pair or no relation. Keyed by ``doc_id``.
    """

    schema_version: Literal[2] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=64, description="Deterministic: candidate set, model.")
    doc_id: DocId
    version: DocumentVersion | None = None
    content_hash: str | None = Field(
        default=None, max_length=64, description="The document's content hash (DocumentEvent.content_hash)."
    )
    doc_title: GraphText = Field(default="", max_length=4096)
    relations: list[Relation]
    entities: list[EntityRef] = Field(
        default_factory=list,
        description="Every entity of the document, also those in no relation: the graph links the "
        "document to each (absent: the relations' heads and tails).",
    )
    candidate_pairs: int = Field(ge=0, description="Pairs the classifier was given.")
    failed_pairs: list[FailedPair] = Field(default_factory=list)
    models: ModelVersions = Field(default_factory=ModelVersions)
    source: SourceMetadata | None = None
    proposed_at: datetime | None = None
    classified_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _relations_of_this_document(self) -> RelationSetEvent:
        for position, relation in enumerate(self.relations):
            if relation.doc_id != self.doc_id:
                raise ValueError(f"relations[{position}]: doc_id {relation.doc_id!r} is not {self.doc_id!r}")
        return self


#: A dead letter keeps at most this much of its message's key (bytes); a longer key is cut, and the
#: letter names the whole key by its SHA-256, so that no key can make a letter the broker refuses.
MAX_ORIGIN_KEY_BYTES = 1024


class MessageOrigin(_Event):
    """Kafka coordinates of a consumed message, so a dead letter can be traced and replayed."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = Field(default=None, description="The key, cut to its first 1,024 bytes.")
    key_truncated: bool = Field(default=False, description="True when ``key`` is only a prefix.")
    key_sha256: str | None = Field(
        default=None, description="SHA-256 of the whole key (hex), given when ``key`` is cut."
    )
    timestamp_ms: int | None = None


class ErrorDetail(_Event):
    """One validation problem: where (a JSON path) and what."""

    location: str
    message: str


class DeadLetterEvent(_Event):
    """A message a service could not process, with the reason, kept for inspection and replay."""

    schema_version: Literal[1] = 1
    service: str = Field(min_length=1, max_length=128)
    origin: MessageOrigin
    error_class: str = Field(min_length=1, max_length=256)
    error_message: str = Field(max_length=65536)
    error_details: list[ErrorDetail] = Field(default_factory=list)
    payload: str = Field(description="The raw message value, decoded per payload_encoding.")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    payload_truncated: bool = Field(
        default=False, description="True when only a prefix of an oversized payload is kept."
    )
    dead_lettered_at: datetime = Field(default_factory=utc_now)


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "text_document_event": TextDocumentEvent,
    "document_event": DocumentEvent,
    "candidate_set_event": CandidateSetEvent,
    "relation_set_event": RelationSetEvent,
    "dead_letter_event": DeadLetterEvent,
}


def schema_version_of(model: type[BaseModel]) -> int:
    """The version an event model reads and writes (its ``schema_version`` default)."""
    return int(model.model_fields["schema_version"].default)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of an event model, with a stable ``$id`` carrying the schema version."""
    schema = model.model_json_schema(mode="validation")
    name = next(key for key, value in EVENT_MODELS.items() if value is model)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"lmrc/{name}.v{schema_version_of(model)}.json",
        **schema,
    }
