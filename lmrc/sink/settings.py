"""Sink settings (``SINK_*``) and opening the configured graph store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from lmrc.runtime import ServiceSettings
from lmrc.runtime.settings import SECRETS_DIR
from lmrc.sink.graph import GraphStore
from lmrc.topology import TOPICS


class SinkSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SINK_", extra="ignore", secrets_dir=SECRETS_DIR)

    service_name: str = "sink"
    group_id: str = TOPICS.stage("sink").group_id
    input_topic: str = TOPICS.stage("sink").input
    output_topic: str | None = TOPICS.stage("sink").output
    dead_letter_topic: str = TOPICS.stage("sink").dead_letter
    store_backend: Literal["ladybug", "falkordb"] = "ladybug"
    ladybug_path: Path = Field(default=Path("var/graph.lbug"), description="Embedded database directory.")
    falkordb_host: str = "127.0.0.1"
    falkordb_port: int = 6379
    falkordb_graph: str = "lmrc"
    falkordb_username: str | None = None
    falkordb_password: SecretStr | None = None
    falkordb_ssl: bool = False
    store_timeout_seconds: float = Field(default=10.0, gt=0)


def open_store(settings: SinkSettings, read_only: bool = False) -> GraphStore:
    """The configured backend. ``read_only`` applies to the embedded store (queries, exports)."""
    if settings.store_backend == "ladybug":
        from lmrc.sink.ladybug_store import LadybugGraphStore

        return LadybugGraphStore(settings.ladybug_path, read_only=read_only)
    from lmrc.sink.falkordb_store import FalkorDBGraphStore

    return FalkorDBGraphStore(
        host=settings.falkordb_host,
        port=settings.falkordb_port,
        graph=settings.falkordb_graph,
        username=settings.falkordb_username,
        password=settings.falkordb_password.get_secret_value() if settings.falkordb_password else None,
        ssl=settings.falkordb_ssl,
        timeout_seconds=settings.store_timeout_seconds,
    )
