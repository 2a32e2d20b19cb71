"""The classifier's training data (out-of-fold shortlists as lettered options) and one real LoRA step."""

from __future__ import annotations

import random

import pytest
import torch

from lmrc import docred
from lmrc.classifier.prompt import docred_labels
from lmrc.classifier.training.decision import PairOutcome, tune_decision
from lmrc.classifier.training.offline import allowed_answers, choose_options, load_candidates, save_candidates
from lmrc.classifier.training.train import (
    LORA_TARGETS,
    DocumentExamples,
    PairBatcher,
    PairExample,
    batch_loss,
    build_examples,
    check_train_candidates,
    encoder_margin,
    hardest_pairs,
    hardest_pairs_threshold,
    load_base,
    options_of,
)
from lmrc.proposer.training.candidates import DocumentCandidates, ScoredPair, in_fold


def test_the_folds_partition_the_train_documents() -> None:
    folds = 4
    positions = range(len(docred.load_split("train")))
    owners = [[fold for fold in range(folds) if in_fold(position, fold, folds)] for position in positions]
    assert all(len(owner) == 1 for owner in owners)
    assert {owner[0] for owner in owners} == set(range(folds))


def test_the_hardest_pairs_are_those_nearest_the_encoders_threshold_across_documents() -> None:
    first, second = docred.load_split("train")[:2]
    sure_in, sure_out = ScoredPair(0, 1, 0.9, (("P17", 0.98),)), ScoredPair(1, 0, 0.4, (("P17", 0.01),))
    torn = ScoredPair(0, 2, 0.8, (("P17", 0.9), ("P131", 0.47)))  # one option at the threshold
    near = ScoredPair(2, 0, 0.5, (("P27", 0.35),))
    candidates = [
        (first, DocumentCandidates(first["title"], [sure_in, torn, sure_out])),
        (second, DocumentCandidates(second["title"], [sure_out, near])),
    ]
    assert encoder_margin(torn, 0.45) == pytest.approx(0.02)
    kept = hardest_pairs(candidates, 2, 0.45)
    assert [(raw["title"], found.pairs) for raw, found in kept] == [
        (first["title"], [torn]),
        (second["title"], [near]),
    ]
    assert [found.pairs for _raw, found in hardest_pairs(candidates, 1, 0.45)] == [[torn]]


def test_a_train_candidates_file_records_its_proposers_threshold_and_is_read_once_checked(tmp_path) -> None:
    """The threshold the hardest pairs are measured from is the scoring proposer's, as its
    candidates file records it; an explicit one wins; a file without one falls back to the shipped
    proposer's. The checked content is what loads (no second read)."""
    raw = docred.load_split("train")[0]
    path = tmp_path / "train-candidates.json"
    found = [DocumentCandidates(raw["title"], [ScoredPair(0, 1, 0.9, (("P17", 0.6),))])]
    save_candidates(path, "train", "rcp-test", 1, found, relation_threshold=0.3)
    payload = check_train_candidates(path, 1)
    path.unlink()  # loading must not read the file again
    scored = load_candidates(path, [raw], payload)
    assert scored.relation_threshold == 0.3
    assert [c.pairs for _raw, c in scored.documents] == [found[0].pairs]
    assert hardest_pairs_threshold(None, scored.relation_threshold) == 0.3
    assert hardest_pairs_threshold(0.6, scored.relation_threshold) == 0.6
    from lmrc.proposer.artifact import load_config

    assert hardest_pairs_threshold(None, None) == load_config().relation_threshold


@pytest.fixture(scope="module")
def labelled() -> tuple[dict, list[tuple[int, int, set[str]]]]:
    """A train document and its gold pairs with their relations."""
    raw = next(r for r in docred.load_split("train") if len(docred.relations_by_pair(r)) >= 2)
    return raw, [(h, t, relations) for (h, t), relations in sorted(docred.relations_by_pair(raw).items())]


def test_examples_answer_with_the_letters_of_the_gold_options(labelled) -> None:
    raw, gold = labelled
    (h1, t1, first), (h2, t2, second) = gold[:2]
    other = next(r for r in docred_labels().names if r not in first | second)
    gold_pairs = {(h, t) for h, t, _ in gold}
    negative = next(
        (h, t)
        for h in range(len(raw["vertexSet"]))
        for t in range(len(raw["vertexSet"]))
        if h != t and (h, t) not in gold_pairs
    )
    found = DocumentCandidates(
        raw["title"],
        [
            ScoredPair(h1, t1, 0.9, ((other, 0.6), *((r, 0.5) for r in sorted(first)))),
            ScoredPair(h2, t2, 0.8, ((other, 0.7),)),  # the shortlist missed the gold relation
            ScoredPair(*negative, 0.3, ((other, 0.2), (sorted(first)[0], 0.1))),
        ],
    )
    (examples,) = build_examples([(raw, found)], random.Random(0))
    answers = {(p.head, p.tail): p.answer for p in examples.pairs}
    letters = ",".join("BCDEFGHIJ"[: len(first)])
    assert answers == {(h1, t1): f"{letters}\n", (h2, t2): "none\n", negative: "none\n"}


def test_a_lora_step_lowers_the_loss_and_answers_stay_in_the_grammar(labelled) -> None:
    from peft import LoraConfig, get_peft_model

    raw, gold = labelled
    head, tail, relations = gold[0]
    labels = docred_labels()
    other = next(r for r in labels.names if r not in relations)
    options = options_of([(other, 0.55), (sorted(relations)[0], 0.45)])
    torch.manual_seed(0)
    tokenizer, model = load_base(None, "cpu")
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    )
    batcher = PairBatcher(tokenizer, labels)
    document = docred.to_document_event(raw)
    pairs = [PairExample(head, tail, options, "B\n"), PairExample(tail, head, options, "none\n")]
    prefix, encoded = batcher.encode(DocumentExamples(document, pairs))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(3):
        loss = batch_loss(model, prefix, encoded, tokenizer.eos_token_id, "cpu", prefix_gradient=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    model.eval()
    chosen = choose_options(model, batcher, document, pairs, tokenizer.eos_token_id, "cpu")
    assert all(answer in allowed_answers(len(options)) for answer in chosen)


def test_tuning_keeps_what_the_encoder_is_sure_of_when_the_llm_misses_it() -> None:
    raw = docred.load_split("validation")[0]
    wrong = next(
        r
        for r in docred_labels().names
        if r not in {x for v in docred.relations_by_pair(raw).values() for x in v}
    )
    outcomes = [  # the LLM answered none everywhere; the encoder ranked the gold relation first, at 0.97
        PairOutcome(
            raw["title"], h, t, set(relations), {}, [(sorted(relations)[0], 0.97), (wrong, 0.55)], 0.0
        )
        for (h, t), relations in docred.relations_by_pair(raw).items()
    ]
    decision, grid = tune_decision(outcomes, [raw])
    assert decision.encoder_keep_probability is not None and 0.55 < decision.encoder_keep_probability <= 0.97
    assert decision.validation["llm_alone_f1"] == 0.0 < decision.validation["f1"]
    assert len(grid) == len({(row["encoder_keep_probability"], row["llm_min_probability"]) for row in grid})


def test_few_shot_examples_alternate_gold_relations_and_none_on_one_train_document() -> None:
    """``lmrc classifier zero-shot --examples 4``: the shipped proposer's shortlists on the shortest
    suitable train document; each answer is what the gold labels make of the pair's options."""
    import re

    from lmrc.classifier.training.examples import few_shot_examples
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR

    labels = docred_labels()
    train = docred.load_split("train")
    text = few_shot_examples(4, DEFAULT_ARTIFACT_DIR, 5, labels, train)
    assert text.count("Document: ") == 1 and text.count("\nCandidates:\n") == 4
    title = text.split("\n", 1)[0].removeprefix("Document: Title: ")
    (raw,) = [raw for raw in train if raw["title"] == title]
    gold = docred.relations_by_pair(raw)
    names = {name: relation for relation, name in labels.names.items()}
    answers = []
    for block in text.split("\n\nPair ")[1:]:
        head, tail = (int(m) for m in re.findall(r"^(?:Head|Tail): E(\d+) ", block, flags=re.MULTILINE))
        options = re.findall(r"^([A-E])\. (.+) \(\d\.\d\d\)$", block, flags=re.MULTILINE)
        answer = block.rsplit("Answer: ", 1)[1].strip()
        holding = {letter for letter, name in options if names[name] in gold.get((head, tail), set())}
        assert answer == (",".join(sorted(holding)) or "none")
        answers.append(answer)
    assert [answer == "none" for answer in answers] == [False, True, False, True]
    with pytest.raises(ValueError, match="none of the 2 shortest train documents has 200 shortlisted"):
        few_shot_examples(400, DEFAULT_ARTIFACT_DIR, 5, labels, train[:2])
