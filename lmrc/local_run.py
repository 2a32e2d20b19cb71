"""The local run: the whole pipeline on this machine, documents in, a graph of relations out.

A real broker (Tansu), the local TGI-compatible server with the shipped classifier adapter, the
three services (proposer, classifier, sink into the embedded LadybugDB graph), each in a thread
of this process. Documents are published to ``lmrc.documents``; each stage is done when its
consumer group has committed everything its input topic holds (a stage commits only after its
outputs are confirmed, so a committed input means its outputs exist). Then the relations are
printed, the graph's location is given, and for DocRED-format input the proposer's recall and
the pipeline's official DocRED scores.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from lmrc import docred
from lmrc.broker import LocalBroker
from lmrc.evaluation import evaluate_candidates, evaluate_relations, format_candidates
from lmrc.llm.local_server import LocalTgiServer
from lmrc.paths import REPO_ROOT
from lmrc.publish import beginning_of, committed_offsets, iter_document_payloads, publish
from services.classifier.artifact import DEFAULT_ADAPTER_DIR
from services.classifier.artifact import load_config as load_classifier_config
from services.classifier.service import ClassifierHandler, ClassifierSettings
from services.classifier.service import build_runtime as build_classifier
from services.proposer.service import ProposerSettings
from services.proposer.service import build_runtime as build_proposer
from services.runtime import KafkaSettings, ServiceRuntime, ServiceSettings
from services.sink.cli import format_table
from services.sink.graph import StoredRelation, entity_id
from services.sink.service import SinkHandler
from services.sink.service import build_runtime as build_sink
from services.sink.settings import SinkSettings, open_store

DEFAULT_DOCUMENTS = 3  # from the holdout split when no input is given: the LLM on CPU is the slow part
STAGE_TIMEOUT_SECONDS = 3600


def _inputs(input_path: Path | None, limit: int | None) -> tuple[list[tuple[str, bytes]], list[dict], str]:
    if input_path is None:
        raw = docred.load_split("holdout")[: limit or DEFAULT_DOCUMENTS]
        payloads = [
            (event.doc_id, event.model_dump_json().encode())
            for event in (docred.to_document_event(doc, dataset="redocred-holdout") for doc in raw)
        ]
        return payloads, raw, "the Re-DocRED holdout split"
    payloads = list(iter_document_payloads(input_path))[:limit]
    text = input_path.read_text(encoding="utf-8").lstrip()
    gold = docred.load_raw(input_path)[:limit] if text.startswith("[") else []
    return payloads, gold, str(input_path)


def read_all(
    client_config: dict[str, Any], topics: list[str], idle_seconds: float = 1.5
) -> list[tuple[str, int, int, Any]]:
    """Everything on the topics now: (topic, partition, offset, decoded value)."""
    consumer = Consumer({**client_config, "group.id": "lmrc-local-run-reader", "enable.auto.commit": False})
    records: list[tuple[str, int, int, Any]] = []
    try:
        consumer.assign(beginning_of(consumer, topics))
        last = time.monotonic()
        while time.monotonic() - last < idle_seconds:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                value = json.loads(message.value() or b"null")
                records.append(
                    (message.topic() or "", message.partition() or 0, message.offset() or 0, value)
                )
                last = time.monotonic()
    finally:
        consumer.close()
    return records


def record_ends(records: list[tuple[str, int, int, Any]], topic: str) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record_topic, partition, offset, _value in records:
        if record_topic == topic:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def wait_stage(
    client: dict[str, Any],
    settings: ServiceSettings,
    ends: dict[int, int],
    label: str,
    unit: str,
    show: bool = True,
    poll_seconds: float = 0.5,
) -> None:
    """Until the stage's group has committed ``ends`` on its input topic, printing progress."""
    total = sum(ends.values())
    started = time.monotonic()
    done = -1
    while done < total:
        committed = committed_offsets(
            client, settings.group_id, settings.input_topic, settings.topic_partitions
        )
        now = sum(min(committed.get(p, 0), end) for p, end in ends.items())
        if now != done:
            if show:
                print(f"  {label}: {now}/{total} {unit}", flush=True)
            done = now
        if time.monotonic() - started > STAGE_TIMEOUT_SECONDS:
            raise TimeoutError(f"{label} did not finish within {STAGE_TIMEOUT_SECONDS}s")
        if done < total:
            time.sleep(poll_seconds)


def start_thread(runtime: ServiceRuntime) -> threading.Thread:
    thread = threading.Thread(target=runtime.run, name=runtime.service, daemon=True)
    thread.start()
    return thread


def stop_all(runtimes: list[ServiceRuntime], threads: list[threading.Thread]) -> None:
    """Stop the in-process services and release what they hold (TGI client, graph store)."""
    for runtime in runtimes:
        runtime.stop()
    for thread in threads:
        thread.join(60)
    for runtime in runtimes:
        handler = runtime.handler
        if isinstance(handler, ClassifierHandler):
            handler.close()
        elif isinstance(handler, SinkHandler):
            handler.store.close()  # the embedded store has one writer: release it


def run_local(
    input_path: Path | None,
    limit: int | None = None,
    graph_path: Path | None = None,
    report_path: Path | None = None,
) -> int:
    payloads, gold, source = _inputs(input_path, limit)
    graph_path = graph_path or REPO_ROOT / "var" / "graph.lbug"
    adapter = load_classifier_config(DEFAULT_ADAPTER_DIR)
    print(f"local run: {len(payloads)} documents from {source}", flush=True)
    log_dir = REPO_ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (
        LocalBroker(log_path=log_dir / "broker.log") as broker,
        LocalTgiServer({adapter.version: DEFAULT_ADAPTER_DIR}, log_path=log_dir / "tgi.log") as tgi,
    ):
        common: dict[str, Any] = {
            "kafka": KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            "http_port": 0,
            "create_topics": True,
            "max_batch_wait_seconds": 0.2,
            "session_timeout_ms": 2000,
        }
        proposer_settings = ProposerSettings(**common)
        classifier_settings = ClassifierSettings(**common, tgi_url=tgi.url, tgi_adapter_id=adapter.version)
        sink_settings = SinkSettings(**common, ladybug_path=graph_path)
        runtimes = [
            build_proposer(proposer_settings),
            build_classifier(classifier_settings),
            build_sink(sink_settings),
        ]
        threads = [start_thread(runtime) for runtime in runtimes]
        print(f"broker (Tansu) on {broker.bootstrap_servers}; local TGI server on {tgi.url}")
        for runtime in runtimes:
            print(f"  {runtime.service} metrics on http://127.0.0.1:{runtime.http_port}/metrics")
        client = common["kafka"].client_config()
        started = time.monotonic()
        try:
            ends = publish(client, proposer_settings.input_topic, iter(payloads))
            print(f"published {len(payloads)} documents to {proposer_settings.input_topic}", flush=True)
            wait_stage(client, proposer_settings, ends, "proposer", "documents")
            stage_records = read_all(client, [classifier_settings.input_topic])
            wait_stage(
                client,
                classifier_settings,
                record_ends(stage_records, classifier_settings.input_topic),
                "classifier",
                "candidate pairs",
            )
            stage_records = read_all(client, [sink_settings.input_topic])
            wait_stage(
                client,
                sink_settings,
                record_ends(stage_records, sink_settings.input_topic),
                "sink",
                "relations",
            )
            elapsed = time.monotonic() - started
            topics = [
                classifier_settings.input_topic,
                sink_settings.input_topic,
                proposer_settings.dead_letter_topic,
                classifier_settings.dead_letter_topic,
                sink_settings.dead_letter_topic,
            ]
            records = read_all(client, topics)
        finally:
            stop_all(runtimes, threads)
    summary = _report(
        records, elapsed, gold, graph_path, proposer_settings, classifier_settings, sink_settings
    )
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps({"input": source, **summary}, indent=2) + "\n")
        print(f"figures written to {report_path}")
    return 0


def graph_predictions(stored: list[StoredRelation], gold: list[dict]) -> tuple[list[dict[str, Any]], int]:
    """The graph's edges as DocRED predictions, for the documents in ``gold``.

    The graph keys entities by normalised name and type, not by the document's entity index, so
    an edge maps back to every entity of its document with that key; returns the predictions and
    how many edges mapped to more than one index pair (two entities sharing name and type).
    """
    keys: dict[str, dict[str, list[int]]] = {}
    for raw in gold:
        event = docred.to_document_event(raw)
        by_key: dict[str, list[int]] = {}
        for index, entity in enumerate(event.entities):
            by_key.setdefault(entity_id(entity.name, entity.type), []).append(index)
        keys[event.doc_id] = by_key
    predictions, ambiguous = [], 0
    for edge in stored:
        by_key = keys.get(edge.doc_id)
        if by_key is None:
            continue  # an earlier run's document in the same graph directory
        heads, tails = by_key.get(edge.head_id, []), by_key.get(edge.tail_id, [])
        ambiguous += len(heads) * len(tails) > 1
        predictions += [
            {"title": edge.doc_id, "h_idx": h, "t_idx": t, "r": edge.relation_id}
            for h in heads
            for t in tails
            if h != t
        ]
    return predictions, ambiguous


def _report(
    records: list[tuple[str, int, int, Any]],
    elapsed: float,
    gold: list[dict],
    graph_path: Path,
    proposer: ProposerSettings,
    classifier: ClassifierSettings,
    sink: SinkSettings,
) -> dict[str, Any]:
    """Print what the run produced and, for DocRED input, its scores; return the figures."""

    def on(topic: str) -> list[Any]:
        return [value for record_topic, _p, _o, value in records if record_topic == topic]

    candidates, relations = on(classifier.input_topic), on(sink.input_topic)

    def letters(topic: str) -> dict[str, int]:
        return dict(Counter(event["error_class"] for event in on(topic)))

    dead_letters = {
        "documents": letters(proposer.dead_letter_topic),
        "pairs": letters(classifier.dead_letter_topic),
        "relations": letters(sink.dead_letter_topic),
    }
    print(
        f"done in {elapsed:.1f}s: {len(candidates)} candidate pairs, {len(relations)} relations; "
        f"dead letters: documents {dead_letters['documents']}, pairs {dead_letters['pairs']}, "
        f"relations {dead_letters['relations']}"
    )
    store = open_store(SinkSettings(ladybug_path=graph_path), read_only=True)
    try:
        counts = store.counts()
        print(format_table(store.relations(limit=40)))
        stored = store.relations(limit=None)
    finally:
        store.close()
    print(
        f"graph: {graph_path} (LadybugDB, embedded): {counts.entities} entities, "
        f"{counts.relations} relations from {counts.documents} documents; "
        f"query it with `lmrc graph --path {graph_path} relations`"
    )
    summary: dict[str, Any] = {
        "documents": len(gold) or None,
        "seconds": round(elapsed, 1),
        "candidate_pairs": len(candidates),
        "relation_events": len(relations),
        "dead_letters": dead_letters,
        "graph_store": {"path": str(graph_path), **asdict(counts)},
    }
    if not gold:
        return summary
    scores = evaluate_candidates(
        gold, [{"title": c["doc_id"], "h_idx": c["head"], "t_idx": c["tail"]} for c in candidates]
    )
    print(format_candidates(scores))
    print(
        f"LLM calls per document: {scores.candidates / len(gold):.1f} "
        f"instead of {scores.all_pairs / len(gold):.1f} (every pair)"
    )
    from_topic = [
        {
            "title": r["doc_id"],
            "h_idx": r["head"]["index"],
            "t_idx": r["tail"]["index"],
            "r": r["relation_id"],
        }
        for r in relations
    ]
    from_graph, ambiguous = graph_predictions(stored, gold)
    train = docred.load_split("train")
    summary["proposer"] = asdict(scores)
    summary["llm_calls_per_document"] = round(scores.candidates / len(gold), 2)
    summary["pairs_per_document"] = round(scores.all_pairs / len(gold), 2)
    for where, predictions in (("relations topic", from_topic), ("graph", from_graph)):
        result = evaluate_relations(gold, predictions, train).scores
        summary[f"scores_{where.replace(' ', '_')}"] = asdict(result)
        print(
            f"DocRED scores of the {where} on these {len(gold)} documents: F1 {result.f1:.4f}, "
            f"Ign F1 {result.ign_f1 or 0.0:.4f} (P {result.precision:.4f}, R {result.recall:.4f})"
        )
    if ambiguous:
        print(f"  ({ambiguous} graph edges join entities that share a name and type in their document)")
    summary["graph_edges_ambiguous"] = ambiguous
    return summary
