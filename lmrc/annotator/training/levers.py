"""Raw-text levers: what each change to the annotator does to relations from plain text, in-process.

Relations from plain text are scored strictly (JEREX's setting: both entities' whole mention sets
and the relation right), so an entity one mention short, or split in two, loses every relation it
takes part in. This measures the annotator as it ships and each lever beside it, with the shipped
proposer deciding the relations (encoder only, the int8 ONNX graphs the service serves, its own
threshold), on the validation split (where choices are made) and then on the holdout:

- bounds, which say where the loss lies: the gold mentions grouped by the alias rules; the
  tagger's mentions grouped by the gold entities they belong to (perfect grouping, the tagger's
  spans); the gold entities themselves;
- levers: every other occurrence of a name the tagger found in the text made a mention too (NER's
  one-sense-per-document); a country joined with its people's adjective ("France", "French"); a
  name joined with the one longer name of its type that holds all its words ("Atari", "Atari ,
  Inc."); the decoding's outside bias chosen on validation for strict relation F1 rather than
  for mention F1.

``lmrc annotator levers`` writes the figures (JSON); docs/annotator.md has the table. The live
report (``lmrc annotator evaluate``) stays the figure of record for the annotator as it ships.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.annotator.clusters import cluster_mentions, normalise
from lmrc.annotator.document import build_document, names_only
from lmrc.annotator.engine import Annotator
from lmrc.annotator.spacy_engine import segment
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR, MentionSpan
from lmrc.annotator.training.export import ensure_tagger_onnx
from lmrc.annotator.training.mention_pairs import THRESHOLDS, MentionPairModel, train_mention_pairs
from lmrc.annotator.training.train import default_extra_documents, outside_of
from lmrc.contracts import DocumentEvent
from lmrc.docred import labels_of
from lmrc.docred.annotation import AnnotationScores, gold_entities, relation_scores
from lmrc.docred.text import RebuiltText, rebuild_text
from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR
from lmrc.proposer.inference import ProposerModel
from lmrc.proposer.training.evaluate import predicted_relations
from lmrc.proposer.training.levers import load_proposer
from lmrc.sink.entities import PLACE_TYPES, country_names, normalise_name

Clusterer = Callable[[str, Sequence[MentionSpan]], list[list[int]]]
#: Outside biases tried on validation (the shipped one was chosen there for mention F1).
OUTSIDE_BIASES = (-1.0, -0.5, 0.0, 0.4, 0.75, 1.0)
#: Types whose names are words: the ones propagation and nested names apply to.
NAME_TYPES = ("PER", "ORG", "LOC", "MISC")


@dataclass(frozen=True)
class Variant:
    """One way of turning a document's text into entities."""

    name: str
    mentions: str = "tagger"  # or "gold"
    grouping: str = "rules"  # "rules", "gold", "countries" or "nested names"
    propagate: bool = False
    outside_bias: float | None = None  # None: the tagger's own
    learned: Clusterer | None = field(default=None, compare=False)  # set: groups instead of ``grouping``


def propagate_names(text: str, spans: Sequence[MentionSpan]) -> list[MentionSpan]:
    """The mentions and every other whole-word occurrence of a name among them (longest names
    first, never overlapping a mention), typed as the name's first mention."""
    taken = [(span.start, span.end) for span in spans]
    names: dict[str, str] = {}
    for span in spans:
        name = text[span.start : span.end]
        if span.type in NAME_TYPES and len(name) >= 2:
            names.setdefault(name, span.type)
    added = []
    for name, kind in sorted(names.items(), key=lambda item: -len(item[0])):
        for match in re.finditer(re.escape(name), text):
            start, end = match.span()
            whole_word = (start == 0 or not text[start - 1].isalnum()) and (
                end == len(text) or not text[end].isalnum()
            )
            if whole_word and all(end <= a or start >= b for a, b in taken):
                added.append(MentionSpan(start, end, kind))
                taken.append((start, end))
    return sorted([*spans, *added], key=lambda span: span.start)


def _joined(groups: list[list[int]], pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(len(groups)))

    def find(index: int) -> int:
        while parent[index] != index:
            index = parent[index]
        return index

    for a, b in pairs:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    merged: dict[int, list[int]] = {}
    for index, members in enumerate(groups):
        merged.setdefault(find(index), []).extend(members)
    return [sorted(members) for members in merged.values()]


def join_countries(text: str, spans: Sequence[MentionSpan]) -> list[list[int]]:
    """The alias rules, then places naming one country (its name, long name or people's adjective,
    the graph's country table) joined."""
    groups = cluster_mentions(text, spans)
    table = country_names()
    by_country: dict[str, list[int]] = {}
    for position, members in enumerate(groups):
        countries = {
            table.get(normalise_name(text[spans[i].start : spans[i].end]))
            for i in members
            if spans[i].type in PLACE_TYPES
        } - {None}
        if len(countries) == 1:
            by_country.setdefault(str(countries.pop()), []).append(position)
    pairs = [(found[0], other) for found in by_country.values() for other in found[1:]]
    return sorted(_joined(groups, pairs), key=lambda members: spans[members[0]].start)


def join_nested_names(text: str, spans: Sequence[MentionSpan]) -> list[list[int]]:
    """The alias rules, then an organisation, place or other name written one way only, joined with
    the one longer name of its type that holds all its words (persons have their own rule)."""
    groups = cluster_mentions(text, spans)
    keys = [{normalise(text[spans[i].start : spans[i].end]) for i in members} for members in groups]
    kinds = [spans[members[0]].type for members in groups]
    pairs = []
    for position in range(len(groups)):
        if kinds[position] not in ("ORG", "LOC", "MISC") or len(keys[position]) != 1:
            continue
        words = set(next(iter(keys[position])).split())
        if not words:
            continue
        holders = [
            other
            for other in range(len(groups))
            if other != position
            and kinds[other] == kinds[position]
            and any(len(key.split()) > len(words) and words <= set(key.split()) for key in keys[other])
        ]
        if len(holders) == 1:
            pairs.append((holders[0], position))
    return sorted(_joined(groups, pairs), key=lambda members: spans[members[0]].start)


def gold_grouping(rebuilt: RebuiltText) -> Clusterer:
    """Mentions grouped by the gold entity whose span they are; any other mention alone."""
    entity_of = {(mention.start, mention.end): mention.entity for mention in rebuilt.mentions}

    def cluster(_text: str, spans: Sequence[MentionSpan]) -> list[list[int]]:
        groups: dict[tuple[str, int], list[int]] = {}
        for index, span in enumerate(spans):
            entity = entity_of.get((span.start, span.end))
            groups.setdefault(("gold", entity) if entity is not None else ("alone", index), []).append(index)
        return sorted(groups.values(), key=lambda members: spans[members[0]].start)

    return cluster


class RawTextBench:
    """The annotator and the proposer, loaded once, with each document's tagged spans kept per bias."""

    def __init__(
        self,
        tagger_dir: Path = DEFAULT_TAGGER_DIR,
        proposer_dir: Path = DEFAULT_ARTIFACT_DIR,
        proposer: ProposerModel | None = None,
    ) -> None:
        ensure_tagger_onnx(tagger_dir)
        self.annotator = Annotator("tagger", tagger_dir)
        self.proposer: ProposerModel = proposer or load_proposer(proposer_dir, "int8", 0)
        threshold = self.proposer.config.relation_threshold
        self.threshold = 0.5 if threshold is None else threshold
        self._tagged: dict[tuple[str, float], list[MentionSpan]] = {}

    @property
    def tagger_bias(self) -> float:
        assert self.annotator.tagger is not None
        return self.annotator.tagger.config.outside_bias

    def _tagged_spans(self, raw: dict[str, Any], text: str, bias: float) -> list[MentionSpan]:
        key = (raw["title"], bias)
        if key not in self._tagged:
            tagger = self.annotator.tagger
            assert tagger is not None
            shipped = tagger.config
            tagger.config = shipped.model_copy(update={"outside_bias": bias})
            try:
                self._tagged[key] = tagger(text)
            finally:
                tagger.config = shipped
        return self._tagged[key]

    def entities(self, raw: dict[str, Any], variant: Variant) -> DocumentEvent:
        """The document as ``variant`` annotates its rebuilt text (a DocumentEvent)."""
        rebuilt = rebuild_text(raw)
        text = rebuilt.text
        if variant.mentions == "gold":
            types = [vertex[0]["type"] for vertex in raw["vertexSet"]]
            spans = [MentionSpan(m.start, m.end, types[m.entity]) for m in rebuilt.mentions]
        else:
            bias = self.tagger_bias if variant.outside_bias is None else variant.outside_bias
            spans = names_only(text, self._tagged_spans(raw, text, bias))
        if variant.propagate:
            spans = propagate_names(text, spans)
        cluster: Clusterer = (
            gold_grouping(rebuilt)
            if variant.grouping == "gold"
            else variant.learned
            if variant.learned is not None
            else {
                "rules": cluster_mentions,
                "countries": join_countries,
                "nested names": join_nested_names,
            }[variant.grouping]
        )
        segmented = segment(self.annotator.nlp, text)
        return build_document(raw["title"], raw["title"], text, segmented, spans, cluster=cluster)

    def scores(self, documents: Sequence[dict[str, Any]], variant: Variant) -> dict[str, Any]:
        """Mentions, entities and relations strict and relaxed of ``variant`` on ``documents``; the
        time per document includes tagging only where no earlier row tagged the split at this bias."""
        started = time.perf_counter()
        annotation = AnnotationScores()
        annotated: dict[str, dict[str, Any]] = {}
        triples: list[tuple[str, int, int, str]] = []
        for raw in documents:
            document = self.entities(raw, variant)
            as_json = document.model_dump(mode="json")
            annotated[raw["title"]] = as_json
            annotation.add(raw, as_json)
            if len(document.entities) < 2:
                continue
            features, probabilities, sentences = self.proposer.relations(document)
            for found in predicted_relations(
                self.proposer.config, features, probabilities, sentences, self.threshold
            ):
                triples.append((raw["title"], found["h_idx"], found["t_idx"], found["r"]))
        relations = relation_scores(documents, annotated, triples)
        figures = annotation.as_dict()
        return {
            "relations_strict": relations["strict"],
            "relations_relaxed": relations["relaxed"],
            "mention_f1": figures["mention_f1"],
            "entity_f1": figures["entity_f1"],
            "seconds_per_document": round((time.perf_counter() - started) / max(len(documents), 1), 3),
        }


def entity_errors(
    bench: RawTextBench, documents: Sequence[dict[str, Any]], variant: Variant
) -> dict[str, int]:
    """What goes wrong with the gold entities that take part in a relation (strict scoring needs
    each whole): a mention missed, split across entities, a repeat of the name the gold data did not
    mark joined in, joined with another gold entity (one entity may have several); how many have
    every mention found and only the grouping wrong (what a better grouping could mend); and each
    missed mention (a span) by what the annotator found there instead: an overlapping span (a
    boundary), nothing while the same name is a mention elsewhere, or nothing at all."""
    kinds = ("missing_a_mention", "split", "unmarked_repeat", "joined_with_another", "only_grouping_wrong")
    spans_missed = (
        "missed_mentions_by_a_boundary",
        "missed_mentions_named_elsewhere",
        "missed_mentions_unseen",
    )
    counts = dict.fromkeys(("relation_entities", "right", *kinds, *spans_missed), 0)
    for raw in documents:
        rebuilt = rebuild_text(raw)
        entity_of = {(mention.start, mention.end): mention.entity for mention in rebuilt.mentions}
        gold = [spans for spans, _type in gold_entities(rebuilt, raw)]
        predicted = [
            frozenset((m.start_char, m.end_char) for m in entity.mentions)
            for entity in bench.entities(raw, variant).entities
        ]
        tagged = frozenset().union(*predicted)
        names_tagged = {rebuilt.text[start:end] for start, end in tagged}
        for index in sorted({label.h for label in labels_of(raw)} | {label.t for label in labels_of(raw)}):
            spans = gold[index]
            counts["relation_entities"] += 1
            if spans in predicted:
                counts["right"] += 1
                continue
            touching = [found for found in predicted if found & spans]
            covered = frozenset().union(*touching)
            extra = covered - spans
            counts["missing_a_mention"] += bool(spans - covered)
            counts["split"] += len(touching) > 1
            counts["unmarked_repeat"] += any(span not in entity_of for span in extra)
            counts["joined_with_another"] += any(span in entity_of for span in extra)
            counts["only_grouping_wrong"] += spans <= tagged
            for start, end in spans - tagged:
                if any(other_start < end and start < other_end for other_start, other_end in tagged):
                    counts["missed_mentions_by_a_boundary"] += 1
                elif rebuilt.text[start:end] in names_tagged:
                    counts["missed_mentions_named_elsewhere"] += 1
                else:
                    counts["missed_mentions_unseen"] += 1
    return counts


def country_adjective_cases(documents: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Documents' gold entities naming one country both by its name and another way (its adjective,
    a long name): how often the gold data joins the two, and how often it keeps them apart."""
    table = country_names()
    counts = {"joined": 0, "apart": 0}
    for raw in documents:
        rebuilt = rebuild_text(raw)
        forms: dict[str, dict[bool, set[int]]] = {}
        for mention in rebuilt.mentions:
            name = normalise_name(rebuilt.text[mention.start : mention.end])
            country = table.get(name)
            if country is not None:
                by_form = forms.setdefault(country, {True: set(), False: set()})
                by_form[name == normalise_name(country)].add(mention.entity)
        for by_form in forms.values():
            if by_form[True] and by_form[False]:
                counts["joined" if by_form[True] & by_form[False] else "apart"] += 1
    return counts


BOUNDS = (
    Variant("bound: gold mentions, alias rules", mentions="gold"),
    Variant("bound: tagger mentions, gold grouping", grouping="gold"),
    Variant("bound: gold entities", mentions="gold", grouping="gold"),
)
PROPAGATION = Variant("name propagation", propagate=True)
LEVERS = (
    PROPAGATION,
    Variant("countries joined with their adjective", grouping="countries"),
    Variant("nested names joined", grouping="nested names"),
)


LEARNED_PAIRS = "learned mention pairs over the rules"


def learned_pairs_row(
    bench: RawTextBench,
    validation: Sequence[dict[str, Any]],
    holdout: Sequence[dict[str, Any]],
    model: MentionPairModel | None = None,
) -> dict[str, Any]:
    """The rules' entities joined where the mention-pair model says so, at the merge threshold
    that scores best on validation; trained first, when not given, on the gold mentions of every
    document the tagger learned from (none of validation or holdout)."""
    started = time.perf_counter()
    if model is None:
        held_out = {raw["title"] for split in ("validation", "holdout") for raw in docred.load_split(split)}
        model = train_mention_pairs(
            [*docred.load_split("train"), *outside_of(default_extra_documents(), held_out)]
        )
    trained_s = round(time.perf_counter() - started, 1)
    variants = {
        threshold: Variant(LEARNED_PAIRS, learned=model.grouping(threshold)) for threshold in THRESHOLDS
    }
    by_threshold = {threshold: bench.scores(validation, variant) for threshold, variant in variants.items()}
    best = max(THRESHOLDS, key=lambda threshold: by_threshold[threshold]["relations_strict"]["f1"])
    return {
        "chosen_on_validation": {
            "threshold": best,
            "strict_f1_by_threshold": {
                str(threshold): scored["relations_strict"]["f1"] for threshold, scored in by_threshold.items()
            },
        },
        "pairs": {
            "examples": model.examples,
            "one_gold_entity": model.positives,
            "cross_validated_by_threshold": model.cross_validated,
            "trained_s": trained_s,
        },
        "validation": by_threshold[best],
        "holdout": bench.scores(holdout, variants[best]),
    }


def diagnosis(bench: RawTextBench, validation: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Why the annotator as shipped loses relations on validation, and what the country rule faces."""
    return {
        "validation_relation_entities": entity_errors(bench, validation, Variant("annotator as shipped")),
        "country_named_two_ways_train_and_validation": country_adjective_cases(
            [*docred.load_split("train"), *validation]
        ),
    }


def measure_levers(
    validation: Sequence[dict[str, Any]],
    holdout: Sequence[dict[str, Any]],
    bench: RawTextBench | None = None,
    biases: Sequence[float] = OUTSIDE_BIASES,
    min_gain: float = 0.01,
    other_taggers: Sequence[Path] = (),
    mention_pairs: MentionPairModel | None = None,
) -> dict[str, Any]:
    """Every lever and bound on validation and holdout beside the annotator as shipped; a lever
    ships when it gains ``min_gain`` strict F1 on validation (what 50 documents can tell apart).
    Each of ``other_taggers`` is two more rows: the annotator with that tagger in place of the
    shipped one (its own outside bias, the same rules and proposer), alone and with name
    propagation (the one rule that gains on the shipped tagger), its time per document with its
    tagging. The learned mention-pair grouping (``mention_pairs``, else trained here on the tagger's
    training documents) is one more lever, its merge threshold chosen on validation."""
    bench = bench or RawTextBench()
    shipped = Variant("annotator as shipped")
    rows: dict[str, dict[str, Any]] = {}

    def row(variant: Variant, on: RawTextBench = bench, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "validation": on.scores(validation, variant),
            "holdout": on.scores(holdout, variant),
        }

    def judged(scored: dict[str, Any]) -> dict[str, Any]:
        """The row with its verdict: the one rule every lever and tagger ships by."""
        gain = scored["validation"]["relations_strict"]["f1"] - base
        return {**scored, "ships": gain >= min_gain, "validation_gain": round(gain, 4)}

    rows[shipped.name] = row(shipped, outside_bias=bench.tagger_bias)
    base = rows[shipped.name]["validation"]["relations_strict"]["f1"]
    by_bias = {
        bias: bench.scores(validation, replace(shipped, outside_bias=bias))["relations_strict"]["f1"]
        for bias in biases
    }
    best_bias = max(by_bias, key=lambda bias: (by_bias[bias], bias == bench.tagger_bias))
    for variant in (
        *LEVERS,
        replace(shipped, name="outside bias for strict relation F1", outside_bias=best_bias),
    ):
        extra = (
            {"chosen_on_validation": {"strict_f1_by_outside_bias": by_bias}}
            if variant.outside_bias is not None
            else {}
        )
        rows[variant.name] = judged(row(variant, **extra))
    rows[LEARNED_PAIRS] = judged(learned_pairs_row(bench, validation, holdout, mention_pairs))
    for tagger_dir in other_taggers:
        other = RawTextBench(tagger_dir, proposer=bench.proposer)
        name = f"tagger {other.annotator.version}"
        if name in rows:  # two folders holding one version: both rows kept
            name = f"{name} ({tagger_dir})"
        for variant in (replace(shipped, name=name), replace(PROPAGATION, name=f"{name} + name propagation")):
            rows[variant.name] = judged(
                row(variant, on=other, tagger_dir=str(tagger_dir), outside_bias=other.tagger_bias)
            )
    for variant in BOUNDS:
        rows[variant.name] = row(variant)
    return {
        "diagnosis": diagnosis(bench, validation),
        "tagger": bench.annotator.version,
        "proposer": bench.proposer.config.version,
        "relation_threshold": bench.threshold,
        "documents": {"validation": len(validation), "holdout": len(holdout)},
        "text": "each sentence's tokens joined by one space, sentences by one space",
        "ships_when": f"validation strict F1 gain >= {min_gain}",
        "rows": rows,
    }
