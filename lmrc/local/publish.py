"""Publishing documents to a topic and reading events back, for users with their own Kafka."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from lmrc.contracts import TextDocumentEvent
from lmrc.docred import to_document_event
from lmrc.runtime import produce_when_room


def iter_document_payloads(path: str | Path, dataset: str | None = None) -> Iterator[tuple[str, bytes]]:
    """(key, value) pairs from a DocRED JSON file (converted to DocumentEvents) or JSON lines.

    JSON lines are sent as they are: the services validate them and dead-letter what is invalid.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        for raw in json.loads(text):
            event = to_document_event(raw, dataset=dataset or path.stem)
            yield event.doc_id, event.model_dump_json().encode()
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            key = str(json.loads(line).get("doc_id", f"{path.name}:{number}"))
        except (json.JSONDecodeError, AttributeError):
            key = f"{path.name}:{number}"
        yield key, line.encode()


TEXT_SUFFIXES = (".txt", ".text", ".md")


class TextInputError(ValueError):
    """A text input the user must fix (not UTF-8, no texts in a folder, a bad JSON line)."""


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TextInputError(
            f"{path} is not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r}); "
            "convert it, e.g. iconv -t UTF-8"
        ) from error


def iter_text_events(path: str | Path) -> Iterator[TextDocumentEvent]:
    """TextDocumentEvents from a plain text file (one document, named after the file), a folder of
    them (``*.txt``, ``*.text``, ``*.md``), or JSON lines of ``{"id", "title", "text"}``
    (``doc_id`` and ``version`` also accepted). Invalid texts (empty, binary) are refused here, by name."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise TextInputError(f"{path} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    for file in files:
        text = _read_utf8(file)
        if file.suffix in (".jsonl", ".ndjson") or (file.suffix == ".json" and text.lstrip().startswith("{")):
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    yield TextDocumentEvent(
                        doc_id=str(record.get("doc_id") or record["id"]),
                        version=record.get("version"),
                        title=str(record.get("title", "")),
                        text=record["text"],
                        language=record.get("language"),
                    )
                except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as error:
                    reason = f"no {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]
                    raise TextInputError(
                        f'{file}:{number}: not a text record {{"id", "title", "text"}} ({reason})'
                    ) from error
            continue
        try:
            yield TextDocumentEvent(doc_id=file.stem, title=file.stem, text=text)
        except ValueError as error:
            raise TextInputError(f"{file}: {_first_error(error)}") from error


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", error)).removeprefix("Value error, ")
    return str(error)


def iter_text_payloads(path: str | Path) -> Iterator[tuple[str, bytes]]:
    for event in iter_text_events(path):
        yield event.doc_id, event.model_dump_json().encode()


def publish(
    client_config: dict[str, Any], topic: str, payloads: Iterator[tuple[str, bytes | None]]
) -> dict[int, int]:
    """Produce every payload keyed by document id (a None payload is a tombstone: it deletes
    the document), and wait for every acknowledgement.

    Returns, per partition, the offset after the last message written: what a consumer group has
    committed once it has processed everything published here.
    """
    producer = Producer({**client_config, "enable.idempotence": True, "compression.type": "zstd"})
    failures: list[str] = []
    ends: dict[int, int] = {}
    sent = 0

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    for key, value in payloads:
        produce_when_room(producer, topic, key, value, on_delivery)
        sent += 1
    remaining = producer.flush(60)
    if failures or remaining:
        raise RuntimeError(f"{len(failures) + remaining} of {sent} messages not delivered: {failures[:3]}")
    return ends


def committed_offsets(
    client_config: dict[str, Any], group: str, topic: str, partitions: int
) -> dict[int, int]:
    """The offsets a consumer group has committed on a topic's partitions (those it committed)."""
    consumer = Consumer({**client_config, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets if tp.offset >= 0}


def partitions_of(
    consumer: Consumer, topics: list[str], offset: int = OFFSET_BEGINNING, timeout: float = 10.0
) -> list[TopicPartition]:
    """Every partition of ``topics`` at ``offset`` (topics that do not exist yet are skipped)."""
    metadata = consumer.list_topics(timeout=timeout)
    return [
        TopicPartition(topic, partition, offset)
        for topic in topics
        if topic in metadata.topics and not metadata.topics[topic].error
        for partition in metadata.topics[topic].partitions
    ]


def beginning_of(consumer: Consumer, topics: list[str], timeout: float = 10.0) -> list[TopicPartition]:
    """Every partition of ``topics``, at its first offset (topics that do not exist yet are skipped)."""
    return partitions_of(consumer, topics, OFFSET_BEGINNING, timeout)


@dataclass(frozen=True)
class Deleted:
    """A tombstone read from a topic: the document ``doc_id`` was deleted."""

    doc_id: str


def decode(value: bytes | None, key: bytes | None = None) -> Any:
    """A message's JSON value; what is not JSON (a poison message) comes back as text; a tombstone
    (a null value) as :class:`Deleted`."""
    if value is None:
        return Deleted((key or b"").decode("utf-8", errors="replace"))
    try:
        return json.loads(value or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (value or b"").decode("utf-8", errors="replace")


def tail(
    client_config: dict[str, Any],
    topics: list[str],
    on_message: Callable[[str, Any], bool],
    timeout: float | None = None,
    from_beginning: bool = True,
) -> None:
    """Read events from ``topics`` until ``on_message`` returns False (or ``timeout`` passes).

    From the first offset, or only what arrives from now on. Partitions are assigned directly,
    without a consumer group: a reader joins nothing, commits nothing and starts at once. Topics
    that do not exist yet are waited for.
    """
    consumer = Consumer({**client_config, "group.id": "lmrc-tail", "enable.auto.commit": False})
    deadline = time.monotonic() + timeout if timeout else None

    def in_time() -> bool:
        return deadline is None or time.monotonic() < deadline

    try:
        offset = OFFSET_BEGINNING if from_beginning else OFFSET_END
        assignment = partitions_of(consumer, topics, offset)
        while len({tp.topic for tp in assignment}) < len(set(topics)) and in_time():
            time.sleep(0.5)
            assignment = partitions_of(consumer, topics, offset)
        consumer.assign(assignment)
        while in_time():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            if not on_message(message.topic() or "", decode(message.value(), message.key())):
                return
        raise TimeoutError(f"tail of {topics} timed out after {timeout}s")
    finally:
        consumer.close()
