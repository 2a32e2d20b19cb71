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
from lmrc.classifier.prompt import LabelSet, format_answer
from lmrc.classifier.training.train import PairBatcher, PairExample, autocast, options_of, suffix_forward
from lmrc.docred import evaluation
from lmrc.proposer.training.candidates import DocumentCandidates


@dataclass(frozen=True)
class SplitCandidates:
    split: str
    proposer: str
    shortlist_size: int
    documents: list[tuple[dict[str, Any], DocumentCandidates]]


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
    path: Path, split: str, proposer: str, shortlist_size: int, found: Sequence[DocumentCandidates]
) -> None:
    payload = {
        "split": split,
        "proposer": proposer,
        "shortlist_size": shortlist_size,
        "documents": [document.to_json() for document in found],
    }
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def load_candidates(path: Path) -> SplitCandidates:
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    raw_by_title = {raw["title"]: raw for raw in docred.load_split(payload["split"])}
    documents = [
        (raw_by_title[item["title"]], DocumentCandidates.from_json(item)) for item in payload["documents"]
    ]
    return SplitCandidates(payload["split"], payload["proposer"], payload["shortlist_size"], documents)


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
    rows_per_pass: int = 128,
) -> list[list[int]]:
    """Per pair, the allowed answer with the highest log-probability (chosen option indices)."""
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


def offline_scores(
    model: Any, tokenizer: Any, labels: LabelSet, candidates: SplitCandidates, split: str, device: str
) -> OfflineEvaluation:
    """The adapter's DocRED F1 on ``candidates`` beside the encoder alone on the same documents."""
    started = time.monotonic()
    batcher = PairBatcher(tokenizer, labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else batcher.eos
    llm_predictions, encoder_predictions = [], []
    pairs_total = none_answers = 0
    for raw, found in candidates.documents:
        encoder_predictions += [
            {"title": raw["title"], "h_idx": h, "t_idx": t, "r": r, "evidence": []}
            for h, t, r, _p in found.encoder_predictions
        ]
        pairs = [PairExample(p.head, p.tail, options_of(p.shortlist), "") for p in found.pairs if p.shortlist]
        if not pairs:
            continue
        document = docred.to_document_event(raw)
        for pair, chosen in zip(
            pairs, choose_options(model, batcher, document, pairs, pad_id, device), strict=True
        ):
            pairs_total += 1
            none_answers += not chosen
            llm_predictions += [
                {
                    "title": raw["title"],
                    "h_idx": pair.head,
                    "t_idx": pair.tail,
                    "r": pair.options[i].relation_id,
                    "evidence": [],
                }
                for i in chosen
            ]
    gold = [raw for raw, _found in candidates.documents]
    train_documents = docred.load_split("train")
    llm = evaluation.evaluate_relations(gold, llm_predictions, train_documents).scores
    encoder = evaluation.evaluate_relations(gold, encoder_predictions, train_documents).scores
    return OfflineEvaluation(
        split=split,
        documents=len(gold),
        pairs=pairs_total,
        llm_f1=round(llm.f1, 4),
        llm_ign_f1=round(llm.ign_f1 or 0.0, 4),
        llm_precision=round(llm.precision, 4),
        llm_recall=round(llm.recall, 4),
        encoder_f1=round(encoder.f1, 4),
        encoder_ign_f1=round(encoder.ign_f1 or 0.0, 4),
        none_answers=none_answers,
        seconds=round(time.monotonic() - started, 1),
    )
