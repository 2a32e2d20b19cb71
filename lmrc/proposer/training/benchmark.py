"""Benchmark (not a test): torch eager vs ONNX Runtime on the same documents, side by side.

Per document the clock covers what the service does: featurize, then score every pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmrc import docred
from lmrc.proposer.artifact import featurizer_for
from lmrc.proposer.features import DocumentFeatures, DocumentFeaturizer
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


def run_benchmark(
    artifact_dir: Path, split: str = "validation", limit: int | None = None
) -> list[BenchmarkRow]:
    import torch

    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.training.export import ensure_onnx
    from lmrc.proposer.training.torch_model import load_artifact, torch_scores

    model, config = load_artifact(artifact_dir)
    featurizer = featurizer_for(config)
    documents = docred.load_split(split)[:limit]  # type: ignore[arg-type]
    onnx_file = ensure_onnx(artifact_dir)
    onnx_cpu = OnnxPairScorer(onnx_file, ["CPUExecutionProvider"], pair_width=config.pair_width)
    rows = [
        _run(f"torch eager ({torch.get_num_threads()} threads)", documents, featurizer,
             lambda f: torch_scores(model, f), config.threshold),
        _run("onnxruntime CPU", documents, featurizer, onnx_cpu.score, config.threshold),
    ]  # fmt: skip
    if "CUDAExecutionProvider" in OnnxPairScorer.available_providers():
        onnx_gpu = OnnxPairScorer(onnx_file, ["CUDAExecutionProvider"], pair_width=config.pair_width)
        rows.append(_run("onnxruntime CUDA", documents, featurizer, onnx_gpu.score, config.threshold))
    return rows


def format_rows(rows: list[BenchmarkRow], documents: int) -> str:
    header = (
        f"{'engine':<24} {'docs/s':>8} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'recall':>7} {'pass':>7}"
    )
    lines = [f"{documents} documents", header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.engine:<24} {r.documents_per_second:8.2f} {r.pairs_per_second:9.0f} {r.p50_ms:8.1f} "
            f"{r.p99_ms:8.1f} {r.pair_recall:7.4f} {r.pass_rate:7.4f}"
        )
    if len(rows) > 1:
        ratio = rows[1].documents_per_second / rows[0].documents_per_second
        lines.append(f"onnxruntime CPU / torch eager speed-up: {ratio:.2f}x")
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
