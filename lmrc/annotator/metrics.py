"""The annotator's own metrics, beside the runtime's."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DOCUMENTS = Counter("lmrc_annotator_documents_total", "Texts annotated into documents.", ["service"])
MENTIONS = Counter("lmrc_annotator_mentions_total", "Entity mentions found.", ["service"])
ENTITIES = Histogram(
    "lmrc_annotator_entities",
    "Entities found per document.",
    ["service"],
    buckets=(0, 1, 2, 5, 10, 20, 40, 80, 150),
)
ANNOTATION_SECONDS = Histogram(
    "lmrc_annotator_annotation_seconds",
    "Seconds to annotate one text (sentences, tokens, mentions, entities).",
    ["service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
