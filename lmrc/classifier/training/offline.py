"""Offline scores of an adapter on a split's proposer candidates, in-process (no server, any device).

For choosing the training epoch and for a quick look on a GPU; quality claims come from the live
pipeline (``lmrc run --report``). Each candidate pair's answer is the allowed answer (``none`` or
an ordered subset of its option letters) that the model gives the highest log-probability, in the
tokenization training taught it; the server decodes greedily under the grammar instead, which
agrees whenever the model is confident. The encoder-only baseline is scored on the same documents.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmrc import docred
from lmrc.classifier.artifact import Decision
from lmrc.classifier.prompt import PLAIN, LabelSet, PromptStyle, format_answer
from lmrc.classifier.training.decision import PairOutcome, decided_predictions, docred_scores
from lmrc.classifier.training.train import PairBatcher, PairExample, autocast, options_of, suffix_forward
from lmrc.proposer.training.candidates import DocumentCandidates


@dataclass(frozen=True)
class SplitCandidates:
    split: str
    proposer: str
    shortlist_size: int
    documents: list[tuple[dict[str, Any], DocumentCandidates]]
    #: The proposer's decision threshold when it scored them (None in files written before it was kept).
    relation_threshold: float | None = None


@dataclass(frozen=True)
class OfflineEvaluation:
    split: str
    documents: int
    pairs: int
    llm_f1: float
    llm_ign_f1: float
    llm_precision: float
    llm_recall: float
    encoder_f1: float
    encoder_ign_f1: float
    none_answers: int
    seconds: float


def save_candidates(
    path: Path,
    split: str,
    proposer: str,
    shortlist_size: int,
    found: Sequence[DocumentCandidates],
    relation_threshold: float | None = None,
) -> None:
    payload = {
        "split": split,
        "proposer": proposer,
        "shortlist_size": shortlist_size,
        "relation_threshold": relation_threshold,
        "documents": [document.to_json() for document in found],
    }
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def load_candidates(
    path: Path,
    documents: Sequence[dict[str, Any]] | None = None,
    payload: dict[str, Any] | None = None,
) -> SplitCandidates:
    """A candidates file with its gold documents: ``documents``, else Re-DocRED's split it names.
    ``payload``: the file's content when it was read (and checked) already."""
    payload = payload if payload is not None else json.loads(Path(path).read_text(encoding="utf-8"))
    source = docred.load_split(payload["split"]) if documents is None else documents
    raw_by_title = {raw["title"]: raw for raw in source}
    documents = [
        (raw_by_title[item["title"]], DocumentCandidates.from_json(item)) for item in payload["documents"]
    ]
    return SplitCandidates(
        payload["split"],
        payload["proposer"],
        payload["shortlist_size"],
        documents,
        payload.get("relation_threshold"),
    )


def allowed_answers(option_count: int) -> list[list[int]]:
    """Every answer the grammar admits, as chosen option indices: [] (none), then the subsets."""
    subsets: list[list[int]] = [[]]
    for size in range(1, option_count + 1):
        subsets += [list(c) for c in itertools.combinations(range(option_count), size)]
    return subsets


@torch.no_grad()
def choose_options(
    model: Any,
    batcher: PairBatcher,
    document: Any,
    pairs: Sequence[PairExample],
    pad_id: int,
    device: str,
    rows_per_pass: int = 16,
) -> list[list[int]]:
    """Per pair, the allowed answer with the highest log-probability (chosen option indices).
    Every row attends to the whole document prefix: 128 rows a pass held 21 GB on an 800-token
    document, 16 rows 4.6 GB (and ran faster per row on CPU)."""
    prefix, rests = batcher.prompts(document, pairs)
    rows: list[tuple[int, list[int], tuple[list[int], list[int]]]] = []
    for index, (rest, pair) in enumerate(zip(rests, pairs, strict=True)):
        for chosen in allowed_answers(len(pair.options)):
            rows.append((index, chosen, (rest, batcher.answer_ids(format_answer(chosen)))))
    best: dict[int, tuple[float, list[int]]] = {}
    for start in range(0, len(rows), rows_per_pass):
        chunk = rows[start : start + rows_per_pass]
        with autocast(device):
            logits, labels = suffix_forward(model, prefix, [row[2] for row in chunk], pad_id, device, False)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        mask = labels >= 0
        gathered = torch.gather(logprobs, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        totals = (gathered * mask).sum(dim=1).tolist()
        for (index, chosen, _), total in zip(chunk, totals, strict=True):
            if index not in best or total > best[index][0]:
                best[index] = (total, chosen)
    return [best[index][1] for index in range(len(pairs))]


def offline_outcomes(
    model: Any,
    tokenizer: Any,
    labels: LabelSet,
    candidates: SplitCandidates,
    device: str,
    style: PromptStyle = PLAIN,
) -> list[PairOutcome]:
    """Each candidate pair's answer: the chosen options with the encoder's probability as confidence."""
    batcher = PairBatcher(tokenizer, labels, style)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else batcher.eos
    outcomes = []
    for raw, found in candidates.documents:
        pairs = [PairExample(p.head, p.tail, options_of(p.shortlist), "") for p in found.pairs if p.shortlist]
        if not pairs:
            continue
        gold = docred.relations_by_pair(raw)
        document = docred.to_document_event(raw)
        for pair, chosen in zip(
            pairs, choose_options(model, batcher, document, pairs, pad_id, device), strict=True
        ):
            options = [(option.relation_id, option.probability) for option in pair.options]
            outcomes.append(
                PairOutcome(
                    raw["title"],
                    pair.head,
                    pair.tail,
                    set(gold.get((pair.head, pair.tail), set())),
                    {options[i][0]: options[i][1] for i in chosen},
                    options,
                    0.0,
                )
            )
    return outcomes


def offline_scores(
    model: Any,
    tokenizer: Any,
    labels: LabelSet,
    candidates: SplitCandidates,
    device: str,
    train_documents: Sequence[dict[str, Any]] | None = None,
    style: PromptStyle = PLAIN,
) -> tuple[OfflineEvaluation, list[PairOutcome]]:
    """The adapter's DocRED F1 on ``candidates`` (its answer alone) beside the encoder alone on the
    same documents, and every pair's answer (to tune the decision on). Ign F1 against
    ``train_documents``' facts (default: Re-DocRED's train split)."""
    started = time.monotonic()
    outcomes = offline_outcomes(model, tokenizer, labels, candidates, device, style)
    gold = [raw for raw, _found in candidates.documents]
    encoder_predictions = [
        {"title": raw["title"], "h_idx": h, "t_idx": t, "r": r, "evidence": []}
        for raw, found in candidates.documents
        for h, t, r, _p in found.encoder_predictions
    ]
    llm = docred_scores(gold, decided_predictions(outcomes, Decision()), train_documents)
    encoder = docred_scores(gold, encoder_predictions, train_documents)
    scores = OfflineEvaluation(
        split=candidates.split,
        documents=len(gold),
        pairs=len(outcomes),
        llm_f1=llm["f1"],
        llm_ign_f1=llm["ign_f1"],
        llm_precision=llm["precision"],
        llm_recall=llm["recall"],
        encoder_f1=encoder["f1"],
        encoder_ign_f1=encoder["ign_f1"],
        none_answers=sum(1 for outcome in outcomes if not outcome.predicted),
        seconds=round(time.monotonic() - started, 1),
    )
    return scores, outcomes
