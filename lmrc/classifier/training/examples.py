"""Worked examples for a few-shot prompt (``lmrc classifier zero-shot --examples N``).

They come from the train split, as a user's own data would give them: the shortest document that
has enough pairs the proposer shortlists, half of them with a relation among the options (the
gold ones chosen) and half with none holding, each half the pairs the proposer is surest of
first (so the `none`s shown are the proposer's confident mistakes the LLM should catch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.classifier.prompt import LabelSet, Option, worked_examples
from lmrc.proposer.training.candidates import score_candidates

#: Documents tried, shortest first, before giving up.
CANDIDATE_DOCUMENTS = 20


Example = tuple[int, int, list[Option], list[int]]


def _surest_first(examples: list[Example]) -> list[Example]:
    return sorted(examples, key=lambda example: -example[2][0].probability)


def few_shot_examples(
    count: int, proposer: Path, shortlist_size: int, labels: LabelSet, train: list[dict[str, Any]]
) -> str:
    """``count`` worked examples (see the module) from ``train``, rendered for the prompt."""
    by_length = sorted(train, key=lambda raw: sum(len(sentence) for sentence in raw["sents"]))
    wanted_positives = (count + 1) // 2
    tried = by_length[:CANDIDATE_DOCUMENTS]
    for raw, found in zip(tried, score_candidates(proposer, tried, shortlist_size), strict=True):
        gold = docred.relations_by_pair(raw)
        positives: list[Example] = []
        negatives: list[Example] = []
        for pair in found.pairs:
            if not pair.shortlist:
                continue
            holding = gold.get((pair.head, pair.tail), set())
            chosen = [index for index, (relation, _p) in enumerate(pair.shortlist) if relation in holding]
            options = [Option(relation, probability) for relation, probability in pair.shortlist]
            (positives if chosen else negatives).append((pair.head, pair.tail, options, chosen))
        if len(positives) < wanted_positives or len(negatives) < count - wanted_positives:
            continue
        positives = _surest_first(positives)[:wanted_positives]
        negatives = _surest_first(negatives)[: count - wanted_positives]
        # Alternate relation and none, so that no run of one answer suggests a pattern.
        ordered = []
        for index, positive in enumerate(positives):
            ordered += [positive, *negatives[index : index + 1]]
        return worked_examples(docred.to_document_event(raw), ordered, labels)
    raise ValueError(
        f"none of the {min(len(train), CANDIDATE_DOCUMENTS)} shortest train documents has "
        f"{wanted_positives} shortlisted pairs with a relation and {count - wanted_positives} without"
    )
