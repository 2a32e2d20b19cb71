"""The local run: a real broker, the pipeline's services built so far, documents in, results out.

Today: documents are published to ``lmrc.documents``; the proposer (ONNX) scores every entity
pair and emits candidate pairs to ``lmrc.candidates``; invalid or oversized documents are
dead-lettered. The run ends when the proposer has committed every published document (a document
with no candidate emits nothing, so committed offsets, not outputs, say when it is done), then
prints what went through and, for DocRED-format input, the proposer's recall and pass rate. The
classifier and the sink (with its embedded graph) join as the classifier lands (issue 4).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from lmrc import docred
from lmrc.broker import LocalBroker
from lmrc.evaluation import evaluate_candidates, format_candidates
from lmrc.publish import beginning_of, committed_offsets, iter_document_payloads, publish
from services.proposer.service import ProposerSettings
from services.proposer.service import build_runtime as build_proposer
from services.runtime import KafkaSettings


def _inputs(input_path: Path | None, limit: int | None) -> tuple[list[tuple[str, bytes]], list[dict], str]:
    if input_path is None:
        raw = docred.load_split("holdout")[:limit]
        payloads = [
            (event.doc_id, event.model_dump_json().encode())
            for event in (docred.to_document_event(doc, dataset="redocred-holdout") for doc in raw)
        ]
        return payloads, raw, "the Re-DocRED holdout split"
    payloads = list(iter_document_payloads(input_path))[:limit]
    text = input_path.read_text(encoding="utf-8").lstrip()
    gold = docred.load_raw(input_path)[:limit] if text.startswith("[") else []
    return payloads, gold, str(input_path)


def _read_all(
    client_config: dict[str, Any], topics: list[str], idle_seconds: float = 1.5
) -> list[tuple[str, Any]]:
    """Everything on the topics now (the producer confirmed it before its input was committed)."""
    import json

    consumer = Consumer({**client_config, "group.id": "lmrc-local-run-reader", "enable.auto.commit": False})
    records: list[tuple[str, Any]] = []
    try:
        consumer.assign(beginning_of(consumer, topics))
        last = time.monotonic()
        while time.monotonic() - last < idle_seconds:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                records.append((message.topic() or "", json.loads(message.value() or b"null")))
                last = time.monotonic()
    finally:
        consumer.close()
    return records


def run_local(input_path: Path | None, limit: int | None = None) -> int:
    payloads, gold, source = _inputs(input_path, limit)
    print(f"local run: {len(payloads)} documents from {source}")
    with LocalBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        settings = ProposerSettings(
            kafka=kafka, http_port=0, create_topics=True, max_batch_wait_seconds=0.2, session_timeout_ms=2000
        )
        proposer = build_proposer(settings)
        worker = threading.Thread(target=proposer.run, name="proposer", daemon=True)
        worker.start()
        print(
            f"broker (Tansu) on {broker.bootstrap_servers}; "
            f"proposer metrics on http://127.0.0.1:{proposer.http_port}/metrics"
        )
        started = time.monotonic()
        client = kafka.client_config()
        ends = publish(client, settings.input_topic, iter(payloads))
        total = sum(ends.values())
        print(f"published {len(payloads)} documents to {settings.input_topic}")
        try:
            done = -1
            while done < total:
                committed = committed_offsets(
                    client, settings.group_id, settings.input_topic, settings.topic_partitions
                )
                now = sum(min(committed.get(p, 0), end) for p, end in ends.items())
                if now != done:
                    print(f"  {now}/{total} documents processed by the proposer")
                    done = now
                if time.monotonic() - started > 600:
                    raise TimeoutError("the proposer did not finish within 10 minutes")
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            records = _read_all(client, [settings.output_topic or "", settings.dead_letter_topic])
        finally:
            proposer.stop()
            worker.join(30)
    candidates = [event for topic, event in records if topic == settings.output_topic]
    letters = Counter(event["error_class"] for topic, event in records if topic == settings.dead_letter_topic)
    with_candidates = {event["doc_id"] for event in candidates}
    print(
        f"done in {elapsed:.1f}s: {len(candidates)} candidate pairs for {len(with_candidates)} documents "
        f"on {settings.output_topic}; {sum(letters.values())} documents dead-lettered {dict(letters)}"
    )
    if gold:
        scores = evaluate_candidates(
            gold, [{"title": c["doc_id"], "h_idx": c["head"], "t_idx": c["tail"]} for c in candidates]
        )
        print(format_candidates(scores))
        per_document = scores.candidates / len(gold), scores.all_pairs / len(gold)
        print(f"LLM calls per document: {per_document[0]:.1f} instead of {per_document[1]:.1f} (every pair)")
    print("next stages (classifier, then sink into the embedded graph) join this run with issue 4")
    return 0
