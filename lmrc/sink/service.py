"""The sink service: batches of RelationSetEvents (whole documents), one store transaction per batch,
so a document's relations reach the graph together or not at all.

The runtime commits offsets only after ``handle`` returns, i.e. after the store confirmed the
write. A store that cannot be reached raises RetryableError: the batch is rewound and retried with
backoff, nothing is committed, nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from lmrc.contracts import RelationSetEvent
from lmrc.runtime import BatchResult, Consumed, Handler, RetryableError, ServiceRuntime
from lmrc.runtime.settings import load_settings
from lmrc.sink import metrics
from lmrc.sink.graph import GraphStore, StoreUnavailableError
from lmrc.sink.settings import SinkSettings, open_store


class SinkHandler(Handler[RelationSetEvent]):
    input_model = RelationSetEvent

    def __init__(self, store: GraphStore, service: str, owns_store: bool = True) -> None:
        self.store = store
        self.service = service
        self.owns_store = owns_store
        metrics.RELATIONS_WRITTEN.labels(service, store.backend)  # at 0 from the start, for rate()
        metrics.DOCUMENTS_WRITTEN.labels(service, store.backend)
        metrics.WRITE_SECONDS.labels(service, store.backend)

    def close(self) -> None:
        """Release a store the sink opened itself (the embedded one has a single writer)."""
        if self.owns_store:
            self.store.close()

    def handle(self, batch: Sequence[Consumed[RelationSetEvent]]) -> BatchResult:
        backend = self.store.backend
        started = time.perf_counter()
        try:
            relations = [relation for item in batch for relation in item.event.relations]
            self.store.upsert(relations)  # verified: every edge read back
        except StoreUnavailableError as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise RetryableError(str(error)) from error
        except Exception as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise
        metrics.WRITE_SECONDS.labels(self.service, backend).observe(time.perf_counter() - started)
        metrics.RELATIONS_WRITTEN.labels(self.service, backend).inc(len(relations))
        metrics.DOCUMENTS_WRITTEN.labels(self.service, backend).inc(len(batch))
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
