"""A learned mention-pair model over the alias rules' entities: the raw-text grouping lever.

The bounds (``levers.py``) say perfect grouping of the tagger's mentions would lift strict relation
F1 from 0.34 to 0.48, so this asks whether the groupings the rules leave apart can be learned from
DocRED's own annotation. The rules group a document's mentions first; a gradient-boosted
classifier then scores every pair of the rules' entities on what their names and places say
(word and character overlap, a shared prefix as in "Poland" / "Polish", one name inside the other,
an acronym, a year inside a full date, a name in parentheses after the other, types, distance,
sizes), and pairs it trusts are joined, best first, never two different full names of people.

It learns from gold mentions: every document with gold entities outside the validation and
holdout splits (the tagger's 1,599), a pair of the rules' entities labelled by whether their
mentions belong mostly to one gold entity. Its cross-validated precision over documents (grouped
folds) says how far string evidence goes before it is scored end to end.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmrc.annotator.clusters import acronym_of, cluster_mentions, entity_type, is_acronym, normalise
from lmrc.annotator.tagger import MentionSpan
from lmrc.docred.text import rebuild_text

TYPES = ("PER", "ORG", "LOC", "TIME", "NUM", "MISC")
#: Each unordered pair of types (one type twice: a one-element set).
_TYPE_PAIRS = tuple(frozenset((a, b)) for i, a in enumerate(TYPES) for b in TYPES[i:])
_YEAR = re.compile(r"^\d{4}$")
#: Merge thresholds tried: the one that scores best on validation is the lever's.
THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


def _trigrams(name: str) -> set[str]:
    padded = f"  {name} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def pair_features(
    text: str, spans: Sequence[MentionSpan], groups: Sequence[Sequence[int]], a: int, b: int
) -> list[float]:
    """What the names, types and places of entities ``a`` and ``b`` (indices into ``groups``) say."""
    first, second = groups[a], groups[b]
    type_a, type_b = entity_type(spans, first), entity_type(spans, second)
    written_a = {text[spans[i].start : spans[i].end] for i in first}
    written_b = {text[spans[i].start : spans[i].end] for i in second}
    names_a = {normalise(name) for name in written_a} - {""}
    names_b = {normalise(name) for name in written_b} - {""}
    words = trigrams = prefix = 0.0
    inside = year = 0.0
    for x in names_a:
        for y in names_b:
            words_x, words_y = set(x.split()), set(y.split())
            words = max(words, len(words_x & words_y) / len(words_x | words_y))
            inside = max(inside, float(words_x <= words_y or words_y <= words_x))
            grams_x, grams_y = _trigrams(x), _trigrams(y)
            trigrams = max(trigrams, len(grams_x & grams_y) / len(grams_x | grams_y))
            prefix = max(prefix, _common_prefix(x, y) / min(len(x), len(y)))
            year_x, year_y = bool(_YEAR.match(x)), bool(_YEAR.match(y))
            year = max(year, float((year_x and x in words_y) or (year_y and y in words_x)))
    acronym = partial_acronym = 0.0
    for x in written_a:
        for y in written_b:
            for short, long in ((x, y), (y, x)):
                if is_acronym(short):
                    letters = short.replace(".", "").replace(" ", "")
                    initials = acronym_of(long)
                    acronym = max(acronym, float(initials == letters))
                    partial = initials != letters and initials[:2] == letters[:2]
                    partial_acronym = max(partial_acronym, float(partial))
    in_parentheses = 0.0
    for i in first:
        for j in second:
            before, after = sorted((spans[i], spans[j]), key=lambda span: span.start)
            in_parentheses = max(in_parentheses, float(text[before.end : after.start].strip() == "("))
    distance = abs(min(spans[i].start for i in first) - min(spans[i].start for i in second))
    length_a = max((len(name.split()) for name in names_a), default=0)
    length_b = max((len(name.split()) for name in names_b), default=0)
    same = float(type_a == type_b)
    pair = frozenset((type_a, type_b))
    features = [
        same,
        words,
        trigrams,
        prefix,
        inside,
        acronym,
        partial_acronym,
        year,
        in_parentheses,
        math.log1p(distance),
        min(length_a, length_b),
        max(length_a, length_b),
        math.log1p(len(first)),
        math.log1p(len(second)),
        float(not all(name.isascii() for name in written_a | written_b)),
    ]
    features += [float(pair == kind) for kind in _TYPE_PAIRS]
    return features


def _entities_by_rules(raw: dict[str, Any]) -> tuple[str, list[MentionSpan], list[int], list[list[int]]]:
    rebuilt = rebuild_text(raw)
    spans = [MentionSpan(m.start, m.end, m.type) for m in rebuilt.mentions]
    return rebuilt.text, spans, [m.entity for m in rebuilt.mentions], cluster_mentions(rebuilt.text, spans)


def pair_examples(documents: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels (1: one gold entity) and document index of every pair of the rules'
    entities over each document's gold mentions."""
    rows: list[list[float]] = []
    labels: list[int] = []
    owners: list[int] = []
    for number, raw in enumerate(documents):
        text, spans, entities, groups = _entities_by_rules(raw)
        majority = [Counter(entities[i] for i in members).most_common(1)[0][0] for members in groups]
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                rows.append(pair_features(text, spans, groups, a, b))
                labels.append(int(majority[a] == majority[b]))
                owners.append(number)
    return np.asarray(rows, dtype=np.float32), np.asarray(labels, dtype=np.int8), np.asarray(owners)


def _classifier() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=200, random_state=0)


@dataclass
class MentionPairModel:
    """The fitted classifier and what cross-validation over documents said of it."""

    classifier: Any
    examples: int
    positives: int
    cross_validated: dict[str, dict[str, float]]

    def probabilities(
        self, text: str, spans: Sequence[MentionSpan], groups: Sequence[Sequence[int]]
    ) -> dict[tuple[int, int], float]:
        pairs = [(a, b) for a in range(len(groups)) for b in range(a + 1, len(groups))]
        if not pairs:
            return {}
        features = np.asarray([pair_features(text, spans, groups, a, b) for a, b in pairs], dtype=np.float32)
        return dict(zip(pairs, self.classifier.predict_proba(features)[:, 1].tolist(), strict=True))

    def grouping(self, threshold: float) -> Callable[[str, Sequence[MentionSpan]], list[list[int]]]:
        """A clusterer (``levers.Clusterer``): the rules' entities, then the pairs scored above
        ``threshold`` joined best first, never two different multi-word names of people."""

        def cluster(text: str, spans: Sequence[MentionSpan]) -> list[list[int]]:
            groups = cluster_mentions(text, spans)
            owner = list(range(len(groups)))
            members = {index: list(group) for index, group in enumerate(groups)}

            def find(index: int) -> int:
                while owner[index] != index:
                    index = owner[index]
                return index

            def full_people(group: Sequence[int]) -> set[str]:
                people = [spans[i] for i in group if spans[i].type == "PER"]
                names = {normalise(text[span.start : span.end]) for span in people}
                return {name for name in names if len(name.split()) >= 2}

            scored = self.probabilities(text, spans, groups)
            for (a, b), probability in sorted(scored.items(), key=lambda item: -item[1]):
                if probability < threshold:
                    break
                root_a, root_b = find(a), find(b)
                if root_a == root_b:
                    continue
                people_a, people_b = full_people(members[root_a]), full_people(members[root_b])
                if people_a and people_b and people_a != people_b:
                    continue
                keep, gone = min(root_a, root_b), max(root_a, root_b)
                owner[gone] = keep
                members[keep] += members.pop(gone)
            joined = [sorted(group) for group in members.values()]
            return sorted(joined, key=lambda group: spans[group[0]].start)

        return cluster


def train_mention_pairs(documents: Sequence[dict[str, Any]], folds: int = 3) -> MentionPairModel:
    """Fit on every pair of ``documents``, after measuring merge precision and recall at each of
    ``THRESHOLDS`` with ``folds`` folds split by document."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    features, labels, owners = pair_examples(documents)
    predicted = cross_val_predict(
        _classifier(), features, labels, groups=owners, cv=GroupKFold(folds), method="predict_proba"
    )[:, 1]
    figures: dict[str, dict[str, float]] = {}
    for threshold in THRESHOLDS:
        joined = predicted >= threshold
        right = int((joined & (labels == 1)).sum())
        figures[str(threshold)] = {
            "joined": int(joined.sum()),
            "precision": round(right / max(int(joined.sum()), 1), 4),
            "recall": round(right / max(int(labels.sum()), 1), 4),
        }
    classifier = _classifier().fit(features, labels)
    return MentionPairModel(classifier, len(labels), int(labels.sum()), figures)
