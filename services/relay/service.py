"""Relay settings and handler."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from schemas import EVENT_MODELS
from services.runtime import BatchResult, Consumed, Output, ServiceRuntime, ServiceSettings

EventType = Literal["document_event", "candidate_pair_event", "relation_event", "dead_letter_event"]


class RelaySettings(ServiceSettings):
    """``RELAY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    service_name: str = "relay"
    group_id: str = "lmrc-relay"
    input_topic: str = "lmrc.documents.raw"
    output_topic: str = "lmrc.documents"
    dead_letter_topic: str = "lmrc.documents.dead-letter"
    event_type: EventType = "document_event"


class RelayHandler:
    """Forwards every valid event unchanged, keyed by its ``doc_id`` when it has one."""

    def __init__(self, input_model: type[BaseModel]) -> None:
        self.input_model = input_model

    def handle(self, batch: Sequence[Consumed[BaseModel]]) -> BatchResult:
        return BatchResult(
            outputs=[Output(value=item.event, key=getattr(item.event, "doc_id", None)) for item in batch]
        )


def build_runtime(settings: RelaySettings) -> ServiceRuntime:
    return ServiceRuntime(settings, RelayHandler(EVENT_MODELS[settings.event_type]))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build_runtime(RelaySettings())
    runtime.install_signal_handlers()
    runtime.run()
