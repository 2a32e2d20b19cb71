"""The sink service: batches of RelationSetEvents (whole documents), one store transaction per batch,
so a document's relations reach the graph together or not at all.

A relation set replaces what its document said before; a tombstone (its key, a null value)
deletes the document. Versions order them: a set older than the version the graph holds (a replay,
a lagging partition) is skipped and counted, never rolling the graph back; the same version again
(re-processing with newer models, a re-delivery) replaces. Within a batch the records of a
document are folded in offset order, so the transaction writes each document's final state once.

The runtime commits offsets only after ``handle`` returns, i.e. after the store confirmed the
write. A store that cannot be reached raises RetryableError: the batch is rewound and retried with
backoff, nothing is committed, nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from lmrc.contracts import RelationSetEvent
from lmrc.runtime import (
    BatchResult,
    Consumed,
    Handler,
    RetryableError,
    ServiceRuntime,
    Tombstone,
    record_time_ms,
)
from lmrc.runtime.settings import load_settings
from lmrc.sink import metrics
from lmrc.sink.graph import DocumentChange, DocumentState, GraphStore, StoreUnavailableError
from lmrc.sink.settings import SinkSettings, open_store

log = logging.getLogger(__name__)


def fold_changes(
    batch: Sequence[Consumed[RelationSetEvent | Tombstone]], states: dict[str, DocumentState]
) -> tuple[list[DocumentChange], list[tuple[str, int, int]]]:
    """Each document's final state after the batch's records in order, from what the graph holds
    (``states``): the changes to write, and the stale sets skipped (doc_id, version, held)."""
    held = {doc_id: state.version for doc_id, state in states.items()}
    live = {doc_id for doc_id, state in states.items() if state.known and not state.deleted}
    final: dict[str, DocumentChange] = {}
    stale: list[tuple[str, int, int]] = []
    for item in batch:
        event = item.event
        if isinstance(event, Tombstone):
            if event.key in live:  # a tombstone for a document never seen (or deleted) is a no-op
                final[event.key] = DocumentChange(event.key, held.get(event.key) or 0, None)
                live.discard(event.key)
            continue
        version = event.version if event.version is not None else record_time_ms(item.message)
        current = held.get(event.doc_id)
        if current is not None and version < current:
            stale.append((event.doc_id, version, current))
            continue
        held[event.doc_id] = version
        live.add(event.doc_id)
        final[event.doc_id] = DocumentChange(event.doc_id, version, event)
    return list(final.values()), stale


def _doc_id(item: Consumed[RelationSetEvent | Tombstone]) -> str:
    return item.event.key if isinstance(item.event, Tombstone) else item.event.doc_id


class SinkHandler(Handler[RelationSetEvent]):
    input_model = RelationSetEvent
    handles_tombstones = True

    def __init__(self, store: GraphStore, service: str, owns_store: bool = True) -> None:
        self.store = store
        self.service = service
        self.owns_store = owns_store
        metrics.RELATIONS_WRITTEN.labels(service, store.backend)  # at 0 from the start, for rate()
        metrics.DOCUMENTS_WRITTEN.labels(service, store.backend)
        metrics.WRITE_SECONDS.labels(service, store.backend)
        metrics.DOCUMENTS_DELETED.labels(service, store.backend)
        metrics.STALE_VERSIONS.labels(service, store.backend)

    def close(self) -> None:
        """Release a store the sink opened itself (the embedded one has a single writer)."""
        if self.owns_store:
            self.store.close()

    def handle(self, batch: Sequence[Consumed[RelationSetEvent]]) -> BatchResult:
        backend = self.store.backend
        started = time.perf_counter()
        try:
            states = self.store.states([_doc_id(item) for item in batch])
            changes, stale = fold_changes(batch, states)
            written = self.store.apply(changes, states)  # verified: every document read back
        except StoreUnavailableError as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise RetryableError(str(error)) from error
        except Exception as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise
        metrics.WRITE_SECONDS.labels(self.service, backend).observe(time.perf_counter() - started)
        metrics.RELATIONS_WRITTEN.labels(self.service, backend).inc(written)
        metrics.DOCUMENTS_WRITTEN.labels(self.service, backend).inc(sum(not c.deleted for c in changes))
        metrics.DOCUMENTS_DELETED.labels(self.service, backend).inc(sum(c.deleted for c in changes))
        for doc_id, version, held in stale:
            metrics.STALE_VERSIONS.labels(self.service, backend).inc()
            log.info("%s: skipped version %d of %r (the graph holds %d)", self.service, version, doc_id, held)
        return BatchResult()


def build_runtime(settings: SinkSettings, store: GraphStore | None = None) -> ServiceRuntime:
    """The sink on ``store`` (default: the configured one, which the runtime closes when it stops;
    a store passed in stays its caller's to close)."""
    if store is None:
        return ServiceRuntime(settings, SinkHandler(open_store(settings), settings.service_name))
    return ServiceRuntime(settings, SinkHandler(store, settings.service_name, owns_store=False))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(load_settings(SinkSettings))
    runtime.install_signal_handlers()
    runtime.run()
