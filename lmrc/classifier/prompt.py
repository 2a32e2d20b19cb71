"""The one prompt template of the relation classifier (versioned), its answer grammar and parser.

Layout, for TGI's prefix cache: what every request shares comes first (task and relation set),
then what all pairs of one document share (the document, with every entity mention marked by its
entity id), and only then the pair (head and tail ids, names, types). All pairs of a document
thus share all but their last few dozen tokens.

The answer is the relation names in label-set order separated by ``"; "``, or ``none``, and ends
with a newline. The newline is part of the grammar on purpose: outlines-core (TGI's grammar
engine) drops transitions out of an accepting state into a loop, so ``L(; L)*`` without a
terminator would forbid a second label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lmrc.contracts import DocumentEvent

PROMPT_VERSION = "lmrc-rc-v1"
NO_RELATION = "none"
SEPARATOR = "; "
TERMINATOR = "\n"
LABELS_FILE = Path(__file__).parent / "docred_relations.json"

INSTRUCTION = (
    "Read the document. Each entity mention is marked as [E<id> mention]. Decide which of the "
    "relations below hold from the head entity to the tail entity according to the document. "
    'Answer with the relation names separated by "; ", or "none" when no relation holds.'
)


@dataclass(frozen=True)
class LabelSet:
    """The predefined relations: Wikidata P-id -> name, in a fixed order."""

    names: dict[str, str]

    @property
    def ids_by_name(self) -> dict[str, str]:
        return {name: pid for pid, name in self.names.items()}

    def ordered(self, names: set[str]) -> list[str]:
        return [name for name in self.names.values() if name in names]


@cache
def docred_labels(path: Path = LABELS_FILE) -> LabelSet:
    """The 96 DocRED relations (``rel_info.json`` of DocRED/Re-DocRED, MIT License)."""
    with open(path, encoding="utf-8") as handle:
        return LabelSet(dict(json.load(handle)))


class UnparseableAnswerError(ValueError):
    """The model's answer is not a list of known relation names nor ``none``."""


def mark_document(document: DocumentEvent) -> str:
    """The title and text, every mention wrapped as ``[E<id> tokens]``; tokens joined by spaces."""
    opening: dict[tuple[int, int], list[int]] = {}
    closing: dict[tuple[int, int], int] = {}
    for entity_id, entity in enumerate(document.entities):
        for mention in entity.mentions:
            opening.setdefault((mention.sent_id, mention.start), []).append(entity_id)
            closing[(mention.sent_id, mention.end - 1)] = (
                closing.get((mention.sent_id, mention.end - 1), 0) + 1
            )
    sentences = []
    for sent_id, sentence in enumerate(document.sentences):
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


def document_prefix(document: DocumentEvent, labels: LabelSet) -> str:
    """Everything before the pair: identical for all pairs of ``document``."""
    relation_list = "\n".join(labels.names.values())
    return (
        f"### Instruction\n{INSTRUCTION}\n\n### Relations\n{relation_list}\n\n"
        f"### Document\n{mark_document(document)}\n\n"
    )


def pair_suffix(document: DocumentEvent, head: int, tail: int) -> str:
    return (
        f"### Pair\n{_entity_line('Head', document, head)}\n{_entity_line('Tail', document, tail)}\n\n"
        "### Answer\n"
    )


def build_prompt(document: DocumentEvent, head: int, tail: int, labels: LabelSet) -> str:
    return document_prefix(document, labels) + pair_suffix(document, head, tail)


def format_answer(names: list[str], labels: LabelSet) -> str:
    """The target text for training: names in label-set order, or ``none``."""
    ordered = labels.ordered(set(names))
    return (SEPARATOR.join(ordered) if ordered else NO_RELATION) + TERMINATOR


def answer_regex(labels: LabelSet) -> str:
    """A regex (TGI ``grammar`` of type ``regex``) whose matches are exactly the valid answers."""
    # Longest first, so that a regex engine without backtracking preferences still sees every name.
    names = sorted(labels.names.values(), key=len, reverse=True)
    alternatives = "|".join(re.escape(name) for name in names)
    separator = re.escape(SEPARATOR)
    return f"({NO_RELATION}|({alternatives})({separator}({alternatives}))*)\\n"


def parse_answer(text: str, labels: LabelSet) -> list[str]:
    """Relation names from an answer (deduplicated, label-set order); [] for ``none``."""
    answer = text.strip()
    if answer == NO_RELATION:
        return []
    known = set(labels.names.values())
    names = [part.strip() for part in answer.split(SEPARATOR.strip())]
    unknown = [name for name in names if name not in known]
    if not answer or unknown:
        raise UnparseableAnswerError(f"not a relation list: {text[:200]!r} (unknown: {unknown[:5]})")
    return labels.ordered(set(names))
