"""The classifier's own metrics, beside the runtime's."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TGI_REQUESTS = Counter(
    "lmrc_classifier_tgi_requests_total",
    "HTTP requests to TGI, by outcome (ok or an error class).",
    ["service", "outcome"],
)
TGI_REQUEST_SECONDS = Histogram(
    "lmrc_classifier_tgi_request_seconds",
    "Seconds per TGI /generate request (one attempt).",
    ["service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TGI_RETRIES = Counter(
    "lmrc_classifier_tgi_retries_total",
    "TGI requests retried, by the error that caused it.",
    ["service", "reason"],
)
TGI_TOKENS = Counter(
    "lmrc_classifier_tgi_tokens_total",
    "Prompt (input) and generated (output) tokens.",
    ["service", "direction"],
)
CIRCUIT_OPEN = Gauge(
    "lmrc_classifier_tgi_circuit_open",
    "1 while the circuit breaker keeps requests away from TGI.",
    ["service"],
)
PAIRS = Counter(
    "lmrc_classifier_pairs_total",
    "Candidate pairs classified, by outcome (related, unrelated, failed).",
    ["service", "outcome"],
)
WINDOWED_PAIRS = Counter(
    "lmrc_classifier_windowed_pairs_total",
    "Pairs asked again with the document narrowed to their own sentences (TGI refused the whole).",
    ["service"],
)
RELATIONS = Counter("lmrc_classifier_relations_total", "Relations emitted.", ["service"])
DUPLICATES = Counter(
    "lmrc_classifier_duplicate_documents_total",
    "Candidate sets seen before (same content, same models): answered from memory, no LLM call.",
    ["service"],
)
DOCUMENTS = Counter(
    "lmrc_classifier_documents_total", "Documents completed (one relation set each).", ["service"]
)
RELATIONS_PER_PAIR = Histogram(
    "lmrc_classifier_relations_per_pair",
    "Relations predicted for one candidate pair.",
    ["service"],
    buckets=(0, 1, 2, 3, 5, 8),
)


def initialize_client(service: str, error_classes: tuple[str, ...], retry_reasons: tuple[str, ...]) -> None:
    """The TGI client's series at 0 from the start (see lmrc.runtime.metrics.initialize)."""
    for outcome in ("ok", *error_classes):
        TGI_REQUESTS.labels(service, outcome)
    for reason in retry_reasons:
        TGI_RETRIES.labels(service, reason)
    for direction in ("input", "output"):
        TGI_TOKENS.labels(service, direction)
    TGI_REQUEST_SECONDS.labels(service)
    CIRCUIT_OPEN.labels(service).set(0)


def initialize_pairs(service: str) -> None:
    """The handler's series at 0 from the start."""
    for outcome in ("related", "unrelated", "failed"):
        PAIRS.labels(service, outcome)
    WINDOWED_PAIRS.labels(service)
    RELATIONS.labels(service)
    DOCUMENTS.labels(service)
    RELATIONS_PER_PAIR.labels(service)
