"""The event contracts: checked-in JSON Schemas match the models; validation errors are precise."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import (
    CandidatePairEvent,
    DeadLetterEvent,
    DocumentEvent,
    EntityRef,
    MessageOrigin,
    RelationEvent,
    event_id,
)
from schemas.generate import SCHEMA_DIR, rendered_schemas, stale_files


def document(**overrides: object) -> dict:
    base = {
        "doc_id": "d1",
        "title": "Ada",
        "sentences": [["Ada", "Lovelace", "was", "born", "in", "London", "."], ["She", "wrote", "."]],
        "entities": [
            {"mentions": [{"sent_id": 0, "start": 0, "end": 2, "name": "Ada Lovelace", "type": "PER"}]},
            {"mentions": [{"sent_id": 0, "start": 5, "end": 6, "name": "London", "type": "LOC"}]},
        ],
    }
    base.update(overrides)
    return base


def test_checked_in_json_schemas_match_the_models() -> None:
    assert stale_files() == []
    assert sorted(path.name for path in SCHEMA_DIR.glob("*.json")) == sorted(
        path.name for path in rendered_schemas()
    )


def test_json_schema_file_accepts_a_model_dump_and_rejects_an_unknown_field() -> None:
    schema = json.loads((SCHEMA_DIR / "document_event.v1.json").read_text())
    payload = json.loads(DocumentEvent.model_validate(document()).model_dump_json())
    jsonschema.validate(payload, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "surprise": 1}, schema)


def test_schema_version_is_required_to_match() -> None:
    assert DocumentEvent.model_validate(document()).schema_version == 1
    with pytest.raises(ValidationError, match="schema_version"):
        DocumentEvent.model_validate(document(schema_version=2))


def test_mention_outside_its_sentence_names_entity_mention_and_sentence() -> None:
    bad = document()
    bad["entities"][1]["mentions"].append({"sent_id": 1, "start": 2, "end": 5, "name": "x", "type": "LOC"})
    with pytest.raises(ValidationError) as caught:
        DocumentEvent.model_validate(bad)
    assert "entities[1].mentions[1]: token span [2, 5) out of range (sentence 1 has 3 tokens)" in str(
        caught.value
    )


def test_mention_in_a_missing_sentence_is_rejected() -> None:
    bad = document()
    bad["entities"][0]["mentions"][0]["sent_id"] = 7
    with pytest.raises(ValidationError, match=r"entities\[0\]\.mentions\[0\]: sent_id 7 out of range"):
        DocumentEvent.model_validate(bad)


def test_field_errors_carry_their_location() -> None:
    bad = document()
    bad["entities"][1]["mentions"][0]["start"] = -1
    with pytest.raises(ValidationError) as caught:
        DocumentEvent.model_validate(bad)
    assert caught.value.errors()[0]["loc"] == ("entities", 1, "mentions", 0, "start")


def test_empty_span_and_empty_sentence_are_rejected() -> None:
    bad = document()
    bad["entities"][0]["mentions"][0].update(start=1, end=1)
    with pytest.raises(ValidationError, match=r"empty token span \[1, 1\)"):
        DocumentEvent.model_validate(bad)
    with pytest.raises(ValidationError, match=r"sentences\[1\] is empty"):
        DocumentEvent.model_validate(document(sentences=[["a"], []], entities=[]))


def test_candidate_pair_must_point_at_entities_of_its_document() -> None:
    doc = DocumentEvent.model_validate(document())
    fields = dict(event_id="e", doc_id="d1", score=0.9, candidates_in_document=1, proposer_model_version="v")
    assert CandidatePairEvent(head=0, tail=1, document=doc, **fields).tail == 1
    with pytest.raises(ValidationError, match=r"tail 2 out of range \(document has 2 entities\)"):
        CandidatePairEvent(head=0, tail=2, document=doc, **fields)
    with pytest.raises(ValidationError, match="same entity"):
        CandidatePairEvent(head=1, tail=1, document=doc, **fields)


def test_relation_event_requires_a_wikidata_property_and_a_probability() -> None:
    head = EntityRef(index=0, name="Ada Lovelace", type="PER")
    tail = EntityRef(index=1, name="London", type="LOC")
    fields = dict(event_id=event_id("d1", 0, 1, "P19"), doc_id="d1", head=head, tail=tail)
    event = RelationEvent(relation_id="P19", relation_name="place of birth", confidence=0.8, **fields)
    assert RelationEvent.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValidationError, match="relation_id"):
        RelationEvent(relation_id="born in", relation_name="x", confidence=0.8, **fields)
    with pytest.raises(ValidationError, match="confidence"):
        RelationEvent(relation_id="P19", relation_name="x", confidence=1.5, **fields)


def test_event_id_is_deterministic() -> None:
    assert event_id("d1", 0, 1, "P19") == event_id("d1", 0, 1, "P19")
    assert event_id("d1", 0, 1, "P19") != event_id("d1", 1, 0, "P19")


def test_dead_letter_round_trips() -> None:
    letter = DeadLetterEvent(
        service="proposer",
        origin=MessageOrigin(topic="t", partition=0, offset=5, key="k"),
        error_class="MalformedJSON",
        error_message="invalid JSON",
        payload="{not json",
    )
    assert DeadLetterEvent.model_validate_json(letter.model_dump_json()) == letter
