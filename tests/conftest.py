"""Fixtures: a real Kafka-protocol broker (Tansu) per test session, and unique names."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrc.broker import LocalBroker

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
