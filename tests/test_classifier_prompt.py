"""The classifier's prompt template, answer grammar and parser, on real Re-DocRED documents."""

from __future__ import annotations

import re

import pytest

from lmrc import docred
from lmrc.classifier.prompt import (
    PROMPT_VERSION,
    UnparseableAnswerError,
    answer_regex,
    build_prompt,
    docred_labels,
    document_prefix,
    format_answer,
    mark_document,
    pair_suffix,
    parse_answer,
)
from lmrc.classifier.service import label_confidences
from lmrc.contracts.tgi import Details, GenerateResponse, Token

LABELS = docred_labels()


@pytest.fixture(scope="module")
def document():
    return docred.to_document_event(docred.load_split("validation")[0])


def test_label_set_is_docreds_96_relations() -> None:
    assert len(LABELS.names) == 96
    assert LABELS.names["P17"] == "country" and PROMPT_VERSION == "lmrc-rc-v1"


def test_every_mention_is_marked_with_its_entity_id(document) -> None:
    marked = mark_document(document)
    for entity_id, entity in enumerate(document.entities):
        assert marked.count(f"[E{entity_id} ") == len(entity.mentions)
    assert marked.count("[") == marked.count("]")


def test_pairs_of_a_document_share_everything_but_the_pair(document) -> None:
    prompts = [build_prompt(document, h, t, LABELS) for h, t in [(0, 1), (1, 0), (2, 3)]]
    prefix = document_prefix(document, LABELS)
    assert all(p.startswith(prefix) for p in prompts)
    assert len({p[len(prefix) :] for p in prompts}) == 3
    suffix = pair_suffix(document, 2, 3)
    assert suffix.startswith("### Pair\nHead: E2 ") and "\nTail: E3 " in suffix
    assert f"({document.entities[2].type})" in suffix
    assert prompts[2].endswith("### Answer\n") and len(suffix) < len(prefix) / 5


def test_grammar_accepts_exactly_the_valid_answers() -> None:
    grammar = re.compile(answer_regex(LABELS))
    names = list(LABELS.names.values())
    for name in names:
        assert grammar.fullmatch(format_answer([name], LABELS))
    assert grammar.fullmatch(format_answer([], LABELS)) and format_answer([], LABELS) == "none\n"
    assert grammar.fullmatch(
        format_answer(["country", "located in the administrative territorial entity"], LABELS)
    )
    for bad in [
        "country",
        "Country\n",
        "none; country\n",
        "country;country\n",
        "maybe\n",
        "\n",
        "country; \n",
    ]:
        assert not grammar.fullmatch(bad), bad


def test_parse_answer_round_trips_and_rejects_unknown_names() -> None:
    answer = format_answer(["located in the administrative territorial entity", "country"], LABELS)
    assert answer == "country; located in the administrative territorial entity\n"
    assert parse_answer(answer, LABELS) == ["country", "located in the administrative territorial entity"]
    assert parse_answer("none\n", LABELS) == []
    assert parse_answer("country; country", LABELS) == ["country"]
    for bad in ["", "capital city\n", "country, spouse"]:
        with pytest.raises(UnparseableAnswerError):
            parse_answer(bad, LABELS)


def test_confidence_is_the_probability_of_the_tokens_spelling_each_relation() -> None:
    tokens = [
        Token(id=1, text="country", logprob=-0.1),
        Token(id=2, text=";", logprob=-0.5),
        Token(id=3, text=" spouse", logprob=-1.0),
        Token(id=4, text="\n", logprob=0.0),
        Token(id=5, text="<|im_end|>", logprob=0.0, special=True),
    ]
    response = GenerateResponse(
        generated_text="country; spouse\n",
        details=Details(finish_reason="eos_token", generated_tokens=5, tokens=tokens),
    )
    confidences = label_confidences(response, ["country", "spouse"])
    assert confidences["country"] == pytest.approx(0.904837, rel=1e-4)
    assert confidences["spouse"] == pytest.approx(0.367879, rel=1e-4)
    assert label_confidences(GenerateResponse(generated_text="country\n"), ["country"]) == {"country": 1.0}
    nested = [  # "country" inside "country of citizenship" must not be taken for the second name
        Token(id=1, text="country of citizenship", logprob=-0.2),
        Token(id=2, text="; country", logprob=-2.0),
        Token(id=3, text="\n", logprob=0.0),
    ]
    response = GenerateResponse(
        generated_text="country of citizenship; country\n",
        details=Details(finish_reason="eos_token", generated_tokens=3, tokens=nested),
    )
    confidences = label_confidences(response, ["country", "country of citizenship"])
    assert confidences["country of citizenship"] == pytest.approx(0.818731, rel=1e-4)
    assert confidences["country"] == pytest.approx(0.135335, rel=1e-4)
