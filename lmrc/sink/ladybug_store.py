"""Embedded backend: LadybugDB (the maintained fork of Kuzu), stored in a directory on disk."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ladybug

from lmrc.sink.graph import CypherGraphStore, StoreUnavailableError

#: LadybugDB's error categories that are about the database, not the statement: a full or failing
#: disk, the buffer pool out of memory, a transaction the engine could not keep. The input is not
#: at fault: the sink pauses and retries instead of dead-lettering good documents.
_SICK_PREFIXES = (
    "IO exception",
    "Buffer manager exception",
    "Transaction manager exception",
    "Checkpoint exception",
    "Storage exception",
)


def _store_error(error: RuntimeError) -> Exception:
    """StoreUnavailableError for the database's own trouble, the error itself otherwise."""
    message = str(error)
    if message.lstrip().startswith(_SICK_PREFIXES) or "out of memory" in message.lower():
        return StoreUnavailableError(f"LadybugDB cannot take the write: {message[:500]}")
    return error


SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Entity("
    "id STRING PRIMARY KEY, name STRING, type STRING, norm_name STRING)",
    "CREATE REL TABLE IF NOT EXISTS RELATION(FROM Entity TO Entity, "
    "relation_id STRING, relation_name STRING, doc_id STRING, doc_title STRING, confidence DOUBLE, "
    "evidence INT64[], proposer_model STRING, classifier_model STRING, source_uri STRING, "
    "event_id STRING, first_seen STRING, last_seen STRING, evidence_text STRING)",
    # A database made before evidence_text was stored gains the column (empty for old edges).
    "ALTER TABLE RELATION ADD IF NOT EXISTS evidence_text STRING DEFAULT ''",
    "CREATE NODE TABLE IF NOT EXISTS Document("
    "doc_id STRING PRIMARY KEY, version INT64, deleted BOOL, title STRING, content_hash STRING, "
    "source_uri STRING, proposer_model STRING, classifier_model STRING, processed_at STRING, "
    "relation_count INT64, previous_version INT64, added STRING[], removed STRING[])",
    "CREATE REL TABLE IF NOT EXISTS MENTIONS(FROM Document TO Entity, names STRING[])",
    "ALTER TABLE RELATION ADD IF NOT EXISTS named_as STRING[]",
)


class LadybugGraphStore(CypherGraphStore):
    """One database per path; a process that writes holds it, others may open it read-only."""

    backend = "ladybug"
    evidence_expression = "CAST(row.evidence AS INT64[])"  # [] alone would be typed STRING[]

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        path = Path(path)
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise FileNotFoundError(f"no graph database at {path}")
        self._database = ladybug.Database(str(path), read_only=read_only)
        self._connection = ladybug.Connection(self._database)
        if not read_only:
            for statement in SCHEMA:
                self._connection.execute(statement)

    def _read(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        try:
            result = self._connection.execute(query, params)
            rows = []
            while result.has_next():
                rows.append(result.get_next())
        except RuntimeError as error:
            raise _store_error(error) from error
        return rows

    def _write_batch(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            self._connection.execute("BEGIN TRANSACTION")
            try:
                for query, params in statements:
                    self._connection.execute(query, params)
                self._connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(RuntimeError):  # a failed statement already rolled back
                    self._connection.execute("ROLLBACK")
                raise
        except RuntimeError as error:
            raise _store_error(error) from error

    def close(self) -> None:
        self._connection.close()
        self._database.close()
