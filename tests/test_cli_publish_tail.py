"""`lmrc publish` and `lmrc tail`, the CLIs for users with their own Kafka, run as a user runs them:
separate processes configured by KAFKA_* variables, against the real broker."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lmrc import docred
from lmrc.contracts import RelationSetEvent
from lmrc.local.broker import LocalBroker
from lmrc.paths import REPO_ROOT
from lmrc.runtime.topics import ensure_topics
from tests.helpers import gold_relation_events, produce, read_topic, relation_sets, scaled

pytestmark = pytest.mark.broker

REPO = REPO_ROOT


def _lmrc(broker: LocalBroker, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmrc", *args],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers},
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


def test_publish_sends_docred_files_as_document_events_keyed_by_doc_id(
    broker: LocalBroker, unique: str, tmp_path: Path
) -> None:
    documents = docred.load_split("holdout")[:2]
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(documents))
    done = _lmrc(broker, "publish", str(path), "--topic", f"{unique}.documents")
    assert done.returncode == 0, done.stderr
    assert f"published 2 documents to {unique}.documents" in done.stdout
    records = read_topic(broker.bootstrap_servers, [f"{unique}.documents"], expect=2)
    assert sorted(r.key or "" for r in records) == sorted(d["title"] for d in documents)
    for record in records:
        event = record.json()
        assert event["doc_id"] == record.key and event["schema_version"] == 1
        assert event["sentences"] == next(d["sents"] for d in documents if d["title"] == record.key)


def test_publish_passes_json_lines_through_for_the_services_to_validate(
    broker: LocalBroker, unique: str, tmp_path: Path
) -> None:
    event = docred.to_document_event(docred.load_split("holdout")[0]).model_dump_json()
    path = tmp_path / "docs.jsonl"
    path.write_text(f"{event}\n\n{{not json\n")
    done = _lmrc(broker, "publish", str(path), "--topic", f"{unique}.documents")
    assert done.returncode == 0, done.stderr
    records = read_topic(broker.bootstrap_servers, [f"{unique}.documents"], expect=2)
    assert [r.value for r in records] == [event.encode(), b"{not json"]
    assert records[1].key == "docs.jsonl:3"  # no doc_id to key it by: file and line


def test_tail_prints_relations_from_the_beginning_and_poison_as_it_came(
    broker: LocalBroker, unique: str
) -> None:
    topic = f"{unique}.relations"
    events = gold_relation_events(
        docred.load_split("holdout")[:1], docred.load_relation_names(), datetime(2026, 11, 1, tzinfo=UTC)
    )[:3]
    (relations,) = relation_sets(events)
    nothing = RelationSetEvent(event_id="e", doc_id="quiet", relations=[], candidate_pairs=2)
    produce(broker.bootstrap_servers, topic, [s.model_dump_json().encode() for s in (relations, nothing)])
    produce(broker.bootstrap_servers, topic, [b"{not json"])
    done = _lmrc(broker, "tail", "--topic", topic, "--from-beginning", "--max-messages", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5, done.stdout  # one line per relation, one for the document without any
    for line, event in zip(lines, events, strict=False):
        assert line.startswith(f"{event.doc_id}: {event.head.name} ({event.head.type}) --{event.relation_id}")
        assert f"--> {event.tail.name} ({event.tail.type})" in line
    assert lines[3] == "quiet: no relations (2 candidate pairs)"
    assert lines[4] == "{not json"

    as_json = _lmrc(broker, "tail", "--topic", topic, "--from-beginning", "--max-messages", "1", "--json")
    assert json.loads(as_json.stdout) == json.loads(relations.model_dump_json())


def test_tail_without_from_beginning_shows_only_new_events(broker: LocalBroker, unique: str) -> None:
    topic = f"{unique}.relations"
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [topic], partitions=1)
    old, *new = relation_sets(
        gold_relation_events(
            docred.load_split("holdout")[1:4], docred.load_relation_names(), datetime(2026, 11, 1, tzinfo=UTC)
        )
    )
    produce(broker.bootstrap_servers, topic, [old.model_dump_json().encode()])
    tail = subprocess.Popen(
        [sys.executable, "-m", "lmrc", "tail", "--topic", topic, "--json", "--max-messages", "1"],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers},
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()

    def keep_publishing() -> None:  # the reader may take a moment to find the end: publish until it reads
        for event in itertools.cycle(new):
            if stop.wait(0.5):
                return
            produce(broker.bootstrap_servers, topic, [event.model_dump_json().encode()])

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    publisher.start()
    try:
        out, _ = tail.communicate(timeout=scaled(90))
    finally:
        stop.set()
        tail.kill()
    assert tail.returncode == 0
    shown = json.loads(out)
    assert shown["event_id"] != old.event_id
    assert shown["event_id"] in {e.event_id for e in new}


def test_publish_text_sends_each_file_as_a_text_event(
    broker: LocalBroker, unique: str, tmp_path: Path
) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "kafka.txt").write_text("Jay Kreps founded Confluent in 2014.\n", encoding="utf-8")
    (folder / "notes.md").write_text("Neha Narkhede was born in Pune.", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG")  # not a text file: left out
    done = _lmrc(broker, "publish", "--text", str(folder), "--topic", f"{unique}.texts")
    assert done.returncode == 0, done.stderr
    assert f"published 2 texts to {unique}.texts" in done.stdout
    records = read_topic(broker.bootstrap_servers, [f"{unique}.texts"], expect=2)
    events = {r.key: r.json() for r in records}
    assert set(events) == {"kafka", "notes"}
    assert events["kafka"]["text"] == "Jay Kreps founded Confluent in 2014.\n"
    assert events["notes"]["title"] == "notes" and events["notes"]["schema_version"] == 1


def test_tail_says_what_it_reads_and_when_nothing_came(broker: LocalBroker, unique: str) -> None:
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, [f"{unique}.empty"], partitions=1)
    done = _lmrc(broker, "tail", "--topic", f"{unique}.empty", "--from-beginning", "--timeout", "2")
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"reading {unique}.empty from the beginning; Ctrl-C stops",
        f"no message on {unique}.empty within 2s",
    ], done.stderr
    missing = _lmrc(broker, "tail", "--topic", f"{unique}.missing", "--timeout", "2")
    assert missing.stderr.splitlines()[0] == (
        f"reading {unique}.missing from now on (it does not exist yet: waiting for it); Ctrl-C stops"
    ), missing.stderr
