"""Event contracts of the LMRC pipeline (pydantic v2 models and their JSON Schemas)."""

from schemas.events import (
    EVENT_MODELS,
    SCHEMA_VERSION,
    CandidatePairEvent,
    DeadLetterEvent,
    DocumentEvent,
    Entity,
    EntityRef,
    ErrorDetail,
    Mention,
    MessageOrigin,
    ModelVersions,
    RelationEvent,
    SourceMetadata,
    event_id,
    json_schema,
)

__all__ = [
    "EVENT_MODELS",
    "SCHEMA_VERSION",
    "CandidatePairEvent",
    "DeadLetterEvent",
    "DocumentEvent",
    "Entity",
    "EntityRef",
    "ErrorDetail",
    "MessageOrigin",
    "Mention",
    "ModelVersions",
    "RelationEvent",
    "SourceMetadata",
    "event_id",
    "json_schema",
]
