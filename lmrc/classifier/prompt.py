"""The one prompt template of the relation classifier (versioned), its answer grammar and parser.

Prompt ``lmrc-rc-v2``: the LLM chooses from the proposer's shortlist (LMRC's second stage). Layout,
for TGI's prefix cache: what all pairs of one document share comes first (the task, the document
with every entity mention marked by its entity id), and only then the pair: head and tail, and
the encoder's ranked candidate relations as lettered options with their probabilities. All pairs
of a document thus share all but their last few dozen tokens.

The answer is the letters of the options that hold, in option order, separated by ``","``, or
``none``, and ends with a newline: one or a few tokens. The newline is part of the grammar on
purpose: outlines-core (TGI's grammar engine) drops transitions out of an accepting state into a
loop, so an answer without a terminator could not be followed by a second letter.

Instruction-tuned chat models (Qwen2.5) are prompted in their chat template (``chatml``): the same
text as the user's turn, after the model's default system turn, and the answer as the assistant's
turn; the document still comes first, so the pairs of a document still share the prefix.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from lmrc.contracts import DocumentEvent
from lmrc.contracts.schema import Schema, shipped_schema

PROMPT_VERSION = "lmrc-rc-v2"
NO_RELATION = "none"
SEPARATOR = ","
OPTION_LETTERS = "ABCDEFGHIJ"
TERMINATOR = "\n"

#: plain: the text as is (what SmolLM2's adapter was trained on); chatml: in the ChatML turns of
#: Qwen2.5's chat template, with its default system turn.
PromptFormat = Literal["plain", "chatml"]
CHATML_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHATML_OPENING = f"<|im_start|>system\n{CHATML_SYSTEM}<|im_end|>\n<|im_start|>user\n"
#: The assistant's turn opens with "Answer: ", as the worked examples write it: an instruction-tuned
#: model would otherwise begin with prose ("Answer", "The") that the grammar cuts to a letter.
CHATML_ANSWER_CUE = "<|im_end|>\n<|im_start|>assistant\nAnswer: "


@dataclass(frozen=True)
class PromptStyle:
    """How one model is prompted: the format, and worked examples shown after the instruction
    (rendered once by ``lmrc classifier zero-shot --examples``; identical in every prompt, so they
    stay in the shared prefix)."""

    format: PromptFormat = "plain"
    examples: str = field(default="", repr=False)


PLAIN = PromptStyle()

INSTRUCTION = (
    "Read the document. Each entity mention is marked as [E<id> mention]. For the head and tail "
    "entities below, a classifier proposes candidate relations from the head to the tail, with its "
    "probability. Decide which candidates hold according to the document. Answer with their letters "
    'separated by ",", or "none" when none holds.'
)


@dataclass(frozen=True)
class LabelSet:
    """The predefined relations: relation id (a Wikidata P-id, CID...) -> name, in a fixed order."""

    names: dict[str, str]


def schema_labels(schema: Schema) -> LabelSet:
    """A schema's relations as the prompt names them, in the schema file's order."""
    return LabelSet({relation.id: relation.name for relation in schema.relations})


@cache
def docred_labels() -> LabelSet:
    """The 96 DocRED relations (``rel_info.json`` of DocRED/Re-DocRED, MIT License): the default
    schema's."""
    return schema_labels(shipped_schema("redocred"))


class UnparseableAnswerError(ValueError):
    """The model's answer is not a list of option letters nor ``none``."""


#: Stands for the sentences a windowed prompt leaves out.
GAP = "[...]"


def mark_document(document: DocumentEvent, sentence_ids: Collection[int] | None = None) -> str:
    """The title and text, every mention wrapped as ``[E<id> tokens]``; tokens joined by spaces.
    With ``sentence_ids``, only those sentences, each run of left-out ones shown as ``[...]``."""
    opening: dict[tuple[int, int], list[int]] = {}
    closing: dict[tuple[int, int], int] = {}
    for entity_id, entity in enumerate(document.entities):
        for mention in entity.mentions:
            opening.setdefault((mention.sent_id, mention.start), []).append(entity_id)
            closing[(mention.sent_id, mention.end - 1)] = (
                closing.get((mention.sent_id, mention.end - 1), 0) + 1
            )
    sentences: list[str] = []
    for sent_id, sentence in enumerate(document.sentences):
        if sentence_ids is not None and sent_id not in sentence_ids:
            if not sentences or sentences[-1] != GAP:
                sentences.append(GAP)
            continue
        words = []
        for position, token in enumerate(sentence):
            prefix = "".join(f"[E{entity_id} " for entity_id in opening.get((sent_id, position), []))
            suffix = "]" * closing.get((sent_id, position), 0)
            words.append(f"{prefix}{token}{suffix}")
        sentences.append(" ".join(words))
    title = f"Title: {document.title}\n" if document.title else ""
    return title + " ".join(sentences)


def _entity_line(role: str, document: DocumentEvent, index: int) -> str:
    entity = document.entities[index]
    aliases = list(dict.fromkeys(mention.name for mention in entity.mentions))
    names = "; ".join(aliases[:5])
    return f"{role}: E{index} {entity.name} ({entity.type}); mentions: {names}"


@dataclass(frozen=True)
class Option:
    """One candidate relation shown to the LLM: its relation id and the encoder's probability."""

    relation_id: str
    probability: float


def document_prefix(
    document: DocumentEvent, sentence_ids: Collection[int] | None = None, style: PromptStyle = PLAIN
) -> str:
    """Everything before the pair: identical for all pairs of ``document`` (unless windowed)."""
    opening = CHATML_OPENING if style.format == "chatml" else ""
    examples = f"### Examples\n{style.examples}\n\n" if style.examples else ""
    return (
        f"{opening}### Instruction\n{INSTRUCTION}\n\n{examples}"
        f"### Document\n{mark_document(document, sentence_ids)}\n\n"
    )


def pair_window(document: DocumentEvent, head: int, tail: int, evidence: Collection[int] = ()) -> set[int]:
    """The sentences a pair's relations can rest on: those that mention its head or tail, and its
    evidence. The prompt falls back to them when the whole document is longer than the model
    server takes."""
    mentioned = {m.sent_id for index in (head, tail) for m in document.entities[index].mentions}
    return mentioned | {sent_id for sent_id in evidence if sent_id < len(document.sentences)}


def pair_suffix(
    document: DocumentEvent,
    head: int,
    tail: int,
    options: Sequence[Option],
    labels: LabelSet,
    style: PromptStyle = PLAIN,
) -> str:
    """The pair and its lettered options (best first), then the answer cue."""
    cue = CHATML_ANSWER_CUE if style.format == "chatml" else "### Answer\n"
    return (
        f"### Pair\n{_entity_line('Head', document, head)}\n{_entity_line('Tail', document, tail)}\n\n"
        f"### Candidates\n{_option_lines(options, labels)}\n\n{cue}"
    )


def _option_lines(options: Sequence[Option], labels: LabelSet) -> str:
    if not 1 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"a pair needs 1 to {len(OPTION_LETTERS)} options, got {len(options)}")
    return "\n".join(
        f"{letter}. {labels.names[option.relation_id]} ({option.probability:.2f})"
        for letter, option in zip(OPTION_LETTERS, options, strict=False)
    )


def worked_examples(
    document: DocumentEvent,
    pairs: Sequence[tuple[int, int, Sequence[Option], Sequence[int]]],
    labels: LabelSet,
) -> str:
    """The ``### Examples`` block: one document and some of its pairs (head, tail, options, the
    options that hold), each with its right answer, in the layout of the real question."""
    questions = [
        f"Pair {number}:\n{_entity_line('Head', document, head)}\n{_entity_line('Tail', document, tail)}\n"
        f"Candidates:\n{_option_lines(options, labels)}\nAnswer: {format_answer(chosen)}"
        for number, (head, tail, options, chosen) in enumerate(pairs, start=1)
    ]
    return f"Document: {mark_document(document)}\n\n" + "\n".join(questions)


def build_prompt(
    document: DocumentEvent,
    head: int,
    tail: int,
    options: Sequence[Option],
    labels: LabelSet,
    sentence_ids: Collection[int] | None = None,
    style: PromptStyle = PLAIN,
) -> str:
    """The whole prompt; ``sentence_ids`` narrows the document to those sentences."""
    return document_prefix(document, sentence_ids, style) + pair_suffix(
        document, head, tail, options, labels, style
    )


def format_answer(chosen: Sequence[int]) -> str:
    """The target text for training: the chosen options' letters in option order, or ``none``."""
    letters = [OPTION_LETTERS[index] for index in sorted(set(chosen))]
    return (SEPARATOR.join(letters) if letters else NO_RELATION) + TERMINATOR


def answer_regex(option_count: int) -> str:
    """A regex (TGI ``grammar`` of type ``regex``) whose matches are exactly the valid answers for
    ``option_count`` options: ``none``, or a non-empty subset of the letters in option order."""
    letters = OPTION_LETTERS[:option_count]
    separator = re.escape(SEPARATOR)
    subsets = "|".join(
        letter + "".join(f"({separator}{later})?" for later in letters[position + 1 :])
        for position, letter in enumerate(letters)
    )
    return f"({NO_RELATION}|{subsets})\\n"


def parse_answer(text: str, option_count: int) -> list[int]:
    """The chosen option indices (deduplicated, in order) from an answer; [] for ``none``."""
    answer = text.strip()
    if answer == NO_RELATION:
        return []
    letters = [part.strip() for part in answer.split(SEPARATOR)]
    valid = OPTION_LETTERS[:option_count]
    if not answer or any(len(letter) != 1 or letter not in valid for letter in letters):
        raise UnparseableAnswerError(f"not a list of option letters {valid}: {text[:200]!r}")
    return sorted({valid.index(letter) for letter in letters})
