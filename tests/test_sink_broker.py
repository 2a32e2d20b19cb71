"""The sink service on the real broker with both real graph stores: re-delivery, outage, CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from lmrc import docred
from lmrc.cli import format_relations
from lmrc.cli import main as lmrc_main
from lmrc.contracts import Relation, RelationSetEvent
from lmrc.local.broker import LocalBroker
from lmrc.local.graph_server import LocalFalkorDB
from lmrc.local.processes import free_port
from lmrc.sink.falkordb_store import FalkorDBGraphStore
from lmrc.sink.graph import GraphStore
from lmrc.sink.ladybug_store import LadybugGraphStore
from lmrc.sink.service import build_runtime
from lmrc.sink.settings import SinkSettings
from tests.helpers import (
    committed_offsets,
    gold_relation_events,
    graph_edge_count,
    http_get,
    metric_value,
    produce,
    read_topic,
    relation_sets,
    running,
    scaled,
    service_test_fields,
    wait_committed,
    wait_for,
    wait_for_rewinds,
)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def events() -> list[Relation]:
    documents = docred.load_split("holdout")[:8]
    return gold_relation_events(documents, docred.load_relation_names(), datetime(2026, 11, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def sets(events: list[Relation]) -> list[RelationSetEvent]:
    return relation_sets(events)


def sink_settings(broker: LocalBroker, stem: str, **overrides: object) -> SinkSettings:
    fields = service_test_fields(broker.bootstrap_servers, "sink", stem, "relations")
    fields.update(max_batch_size=40, retry_backoff_initial_seconds=0.1, retry_backoff_max_seconds=0.5)
    fields.update(overrides)
    return SinkSettings(**fields)


def encoded(events: list[RelationSetEvent]) -> list[bytes | None]:
    return [event.model_dump_json().encode() for event in events]


def test_replaying_the_topic_leaves_the_graph_unchanged(
    broker: LocalBroker,
    unique: str,
    events: list[Relation],
    sets: list[RelationSetEvent],
    backend: tuple[str, GraphStore, dict],
) -> None:
    name, store, store_settings = backend
    settings = sink_settings(broker, unique, **store_settings)
    runtime = build_runtime(settings, store)
    written = lambda: metric_value(  # noqa: E731
        runtime.http_port, "lmrc_sink_relations_written_total", service=settings.service_name, backend=name
    )
    with running(runtime):
        produce(broker.bootstrap_servers, settings.input_topic, encoded(sets))
        wait_for(lambda: written() == graph_edge_count(events), what="first pass")
        first = (store.counts(), store.relations(limit=None), store.entities())
        produce(broker.bootstrap_servers, settings.input_topic, encoded(sets))  # the topic replayed
        produce(broker.bootstrap_servers, settings.input_topic, [b"not json"])
        wait_for(lambda: written() == 2 * graph_edge_count(events), what="replay")
        wait_committed(
            broker.bootstrap_servers,
            settings.group_id,
            settings.input_topic,
            {0: 2 * len(sets) + 1},
            what="commit of the replay and the dead letter",
        )
        second = (store.counts(), store.relations(limit=None), store.entities())
    assert second == first
    assert first[0].relations == graph_edge_count(events) and first[0].documents == 8


def test_store_outage_retries_without_commit_and_loses_nothing(
    broker: LocalBroker, unique: str, events: list[Relation], sets: list[RelationSetEvent], tmp_path: Path
) -> None:
    server = LocalFalkorDB(data_dir=tmp_path / "falkordb").start()
    settings = sink_settings(broker, unique, store_backend="falkordb", falkordb_port=server.port)
    store = FalkorDBGraphStore(port=server.port, timeout_seconds=1)
    runtime = build_runtime(settings, store)
    half = len(sets) // 2
    bootstrap = broker.bootstrap_servers
    offsets = lambda: committed_offsets(bootstrap, settings.group_id, settings.input_topic, 1)  # noqa: E731
    try:
        with running(runtime):
            port = runtime.http_port
            produce(bootstrap, settings.input_topic, encoded(sets[:half]))
            wait_for(lambda: offsets() == {0: half}, what="first half committed")
            server.stop()
            produce(bootstrap, settings.input_topic, encoded(sets[half:]))
            wait_for_rewinds(
                port,
                settings.service_name,
                "StoreUnavailableError",
                2,
                what="retries while the store is down",
            )
            assert offsets() == {0: half}, "nothing is committed while the store is down"
            assert (
                metric_value(
                    port,
                    "lmrc_sink_store_errors_total",
                    service=settings.service_name,
                    backend="falkordb",
                    error_class="StoreUnavailableError",
                )
                >= 2
            )
            server.start()
            wait_for(lambda: offsets() == {0: len(sets)}, what="everything committed after recovery")
        assert store.counts().relations == graph_edge_count(events)
    finally:
        store.close()
        server.stop()


def test_graph_cli_queries_and_exports(
    events: list[Relation], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "graph.lbug"
    store = LadybugGraphStore(path)
    store.upsert(events)
    counts = store.counts()
    store.close()
    graph = ["graph", "--backend", "ladybug", "--path", str(path)]

    assert lmrc_main([*graph, "counts"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"entities {counts.entities}  relations {counts.relations}  documents {counts.documents}"
    )
    some = events[0]
    assert lmrc_main([*graph, "relations", "--entity", some.head.name.lower()]) == 0
    table = capsys.readouterr().out
    assert some.head.name in table and f" {some.relation_id} " in table and some.doc_id in table

    assert lmrc_main([*graph, "export", "--format", "jsonl", "--out", str(tmp_path / "g.jsonl")]) == 0
    lines = (tmp_path / "g.jsonl").read_text().splitlines()
    assert (
        len(lines) == counts.relations
        and {"head_name", "relation_id", "doc_id"} <= json.loads(lines[0]).keys()
    )

    assert lmrc_main([*graph, "export", "--format", "graphml", "--out", str(tmp_path / "g.graphml")]) == 0
    root = ET.parse(tmp_path / "g.graphml").getroot()
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    assert len(root.findall(".//g:node", ns)) == counts.entities
    assert len(root.findall(".//g:edge", ns)) == counts.relations


def test_control_characters_in_names_are_escaped_on_the_terminal_and_in_graphml(
    events: list[Relation], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = events[0].model_copy(
        update={"head": events[0].head.model_copy(update={"name": "Red\x1b[31m Star\x01\u202e"})}
    )
    path = tmp_path / "graph.lbug"
    store = LadybugGraphStore(path)
    store.upsert([hostile])
    store.close()
    graph = ["graph", "--backend", "ladybug", "--path", str(path)]
    assert lmrc_main([*graph, "relations"]) == 0
    table = capsys.readouterr().out
    assert "Red\\x1b[31m Star\\x01\\u202e" in table and "\x1b" not in table and "\x01" not in table
    assert lmrc_main([*graph, "export", "--format", "graphml", "--out", str(tmp_path / "g.graphml")]) == 0
    names = [
        data.text for data in ET.parse(tmp_path / "g.graphml").getroot().iter() if data.get("key") == "name"
    ]
    assert "Red\\x1b[31m Star\\x01\u202e" in names  # well-formed XML; the bidi mark is valid there
    # `lmrc tail`: the contract refuses such a name now, so the event shows as escaped JSON.
    tailed = format_relations(relation_sets([hostile])[0].model_dump(mode="json"))
    assert "Red\\u001b[31m Star\\u0001\\u202e" in tailed and "\x1b" not in tailed


@pytest.mark.parametrize("fault", ["down", "wrong password"])
def test_the_sink_starts_while_falkordb_is_down_or_refuses_its_password_and_catches_up(
    broker: LocalBroker,
    unique: str,
    events: list[Relation],
    sets: list[RelationSetEvent],
    tmp_path: Path,
    fault: str,
) -> None:
    """The store's client connected in its constructor: the sink exited 1 with a redis
    ConnectionError / AuthenticationError. Now it starts, pauses (nothing committed) and writes
    everything once the store is up or the password is right."""
    server = LocalFalkorDB(data_dir=tmp_path / "falkordb")
    settings = sink_settings(
        broker, unique, store_backend="falkordb", falkordb_port=server.port, falkordb_password="s3cret"
    )
    admin = None
    if fault == "wrong password":
        server.start()
        admin = redis.Redis(port=server.port)
        admin.config_set("requirepass", "another")
    runtime = build_runtime(settings)  # the sink opens (and owns) its store, as in production
    bootstrap = broker.bootstrap_servers
    try:
        with running(runtime):
            produce(bootstrap, settings.input_topic, encoded(sets))
            wait_for_rewinds(runtime.http_port, settings.service_name, "StoreUnavailableError", 2)
            assert committed_offsets(bootstrap, settings.group_id, settings.input_topic, 1) == {}
            if admin is None:
                server.start()
                admin = redis.Redis(port=server.port)
            admin.config_set("requirepass", "s3cret")
            wait_committed(bootstrap, settings.group_id, settings.input_topic, {0: len(sets)}, timeout=60)
        store = FalkorDBGraphStore(port=server.port, password="s3cret")
        assert store.counts().relations == graph_edge_count(events)
        store.close()
    finally:
        server.stop()


def test_a_full_disk_pauses_the_embedded_sink_and_dead_letters_nothing(
    broker: LocalBroker, unique: str, events: list[Relation], sets: list[RelationSetEvent], tmp_path: Path
) -> None:
    """LadybugDB on a full disk ("IO exception: Cannot write to file ...wal") dead-lettered good
    documents and committed them. The sink runs as its own process; its file size limit
    (RLIMIT_FSIZE, which fails writes as a full disk does) is lowered, then lifted."""
    port = free_port()
    path = tmp_path / "graph.lbug"
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "SINK_INPUT_TOPIC": f"{unique}.relations",
        "SINK_DEAD_LETTER_TOPIC": f"{unique}.dlq",
        "SINK_GROUP_ID": f"group-{unique}",
        "SINK_CREATE_TOPICS": "true",
        "SINK_TOPIC_PARTITIONS": "1",
        "SINK_HTTP_PORT": str(port),
        "SINK_LADYBUG_PATH": str(path),
        "SINK_SESSION_TIMEOUT_MS": "2000",
        "SINK_MAX_BATCH_WAIT_SECONDS": "0.1",
        "SINK_RETRY_BACKOFF_INITIAL_SECONDS": "0.1",
        "SINK_RETRY_BACKOFF_MAX_SECONDS": "0.5",
    }
    bootstrap, topic, group = broker.bootstrap_servers, f"{unique}.relations", f"group-{unique}"
    sink = subprocess.Popen(
        [str(Path(sys.executable).parent / "lmrc-sink")],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200 if _listening(port) else False, timeout=60)
        produce(bootstrap, topic, encoded(sets[:1]))
        wait_committed(bootstrap, group, topic, {0: 1})
        subprocess.run(["prlimit", f"--pid={sink.pid}", "--fsize=1:unlimited"], check=True)
        produce(bootstrap, topic, encoded(sets[1:]))
        wait_for_rewinds(port, "sink", "StoreUnavailableError", 2, what="rewinds on the full disk")
        assert committed_offsets(bootstrap, group, topic, 1) == {0: 1}
        subprocess.run(["prlimit", f"--pid={sink.pid}", "--fsize=unlimited:unlimited"], check=True)
        wait_committed(bootstrap, group, topic, {0: len(sets)}, timeout=60)
    finally:
        sink.terminate()
        output, _ = sink.communicate(timeout=scaled(30))
    assert sink.returncode == 0, output
    assert read_topic(bootstrap, [f"{unique}.dlq"], expect=0, settle=0.5) == []
    store = LadybugGraphStore(path, read_only=True)
    assert store.counts().relations == graph_edge_count(events)
    store.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=scaled(1)).close()
        return True
    except OSError:
        return False
