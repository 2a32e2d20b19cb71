"""The annotator's report: each engine in-process on a split's text rebuilt from its tokens, then
the default engine through the live local pipeline on the same texts (annotator -> proposer ->
classifier -> sink through the broker and the model server): relation F1 strict and relaxed,
beside the encoder's own predictions from the same run. ``lmrc annotator evaluate`` writes it as
``docs/results/annotator-holdout.json``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR
from lmrc.annotator.training.evaluate import engine_scores, write_texts
from lmrc.annotator.training.export import ensure_tagger_onnx
from lmrc.bundle import load_bundle
from lmrc.local.pipeline import quiet_export
from lmrc.local.run import run_local


def evaluate(
    split: str,
    out: Path,
    live: bool = True,
    limit: int | None = None,
    documents: list[dict[str, Any]] | None = None,
    models: Path | None = None,
) -> dict[str, Any]:
    """Annotation figures (and, ``live``, relations end to end) on a split of Re-DocRED dev, or on
    ``documents`` (a user's DocRED-format file, ``split`` naming it). ``models``: a bundle whose
    tagger is measured (spaCy, which tags DocRED's types, only beside the default bundle's)."""
    if documents is None:
        documents = docred.load_split(split)  # type: ignore[arg-type]
    documents = documents[:limit]
    tagger_dir = load_bundle(models).require("annotator") if models is not None else DEFAULT_TAGGER_DIR
    with quiet_export():
        ensure_tagger_onnx(tagger_dir)
    names = ("tagger", "spacy") if models is None or load_bundle(models).is_default else ("tagger",)
    engines = {engine: engine_scores(engine, documents, tagger_dir) for engine in names}
    default = engines["tagger"]
    report: dict[str, Any] = {
        "split": split,
        "documents": len(documents),
        "text": "each sentence's tokens joined by one space, sentences by one space",
        "engine": "tagger",
        "mention_f1": default["mention_f1"],
        "entity_f1": default["entity_f1"],
        "typed_entity_f1": default["typed_entity_f1"],
        "engines": engines,
    }
    if live:
        with tempfile.TemporaryDirectory() as scratch:
            texts = write_texts(documents, Path(scratch) / "texts.jsonl")
            run_report = Path(scratch) / "run.json"
            code = run_local(texts, report_path=run_report, text=True, text_gold=documents, models=models)
            if code:
                raise RuntimeError(f"the live run ended with status {code}")
            run = json.loads(run_report.read_text())
        annotated = run["annotated"]
        gold_entities = sum(len(raw["vertexSet"]) for raw in documents)
        report.update(
            relation_f1_strict=annotated["relations"]["strict"]["f1"],
            relation_f1_relaxed=annotated["relations"]["relaxed"]["f1"],
            # Entity nodes the run's graph holds (every document's entities, resolved) per gold entity.
            graph_nodes_per_gold_entity=round(run["graph_store"]["entities"] / max(gold_entities, 1), 4),
            live_run={
                "relations": annotated["relations"],
                "relations_encoder_same_run": annotated.get("relations_encoder_same_run"),
                "annotation": annotated["annotation"],
                "seconds": run["seconds"],
                "candidate_pairs": run["candidate_pairs"],
                "relation_events": run["relation_events"],
                "dead_letters": run["dead_letters"],
            },
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
