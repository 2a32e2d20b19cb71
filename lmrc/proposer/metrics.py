"""The proposer's own metrics, beside the runtime's."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DOCUMENTS = Counter("lmrc_proposer_documents_total", "Documents scored.", ["service"])
PAIRS_SCORED = Counter("lmrc_proposer_pairs_scored_total", "Ordered entity pairs scored.", ["service"])
PAIRS_PASSED = Counter(
    "lmrc_proposer_pairs_passed_total", "Pairs passed on as candidates (score >= threshold).", ["service"]
)
PASS_RATIO = Gauge(
    "lmrc_proposer_pass_ratio", "Share of the pairs of the last batch that were passed on.", ["service"]
)
INFERENCE_SECONDS = Histogram(
    "lmrc_proposer_inference_seconds",
    "Seconds to featurize and score one document.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
