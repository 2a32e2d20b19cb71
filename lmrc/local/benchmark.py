"""End-to-end benchmark (a script that prints figures, not a test): documents per second through
the whole pipeline and through each stage alone, per-document latency from publish to its last
relation in the graph, and the bottleneck.

Everything runs on this machine, in one run, on the same documents: the local broker, the local
TGI-compatible server with the shipped adapter, the three services in threads of this process,
the embedded graph.

1. Each stage alone: the stage's input topic is filled first (documents published; for the
   classifier and the sink, what the stage before wrote), then the stage starts and is timed from
   the moment it has joined its group to the moment every document is through it (its record of
   each document written; for the sink, its input committed).
2. End to end: fresh topics, all three stages running, documents published one by one (``interval``
   seconds apart; 0: all at once, the pipeline's saturated throughput). A document's latency is
   from its publication to the graph transaction that wrote its last relation.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR
from lmrc.classifier.artifact import load_config as load_classifier_config
from lmrc.local.broker import LocalBroker
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.local.pipeline import (
    STAGES,
    CompletionTracker,
    DocumentProgress,
    LocalPipeline,
    start_thread,
    stop_all,
)
from lmrc.local.publish import publish
from lmrc.runtime import KafkaSettings, ServiceRuntime
from lmrc.sink.graph import DocumentChange, DocumentState, GraphStore
from lmrc.sink.settings import SinkSettings, open_store
from lmrc.topology import TopicNames

UNITS = {"proposer": "documents", "classifier": "candidate pairs", "sink": "relations"}
#: When a stage is through every document, from the pipeline's per-document records.
THROUGH: dict[str, Callable[[DocumentProgress], bool]] = {
    "proposer": lambda p: p.through_proposer == p.documents,
    "classifier": lambda p: p.through_classifier == set(p.proposed) & p.documents,
    "sink": lambda p: p.done,
}


class TimedStore:
    """The real graph store, noting when each document's relations were committed to it; every
    other call goes to the store as it is."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.written_at: dict[str, float] = {}  # doc_id -> time its latest transaction committed

    def apply(
        self,
        changes: Sequence[DocumentChange],
        states: dict[str, DocumentState] | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        written = self.store.apply(changes, states, processed_at)
        now = time.monotonic()
        for change in changes:
            if not change.deleted:
                self.written_at[change.doc_id] = now
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@dataclass(frozen=True)
class StageFigures:
    stage: str
    unit: str
    items: int
    seconds: float
    items_per_second: float
    documents_per_second: float


@dataclass
class BenchmarkReport:
    documents: int
    interval_seconds: float
    stages: list[StageFigures] = field(default_factory=list)
    end_to_end_seconds: float = 0.0
    end_to_end_documents_per_second: float = 0.0
    latencies_seconds: dict[str, float] = field(default_factory=dict)  # doc_id -> latency
    documents_without_relations: int = 0

    @property
    def bottleneck(self) -> StageFigures:
        return min(self.stages, key=lambda s: s.documents_per_second)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the document latencies."""
        values = sorted(self.latencies_seconds.values())
        if not values:
            return float("nan")
        rank = max(1, min(len(values), round(q / 100 * len(values) + 0.5)))
        return values[rank - 1]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "latency_p50_seconds": self.percentile(50),
            "latency_p99_seconds": self.percentile(99),
            "bottleneck": self.bottleneck.stage,
        }


class _Bench:
    """One broker and one TGI server; the pipeline assembled on a given set of topics."""

    def __init__(self, broker: LocalBroker, tgi: LocalTgiServer, adapter_id: str, work: Path) -> None:
        self.kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        self.client = self.kafka.client_config()
        self.tgi_url = tgi.url
        self.adapter_id = adapter_id
        self.work = work

    def pipeline(self, prefix: str) -> LocalPipeline:
        return LocalPipeline(
            self.kafka,
            self.tgi_url,
            self.adapter_id,
            self.work / f"{prefix}.lbug",
            topics=TopicNames(prefix),
            batch_wait_seconds=0.05,
        )

    def build(self, pipeline: LocalPipeline, stage: str) -> tuple[ServiceRuntime, TimedStore | None]:
        if stage != "sink":
            return pipeline.build(stage), None
        settings = pipeline.settings("sink")
        assert isinstance(settings, SinkSettings)
        store = TimedStore(open_store(settings))
        return pipeline.build("sink", store=store), store

    def wait(self, tracker: CompletionTracker, stage: str) -> DocumentProgress:
        return (
            tracker.wait(3600, poll_seconds=0.05) if stage == "sink" else _wait_until(tracker, THROUGH[stage])
        )


def _wait_until(
    tracker: CompletionTracker, through: Callable[[DocumentProgress], bool], timeout: float = 3600
) -> DocumentProgress:
    deadline = time.monotonic() + timeout
    while not through(tracker.progress):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not through within {timeout:.0f}s")
        tracker.poll(0.05)
    return tracker.progress


def _joined(runtime: ServiceRuntime, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while runtime.assigned_partitions == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{runtime.service} did not join its group within {timeout}s")
        time.sleep(0.02)


def _stages_alone(bench: _Bench, payloads: list[tuple[str, bytes]]) -> list[StageFigures]:
    pipeline = bench.pipeline("bench-stages")
    documents = {doc_id for doc_id, _payload in payloads}
    publish(bench.client, pipeline.topics.documents, iter(payloads))
    tracker = CompletionTracker(bench.client, pipeline, documents)
    figures = []
    try:
        for stage in STAGES:
            runtime, store = bench.build(pipeline, stage)
            thread = start_thread(runtime)
            try:
                _joined(runtime)
                started = time.monotonic()
                progress = bench.wait(tracker, stage)
                seconds = time.monotonic() - started
            finally:
                stop_all([runtime], [thread])
                if store is not None:
                    store.close()
            items = {
                "proposer": len(documents),
                "classifier": progress.pairs()[1],
                "sink": sum(len(s["relations"]) for s in progress.classified.values()),
            }[stage]
            figures.append(
                StageFigures(
                    stage=stage,
                    unit=UNITS[stage],
                    items=items,
                    seconds=round(seconds, 3),
                    items_per_second=round(items / seconds, 3),
                    documents_per_second=round(len(payloads) / seconds, 4),
                )
            )
            print(f"  {stage} alone: {items} {UNITS[stage]} in {seconds:.1f}s", flush=True)
    finally:
        tracker.close()
    return figures


def _end_to_end(
    bench: _Bench, payloads: list[tuple[str, bytes]], interval: float, report: BenchmarkReport
) -> None:
    pipeline = bench.pipeline("bench-e2e")
    built = [bench.build(pipeline, stage) for stage in STAGES]
    runtimes = [runtime for runtime, _store in built]
    store = built[-1][1]
    assert store is not None
    threads = [start_thread(runtime) for runtime in runtimes]
    tracker = CompletionTracker(bench.client, pipeline, {doc_id for doc_id, _payload in payloads})
    published_at: dict[str, float] = {}
    try:
        for runtime in runtimes:
            _joined(runtime)
        started = time.monotonic()
        for key, value in payloads:
            published_at[key] = time.monotonic()
            publish(bench.client, pipeline.topics.documents, iter([(key, value)]))
            if interval:
                time.sleep(max(0.0, published_at[key] + interval - time.monotonic()))
        tracker.wait(3600, poll_seconds=0.05)
        report.end_to_end_seconds = round(time.monotonic() - started, 3)
    finally:
        tracker.close()
        stop_all(runtimes, threads)
        store.close()
    report.end_to_end_documents_per_second = round(len(payloads) / report.end_to_end_seconds, 4)
    report.latencies_seconds = {
        doc: round(store.written_at[doc] - at, 3)
        for doc, at in published_at.items()
        if doc in store.written_at
    }
    report.documents_without_relations = len(published_at) - len(report.latencies_seconds)


def run_benchmark(documents: int = 3, interval: float = 0.0, split: str = "holdout") -> BenchmarkReport:
    raw = docred.load_split(split)[:documents]  # type: ignore[arg-type]
    payloads = [
        (event.doc_id, event.model_dump_json().encode())
        for event in (docred.to_document_event(doc, dataset=f"redocred-{split}") for doc in raw)
    ]
    adapter = load_classifier_config(DEFAULT_ADAPTER_DIR)
    report = BenchmarkReport(documents=len(payloads), interval_seconds=interval)
    with (
        tempfile.TemporaryDirectory(prefix="lmrc-bench-") as work,
        LocalBroker(log_path=Path(work) / "broker.log") as broker,
        LocalTgiServer({adapter.version: DEFAULT_ADAPTER_DIR}, log_path=Path(work) / "tgi.log") as tgi,
    ):
        bench = _Bench(broker, tgi, adapter.version, Path(work))
        print(f"benchmark: {len(payloads)} {split} documents; each stage alone, then end to end", flush=True)
        report.stages = _stages_alone(bench, payloads)
        _end_to_end(bench, payloads, interval, report)
    return report


def format_report(report: BenchmarkReport) -> str:
    header = f"{'stage':<22} {'input':<16} {'items':>6} {'seconds':>8} {'items/s':>9} {'docs/s':>8}"
    lines = [header, "-" * len(header)]
    for s in report.stages:
        lines.append(
            f"{s.stage + ' alone':<22} {s.unit:<16} {s.items:>6} {s.seconds:>8.2f} "
            f"{s.items_per_second:>9.2f} {s.documents_per_second:>8.3f}"
        )
    lines.append(
        f"{'end to end':<22} {'documents':<16} {report.documents:>6} {report.end_to_end_seconds:>8.2f} "
        f"{'':>9} {report.end_to_end_documents_per_second:>8.3f}"
    )
    latencies = list(report.latencies_seconds.values())
    mean = statistics.fmean(latencies) if latencies else float("nan")
    pace = f"one every {report.interval_seconds:g}s" if report.interval_seconds else "all at once"
    without = report.documents_without_relations
    lines.append(
        f"document latency, publish to its last relation in the graph ({pace}): "
        f"p50 {report.percentile(50):.2f}s, p99 {report.percentile(99):.2f}s, mean {mean:.2f}s "
        f"over {len(latencies)} documents" + (f" ({without} without relations)" if without else "")
    )
    slowest = report.bottleneck
    others = [s for s in report.stages if s is not slowest]
    runner_up = min(others, key=lambda s: s.documents_per_second) if others else slowest
    lines.append(
        f"bottleneck: {slowest.stage} ({slowest.documents_per_second:.3f} docs/s alone, "
        f"{runner_up.documents_per_second / slowest.documents_per_second:.0f}x slower than the next "
        f"slowest stage, the {runner_up.stage}); end to end runs at "
        f"{report.end_to_end_documents_per_second / slowest.documents_per_second:.0%} of its rate"
    )
    return "\n".join(lines)
