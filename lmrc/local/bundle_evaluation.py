"""``lmrc evaluate``: a bundle's figures on a holdout file, live through the broker and services,
beside the default bundle's Re-DocRED holdout figure measured in the same session.

What it runs, each as `lmrc run` would (the broker, the services, the embedded graph):
1. the holdout's documents with their gold entities, encoder only (the proposer's relation head);
2. the same documents through the LLM pipeline (the classifier on the model server), whose run
   also carries the encoder's own predictions on the same candidate pairs as a baseline;
3. the mention tagger on the holdout's text rebuilt from its tokens (mentions and entities);
4. the holdout's plain text through the annotator and the encoder-only pipeline, scored strict
   and relaxed against the gold documents;
5. the default bundle on Re-DocRED's holdout split, encoder only: the figure the project's own
   schema must keep.
The figures go to one JSON report (the project's: ``docs/results/cdr-live-evaluation.json``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from lmrc.bundle import load_bundle
from lmrc.classifier.artifact import load_config as load_classifier_config
from lmrc.docred import SPLIT_SIZES
from lmrc.docred.dataset import load_documents

STEPS = ("encoder_only", "llm", "annotator", "text_encoder_only", "default_bundle_holdout")


def _run(report: Path, **arguments: Any) -> dict[str, Any]:
    from lmrc.local.run import run_local

    started = time.monotonic()
    code = run_local(report_path=report, **arguments)
    if code:
        raise RuntimeError(f"the live run ended with status {code}")
    figures = json.loads(report.read_text(encoding="utf-8"))
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


def _scores(figures: dict[str, Any], key: str) -> dict[str, Any]:
    scores = figures[key]
    return {name: scores[name] for name in ("f1", "precision", "recall", "ign_f1") if name in scores}


def evaluate_bundle(
    models: Path, holdout: Path, out: Path, steps: tuple[str, ...] = STEPS, limit: int | None = None
) -> dict[str, Any]:
    from lmrc.annotator.training.evaluate import write_texts
    from lmrc.local.annotator_report import evaluate as annotator_report

    bundle = load_bundle(models)
    documents = load_documents(holdout, bundle.schema)[:limit]
    report: dict[str, Any] = {
        "bundle": str(models),
        "schema": bundle.schema.name,
        "models": {stage: entry.version for stage, entry in bundle.manifest.models.items()},
        "classifier_adapter": load_classifier_config(bundle.classifier_dir).version,
        "holdout": str(holdout),
        "documents": len(documents),
        "gold_relations": sum(len(raw["labels"]) for raw in documents),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "metric": "relation F1 over (head entity, tail entity, relation) of each document, gold in "
        "the bundle's schema (for CDR: the CID F1 over chemical-disease pairs)",
    }
    with tempfile.TemporaryDirectory(prefix="lmrc-evaluate-") as scratch:
        work = Path(scratch)
        graph = work / "graph.lbug"
        if "encoder_only" in steps:
            figures = _run(work / "encoder.json", input_path=holdout, limit=limit, graph_path=work / "g1",
                           encoder_only=True, models=models)  # fmt: skip
            report["encoder_only"] = {
                **_scores(figures, "scores_relations_topic"),
                "graph": _scores(figures, "scores_graph"),
                "seconds": figures["seconds"],
                "dead_letters": figures["dead_letters"],
            }
        if "llm" in steps:
            figures = _run(work / "llm.json", input_path=holdout, limit=limit, graph_path=work / "g2",
                           models=models)  # fmt: skip
            report["llm"] = {
                **_scores(figures, "scores_relations_topic"),
                "encoder_same_run": _scores(figures, "baseline_encoder_same_run"),
                "type_prior_same_run": _scores(figures, "baseline_type_prior_same_run"),
                "candidate_pairs": figures["candidate_pairs"],
                "llm_calls_per_document": figures["llm_calls_per_document"],
                "failed_pairs": figures["failed_pairs"],
                "seconds": figures["seconds"],
                "dead_letters": figures["dead_letters"],
            }
        if "annotator" in steps and bundle.model_dir("annotator") is not None:
            annotation = annotator_report(
                f"file {holdout}", work / "annotator.json", live=False, documents=documents, models=models
            )
            report["annotator"] = annotation["engines"]["tagger"]
        if "text_encoder_only" in steps and bundle.model_dir("annotator") is not None:
            texts = write_texts(documents, work / "texts.jsonl")
            figures = _run(work / "text.json", input_path=texts, graph_path=graph, encoder_only=True,
                           text=True, text_gold=documents, models=models)  # fmt: skip
            annotated = figures["annotated"]
            report["text_encoder_only"] = {
                "relations_strict": annotated["relations"]["strict"],
                "relations_relaxed": annotated["relations"]["relaxed"],
                "annotation": annotated["annotation"],
                "seconds": figures["seconds"],
            }
        if "default_bundle_holdout" in steps:
            figures = _run(work / "default.json", input_path=None, limit=SPLIT_SIZES["holdout"],
                           graph_path=work / "g3", encoder_only=True)  # fmt: skip
            report["default_bundle_holdout_encoder_only"] = {
                **_scores(figures, "scores_relations_topic"),
                "documents": figures["documents"],
                "seconds": figures["seconds"],
            }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
