"""The local run: a real broker, the services that exist so far, documents in, results out.

Today the pipeline's first hop runs here: documents are published to the raw topic and the relay
validates them onto the documents topic the proposer will consume (invalid ones are dead-lettered).
The proposer, classifier and sink join this run as they land (issues 3-5).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.broker import LocalBroker
from lmrc.publish import iter_document_payloads, publish, tail
from services.relay.service import RelaySettings, build_runtime
from services.runtime import KafkaSettings


def _holdout_payloads(limit: int | None) -> Iterator[tuple[str, bytes]]:
    for raw in docred.load_split("holdout")[:limit]:
        event = docred.to_document_event(raw, dataset="redocred-holdout")
        yield event.doc_id, event.model_dump_json().encode()


def run_local(input_path: Path | None, limit: int | None = None) -> int:
    if input_path is None:
        payloads = list(_holdout_payloads(limit))
        source = "Re-DocRED holdout split"
    else:
        payloads = list(iter_document_payloads(input_path))[:limit]
        source = str(input_path)
    print(f"local run: {len(payloads)} documents from {source}")
    with LocalBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        settings = RelaySettings(
            kafka=kafka, http_port=0, create_topics=True, max_batch_wait_seconds=0.2, session_timeout_ms=2000
        )
        relay = build_runtime(settings)
        worker = threading.Thread(target=relay.run, name="relay", daemon=True)
        worker.start()
        print(
            f"broker (Tansu) on {broker.bootstrap_servers}; relay metrics on http://127.0.0.1:{relay.http_port}/metrics"
        )
        started = time.monotonic()
        published = publish(kafka.client_config(), settings.input_topic, iter(payloads))
        print(f"published {published} documents to {settings.input_topic}")
        seen: Counter[str] = Counter()
        reasons: Counter[str] = Counter()

        def on_message(topic: str, event: dict[str, Any]) -> bool:
            seen[topic] += 1
            if topic == settings.dead_letter_topic:
                reasons[event.get("error_class", "?")] += 1
            done = sum(seen.values())
            if done % 10 == 0 or done == published:
                print(f"  {done}/{published} documents accounted for")
            return done < published

        try:
            tail(
                kafka.client_config(),
                [settings.output_topic, settings.dead_letter_topic],
                on_message,
                timeout=300,
            )
        finally:
            elapsed = time.monotonic() - started
            relay.stop()
            worker.join(30)
    print(
        f"done in {elapsed:.1f}s: {seen[settings.output_topic]} valid documents on {settings.output_topic}, "
        f"{seen[settings.dead_letter_topic]} dead-lettered on {settings.dead_letter_topic} {dict(reasons)}"
    )
    print("relation extraction stages (proposer, classifier, sink) are not part of this run yet")
    return 0
