"""RC evaluation and benchmark through a TGI server (the local one by default), as the service runs.

The pairs are a proposer's candidates with their shortlists, from a file written by ``lmrc
classifier candidates`` (the shipped ATLOP proposer on the validation or holdout split). Reported:
exact-match accuracy per pair, micro P/R/F1 over relation labels, DocRED's official F1 / Ign F1 of
the two stages together on those documents beside the encoder alone on the same documents, and
the speed of the traffic: requests/s, generated and prompt tokens/s, latency. The per-pair answers
can be written out (``--outcomes``), e.g. to study how the LLM and the encoder disagree.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from lmrc import docred
from lmrc.classifier.artifact import ClassifierConfig
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
from lmrc.classifier.training.decision import PairOutcome, docred_scores
from lmrc.classifier.training.offline import SplitCandidates
from lmrc.contracts import CandidatePair, CandidateSetEvent, ScoredRelation, event_id
from lmrc.proposer.training.candidates import DocumentCandidates


@dataclass
class RcReport:
    split: str
    proposer: str
    documents: int
    pairs: int
    failed_pairs: int
    exact_match: float
    precision: float
    recall: float
    f1: float
    none_answers: int
    docred: dict[str, Any] = field(default_factory=dict)
    encoder_only: dict[str, Any] = field(default_factory=dict)
    requests_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    generated_tokens_per_second: float = 0.0
    latency_p50_seconds: float = 0.0
    latency_p99_seconds: float = 0.0
    wall_seconds: float = 0.0


def candidate_set(raw: dict[str, Any], found: DocumentCandidates, proposer: str) -> CandidateSetEvent:
    """The CandidateSetEvent the proposer service would emit for the document."""
    document = docred.to_document_event(raw)
    return CandidateSetEvent(
        event_id=event_id(document.doc_id, proposer),
        doc_id=document.doc_id,
        pairs=[
            CandidatePair(
                head=pair.head,
                tail=pair.tail,
                score=pair.score,
                shortlist=[ScoredRelation(relation_id=r, probability=p) for r, p in pair.shortlist],
            )
            for pair in found.pairs
        ],
        pairs_scored=document.pair_count(),
        proposer_model_version=proposer,
        document=document,
    )


async def _classify_document(
    handler: ClassifierHandler, raw: dict[str, Any], candidates: CandidateSetEvent
) -> list[PairOutcome]:
    gold = docred.relations_by_pair(raw)

    async def one(pair: CandidatePair) -> PairOutcome:
        started = time.perf_counter()
        outcome = await handler.classify(candidates, pair)
        seconds = time.perf_counter() - started
        expected = set(gold.get((pair.head, pair.tail), set()))
        shortlist = [(s.relation_id, s.probability) for s in pair.shortlist]
        if isinstance(outcome, Exception):
            error = f"{type(outcome).__name__}: {outcome}"
            return PairOutcome(raw["title"], pair.head, pair.tail, expected, None, shortlist, seconds, error)
        predicted = {r.relation_id: r.confidence for r in outcome}
        return PairOutcome(raw["title"], pair.head, pair.tail, expected, predicted, shortlist, seconds)

    return list(await asyncio.gather(*(one(pair) for pair in candidates.pairs)))


def evaluate(
    settings: ClassifierSettings,
    config: ClassifierConfig,
    candidates: SplitCandidates,
    progress: Any = None,
) -> tuple[RcReport, list[PairOutcome]]:
    handler = ClassifierHandler(settings, config)
    outcomes: list[PairOutcome] = []
    tokens_before = _token_counts(settings.service_name)
    started = time.perf_counter()
    with handler:
        for raw, found in candidates.documents:
            event = candidate_set(raw, found, candidates.proposer)
            outcomes += handler.run(_classify_document(handler, raw, event))
            if progress is not None:
                progress(len(event.pairs))
    wall = time.perf_counter() - started
    tokens_after = _token_counts(settings.service_name)
    report = _report(candidates, outcomes)
    latencies = sorted(o.seconds for o in outcomes) or [0.0]
    report.wall_seconds = round(wall, 1)
    report.requests_per_second = round(len(outcomes) / wall, 3) if wall else 0.0
    report.prompt_tokens_per_second = round((tokens_after[0] - tokens_before[0]) / wall, 1) if wall else 0.0
    report.generated_tokens_per_second = (
        round((tokens_after[1] - tokens_before[1]) / wall, 2) if wall else 0.0
    )
    report.latency_p50_seconds = round(statistics.median(latencies), 3)
    report.latency_p99_seconds = round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3)
    return report, outcomes


def _token_counts(service: str) -> tuple[float, float]:
    """Prompt and generated tokens counted so far by the client's metrics."""
    from prometheus_client import REGISTRY

    def value(direction: str) -> float:
        labels = {"service": service, "direction": direction}
        return REGISTRY.get_sample_value("lmrc_classifier_tgi_tokens_total", labels) or 0.0

    return value("input"), value("output")


def _report(candidates: SplitCandidates, outcomes: list[PairOutcome]) -> RcReport:
    answered = [o for o in outcomes if o.predicted is not None]
    correct = sum(len(o.gold & set(o.predicted or ())) for o in answered)
    predicted = sum(len(o.predicted or ()) for o in answered)
    gold = sum(len(o.gold) for o in outcomes)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    raw_documents = [raw for raw, _found in candidates.documents]
    return RcReport(
        split=candidates.split,
        proposer=candidates.proposer,
        documents=len(raw_documents),
        pairs=len(outcomes),
        failed_pairs=len(outcomes) - len(answered),
        exact_match=round(sum(set(o.predicted or ()) == o.gold for o in answered) / len(outcomes), 4)
        if outcomes
        else 0.0,
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall), 4),
        none_answers=sum(1 for o in answered if not o.predicted),
        docred=docred_scores(
            raw_documents,
            [
                {"title": o.title, "h_idx": o.head, "t_idx": o.tail, "r": r, "evidence": []}
                for o in answered
                for r in sorted(o.predicted or ())
            ],
        ),
        encoder_only=docred_scores(
            raw_documents,
            [
                {"title": raw["title"], "h_idx": h, "t_idx": t, "r": r, "evidence": []}
                for raw, found in candidates.documents
                for h, t, r, _p in found.encoder_predictions
            ],
        ),
    )


def format_report(report: RcReport) -> str:
    lines = [
        f"RC on {report.proposer}'s candidates: {report.pairs} pairs of {report.documents} documents "
        f"({report.failed_pairs} without a usable answer, {report.none_answers} answered none)",
        f"  pair exact match {report.exact_match:.4f}   label P {report.precision:.4f}  "
        f"R {report.recall:.4f}  F1 {report.f1:.4f}",
        f"  DocRED ({report.split}, these documents): F1 {report.docred.get('f1', 0):.4f}  "
        f"Ign F1 {report.docred.get('ign_f1', 0):.4f}  P {report.docred.get('precision', 0):.4f}  "
        f"R {report.docred.get('recall', 0):.4f}",
        f"  encoder alone, same documents: F1 {report.encoder_only.get('f1', 0):.4f}  "
        f"Ign F1 {report.encoder_only.get('ign_f1', 0):.4f}",
        f"  speed: {report.requests_per_second:.2f} requests/s, {report.prompt_tokens_per_second:.0f} prompt "
        f"tokens/s, {report.generated_tokens_per_second:.1f} generated tokens/s, latency p50 "
        f"{report.latency_p50_seconds:.2f}s p99 {report.latency_p99_seconds:.2f}s, "
        f"wall {report.wall_seconds:.0f}s",
    ]
    return "\n".join(lines)
