"""Raw-text levers (`lmrc annotator levers`): the rules each lever adds, and the bench that scores
relations from plain text with the real tagger and the shipped proposer's ONNX graphs."""

from __future__ import annotations

import pytest

from lmrc import docred
from lmrc.annotator.clusters import cluster_mentions
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR, MentionSpan
from lmrc.annotator.training.levers import (
    BOUNDS,
    LEARNED_PAIRS,
    LEVERS,
    RawTextBench,
    Variant,
    entity_errors,
    join_countries,
    join_nested_names,
    measure_levers,
    propagate_names,
)
from lmrc.annotator.training.mention_pairs import (
    THRESHOLDS,
    MentionPairModel,
    pair_examples,
    train_mention_pairs,
)


def spans_of(text: str, *named: tuple[str, str]) -> list[MentionSpan]:
    """A span for the first occurrence of each name, in text order."""
    return sorted(
        (MentionSpan(text.index(name), text.index(name) + len(name), kind) for name, kind in named),
        key=lambda span: span.start,
    )


def test_propagation_makes_every_other_whole_word_occurrence_of_a_found_name_a_mention() -> None:
    text = "Kafka was built at LinkedIn . LinkedInX is not LinkedIn 's ; Kafka Streams came later ."
    spans = spans_of(text, ("LinkedIn", "ORG"), ("Kafka Streams", "MISC"))
    found = [(text[s.start : s.end], s.start, s.type) for s in propagate_names(text, spans)]
    second = text.index("LinkedIn", text.index("LinkedInX") + 1)
    assert ("LinkedIn", second, "ORG") in found
    assert len(found) == 3  # not inside "LinkedInX", not inside "Kafka Streams"


def test_countries_join_their_adjective_and_nested_names_their_one_holder() -> None:
    text = (
        "France signed . The French army left Atari , Inc. ; Atari grew . Mendenhall Valley , Mendenhall Lake"
    )
    spans = spans_of(
        text,
        ("France", "LOC"),
        ("French", "LOC"),
        ("Atari , Inc.", "ORG"),
        ("Atari grew", "ORG"),
        ("Mendenhall Valley", "LOC"),
        ("Mendenhall Lake", "LOC"),
    )
    spans[3] = MentionSpan(spans[3].start, spans[3].start + len("Atari"), "ORG")
    names = [text[s.start : s.end] for s in spans]

    def as_names(groups: list[list[int]]) -> list[list[str]]:
        return sorted(sorted(names[i] for i in members) for members in groups)

    assert ["France", "French"] in as_names(join_countries(text, spans))
    assert ["Atari"] in as_names(join_countries(text, spans))
    nested = as_names(join_nested_names(text, spans))
    assert ["Atari", "Atari , Inc."] in nested
    assert ["Mendenhall Lake"] in nested and ["Mendenhall Valley"] in nested  # neither holds the other
    assert ["France"] in nested and ["French"] in nested


@pytest.fixture(scope="module")
def mention_pairs() -> MentionPairModel:
    """The mention-pair model on the gold mentions of the train split's first 60 documents."""
    return train_mention_pairs(docred.load_split("train")[:60])


def test_mention_pairs_learn_from_the_rules_entities_what_the_gold_data_joins(
    mention_pairs: MentionPairModel,
) -> None:
    documents = docred.load_split("train")[:60]
    features, labels, owners = pair_examples(documents)
    assert len(features) == len(labels) == len(owners) == mention_pairs.examples
    assert 0 < mention_pairs.positives == int(labels.sum()) < len(labels) // 10  # the rules join most
    assert set(owners.tolist()) <= set(range(60))
    figures = mention_pairs.cross_validated
    assert list(figures) == [str(threshold) for threshold in THRESHOLDS]
    joined = [figures[str(threshold)]["joined"] for threshold in THRESHOLDS]
    assert joined == sorted(joined, reverse=True) and joined[0] > 0  # a higher threshold joins less
    assert all(0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 for row in figures.values())


def test_learned_grouping_only_joins_the_rules_entities_and_never_two_full_names(
    mention_pairs: MentionPairModel,
) -> None:
    text = (
        "Marie Curie met Pierre Curie in Paris . The Curie lab ( Laboratoire Curie ) was in France ; "
        "the French state paid . Marie Curie won in 1911 , on December 10 , 1911 ."
    )
    spans = spans_of(
        text,
        ("Marie Curie", "PER"),
        ("Pierre Curie", "PER"),
        ("Paris", "LOC"),
        ("Curie lab", "ORG"),
        ("Laboratoire Curie", "ORG"),
        ("France", "LOC"),
        ("French", "LOC"),
        ("1911", "TIME"),
        ("December 10 , 1911", "TIME"),
    )
    rules = cluster_mentions(text, spans)
    assert mention_pairs.grouping(1.01)(text, spans) == rules  # above every probability: the rules
    everything = mention_pairs.grouping(0.0)(text, spans)  # every pair it may join
    assert len(everything) < len(rules)
    for group in everything:  # each rule entity stays whole inside one learned entity
        for rule in rules:
            assert set(rule) <= set(group) or not set(rule) & set(group)
    names = [text[span.start : span.end] for span in spans]
    people = [{names[i] for i in group} & {"Marie Curie", "Pierre Curie"} for group in everything]
    assert all(len(found) <= 1 for found in people)


@pytest.fixture(scope="module")
def bench() -> RawTextBench:
    return RawTextBench()


def test_the_bounds_order_as_they_must(bench: RawTextBench) -> None:
    """Gold entities: every entity right, so strict and relaxed agree; grouping the tagger's
    mentions by the gold entities can only raise entity F1 over the alias rules."""
    documents = docred.load_split("holdout")[:2]
    shipped = bench.scores(documents, Variant("shipped"))
    gold_grouping, gold = (bench.scores(documents, variant) for variant in BOUNDS[1:])
    assert gold["entity_f1"] == 1.0
    assert gold["relations_strict"] == gold["relations_relaxed"]
    assert gold["relations_strict"]["f1"] > 0.3
    assert gold_grouping["entity_f1"] >= shipped["entity_f1"]
    perfect = entity_errors(bench, documents, BOUNDS[2])
    assert perfect["right"] == perfect["relation_entities"] > 0
    errors = entity_errors(bench, documents, Variant("shipped"))
    wrong = errors["relation_entities"] - errors["right"]
    kinds = ("missing_a_mention", "split", "unmarked_repeat", "joined_with_another")
    assert wrong <= sum(errors[kind] for kind in kinds) and all(errors[kind] <= wrong for kind in kinds)
    # an entity comes out wrong either with a mention the annotator never found, or grouped wrong
    assert errors["only_grouping_wrong"] + errors["missing_a_mention"] == wrong
    missed = ("missed_mentions_by_a_boundary", "missed_mentions_named_elsewhere", "missed_mentions_unseen")
    assert sum(errors[kind] for kind in missed) >= errors["missing_a_mention"]
    assert 0 < shipped["relations_strict"]["f1"] <= shipped["relations_relaxed"]["f1"]


def test_a_lever_ships_only_on_its_validation_gain(
    bench: RawTextBench, mention_pairs: MentionPairModel
) -> None:
    validation, holdout = docred.load_split("validation")[:1], docred.load_split("holdout")[:1]
    report = measure_levers(
        validation,
        holdout,
        bench,
        biases=(0.0, bench.tagger_bias),
        other_taggers=[DEFAULT_TAGGER_DIR],
        mention_pairs=mention_pairs,
    )
    rows = report["rows"]
    countries = report["diagnosis"]["country_named_two_ways_train_and_validation"]
    assert countries["joined"] > 0 and countries["apart"] > 0  # DocRED does both
    assert set(rows) >= {"annotator as shipped", *(v.name for v in (*LEVERS, *BOUNDS))}
    tuned = rows["outside bias for strict relation F1"]
    assert set(tuned["chosen_on_validation"]["strict_f1_by_outside_bias"]) == {0.0, bench.tagger_bias}
    base = rows["annotator as shipped"]["validation"]["relations_strict"]["f1"]
    for name in [v.name for v in LEVERS] + ["outside bias for strict relation F1", LEARNED_PAIRS]:
        gain = rows[name]["validation"]["relations_strict"]["f1"] - base
        assert rows[name]["ships"] == (gain >= 0.01), name
    learned = rows[LEARNED_PAIRS]["chosen_on_validation"]
    best = max(learned["strict_f1_by_threshold"].values())
    assert learned["strict_f1_by_threshold"][str(learned["threshold"])] == best
    assert rows[LEARNED_PAIRS]["validation"]["relations_strict"]["f1"] == best
    # the shipped tagger measured as another one is the first row again, and does not ship over itself
    again = rows[f"tagger {bench.annotator.version}"]
    for split in ("validation", "holdout"):
        assert again[split]["relations_strict"] == rows["annotator as shipped"][split]["relations_strict"]
    assert again["validation_gain"] == 0 and again["ships"] is False
    # and with name propagation, the shipped tagger's propagation row again
    propagated = rows[f"tagger {bench.annotator.version} + name propagation"]
    for split in ("validation", "holdout"):
        assert propagated[split]["relations_strict"] == rows["name propagation"][split]["relations_strict"]
        assert propagated[split]["entity_f1"] == rows["name propagation"][split]["entity_f1"]
    assert propagated["ships"] == rows["name propagation"]["ships"]
