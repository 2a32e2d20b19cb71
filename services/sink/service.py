"""The sink service: batches of RelationEvents, one store transaction per batch.

The runtime commits offsets only after ``handle`` returns, i.e. after the store confirmed the
write. A store that cannot be reached raises RetryableError: the batch is rewound and retried with
backoff, nothing is committed, nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from schemas import RelationEvent
from services.runtime import BatchResult, Consumed, RetryableError, ServiceRuntime
from services.sink import metrics
from services.sink.graph import GraphStore, StoreUnavailableError
from services.sink.settings import SinkSettings, open_store


class SinkHandler:
    input_model = RelationEvent

    def __init__(self, store: GraphStore, service: str) -> None:
        self.store = store
        self.service = service
        metrics.RELATIONS_WRITTEN.labels(service, store.backend)  # at 0 from the start, for rate()
        metrics.WRITE_SECONDS.labels(service, store.backend)

    def handle(self, batch: Sequence[Consumed[RelationEvent]]) -> BatchResult:
        backend = self.store.backend
        started = time.perf_counter()
        try:
            self.store.upsert([item.event for item in batch])
        except StoreUnavailableError as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise RetryableError(str(error)) from error
        except Exception as error:
            metrics.STORE_ERRORS.labels(self.service, backend, type(error).__name__).inc()
            raise
        metrics.WRITE_SECONDS.labels(self.service, backend).observe(time.perf_counter() - started)
        metrics.RELATIONS_WRITTEN.labels(self.service, backend).inc(len(batch))
        return BatchResult()


def build_runtime(settings: SinkSettings, store: GraphStore | None = None) -> ServiceRuntime:
    return ServiceRuntime(settings, SinkHandler(store or open_store(settings), settings.service_name))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = SinkSettings()
    store = open_store(settings)
    runtime = build_runtime(settings, store)
    runtime.install_signal_handlers()
    try:
        runtime.run()
    finally:
        store.close()
