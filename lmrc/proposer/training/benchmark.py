"""Benchmarks (not tests): the proposer's ways of running, side by side in one run.

Per document the clock covers what the service does: featurize, then score every pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmrc import docred
from lmrc.proposer.artifact import Precision, featurizer_for, pair_graph_path
from lmrc.proposer.features import DocumentFeatures, DocumentFeaturizer
from lmrc.proposer.inference import OnnxPairScorer, pairs_per_run
from lmrc.proposer.training.selection import candidate_scores


@dataclass(frozen=True)
class BenchmarkRow:
    engine: str
    documents_per_second: float
    pairs_per_second: float
    p50_ms: float
    p99_ms: float
    pair_recall: float
    pass_rate: float


def _run(
    engine: str,
    documents: list[dict[str, Any]],
    featurizer: DocumentFeaturizer,
    score: Callable[[DocumentFeatures], np.ndarray],
    threshold: float,
) -> BenchmarkRow:
    for raw in documents[:2]:  # warm-up
        score(featurizer.featurize(docred.to_document_event(raw)))
    events = [docred.to_document_event(raw) for raw in documents]
    latencies, scored, pairs = [], [], 0
    started = time.perf_counter()
    for raw, event in zip(documents, events, strict=True):
        begin = time.perf_counter()
        features = featurizer.featurize(event)
        scores = score(features)
        latencies.append(time.perf_counter() - begin)
        scored.append((raw, features, scores))
        pairs += len(scores)
    elapsed = time.perf_counter() - started
    figures = candidate_scores(scored, threshold)
    return BenchmarkRow(
        engine=engine,
        documents_per_second=len(documents) / elapsed,
        pairs_per_second=pairs / elapsed,
        p50_ms=1000 * float(np.percentile(latencies, 50)),
        p99_ms=1000 * float(np.percentile(latencies, 99)),
        pair_recall=figures.pair_recall,
        pass_rate=figures.pass_rate,
    )


class _ReencodingScorer(OnnxPairScorer):
    """The service before the graphs were split (the baseline a speed report shows): the text is
    encoded again for every run of pairs, as the one graph holding encoder and pair head did."""

    def _run(self, outputs: list[str], features: DocumentFeatures) -> list[np.ndarray]:
        step = pairs_per_run(features.token_count, self.pair_budget_bytes, self.pair_width)
        parts = []
        for start in range(0, len(features.pair_heads), step):
            chosen = slice(start, start + step)
            part = replace(
                features, pair_heads=features.pair_heads[chosen], pair_tails=features.pair_tails[chosen]
            )
            parts.append(super()._run(outputs, part))
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]


#: The ways the benchmark runs an artifact: name -> (precision, text re-encoded per run of pairs).
VARIANTS: dict[str, tuple[Precision, bool]] = {
    "fp32-reencoded": ("fp32", True),
    "fp32": ("fp32", False),
    "int8": ("int8", False),
}


def measure_variant(
    artifact_dir: str, variant: str, split: str, threads: int, limit: int | None
) -> dict[str, Any]:
    """One artifact run one way over a split, in the process it is called in (the report runs each
    in a fresh one, so that peak RSS is the variant's own): speed, encoder passes, and the relations
    and evidence it predicts scored against the split's gold."""
    import resource

    from lmrc.docred.evaluation import evaluate_relations
    from lmrc.proposer.artifact import load_config
    from lmrc.proposer.training.evaluate import predicted_relations
    from lmrc.proposer.training.export import ensure_onnx

    precision, reencoded = VARIANTS[variant]
    config = load_config(artifact_dir)
    featurizer = featurizer_for(config)
    documents = docred.load_split(split)[:limit]  # type: ignore[arg-type]
    onnx = ensure_onnx(artifact_dir, precision=precision)
    make = _ReencodingScorer if reencoded else OnnxPairScorer
    scorer = make(onnx, ["CPUExecutionProvider"], threads, pair_width=config.pair_width)
    loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = [docred.to_document_event(raw) for raw in documents]
    for event in events[:2]:  # warm-up
        scorer.score_with_relations(featurizer.featurize(event), config.relation_loss)
    scorer.document_runs = 0
    relation_threshold = 0.5 if config.relation_threshold is None else config.relation_threshold
    latencies, predictions, pairs = [], [], 0
    started = time.perf_counter()
    for raw, event in zip(documents, events, strict=True):
        begin = time.perf_counter()
        features = featurizer.featurize(event)
        _pairs, relations, sentences = scorer.score_with_relations(features, config.relation_loss)
        latencies.append(time.perf_counter() - begin)
        pairs += len(features.pair_heads)
        predictions.extend(
            {"title": raw["title"], **found}
            for found in predicted_relations(config, features, relations, sentences, relation_threshold)
        )
    elapsed = time.perf_counter() - started
    scores = evaluate_relations(documents, predictions, docred.load_split("train")).scores
    return {
        "artifact": config.version,
        "encoder": config.encoder,
        "variant": variant,
        "precision": precision,
        "encoder_passes_per_document": round(scorer.document_runs / len(documents), 2),
        "documents_per_second": round(len(documents) / elapsed, 3),
        "pairs_per_second": round(pairs / elapsed, 1),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
        "f1": round(scores.f1, 4),
        "ign_f1": round(scores.ign_f1 or 0.0, 4),
        "evidence_f1": round(scores.evidence_f1, 4),
        "model_loaded_mib": round(loaded_mib),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "graph_mb": round((onnx.stat().st_size + pair_graph_path(onnx).stat().st_size) / 1e6, 1),
    }


def speed_report(
    artifact_dirs: list[Path],
    variants: list[str],
    split: str = "validation",
    threads: int = 2,
    limit: int | None = None,
) -> dict[str, Any]:
    """Every artifact run every way, side by side in one run: each variant in a fresh process, one
    at a time, with the same threads, on the same documents."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for directory in artifact_dirs:
        for variant in variants:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                rows.append(
                    pool.submit(measure_variant, str(directory), variant, split, threads, limit).result()
                )
    baseline = rows[0]
    for row in rows:
        row["speed_vs_first"] = round(row["documents_per_second"] / baseline["documents_per_second"], 2)
        row["f1_vs_first"] = round(row["f1"] - baseline["f1"], 4)
    documents = len(docred.load_split(split)[:limit])  # type: ignore[arg-type]
    return {"split": split, "documents": documents, "threads": threads, "rows": rows}


def format_report(report: dict[str, Any]) -> str:
    header = (
        f"{'artifact':<34} {'variant':<15} {'docs/s':>7} {'x':>5} {'passes':>6} {'p99 ms':>7} "
        f"{'F1':>6} {'evid F1':>7} {'RSS MiB':>7}"
    )
    lines = [f"{report['documents']} {report['split']} documents, {report['threads']} threads", header]
    lines.append("-" * len(header))
    for row in report["rows"]:
        lines.append(
            f"{row['artifact'][:34]:<34} {row['variant']:<15} {row['documents_per_second']:7.2f} "
            f"{row['speed_vs_first']:5.2f} {row['encoder_passes_per_document']:6.2f} {row['p99_ms']:7.0f} "
            f"{row['f1']:6.4f} {row['evidence_f1']:7.4f} {row['peak_rss_mib']:7d}"
        )
    return "\n".join(lines)


def compare_encoders(
    artifact_dirs: list[Path], split: str = "validation", threads: int = 2
) -> dict[str, Any]:
    """Artifacts trained on different encoders, side by side in one process: their validation
    figures (from calibration) and the ONNX CPU speed of what the service runs (all relation
    outputs), each on the same documents with the same threads."""
    from lmrc.proposer.artifact import WEIGHTS_FILE, featurizer_for, load_config
    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.training.export import ensure_onnx

    documents = docred.load_split(split)  # type: ignore[arg-type]
    rows = []
    for directory in artifact_dirs:
        config = load_config(directory)
        onnx_file = ensure_onnx(directory)
        scorer = OnnxPairScorer(onnx_file, ["CPUExecutionProvider"], threads, pair_width=config.pair_width)
        featurizer = featurizer_for(config)

        def score(
            features: DocumentFeatures, scorer: OnnxPairScorer = scorer, loss: str = config.relation_loss
        ) -> np.ndarray:
            return scorer.score_with_relations(features, loss)[0]

        speed = _run("onnxruntime CPU", documents, featurizer, score, config.threshold)
        rows.append(
            {
                "artifact": str(directory),
                "version": config.version,
                "encoder": config.encoder,
                "validation_relation_f1": config.relation_validation.get("f1"),
                "validation_evidence_f1": config.evidence_validation.get("f1"),
                "recall_target": config.recall_target,
                "validation_pair_recall": config.validation.get("pair_recall"),
                "validation_pass_rate": config.validation.get("pass_rate"),
                "onnx_cpu_documents_per_second": round(speed.documents_per_second, 2),
                "onnx_cpu_p50_ms": round(speed.p50_ms, 1),
                "onnx_cpu_p99_ms": round(speed.p99_ms, 1),
                "artifact_weights_mb": round((Path(directory) / WEIGHTS_FILE).stat().st_size / 1e6, 1),
                "onnx_mb": round(onnx_file.stat().st_size / 1e6, 1),
                "weights_format": config.weights_format,
                "training": {
                    k: config.training.get(k) for k in ("epochs", "best_epoch", "device", "seconds")
                },
            }
        )
    fastest = max(row["onnx_cpu_documents_per_second"] for row in rows)
    for row in rows:
        row["speed_vs_fastest"] = round(row["onnx_cpu_documents_per_second"] / fastest, 3)
    return {"split": split, "documents": len(documents), "threads": threads, "artifacts": rows}
