"""Fixtures: a real Kafka-protocol broker (Tansu), the local TGI-compatible server, unique names."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrc.local.broker import LocalBroker
from lmrc.local.graph_server import LocalFalkorDB
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.sink.falkordb_store import FalkorDBGraphStore
from lmrc.sink.graph import GraphStore
from lmrc.sink.ladybug_store import LadybugGraphStore

_names = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log_path = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    with LocalBroker(log_path=log_path) as running_broker:
        yield running_broker


@pytest.fixture
def unique() -> str:
    """A fresh name stem, so each test has its own topics and consumer group."""
    return f"t{next(_names)}-{time.time_ns() % 10**8}"


@pytest.fixture(scope="session")
def tgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTgiServer]:
    """The local TGI-compatible server with the shipped classifier adapter loaded (multi-LoRA)."""
    from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config

    adapter_id = load_config(DEFAULT_ADAPTER_DIR).version
    log_path = Path(tmp_path_factory.mktemp("tgi")) / "server.log"
    with LocalTgiServer({adapter_id: DEFAULT_ADAPTER_DIR}, log_path=log_path) as server:
        yield server


@pytest.fixture(params=["ladybug", "falkordb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, GraphStore, dict]]:
    """A real store of each kind, with the settings that point the sink at it."""
    if request.param == "ladybug":
        path = tmp_path / "graph.lbug"
        store: GraphStore = LadybugGraphStore(path)
        yield "ladybug", store, {"store_backend": "ladybug", "ladybug_path": path}
        store.close()
        return
    with LocalFalkorDB(data_dir=tmp_path / "falkordb") as server:
        store = FalkorDBGraphStore(port=server.port)
        yield "falkordb", store, {"store_backend": "falkordb", "falkordb_port": server.port}
        store.close()
