"""The classifier's prompt template, answer grammar and parser, on real Re-DocRED documents."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from lmrc import docred
from lmrc.classifier.artifact import Decision
from lmrc.classifier.prompt import (
    PROMPT_VERSION,
    Option,
    PromptStyle,
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


OPTIONS = [Option("P17", 0.91), Option("P131", 0.42), Option("P27", 0.08), Option("P150", 0.01)]


def test_label_set_is_docreds_96_relations() -> None:
    assert len(LABELS.names) == 96
    assert LABELS.names["P17"] == "country" and PROMPT_VERSION == "lmrc-rc-v2"


def test_every_mention_is_marked_with_its_entity_id(document) -> None:
    marked = mark_document(document)
    for entity_id, entity in enumerate(document.entities):
        assert marked.count(f"[E{entity_id} ") == len(entity.mentions)
    assert marked.count("[") == marked.count("]")


def test_pairs_of_a_document_share_everything_but_the_pair(document) -> None:
    prompts = [build_prompt(document, h, t, OPTIONS, LABELS) for h, t in [(0, 1), (1, 0), (2, 3)]]
    prefix = document_prefix(document)
    assert all(p.startswith(prefix) for p in prompts)
    assert len({p[len(prefix) :] for p in prompts}) == 3
    suffix = pair_suffix(document, 2, 3, OPTIONS, LABELS)
    assert suffix.startswith("### Pair\nHead: E2 ") and "\nTail: E3 " in suffix
    assert f"({document.entities[2].type})" in suffix
    assert prompts[2].endswith("### Answer\n") and len(suffix) < len(prefix) / 5


def test_the_shortlist_is_shown_as_lettered_options_best_first(document) -> None:
    suffix = pair_suffix(document, 0, 1, OPTIONS, LABELS)
    assert (
        "### Candidates\nA. country (0.91)\n"
        "B. located in the administrative territorial entity (0.42)\n"
        "C. country of citizenship (0.08)\nD. contains administrative territorial entity (0.01)\n"
    ) in suffix
    with pytest.raises(ValueError):
        pair_suffix(document, 0, 1, [], LABELS)


def test_grammar_accepts_exactly_the_valid_answers() -> None:
    grammar = re.compile(answer_regex(4))
    valid = {"none\n"} | {
        ",".join(subset) + "\n" for size in range(1, 5) for subset in itertools.combinations("ABCD", size)
    }
    assert len(valid) == 16
    for answer in valid:
        assert grammar.fullmatch(answer), answer
    for bad in ["A", "a\n", "E\n", "B,A\n", "A,A\n", "A, B\n", "none,A\n", "\n", "A,\n", "country\n"]:
        assert not grammar.fullmatch(bad), bad
    assert grammar.fullmatch(format_answer([2, 0])) and format_answer([2, 0]) == "A,C\n"
    assert format_answer([]) == "none\n"
    assert not re.compile(answer_regex(2)).fullmatch("C\n")


def test_parse_answer_gives_option_indices_and_rejects_the_rest() -> None:
    assert parse_answer("A,C\n", 4) == [0, 2]
    assert parse_answer("none\n", 4) == []
    assert parse_answer("B,B", 2) == [1]
    for bad in ["", "C\n", "country\n", "A;B\n", "AB\n"]:
        with pytest.raises(UnparseableAnswerError):
            parse_answer(bad, 2)


def test_the_decision_combines_the_llm_answer_with_the_encoder() -> None:
    llm_alone = Decision()
    assert llm_alone.keep(True, 0.01) and not llm_alone.keep(False, 0.99)
    tuned = Decision(encoder_keep_probability=0.8, llm_min_probability=0.1)
    assert tuned.keep(True, 0.5) and tuned.keep(False, 0.85)
    assert not tuned.keep(True, 0.05) and not tuned.keep(False, 0.79)


def test_confidence_is_the_probability_of_the_tokens_spelling_each_letter() -> None:
    tokens = [
        Token(id=1, text="A", logprob=-0.1),
        Token(id=2, text=",", logprob=-0.5),
        Token(id=3, text="C", logprob=-1.0),
        Token(id=4, text="\n", logprob=0.0),
        Token(id=5, text="<|im_end|>", logprob=0.0, special=True),
    ]
    response = GenerateResponse(
        generated_text="A,C\n",
        details=Details(finish_reason="eos_token", generated_tokens=5, tokens=tokens),
    )
    confidences = label_confidences(response, ["A", "C"])
    assert confidences["A"] == pytest.approx(0.904837, rel=1e-4)
    assert confidences["C"] == pytest.approx(0.367879, rel=1e-4)
    assert label_confidences(GenerateResponse(generated_text="A\n"), ["A"]) == {"A": 1.0}
    merged = [Token(id=1, text="A", logprob=-0.2), Token(id=2, text=",B", logprob=-2.0)]
    response = GenerateResponse(
        generated_text="A,B\n",
        details=Details(finish_reason="eos_token", generated_tokens=2, tokens=merged),
    )
    confidences = label_confidences(response, ["A", "B"])  # a token spelling ",B" counts for B
    assert confidences["A"] == pytest.approx(0.818731, rel=1e-4)
    assert confidences["B"] == pytest.approx(0.135335, rel=1e-4)


def test_the_chatml_prompt_is_qwens_chat_template_around_the_plain_one(document) -> None:
    """Rendered with the chat template shipped in the Qwen2.5-Coder GGUF (tests/data, Apache-2.0):
    a user turn holding the plain prompt's text, after Qwen's default system turn, and the
    assistant's turn opened with the answer's cue; the document still comes first."""
    import jinja2

    template_text = (Path(__file__).parent / "data" / "qwen2.5-chat-template.jinja").read_text(
        encoding="utf-8"
    )
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template_text)
    plain = build_prompt(document, 2, 3, OPTIONS, LABELS)
    chat = build_prompt(document, 2, 3, OPTIONS, LABELS, style=PromptStyle("chatml"))
    user_turn = plain.removesuffix("### Answer\n")
    rendered = template.render(messages=[{"role": "user", "content": user_turn}], add_generation_prompt=True)
    assert chat == rendered + "Answer: "  # the assistant's turn opened as the worked examples answer
    assert chat.startswith(document_prefix(document, style=PromptStyle("chatml")))
    assert chat.endswith(pair_suffix(document, 2, 3, OPTIONS, LABELS, style=PromptStyle("chatml")))
    assert "### Answer" not in chat and chat.endswith("<|im_start|>assistant\nAnswer: ")
