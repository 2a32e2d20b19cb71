"""The classifier service on the real broker and the real local TGI server (through a fault proxy)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lmrc import docred
from lmrc.broker import LocalBroker
from lmrc.llm.local_server import LocalTgiServer
from schemas import CandidatePairEvent, DeadLetterEvent, RelationEvent, event_id
from services.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
from services.classifier.prompt import docred_labels
from services.classifier.service import ClassifierHandler, ClassifierSettings, build_runtime
from services.runtime import KafkaSettings
from tests.faults import FaultyProxy
from tests.helpers import (
    committed_offsets,
    metric_value,
    produce,
    read_topic,
    running,
    wait_committed,
    wait_for,
)

pytestmark = pytest.mark.broker

ADAPTER = load_config(DEFAULT_ADAPTER_DIR)


@pytest.fixture(scope="module")
def candidates() -> list[CandidatePairEvent]:
    """Gold ``country`` pairs of one holdout document: pairs the proposer exists to pass on."""
    raw = docred.load_split("holdout")[1]
    document = docred.to_document_event(raw)
    pairs = sorted({(label["h"], label["t"]) for label in raw["labels"] if label["r"] == "P17"})[:3]
    return [
        CandidatePairEvent(
            event_id=event_id(document.doc_id, h, t, "test"),
            doc_id=document.doc_id,
            head=h,
            tail=t,
            score=0.9,
            candidates_in_document=len(pairs),
            proposer_model_version="rcp-test",
            document=document,
        )
        for h, t in pairs
    ]


@pytest.fixture
def proxy(tgi_server: LocalTgiServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(tgi_server.url) as running_proxy:
        yield running_proxy


def classifier_settings(
    broker: LocalBroker, stem: str, tgi_url: str, **overrides: object
) -> ClassifierSettings:
    fields: dict[str, object] = {
        "service_name": f"classifier-{stem}",
        "group_id": f"group-{stem}",
        "input_topic": f"{stem}.candidates",
        "output_topic": f"{stem}.relations",
        "dead_letter_topic": f"{stem}.dlq",
        "kafka": KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        "http_port": 0,
        "create_topics": True,
        "topic_partitions": 1,
        "max_batch_wait_seconds": 0.1,
        "session_timeout_ms": 2000,
        "retry_backoff_initial_seconds": 0.2,
        "retry_backoff_max_seconds": 0.5,
        "tgi_url": tgi_url,
        "tgi_adapter_id": ADAPTER.version,
        "tgi_backoff_initial_seconds": 0.05,
        "tgi_backoff_max_seconds": 0.2,
        "tgi_max_attempts": 3,
    }
    fields.update(overrides)
    return ClassifierSettings(**fields)


def encoded(events: list[CandidatePairEvent]) -> list[bytes | None]:
    return [event.model_dump_json().encode() for event in events]


def pairs_done(port: int, service: str) -> float:
    return sum(
        metric_value(port, "lmrc_classifier_pairs_total", service=service, outcome=outcome)
        for outcome in ("related", "unrelated", "dead_lettered")
    )


def test_candidate_pairs_become_relation_events(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: list[CandidatePairEvent]
) -> None:
    proxy.faults.extend(["503", "503"])  # TGI busy at first: retried, not lost
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates))
        wait_for(
            lambda: pairs_done(runtime.http_port, settings.service_name) == len(candidates),
            timeout=180,
            what="pairs",
        )
        port = runtime.http_port
        assert (
            metric_value(
                port,
                "lmrc_classifier_tgi_retries_total",
                service=settings.service_name,
                reason="TgiUnavailable",
            )
            == 2
        )
        related = metric_value(
            port, "lmrc_classifier_pairs_total", service=settings.service_name, outcome="related"
        )
        relations_counted = metric_value(
            port, "lmrc_classifier_relations_total", service=settings.service_name
        )
        assert (
            metric_value(
                port, "lmrc_classifier_tgi_tokens_total", service=settings.service_name, direction="input"
            )
            > 1000
        )
    assert related >= 1, "the fine-tuned classifier found no relation on gold `country` pairs"
    records = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=int(relations_counted))
    relations = [RelationEvent.model_validate_json(record.value) for record in records]
    assert len(relations) == relations_counted
    by_pair = {(c.head, c.tail): c for c in candidates}
    labels = docred_labels()
    for relation in relations:
        candidate = by_pair[(relation.head.index, relation.tail.index)]
        assert (
            relation.doc_id == candidate.doc_id
            and relation.relation_name == labels.names[relation.relation_id]
        )
        assert relation.head.name == candidate.document.entities[candidate.head].name
        assert relation.event_id == event_id(
            candidate.doc_id, candidate.head, candidate.tail, relation.relation_id
        )
        assert relation.models.classifier == ADAPTER.version and relation.models.proposer == "rcp-test"
        assert 0.0 < relation.confidence <= 1.0
    assert "country" in {relation.relation_name for relation in relations}
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []
    assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {0: 3}


@pytest.mark.parametrize("fault", ["503", "slow:3"], ids=["503", "timeout"])
def test_a_pair_tgi_keeps_failing_is_retried_then_dead_lettered(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: list[CandidatePairEvent], fault: str
) -> None:
    proxy.always = fault
    settings = classifier_settings(broker, unique, proxy.url, tgi_timeout_seconds=1.0)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates[:1]))
        letters = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1, timeout=60)
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
    assert proxy.generate_requests == settings.tgi_max_attempts
    letter = DeadLetterEvent.model_validate_json(letters[0].value)
    assert letter.error_class == ("TgiUnavailable" if fault == "503" else "TgiTimeout")
    assert CandidatePairEvent.model_validate_json(letter.payload) == candidates[0]  # nothing lost
    assert letter.origin.topic == settings.input_topic and letter.origin.offset == 0
    assert read_topic(broker.bootstrap_servers, [settings.output_topic], expect=0, settle=0.5) == []


def test_an_answer_outside_the_label_set_is_dead_lettered(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: list[CandidatePairEvent]
) -> None:
    proxy.faults.append("garbage")  # a server that ignored the grammar
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates[:2]))
        letters = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1, timeout=60)
        wait_for(lambda: pairs_done(runtime.http_port, settings.service_name) == 2, timeout=180, what="pairs")
    letter = DeadLetterEvent.model_validate_json(letters[0].value)
    assert letter.error_class == "UnparseableAnswer" and "I think" in letter.error_message
    assert CandidatePairEvent.model_validate_json(letter.payload) in candidates[:2]
    assert proxy.generate_requests == 2  # not retried: the answer, not the server, was at fault


def test_an_open_circuit_pauses_the_service_and_loses_nothing(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: list[CandidatePairEvent]
) -> None:
    proxy.always = "503"
    settings = classifier_settings(
        broker, unique, proxy.url, circuit_failure_threshold=2, circuit_reset_seconds=0.5, tgi_max_attempts=10
    )
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates[:2]))
        wait_for(
            lambda: (
                metric_value(
                    runtime.http_port,
                    "lmrc_batch_retries_total",
                    service=settings.service_name,
                    error_class="CircuitOpenError",
                )
                >= 2
            ),
            timeout=180,
            what="batch retries",
        )
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        proxy.always = None  # TGI is back
        wait_for(
            lambda: pairs_done(runtime.http_port, settings.service_name) >= 2,
            timeout=180,
            what="pairs after recovery",
        )
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 2}, timeout=180)
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_an_outage_before_the_circuit_opens_rewinds_instead_of_dead_lettering(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: list[CandidatePairEvent]
) -> None:
    """Two pairs in flight, TGI down: each runs out of attempts long before the circuit (20
    failures) opens, but they fail together, so it is the server's fault: the batch is rewound."""
    proxy.always = "503"
    settings = classifier_settings(broker, unique, proxy.url, circuit_reset_seconds=0.5)
    assert settings.circuit_failure_threshold > 2 * settings.tgi_max_attempts
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates[:2]))
        wait_for(
            lambda: (
                metric_value(
                    runtime.http_port,
                    "lmrc_batch_retries_total",
                    service=settings.service_name,
                    error_class="CircuitOpenError",
                )
                >= 1
            ),
            timeout=120,
            what="a rewound batch",
        )
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        proxy.always = None
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 2}, timeout=180)
        assert pairs_done(runtime.http_port, settings.service_name) == 2  # classified, once back
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_the_service_refuses_an_adapter_trained_on_another_prompt() -> None:
    config = ADAPTER.model_copy(update={"prompt_version": "lmrc-rc-v0"})
    with pytest.raises(ValueError, match="prompt"):
        ClassifierHandler(ClassifierSettings(), config)
