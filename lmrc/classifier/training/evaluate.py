"""RC evaluation and benchmark against a TGI server (the local one by default).

- ``gold`` pairs: every gold relation pair of the split, as if the proposer were perfect. The
  classifier's upper bound: exact-match accuracy per pair, micro P/R/F1 over relation labels.
- ``proposer`` pairs: the shipped proposer's candidates. DocRED's official F1 / Ign F1 of the
  two stages together on those documents.
The benchmark is the same traffic, timed: requests/s, generated and prompt tokens/s, latency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from lmrc import docred
from lmrc.classifier.artifact import ClassifierConfig
from lmrc.classifier.prompt import LabelSet
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
from lmrc.contracts import CandidatePair, CandidateSetEvent, DocumentEvent, event_id
from lmrc.docred import evaluation

PairSource = Literal["gold", "proposer"]


@dataclass
class PairOutcome:
    title: str
    head: int
    tail: int
    gold: set[str]
    predicted: set[str] | None  # None: no usable answer (dead-lettered in the service)
    seconds: float
    error: str | None = None


@dataclass
class RcReport:
    source: PairSource
    documents: int
    pairs: int
    failed_pairs: int
    exact_match: float
    precision: float
    recall: float
    f1: float
    none_answers: int
    docred: dict[str, Any] = field(default_factory=dict)
    requests_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    generated_tokens_per_second: float = 0.0
    latency_p50_seconds: float = 0.0
    latency_p99_seconds: float = 0.0
    wall_seconds: float = 0.0


def candidate_pairs(
    raw_documents: list[dict[str, Any]], source: PairSource
) -> dict[str, list[tuple[int, int]]]:
    if source == "gold":
        return {raw["title"]: sorted(docred.gold_pairs(raw)) for raw in raw_documents}
    from lmrc.proposer.training.candidates import proposer_candidates

    return proposer_candidates(raw_documents)


def _candidates(document: DocumentEvent, pairs: list[tuple[int, int]]) -> CandidateSetEvent:
    return CandidateSetEvent(
        event_id=event_id(document.doc_id, "evaluation"),
        doc_id=document.doc_id,
        pairs=[CandidatePair(head=head, tail=tail, score=1.0) for head, tail in pairs],
        pairs_scored=document.pair_count(),
        proposer_model_version="evaluation",
        document=document,
    )


async def _classify_document(
    handler: ClassifierHandler, raw: dict[str, Any], pairs: list[tuple[int, int]], names: dict[str, str]
) -> list[PairOutcome]:
    candidates = _candidates(docred.to_document_event(raw), pairs)
    gold = {pair: {names[r] for r in found} for pair, found in docred.relations_by_pair(raw).items()}

    async def one(pair: CandidatePair) -> PairOutcome:
        head, tail = pair.head, pair.tail
        started = time.perf_counter()
        outcome = await handler.classify(candidates, pair)
        seconds = time.perf_counter() - started
        expected = gold.get((head, tail), set())
        if isinstance(outcome, Exception):
            return PairOutcome(
                raw["title"], head, tail, expected, None, seconds, f"{type(outcome).__name__}: {outcome}"
            )
        return PairOutcome(raw["title"], head, tail, expected, {r.relation_name for r in outcome}, seconds)

    return list(await asyncio.gather(*(one(pair) for pair in candidates.pairs)))


def evaluate(
    settings: ClassifierSettings,
    config: ClassifierConfig,
    split: str = "holdout",
    source: PairSource = "gold",
    limit: int | None = None,
    progress: Any = None,
) -> tuple[RcReport, list[PairOutcome]]:
    raw_documents = docred.load_split(split)[:limit]  # type: ignore[arg-type]
    pairs = candidate_pairs(raw_documents, source)
    handler = ClassifierHandler(settings, config)
    names = handler.labels.names  # the label set the classifier answers in
    outcomes: list[PairOutcome] = []
    tokens_before = _token_counts(settings.service_name)
    started = time.perf_counter()
    with handler:
        for raw in raw_documents:
            outcomes += handler.run(_classify_document(handler, raw, pairs.get(raw["title"], []), names))
            if progress is not None:
                progress(len(pairs.get(raw["title"], [])))
    wall = time.perf_counter() - started
    tokens_after = _token_counts(settings.service_name)
    report = _report(source, raw_documents, outcomes, split, handler.labels)
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


def _report(
    source: PairSource,
    raw_documents: list[dict[str, Any]],
    outcomes: list[PairOutcome],
    split: str,
    labels: LabelSet,
) -> RcReport:
    answered = [o for o in outcomes if o.predicted is not None]
    correct = sum(len(o.gold & o.predicted) for o in answered if o.predicted is not None)
    predicted = sum(len(o.predicted) for o in answered if o.predicted is not None)
    gold = sum(len(o.gold) for o in outcomes)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    report = RcReport(
        source=source,
        documents=len(raw_documents),
        pairs=len(outcomes),
        failed_pairs=len(outcomes) - len(answered),
        exact_match=round(sum(o.predicted == o.gold for o in answered) / len(outcomes), 4)
        if outcomes
        else 0.0,
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall), 4),
        none_answers=sum(1 for o in answered if not o.predicted),
    )
    ids = labels.ids_by_name
    predictions = [
        {"title": o.title, "h_idx": o.head, "t_idx": o.tail, "r": ids[name], "evidence": []}
        for o in answered
        for name in sorted(o.predicted or ())
    ]
    scores = evaluation.evaluate_relations(raw_documents, predictions, docred.load_split("train")).scores
    report.docred = {
        "split": split,
        "f1": round(scores.f1, 4),
        "ign_f1": round(scores.ign_f1 or 0.0, 4),
        "precision": round(scores.precision, 4),
        "recall": round(scores.recall, 4),
    }
    return report


def format_report(report: RcReport) -> str:
    lines = [
        f"RC on {report.source} pairs: {report.pairs} pairs of {report.documents} documents "
        f"({report.failed_pairs} without a usable answer, {report.none_answers} answered none)",
        f"  pair exact match {report.exact_match:.4f}   label P {report.precision:.4f}  "
        f"R {report.recall:.4f}  F1 {report.f1:.4f}",
        f"  DocRED ({report.docred.get('split')}, these documents): F1 {report.docred.get('f1', 0):.4f}  "
        f"Ign F1 {report.docred.get('ign_f1', 0):.4f}  P {report.docred.get('precision', 0):.4f}  "
        f"R {report.docred.get('recall', 0):.4f}",
        f"  speed: {report.requests_per_second:.2f} requests/s, {report.prompt_tokens_per_second:.0f} prompt "
        f"tokens/s, {report.generated_tokens_per_second:.1f} generated tokens/s, latency p50 "
        f"{report.latency_p50_seconds:.2f}s p99 {report.latency_p99_seconds:.2f}s, "
        f"wall {report.wall_seconds:.0f}s",
    ]
    return "\n".join(lines)
