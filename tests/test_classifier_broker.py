"""The classifier service on the real broker and the real local TGI server (through a fault proxy)."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Iterator

import pytest

from lmrc import docred
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
from lmrc.classifier.prompt import docred_labels
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings, build_runtime
from lmrc.classifier.tgi_client import RetryPolicy, TgiClient, TgiUnavailableError
from lmrc.contracts import (
    CandidatePair,
    CandidateSetEvent,
    DeadLetterEvent,
    DocumentEvent,
    RelationSetEvent,
    ScoredRelation,
    event_id,
)
from lmrc.contracts.tgi import GenerateRequest
from lmrc.local.broker import LocalBroker
from lmrc.local.llm.local_server import LocalTgiServer
from tests.faults import FaultyProxy
from tests.helpers import (
    committed_offsets,
    metric_value,
    produce,
    read_topic,
    running,
    scaled,
    service_test_fields,
    wait_committed,
    wait_for,
    wait_for_rewinds,
)

pytestmark = pytest.mark.broker

ADAPTER = load_config(DEFAULT_ADAPTER_DIR)
# A shortlist as the proposer gives one for a `country` pair: the gold relation on top.
SHORTLIST = [
    ScoredRelation(relation_id=relation_id, probability=probability)
    for relation_id, probability in [("P17", 0.86), ("P131", 0.31), ("P27", 0.12), ("P150", 0.04)]
]


@pytest.fixture(scope="module")
def candidates() -> CandidateSetEvent:
    """Gold ``country`` pairs of one holdout document: pairs the proposer exists to pass on."""
    raw = docred.load_split("holdout")[1]
    document = docred.to_document_event(raw)
    pairs = sorted({(label.h, label.t) for label in docred.labels_of(raw) if label.r == "P17"})[:3]
    return CandidateSetEvent(
        event_id=event_id(document.doc_id, "test"),
        doc_id=document.doc_id,
        pairs=[CandidatePair(head=h, tail=t, score=0.9, shortlist=SHORTLIST) for h, t in pairs],
        pairs_scored=document.pair_count(),
        proposer_model_version="rcp-test",
        document=document,
    )


def first_pairs(candidates: CandidateSetEvent, count: int) -> CandidateSetEvent:
    return candidates.model_copy(update={"pairs": candidates.pairs[:count]})


@pytest.fixture
def proxy(tgi_server: LocalTgiServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(tgi_server.url) as running_proxy:
        yield running_proxy


def classifier_settings(
    broker: LocalBroker, stem: str, tgi_url: str, **overrides: object
) -> ClassifierSettings:
    fields = service_test_fields(broker.bootstrap_servers, "classifier", stem, "candidates")
    fields.update(
        output_topic=f"{stem}.relations",
        retry_backoff_initial_seconds=0.2,
        retry_backoff_max_seconds=0.5,
        tgi_url=tgi_url,
        tgi_adapter_id=ADAPTER.version,
        tgi_backoff_initial_seconds=0.05,
        tgi_backoff_max_seconds=0.2,
        tgi_max_attempts=3,
        decision="llm",  # what the LLM answers, not the encoder's probabilities
    )
    fields.update(overrides)
    return ClassifierSettings(**fields)


def encoded(event: CandidateSetEvent) -> list[bytes | None]:
    return [event.model_dump_json().encode()]


def relation_set(broker: LocalBroker, settings: ClassifierSettings) -> RelationSetEvent:
    (record,) = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=1, settle=0.5)
    return RelationSetEvent.model_validate_json(record.value or b"")


def pairs_done(port: int, service: str) -> float:
    return sum(
        metric_value(port, "lmrc_classifier_pairs_total", service=service, outcome=outcome)
        for outcome in ("related", "unrelated", "failed")
    )


def test_a_candidate_set_becomes_one_relation_set(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    proxy.faults.extend(["503", "503"])  # TGI busy at first: retried, not lost
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(candidates))
        wait_for(
            lambda: pairs_done(runtime.http_port, settings.service_name) == len(candidates.pairs),
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
    record = relation_set(broker, settings)
    relations = record.relations
    assert record.doc_id == candidates.doc_id and record.candidate_pairs == len(candidates.pairs)
    assert record.event_id == event_id(candidates.event_id, ADAPTER.version) and not record.failed_pairs
    assert len(relations) == relations_counted
    pairs = {(pair.head, pair.tail) for pair in candidates.pairs}
    labels = docred_labels()
    for relation in relations:
        assert (relation.head.index, relation.tail.index) in pairs
        assert (
            relation.doc_id == candidates.doc_id
            and relation.relation_name == labels.names[relation.relation_id]
        )
        assert relation.head.name == candidates.document.entities[relation.head.index].name
        # The candidate set's id (document content, proposer) roots its relations' ids.
        assert relation.event_id == event_id(
            candidates.event_id, relation.head.index, relation.tail.index, relation.relation_id
        )
        assert relation.models.classifier == ADAPTER.version and relation.models.proposer == "rcp-test"
        assert 0.0 < relation.confidence <= 1.0
    assert "country" in {relation.relation_name for relation in relations}
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []
    assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {0: 1}


@pytest.mark.parametrize("fault", ["503", "500-text", "424", "drop", "slow"])
def test_a_pair_tgi_keeps_failing_alone_pauses_the_document_and_loses_no_relation(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent, fault: str
) -> None:
    """A one-pair document met by 503, a non-JSON 500, 424, a dropped connection or a timeout was
    committed with its pair in ``failed_pairs`` and no relation: lost for good. Now the batch is
    rewound (nothing committed) until the server answers; then the pair is classified."""
    # A timeout well above a real answer's time on a busy machine, and a stall well above that.
    timeout = scaled(5)
    proxy.always = f"slow:{4 * timeout}" if fault == "slow" else fault
    settings = classifier_settings(broker, unique, proxy.url, tgi_timeout_seconds=timeout)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(first_pairs(candidates, 1)))
        wait_for_rewinds(runtime.http_port, settings.service_name, "CircuitOpenError", 1, timeout=180)
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        assert proxy.generate_requests >= settings.tgi_max_attempts
        proxy.always = None  # the server recovers
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
        assert pairs_done(runtime.http_port, settings.service_name) == 1
    record = relation_set(broker, settings)
    assert record.failed_pairs == [] and record.candidate_pairs == 1
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_a_request_the_server_always_fails_while_answering_others_fails_that_pair_only(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """A request that breaks TGI every time (a 500 for it, answers for everything else) stalled its
    partition for good: each rewind asked it again. Now, the server answering a probe each time,
    the pair is failed by name after ``poison_request_rewinds`` rewinds and the document goes on
    with its other pair's answer."""
    two = first_pairs(candidates, 2)
    poisoned = two.pairs[1]
    assert poisoned.tail != two.pairs[0].tail
    proxy.poison = f"Tail: E{poisoned.tail} "  # in that pair's prompt only
    settings = classifier_settings(broker, unique, proxy.url, poison_request_rewinds=2)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(two))
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
        rewinds = metric_value(
            runtime.http_port,
            "lmrc_batch_retries_total",
            service=settings.service_name,
            error_class="CircuitOpenError",
        )
    assert rewinds == settings.poison_request_rewinds
    record = relation_set(broker, settings)
    (failed,) = record.failed_pairs
    assert (failed.head, failed.tail, failed.error_class) == (poisoned.head, poisoned.tail, "PoisonRequest")
    assert record.candidate_pairs == 2
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def _lengthened(
    candidates: CandidateSetEvent, extra_sentences: list[list[str]], first: int = 0
) -> CandidateSetEvent:
    """The document with ``extra_sentences`` inserted at sentence ``first`` (mentions shifted)."""
    document = candidates.document
    shift = len(extra_sentences)
    entities = [
        entity.model_copy(
            update={
                "mentions": [
                    m.model_copy(update={"sent_id": m.sent_id + shift}) if m.sent_id >= first else m
                    for m in entity.mentions
                ]
            }
        )
        for entity in document.entities
    ]
    sentences = [*document.sentences[:first], *extra_sentences, *document.sentences[first:]]
    longer = DocumentEvent.model_validate(
        {**document.model_dump(), "sentences": sentences, "entities": [e.model_dump() for e in entities]}
    )
    pairs = [
        p.model_copy(update={"evidence": [i + shift if i >= first else i for i in p.evidence]})
        for p in candidates.pairs
    ]
    return candidates.model_copy(update={"document": longer, "pairs": pairs})


def test_a_document_longer_than_the_server_takes_is_asked_in_each_pairs_window(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """The proposer admits documents the model server refuses (422 above its input tokens) for
    every pair: the document was committed with zero relations. Now each pair is asked again with
    the document narrowed to its own sentences, and answered."""
    filler = [s for raw in docred.load_split("holdout")[10:40] for s in raw["sents"]]
    long_set = _lengthened(first_pairs(candidates, 2), filler)
    assert len(" ".join(" ".join(s) for s in long_set.document.sentences)) > 4 * 4096  # over the limit
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(long_set))
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=240)
        windowed = metric_value(
            runtime.http_port, "lmrc_classifier_windowed_pairs_total", service=settings.service_name
        )
    record = relation_set(broker, settings)
    assert windowed == 2 and record.failed_pairs == [] and record.candidate_pairs == 2
    assert "country" in {relation.relation_name for relation in record.relations}


def test_a_document_no_pair_of_which_fits_the_server_is_dead_lettered_with_the_reason(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """Even a pair's own sentences over the server's input limit: a dead letter that says so, not
    a relation set with zero relations."""
    one = first_pairs(candidates, 1)
    head_sentence = one.document.entities[one.pairs[0].head].mentions[0].sent_id
    sentences = [list(s) for s in one.document.sentences]
    sentences[head_sentence] = sentences[head_sentence] + ["word"] * 6000
    giant = one.model_copy(
        update={
            "document": DocumentEvent.model_validate({**one.document.model_dump(), "sentences": sentences})
        }
    )
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(giant))
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=240)
    (record,) = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1)
    letter = DeadLetterEvent.model_validate_json(record.value or b"")
    assert letter.error_class == "AllPairsRejected" and "max-input-tokens" in letter.error_message
    assert read_topic(broker.bootstrap_servers, [settings.output_topic], expect=0, settle=0.5) == []


def test_an_answer_outside_the_label_set_fails_that_pair_only(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    proxy.faults.append("garbage")  # a server that ignored the grammar
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(first_pairs(candidates, 2)))
        wait_for(lambda: pairs_done(runtime.http_port, settings.service_name) == 2, timeout=180, what="pairs")
        record = relation_set(broker, settings)
    (failed,) = record.failed_pairs
    assert failed.error_class == "UnparseableAnswer" and "I think" in failed.error_message
    assert (failed.head, failed.tail) in {(p.head, p.tail) for p in candidates.pairs[:2]}
    assert all((r.head.index, r.tail.index) != (failed.head, failed.tail) for r in record.relations)
    assert proxy.generate_requests == 2  # not retried: the answer, not the server, was at fault


def test_a_pair_without_a_shortlist_fails_by_name_without_asking_tgi(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """A proposer without a relation head gives no options to choose from: nothing to ask."""
    bare = first_pairs(candidates, 1)
    bare = bare.model_copy(update={"pairs": [bare.pairs[0].model_copy(update={"shortlist": []})]})
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(bare))
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=60)
    (failed,) = relation_set(broker, settings).failed_pairs
    assert failed.error_class == "NoShortlist" and "relation head" in failed.error_message
    assert proxy.generate_requests == 0


def test_an_open_circuit_pauses_the_service_and_loses_nothing(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    proxy.always = "503"
    settings = classifier_settings(
        broker, unique, proxy.url, circuit_failure_threshold=2, circuit_reset_seconds=0.5, tgi_max_attempts=10
    )
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(first_pairs(candidates, 2)))
        wait_for_rewinds(runtime.http_port, settings.service_name, "CircuitOpenError", 2, timeout=180)
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        proxy.always = None  # TGI is back
        wait_for(
            lambda: pairs_done(runtime.http_port, settings.service_name) >= 2,
            timeout=180,
            what="pairs after recovery",
        )
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_a_republished_document_is_answered_from_memory_without_llm_calls(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """50 republishes cost 50 times the LLM calls: now the second copy of a candidate set (same
    content, same models) gets the same relation set, with no call."""
    once = first_pairs(candidates, 2)
    settings = classifier_settings(broker, unique, proxy.url)
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(once) * 3)
        records = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=3, timeout=180)
        duplicates = metric_value(
            runtime.http_port, "lmrc_classifier_duplicate_documents_total", service=settings.service_name
        )
    sets = [RelationSetEvent.model_validate_json(r.value or b"") for r in records]
    assert len(sets) == 3
    assert proxy.generate_requests == 2 and duplicates == 2
    assert len({s.event_id for s in sets}) == 1
    assert all(s.relations == sets[0].relations and not s.failed_pairs for s in sets)


@pytest.mark.parametrize("fault", ["401", "424", "html"])
def test_a_sick_or_misconfigured_model_server_pauses_the_service_and_blames_no_input(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent, fault: str
) -> None:
    """Wrong credentials, a wrong URL, TGI's generation error or a 200 from something that is not
    TGI failed every pair (and their documents went on with nothing): now the batch is rewound
    and retried, nothing committed, until the server answers; then the document completes."""
    proxy.always = fault
    settings = classifier_settings(
        broker, unique, proxy.url, circuit_failure_threshold=2, circuit_reset_seconds=0.5
    )
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(first_pairs(candidates, 2)))
        wait_for_rewinds(runtime.http_port, settings.service_name, "CircuitOpenError", 2, timeout=120)
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        proxy.always = None  # fixed
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
    record = relation_set(broker, settings)
    assert record.failed_pairs == [] and record.candidate_pairs == 2
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_an_outage_before_the_circuit_opens_rewinds_instead_of_failing_pairs(
    broker: LocalBroker, unique: str, proxy: FaultyProxy, candidates: CandidateSetEvent
) -> None:
    """Two pairs in flight, TGI down: each runs out of attempts long before the circuit (20
    failures) opens, but they fail together, so it is the server's fault: the batch is rewound."""
    proxy.always = "503"
    settings = classifier_settings(broker, unique, proxy.url, circuit_reset_seconds=0.5)
    assert settings.circuit_failure_threshold > 2 * settings.tgi_max_attempts
    runtime = build_runtime(settings)
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(first_pairs(candidates, 2)))
        wait_for_rewinds(runtime.http_port, settings.service_name, "CircuitOpenError", 1, timeout=120)
        assert committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1) == {}
        proxy.always = None
        wait_committed(broker.bootstrap_servers, settings.group_id, settings.input_topic, {0: 1}, timeout=180)
        assert pairs_done(runtime.http_port, settings.service_name) == 2  # classified, once back
        assert (
            metric_value(
                runtime.http_port,
                "lmrc_classifier_pairs_total",
                service=settings.service_name,
                outcome="failed",
            )
            == 0
        )
    assert not relation_set(broker, settings).failed_pairs
    assert read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=0, settle=0.5) == []


def test_the_service_refuses_an_adapter_trained_on_another_prompt() -> None:
    config = ADAPTER.model_copy(update={"prompt_version": "lmrc-rc-v0"})
    with pytest.raises(ValueError, match="prompt"):
        ClassifierHandler(ClassifierSettings(), config)


def test_credentials_in_the_tgi_url_become_basic_auth_and_never_reach_messages_or_logs(
    proxy: FaultyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request = GenerateRequest(inputs="x")
    with_credentials = proxy.url.replace("http://", "http://reader:s3cret@")

    async def ask(url: str) -> str:
        async with TgiClient(url, "redaction-test", retry=RetryPolicy(max_attempts=1)) as client:
            try:
                return (await client.generate(request)).generated_text
            except TgiUnavailableError as error:
                return str(error)

    proxy.faults.append("garbage")  # answered by the proxy itself: no model call needed
    assert asyncio.run(ask(with_credentials)).startswith("I think")
    assert proxy.authorizations == ["Basic " + base64.b64encode(b"reader:s3cret").decode()]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    message = asyncio.run(ask(f"http://reader:s3cret@127.0.0.1:{closed_port}"))
    assert message.startswith(f"cannot reach http://127.0.0.1:{closed_port}")
    assert "s3cret" not in message and "s3cret" not in caplog.text
