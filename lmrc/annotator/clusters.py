"""Mentions -> entities: the alias rules DocRED's annotation follows.

A document names an entity in full once and then by a shorter alias. The rules, in order:
1. the same normalised name (case, a leading article, a possessive and punctuation ignored);
2. an acronym and the multi-word name whose initials it spells ("NASA", "National Aeronautics
   and Space Administration");
3. a part of a person's name (a surname "Ayala", a first name) and the one full name it is part
   of; when it is part of several ("Curie": Marie Curie, Pierre Curie), the one of them mentioned
   before the short name first appears, if only one was (cluster F1 on gold mentions: train
   0.8989 -> 0.9003, validation 0.9042 -> 0.9073); otherwise it stays alone;
4. a name in parentheses right after a name: its spelling in another script ("Arjuna ( अर्जुन )"),
   or, for organisations and works, another name of the same one ("Recording Industry
   Association of America ( RIAA )"); not after a person or a place, where it is often another
   one ("Derek Shepherd ( Patrick Dempsey )", "Louisville ( KY )").
A country and its people's adjective ("France", "French") are left apart: DocRED joins them in
some documents and not in others, and joining them lowered cluster F1 on the train and
validation splits' gold mentions (0.891 against 0.900).
Two different full names never merge, and no mention joins an entity through a chain of aliases
that would join two full names.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from lmrc.annotator.tagger import MentionSpan

_ARTICLES = ("the ", "a ", "an ")
_POSSESSIVE = re.compile("\\s*['\u2019]s$")
_SMALL_WORDS = {"of", "the", "and", "for", "in", "on", "at", "de", "la", "&"}


def normalise(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).casefold().strip()
    for article in _ARTICLES:
        if text.startswith(article):
            text = text[len(article) :]
    text = _POSSESSIVE.sub("", text)
    return re.sub(r"[^\w]+", " ", text).strip()


def acronym_of(name: str) -> str:
    """The initials a name's acronym would spell ("National Aeronautics and Space Administration"
    -> "NASA"): small words and words not starting with a letter left out."""
    words = [word for word in re.split(r"[\s\-]+", name) if word]
    return "".join(
        word[0] for word in words if word.casefold() not in _SMALL_WORDS and word[0].isalpha()
    ).upper()


def is_acronym(name: str) -> bool:
    """Whether a name reads as an acronym: 2 to 8 capital letters, dots and spaces aside."""
    letters = name.replace(".", "").replace(" ", "")
    return 2 <= len(letters) <= 8 and letters.isalpha() and letters.isupper()


def cluster_mentions(text: str, spans: Sequence[MentionSpan]) -> list[list[int]]:
    """Indices into ``spans`` grouped into entities, in order of each entity's first mention."""
    names = [text[span.start : span.end] for span in spans]
    keys = [normalise(name) for name in names]
    parent = list(range(len(spans)))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def union(a: int, b: int) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    first_of_key: dict[str, int] = {}
    for index, key in enumerate(keys):
        if not key:
            continue
        if key in first_of_key:
            union(first_of_key[key], index)
        else:
            first_of_key[key] = index

    # Acronyms: all-capital short names spelling exactly one multi-word name's initials.
    long_names = {key: index for key, index in first_of_key.items() if len(key.split()) >= 2}
    for index in first_of_key.values():
        if not is_acronym(names[index]):
            continue
        acronym = names[index].replace(".", "").replace(" ", "")
        matches = [
            i for k, i in long_names.items() if acronym_of(names[i]) == acronym and spans[i].type != "PER"
        ]
        if len(matches) == 1:
            union(matches[0], index)

    # Parts of a person's name: a shorter PER name whose words are all words of exactly one
    # full (multi-word) PER name.
    full_people = {
        key: index
        for key, index in first_of_key.items()
        if spans[index].type == "PER" and len(key.split()) >= 2
    }
    for key, index in first_of_key.items():
        if spans[index].type != "PER" or key in full_people:
            continue
        words = set(key.split())
        matches = [i for full, i in full_people.items() if words <= set(full.split())]
        if len(matches) > 1:
            # Several full names fit ("Curie": Marie Curie, Pierre Curie): the reader resolves the
            # short name where it first appears, to the one full name met before it, if one.
            matches = [i for i in matches if spans[i].start < spans[index].start]
        if len(matches) == 1:
            union(matches[0], index)

    # A name in parentheses right after another is its alias when it is written in another script
    # (the original spelling) or names the same organisation or work; after a person or a place a
    # name in parentheses is often another one (the actor after a role, the state after a city).
    for index, span in enumerate(spans):
        for other in range(index + 1, min(index + 3, len(spans))):
            alias = spans[other]
            between = text[span.end : alias.start]
            after = text[alias.end : alias.end + 3].lstrip()
            if between.strip() != "(" or after[:1] not in (")", ",", ";") or span.type in ("TIME", "NUM"):
                continue
            foreign = not text[alias.start : alias.end].isascii()
            if foreign or (alias.type == span.type and span.type in ("ORG", "MISC")):
                union(index, other)

    groups: dict[int, list[int]] = {}
    for index in range(len(spans)):
        groups.setdefault(find(index), []).append(index)
    return sorted(groups.values(), key=lambda members: spans[members[0]].start)


def entity_type(spans: Sequence[MentionSpan], members: Sequence[int]) -> str:
    """The type most of an entity's mentions carry (the first mention's on a tie)."""
    counts = Counter(spans[index].type for index in members)
    best = max(counts.values())
    return next(spans[index].type for index in members if counts[spans[index].type] == best)
