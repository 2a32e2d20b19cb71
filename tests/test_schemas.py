"""The event contracts: checked-in JSON Schemas match the models; validation errors are precise."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from lmrc.contracts import (
    CandidatePair,
    CandidateSetEvent,
    DeadLetterEvent,
    DocumentEvent,
    EntityRef,
    MessageOrigin,
    Relation,
    RelationSetEvent,
    event_id,
)
from lmrc.contracts.generate import SCHEMA_DIR, rendered_schemas, stale_files
from lmrc.runtime.deadletter import rejection_from_validation


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


def test_candidate_set_pairs_must_point_at_distinct_entities_of_its_document() -> None:
    doc = DocumentEvent.model_validate(document())
    fields = dict(event_id="e", doc_id="d1", pairs_scored=2, proposer_model_version="v", document=doc)

    def pairs(*heads_tails: tuple[int, int]) -> list[CandidatePair]:
        return [CandidatePair(head=h, tail=t, score=0.9) for h, t in heads_tails]

    assert CandidateSetEvent(pairs=pairs((0, 1)), **fields).pairs[0].tail == 1
    assert CandidateSetEvent(pairs=[], **fields).pairs == []  # a document without candidates
    with pytest.raises(ValidationError, match=r"pairs\[1\]: tail 2 out of range \(document has 2 entities\)"):
        CandidateSetEvent(pairs=pairs((0, 1), (0, 2)), **fields)
    with pytest.raises(ValidationError, match="same entity"):
        CandidateSetEvent(pairs=pairs((1, 1)), **fields)
    with pytest.raises(ValidationError, match="listed twice"):
        CandidateSetEvent(pairs=pairs((0, 1), (0, 1)), **fields)
    with pytest.raises(ValidationError, match=r"differs from document\.doc_id"):
        CandidateSetEvent(pairs=[], **{**fields, "doc_id": "d2"})


def test_relation_requires_a_wikidata_property_and_a_probability() -> None:
    head = EntityRef(index=0, name="Ada Lovelace", type="PER")
    tail = EntityRef(index=1, name="London", type="LOC")
    fields = dict(event_id=event_id("d1", 0, 1, "P19"), doc_id="d1", head=head, tail=tail)
    relation = Relation(relation_id="P19", relation_name="place of birth", confidence=0.8, **fields)
    assert Relation.model_validate_json(relation.model_dump_json()) == relation
    with pytest.raises(ValidationError, match="relation_id"):
        Relation(relation_id="born in", relation_name="x", confidence=0.8, **fields)
    with pytest.raises(ValidationError, match="confidence"):
        Relation(relation_id="P19", relation_name="x", confidence=1.5, **fields)
    complete = RelationSetEvent(event_id="s", doc_id="d1", relations=[relation], candidate_pairs=1)
    assert RelationSetEvent.model_validate_json(complete.model_dump_json()) == complete
    assert RelationSetEvent(event_id="s", doc_id="d1", relations=[], candidate_pairs=0).relations == []
    with pytest.raises(ValidationError, match="is not 'd2'"):
        RelationSetEvent(event_id="s", doc_id="d2", relations=[relation], candidate_pairs=1)


def test_a_version_1_event_is_named_as_such_in_its_rejection() -> None:
    version_1 = {"schema_version": 1, "event_id": "e", "doc_id": "d1", "head": 0, "tail": 1}
    with pytest.raises(ValidationError) as caught:
        CandidateSetEvent.model_validate(version_1)
    rejection = rejection_from_validation(caught.value, expected_version=2)
    assert rejection.error_class == "UnsupportedSchemaVersion"
    assert str(rejection) == ("CandidateSetEvent: unsupported schema_version 1; this service reads version 2")


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


def test_a_doc_id_reused_for_other_content_gets_another_content_hash() -> None:
    from lmrc import docred

    raw = docred.load_split("holdout")[0]
    document = docred.to_document_event(raw)
    edited = document.model_copy(update={"sentences": [["Changed", "."], *document.sentences[1:]]})
    assert document.content_hash() == docred.to_document_event(raw).content_hash()  # stable
    assert edited.doc_id == document.doc_id and edited.content_hash() != document.content_hash()
    # Where a document came from is not its content: the same words from elsewhere are the same.
    moved = document.model_copy(update={"source": None})
    assert moved.content_hash() == document.content_hash()
