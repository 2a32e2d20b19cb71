"""The three services as separate processes on one set of topics, as in a cluster, for fault tests.

Each service can be killed (SIGKILL: no flush, no commit, no goodbye to the group) and started
again. ``drain`` waits until every stage has committed everything its input holds; ``account``
then reads every topic and the graph and checks that each document ended somewhere: its
candidate pairs on the candidates topic (exactly those the proposer's model gives), each relation
event's edge in the graph exactly once, or a dead letter naming it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrc.contracts import CandidateSetEvent, DeadLetterEvent, DocumentEvent, Relation, RelationSetEvent
from lmrc.local.processes import free_port
from lmrc.paths import REPO_ROOT
from lmrc.runtime.topics import ensure_topics
from lmrc.sink.graph import node_id
from lmrc.sink.settings import SinkSettings, open_store
from lmrc.topology import TopicNames, dead_letter_topic
from tests.helpers import committed_offsets, http_get, read_topic, topic_ends, wait_committed, wait_for

REPO = REPO_ROOT
SERVICES = ("proposer", "classifier", "sink")


class ServiceProcess:
    """``python -m lmrc.<stage>`` with its settings in the environment, as the container runs it."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.port = free_port()
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, **self.env, f"{self.name.upper()}_HTTP_PORT": str(self.port)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"lmrc.{self.name}"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited ({self.process and self.process.returncode}):\n{log}")
        try:
            return http_get(self.port, "/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(self.ready, timeout=timeout, what=f"{self.name} ready")

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def metrics(self) -> str:
        return http_get(self.port, "/metrics")[1]


@dataclass
class Accounting:
    """What the topics and the graph hold once the pipeline has drained."""

    candidate_sets: list[CandidateSetEvent]
    relation_sets: list[RelationSetEvent]
    dead_letters: dict[str, list[DeadLetterEvent]]  # by the service that wrote them
    graph_edges: Counter[tuple[str, str, str, str]]  # (doc_id, head id, tail id, relation id)
    documents_with_edges: set[str] = field(default_factory=set)

    @property
    def candidates(self) -> set[tuple[str, int, int]]:
        """(doc_id, head, tail) of every candidate pair on the candidates topic."""
        return {(s.doc_id, p.head, p.tail) for s in self.candidate_sets for p in s.pairs}

    @property
    def relations(self) -> list[Relation]:
        return [relation for s in self.relation_sets for relation in s.relations]


@dataclass
class Pipeline:
    bootstrap: str
    stem: str
    tgi_url: str
    adapter_id: str
    onnx_path: Path
    work: Path
    proposer_threshold: float = 0.1
    partitions: int = 2
    services: dict[str, ServiceProcess] = field(init=False)

    def __post_init__(self) -> None:
        self.topics = TopicNames(self.stem)
        self.documents_topic = self.topics.documents
        self.candidates_topic = self.topics.candidates
        self.relations_topic = self.topics.relations
        self.inputs = {stage.name: stage.input for stage in self.topics.stages}
        self.graph_path = self.work / "graph.lbug"
        ensure_topics({"bootstrap.servers": self.bootstrap}, self.topics.all, partitions=self.partitions)
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            # Small batches: a kill lands between commits, with work in flight.
            "MAX_BATCH_WAIT_SECONDS": "0.2",
            "SESSION_TIMEOUT_MS": "2000",
            "RETRY_BACKOFF_INITIAL_SECONDS": "0.2",
            "RETRY_BACKOFF_MAX_SECONDS": "2",
            "DELIVERY_TIMEOUT_SECONDS": "10",
        }
        own = {
            "proposer": {
                "ONNX_PATH": str(self.onnx_path),
                "THRESHOLD": str(self.proposer_threshold),
                "MAX_BATCH_SIZE": "1",
                "OUTPUT_TOPIC": self.candidates_topic,
            },
            "classifier": {
                "TGI_URL": self.tgi_url,
                "TGI_ADAPTER_ID": self.adapter_id,
                "MAX_BATCH_SIZE": "4",
                "OUTPUT_TOPIC": self.relations_topic,
                "TGI_TIMEOUT_SECONDS": "120",
                "TGI_BACKOFF_INITIAL_SECONDS": "0.05",
                "TGI_BACKOFF_MAX_SECONDS": "0.5",
                "CIRCUIT_FAILURE_THRESHOLD": "3",
                "CIRCUIT_RESET_SECONDS": "1",
            },
            "sink": {"LADYBUG_PATH": str(self.graph_path), "MAX_BATCH_SIZE": "4"},
        }
        self.services = {}
        for name in SERVICES:
            prefix = name.upper()
            settings = {
                **common,
                **own[name],
                "INPUT_TOPIC": self.inputs[name],
                "DEAD_LETTER_TOPIC": dead_letter_topic(self.inputs[name]),
                "GROUP_ID": f"{self.stem}-{name}",
            }
            env = {
                (key if key.startswith("KAFKA_") else f"{prefix}_{key}"): value
                for key, value in settings.items()
            }
            self.services[name] = ServiceProcess(name, env, self.work)

    def group(self, service: str) -> str:
        return f"{self.stem}-{service}"

    def start(self) -> None:
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            service.wait_ready()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()

    def committed(self, service: str) -> int:
        offsets = committed_offsets(
            self.bootstrap, self.group(service), self.inputs[service], self.partitions
        )
        return sum(offsets.values())

    def wait_progress(self, service: str, timeout: float = 180) -> None:
        """Until ``service`` has committed some of its input (it is mid-stream)."""
        wait_for(lambda: self.committed(service) > 0, timeout=timeout, what=f"{service} to commit")

    def drain(self, timeout: float = 300) -> None:
        """Until each stage, in order, has committed everything its input topic holds.

        A stage commits only after its outputs are acknowledged, so once the proposer has
        committed every document, the candidates topic is complete, and so on down the line.
        """
        for service in SERVICES:
            topic = self.inputs[service]
            wait_committed(
                self.bootstrap,
                self.group(service),
                topic,
                topic_ends(self.bootstrap, topic),
                timeout=timeout,
                what=service,
            )

    def account(self) -> Accounting:
        """Everything the run left; call after ``drain`` and ``stop`` (the graph has one writer)."""
        records = read_topic(
            self.bootstrap,
            [
                self.candidates_topic,
                self.relations_topic,
                *(dead_letter_topic(t) for t in self.inputs.values()),
            ],
            expect=0,
            timeout=5,
            settle=2,
        )
        by_topic: dict[str, list[Any]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        candidates, relations = [], []
        for record in by_topic.get(self.candidates_topic, []):
            with contextlib.suppress(ValueError):  # poison a test put there: its dead letter accounts
                candidates.append(CandidateSetEvent.model_validate_json(record.value or b""))
        for record in by_topic.get(self.relations_topic, []):
            with contextlib.suppress(ValueError):
                relations.append(RelationSetEvent.model_validate_json(record.value or b""))
        dead_letters = {
            service: [
                DeadLetterEvent.model_validate_json(r.value or b"")
                for r in by_topic.get(dead_letter_topic(topic), [])
            ]
            for service, topic in self.inputs.items()
        }
        store = open_store(SinkSettings(ladybug_path=self.graph_path), read_only=True)
        try:
            stored = store.relations(limit=None)
        finally:
            store.close()
        edges = Counter((e.doc_id, e.head_id, e.tail_id, e.relation_id) for e in stored)
        return Accounting(candidates, relations, dead_letters, edges, {e.doc_id for e in stored})


def edge_key(event: Relation) -> tuple[str, str, str, str]:
    """The graph's key of a relation event's edge."""
    return (
        event.doc_id,
        node_id(event.head.name, event.head.type),
        node_id(event.tail.name, event.tail.type),
        event.relation_id,
    )


def assert_every_document_accounted_for(
    accounting: Accounting,
    documents: list[DocumentEvent],
    expected_pairs: set[tuple[str, int, int]],
    dead_lettered_documents: frozenset[str] = frozenset(),
) -> None:
    """Each document ended in the graph (through its candidate pairs and relation events) or in a
    dead letter; nothing lost, nothing written twice, nothing invented.

    ``expected_pairs``: (doc_id, head, tail) the proposer's model passes on for the documents
    that are not dead-lettered, computed outside the pipeline.
    """
    documents_letters = {letter.origin.key for letter in accounting.dead_letters["proposer"]}
    assert dead_lettered_documents <= documents_letters, "a bad document has no dead letter"
    # Every document the proposer accepted has its candidate set and its relation set (the record
    # that it is complete, possibly empty); a re-delivered one is the same record again.
    published = {d.doc_id for d in documents}
    accepted = published - documents_letters
    for name, sets in (("candidate", accounting.candidate_sets), ("relation", accounting.relation_sets)):
        found = {s.doc_id for s in sets}
        assert found == accepted, f"{name} sets missing or extra: {sorted(found ^ accepted)}"
        ids: dict[str, set[str]] = {}
        for record in sets:
            ids.setdefault(record.doc_id, set()).add(record.event_id)
        assert all(len(v) == 1 for v in ids.values()), f"{name} sets differ for one document: {ids}"
    # Every candidate pair the model gives reached the candidates topic; no other pair did.
    pairs = accounting.candidates
    assert pairs == expected_pairs, (
        f"missing {sorted(expected_pairs - pairs)[:5]}, unexpected {sorted(pairs - expected_pairs)[:5]}"
    )
    # Every relation event is an edge of the graph, once; the graph holds nothing else.
    keys = {key for key in map(edge_key, accounting.relations) if key[1] != key[2]}  # no self-loops
    assert set(accounting.graph_edges) == keys, (
        f"not in the graph: {sorted(keys - set(accounting.graph_edges))[:5]}; "
        f"in the graph only: {sorted(set(accounting.graph_edges) - keys)[:5]}"
    )
    assert max(accounting.graph_edges.values(), default=1) == 1, "duplicate edges"
    # Each relation event comes from a candidate pair, so from a published document.
    assert {(r.doc_id, r.head.index, r.tail.index) for r in accounting.relations} <= pairs
    assert accounting.documents_with_edges <= published
    assert not (accounting.documents_with_edges & dead_lettered_documents)
