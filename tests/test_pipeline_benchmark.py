"""`lmrc benchmark`: each stage alone, then end to end, on the real broker, model server and graph."""

from __future__ import annotations

import math

import pytest

from lmrc.local.benchmark import run_benchmark


@pytest.mark.broker
def test_the_end_to_end_benchmark_times_every_document_into_the_graph() -> None:
    """Each document's latency runs from its publication to the graph transaction that wrote it:
    the timing store must see the sink's writes (it missed them after the sink moved to versioned
    documents, and every latency came back empty)."""
    report = run_benchmark(documents=2)
    assert [stage.stage for stage in report.stages] == ["proposer", "classifier", "sink"]
    assert all(stage.items > 0 and stage.seconds > 0 for stage in report.stages)
    assert report.documents_without_relations == 0 and len(report.latencies_seconds) == 2
    assert 0 < report.percentile(50) <= report.end_to_end_seconds and not math.isnan(report.percentile(99))
    assert report.bottleneck.stage == "classifier"
