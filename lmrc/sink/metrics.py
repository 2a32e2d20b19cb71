"""The sink's own metrics, beside the runtime's."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RELATIONS_WRITTEN = Counter(
    "lmrc_sink_relations_written_total",
    "Relations the written documents hold in the graph store (re-deliveries count again, create nothing).",
    ["service", "backend"],
)
DOCUMENTS_WRITTEN = Counter(
    "lmrc_sink_documents_written_total",
    "Document versions (relation sets, also empty ones) written to the graph store, each replacing "
    "the version before.",
    ["service", "backend"],
)
DOCUMENTS_DELETED = Counter(
    "lmrc_sink_documents_deleted_total",
    "Documents removed from the graph store by a tombstone (unknown documents not counted).",
    ["service", "backend"],
)
STALE_VERSIONS = Counter(
    "lmrc_sink_stale_versions_total",
    "Relation sets skipped because the graph holds a later version of their document.",
    ["service", "backend"],
)
WRITE_SECONDS = Histogram(
    "lmrc_sink_write_seconds",
    "Seconds per batch write (one transaction) to the graph store.",
    ["service", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_ERRORS = Counter(
    "lmrc_sink_store_errors_total",
    "Failed batch writes, by error class (StoreUnavailableError batches are retried).",
    ["service", "backend", "error_class"],
)
