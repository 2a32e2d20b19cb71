"""Fault tests on the real components: the three services as processes (as in a cluster), the
real broker, the local TGI-compatible server with the real small LLM, the embedded graph.

Each test breaks something mid-stream (a service killed with SIGKILL and started again, the model
server answering 503 for a while, the broker killed and started again, poison in every topic) and
ends with every document accounted for: its candidate pairs exactly those the proposer's model
gives, every relation event an edge of the graph exactly once, every bad message a dead letter.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lmrc.contracts import DocumentEvent
from lmrc.local.broker import LocalBroker, S3Storage
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.local.processes import LocalProcess
from lmrc.local.publish import publish
from lmrc.sink.ladybug_store import LadybugGraphStore
from tests.faults import FaultyProxy
from tests.helpers import (
    metric_sum,
    metric_value,
    produce,
    read_topic,
    scaled,
    small_documents,
    wait_for,
)
from tests.pipeline import SERVICES, Pipeline, assert_every_document_accounted_for

pytestmark = pytest.mark.broker

# Fewer candidate pairs than the shipped threshold gives (the LLM on CPU is the slow part): the
# tests are about where messages end up, not about recall.
THRESHOLD = 0.1


class LocalObjectStore(LocalProcess):
    """An S3-compatible server process (moto's), the broker's storage in the broker-restart test:
    the bucket outlives the broker process, as S3 outlives a Tansu pod."""

    name = "s3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def is_ready(self) -> bool:
        return httpx.get(f"{self.url}/", timeout=scaled(1)).status_code == 200

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, name: str) -> None:
        httpx.put(f"{self.url}/{name}", timeout=scaled(10)).raise_for_status()


@pytest.fixture(scope="module")
def onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, graphs_exist, load_config, onnx_path

    path = onnx_path(DEFAULT_ARTIFACT_DIR, load_config(DEFAULT_ARTIFACT_DIR))
    if graphs_exist(path):
        return path
    from lmrc.proposer.training.export import export_onnx

    return export_onnx(DEFAULT_ARTIFACT_DIR, tmp_path_factory.mktemp("onnx") / "proposer.onnx")


@pytest.fixture(scope="module")
def documents() -> list[DocumentEvent]:
    return small_documents(6, entities=3)


@pytest.fixture(scope="module")
def expected_pairs(onnx: Path, documents: list[DocumentEvent]) -> set[tuple[str, int, int]]:
    """The pairs the proposer's model passes on, computed here, outside the pipeline."""
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, load_config
    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.service import ProposerHandler, ProposerSettings

    handler = ProposerHandler(
        ProposerSettings(onnx_path=onnx, threshold=THRESHOLD),
        load_config(DEFAULT_ARTIFACT_DIR),
        OnnxPairScorer(onnx),
    )
    pairs = {(d.doc_id, p.head, p.tail) for d in documents for p in handler.propose(d).pairs}
    assert len({doc for doc, _h, _t in pairs}) == len(documents)  # every document has candidates
    return pairs


@pytest.fixture
def make_pipeline(
    broker: LocalBroker, tgi_server: LocalTgiServer, onnx: Path, unique: str, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config

    made: list[Pipeline] = []

    def make(bootstrap: str | None = None, tgi_url: str | None = None) -> Pipeline:
        pipeline = Pipeline(
            bootstrap=bootstrap or broker.bootstrap_servers,
            stem=unique,
            tgi_url=tgi_url or tgi_server.url,
            adapter_id=load_config(DEFAULT_ADAPTER_DIR).version,
            onnx_path=onnx,
            work=tmp_path,
            proposer_threshold=THRESHOLD,
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


def send(pipeline: Pipeline, documents: list[DocumentEvent]) -> None:
    payloads = [(d.doc_id, d.model_dump_json().encode()) for d in documents]
    publish({"bootstrap.servers": pipeline.bootstrap}, pipeline.documents_topic, iter(payloads))


@pytest.mark.parametrize("victim", SERVICES)
def test_a_service_killed_mid_stream_and_restarted_loses_nothing_and_duplicates_nothing(
    victim: str,
    make_pipeline: Callable[..., Pipeline],
    documents: list[DocumentEvent],
    expected_pairs: set[tuple[str, int, int]],
) -> None:
    pipeline = make_pipeline()
    pipeline.start()
    send(pipeline, documents[:3])
    pipeline.wait_progress(victim)
    pipeline.services[victim].kill()
    send(pipeline, documents[3:])  # arrives while the victim is down
    time.sleep(scaled(1))
    pipeline.services[victim].start()
    pipeline.services[victim].wait_ready()
    pipeline.drain()
    pipeline.stop()

    accounting = pipeline.account()
    assert_every_document_accounted_for(accounting, documents, expected_pairs)
    assert not any(accounting.dead_letters.values()), accounting.dead_letters
    assert accounting.graph_edges, "the run wrote no relation: the checks above compared nothing"


def test_a_tombstone_travels_through_every_stage_and_deletes_its_document_from_the_graph(
    make_pipeline: Callable[..., Pipeline], documents: list[DocumentEvent]
) -> None:
    """Published, then deleted (a null value under its id) on the documents topic: the proposer
    and the classifier pass the tombstone on in order, and the sink removes the document."""
    pipeline = make_pipeline()
    pipeline.start()
    send(pipeline, documents[:3])
    deleted = documents[0].doc_id
    publish({"bootstrap.servers": pipeline.bootstrap}, pipeline.documents_topic, iter([(deleted, None)]))
    pipeline.drain()
    pipeline.stop()

    accounting = pipeline.account()
    assert deleted not in accounting.documents_with_edges
    store = LadybugGraphStore(pipeline.graph_path, read_only=True)
    try:
        live = [d.doc_id for d in store.documents()]
        (marker,) = store.documents(doc_id=deleted, deleted=True)
    finally:
        store.close()
    assert live == sorted(d.doc_id for d in documents[1:3]) and marker.deleted
    on_relations = [
        (record.key, record.value is None)
        for record in read_topic(pipeline.bootstrap, [pipeline.relations_topic], expect=4)
        if record.key == deleted
    ]
    assert on_relations == [(deleted, False), (deleted, True)]  # its relation set, then its tombstone
    assert not any(accounting.dead_letters.values()), accounting.dead_letters


def test_model_server_answering_503_for_a_while_delays_but_loses_nothing(
    make_pipeline: Callable[..., Pipeline],
    tgi_server: LocalTgiServer,
    documents: list[DocumentEvent],
    expected_pairs: set[tuple[str, int, int]],
) -> None:
    with FaultyProxy(tgi_server.url) as proxy:
        pipeline = make_pipeline(tgi_url=proxy.url)
        pipeline.start()
        send(pipeline, documents)
        pipeline.wait_progress("classifier")
        proxy.always = "503"
        classifier = pipeline.services["classifier"]
        wait_for(
            lambda: (
                metric_value(classifier.port, "lmrc_classifier_tgi_circuit_open", service="classifier") == 1
            ),
            timeout=60,
            what="the classifier's circuit to open",
        )
        time.sleep(scaled(3))  # down for a while: the circuit's trial requests fail too
        proxy.always = None
        pipeline.drain()
        retried = metric_sum(classifier.port, "lmrc_batch_retries_total")
        refused = metric_sum(classifier.port, "lmrc_classifier_tgi_requests_total", outcome="TgiUnavailable")
        pipeline.stop()

    assert retried > 0 and refused >= 3
    accounting = pipeline.account()
    assert_every_document_accounted_for(accounting, documents, expected_pairs)
    # The open circuit rewinds whole batches: no pair was dead-lettered for the model server's sake.
    assert not any(accounting.dead_letters.values()), accounting.dead_letters
    assert accounting.graph_edges


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker whose data lives in an S3 bucket, so that it can be killed and started again."""
    with LocalObjectStore(log_path=tmp_path / "s3.log") as store:
        store.create_bucket("tansu")
        storage = S3Storage(
            store.url, "tansu", access_key_id="lmrc", secret_access_key="lmrc", region="us-east-1"
        )
        with LocalBroker(log_path=tmp_path / "broker.log", storage=storage) as broker:
            yield broker


def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    make_pipeline: Callable[..., Pipeline],
    restartable_broker: LocalBroker,
    documents: list[DocumentEvent],
    expected_pairs: set[tuple[str, int, int]],
) -> None:
    pipeline = make_pipeline(bootstrap=restartable_broker.bootstrap_servers)
    pipeline.start()
    send(pipeline, documents[:3])
    pipeline.wait_progress("classifier")
    restartable_broker.kill()
    time.sleep(scaled(3))  # every service sees the broker gone: failed fetches, produces and commits
    restartable_broker.start()
    send(pipeline, documents[3:])
    pipeline.drain()
    pipeline.stop()

    accounting = pipeline.account()
    assert_every_document_accounted_for(accounting, documents, expected_pairs)
    assert not any(accounting.dead_letters.values()), accounting.dead_letters
    assert accounting.graph_edges


def test_poison_in_every_topic_is_dead_lettered_and_the_rest_flows(
    make_pipeline: Callable[..., Pipeline],
    documents: list[DocumentEvent],
    expected_pairs: set[tuple[str, int, int]],
) -> None:
    out_of_range = json.loads(documents[0].model_dump_json())
    out_of_range["doc_id"] = "poison-offsets"
    out_of_range["entities"][0]["mentions"][0]["sent_id"] = 99
    poison_documents = {
        "poison-json": b"{not json",
        "poison-schema": b'{"doc_id": "poison-schema", "sentences": "none"}',
        "poison-offsets": json.dumps(out_of_range).encode(),
        "poison-empty": b"",
    }
    pipeline = make_pipeline()
    pipeline.start()
    valid = [(d.doc_id, d.model_dump_json().encode()) for d in documents]
    interleaved = [*valid[:2], *poison_documents.items(), *valid[2:]]
    publish({"bootstrap.servers": pipeline.bootstrap}, pipeline.documents_topic, iter(interleaved))
    pipeline.wait_progress("classifier")
    produce(pipeline.bootstrap, pipeline.candidates_topic, [b'{"doc_id": "x", "head": 0}'], key="poison-pair")
    # A version-1 event (one candidate pair, one relation) from a producer not yet upgraded.
    version_1_pair = {
        "schema_version": 1,
        "event_id": "v1",
        "doc_id": documents[0].doc_id,
        "head": 0,
        "tail": 1,
        "score": 0.9,
        "candidates_in_document": 1,
        "proposer_model_version": "rcp-v1",
        "document": json.loads(documents[0].model_dump_json()),
    }
    produce(
        pipeline.bootstrap, pipeline.candidates_topic, [json.dumps(version_1_pair).encode()], key="v1-pair"
    )
    pipeline.wait_progress("sink")
    produce(pipeline.bootstrap, pipeline.relations_topic, [b"\xff\xfe not utf-8"], key="poison-relation")
    version_1_relation = {"schema_version": 1, "event_id": "v1", "doc_id": "x", "relation_id": "P17"}
    produce(
        pipeline.bootstrap,
        pipeline.relations_topic,
        [json.dumps(version_1_relation).encode()],
        key="v1-relation",
    )
    pipeline.drain()
    pipeline.stop()

    accounting = pipeline.account()
    assert_every_document_accounted_for(
        accounting, documents, expected_pairs, dead_lettered_documents=frozenset(poison_documents)
    )
    letters = {service: {d.origin.key: d for d in accounting.dead_letters[service]} for service in SERVICES}
    assert set(letters["proposer"]) == set(poison_documents)
    assert letters["proposer"]["poison-json"].error_class == "MalformedJSON"
    assert letters["proposer"]["poison-schema"].error_class == "SchemaValidationError"
    assert "sent_id 99 out of range" in letters["proposer"]["poison-offsets"].error_message
    assert letters["proposer"]["poison-empty"].error_class == "EmptyMessage"
    assert set(letters["classifier"]) == {"poison-pair", "v1-pair"}
    assert letters["classifier"]["poison-pair"].error_class == "SchemaValidationError"
    assert set(letters["sink"]) == {"poison-relation", "v1-relation"}
    for letter in (letters["classifier"]["v1-pair"], letters["sink"]["v1-relation"]):
        assert letter.error_class == "UnsupportedSchemaVersion"
        assert "unsupported schema_version 1; this service reads version 2" in letter.error_message
    assert letters["sink"]["poison-relation"].payload_encoding == "base64"
    assert accounting.graph_edges
