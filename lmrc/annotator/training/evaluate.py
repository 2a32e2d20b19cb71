"""The annotator measured in-process on a split's text rebuilt from its tokens (no gold entity
used): mentions (exact spans), entity clusters (whole mention sets, singletons included), typed
entities, and speed, for each engine. The live report (``lmrc annotator evaluate``) adds the
end-to-end relation figures (``lmrc.local.annotator_report``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmrc.annotator.engine import Annotator, EngineName
from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR
from lmrc.annotator.training.export import ensure_tagger_onnx
from lmrc.docred.annotation import AnnotationScores
from lmrc.docred.text import rebuild_text


def engine_scores(
    engine: EngineName, documents: list[dict[str, Any]], tagger_dir: Path = DEFAULT_TAGGER_DIR
) -> dict[str, Any]:
    if engine == "tagger":
        ensure_tagger_onnx(tagger_dir)
    annotator = Annotator(engine, tagger_dir)
    scores = AnnotationScores()
    started = time.perf_counter()
    for raw in documents:
        rebuilt = rebuild_text(raw)
        document = annotator.annotate(raw["title"], raw["title"], rebuilt.text)
        scores.add(raw, document.model_dump(mode="json"))
    seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "version": annotator.version,
        **scores.as_dict(),
        "documents_per_second": round(len(documents) / seconds, 2),
    }


def write_texts(documents: list[dict[str, Any]], path: Path) -> Path:
    """The split as JSON lines of {"id", "title", "text"}: what ``lmrc run --text`` reads."""
    with open(path, "w", encoding="utf-8") as handle:
        for raw in documents:
            text = rebuild_text(raw).text
            handle.write(json.dumps({"id": raw["title"], "title": raw["title"], "text": text}) + "\n")
    return path
