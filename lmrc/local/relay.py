"""Relay settings and handler."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from lmrc.contracts import EVENT_MODELS
from lmrc.runtime import BatchResult, Consumed, Handler, Output, ServiceRuntime, ServiceSettings
from lmrc.runtime.settings import load_settings
from lmrc.topology import TOPICS, dead_letter_topic

EventType = Literal["document_event", "candidate_pair_event", "relation_event", "dead_letter_event"]


class RelaySettings(ServiceSettings):
    """``RELAY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    service_name: str = "relay"
    group_id: str = "lmrc-relay"
    input_topic: str = TOPICS.raw_documents
    output_topic: str = TOPICS.documents
    dead_letter_topic: str = dead_letter_topic(TOPICS.raw_documents)
    event_type: EventType = "document_event"


class RelayHandler(Handler[BaseModel]):
    """Forwards every valid event unchanged, keyed by its ``doc_id`` when it has one."""

    def __init__(self, input_model: type[BaseModel]) -> None:
        self.input_model = input_model

    def handle(self, batch: Sequence[Consumed[BaseModel]]) -> BatchResult:
        return BatchResult(
            outputs=[
                Output(value=item.event, key=getattr(item.event, "doc_id", None), source=item)
                for item in batch
            ]
        )


def build_runtime(settings: RelaySettings) -> ServiceRuntime:
    return ServiceRuntime(settings, RelayHandler(EVENT_MODELS[settings.event_type]))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(load_settings(RelaySettings))
    runtime.install_signal_handlers()
    runtime.run()


if __name__ == "__main__":
    main()
