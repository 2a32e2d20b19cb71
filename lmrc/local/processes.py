"""Child processes that serve on a port (broker, graph server, LLM server): start, wait until the
process answers, stop. One implementation, so all three fail, time out and clean up alike."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

#: How long a child may take to exit on SIGTERM when the user interrupted, before SIGKILL.
INTERRUPT_GRACE_SECONDS = 1.5


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be listened on (no broker or other program holds it)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class LocalProcess:
    """Subclasses give the command line and a readiness probe; ``log_path`` gets its output."""

    name = "process"
    start_timeout_seconds = 20.0

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        """One probe; an exception counts as "not yet"."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment; None: this process's."""
        return None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        timeout = timeout or self.start_timeout_seconds
        command = self.command()
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            command,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.environment(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self._process.returncode if self._process else "?"
                where = f"; see {self.log_path}" if self.log_path else ""
                self.stop()
                raise RuntimeError(f"{self.name} exited with code {code}{where}")
            try:
                if self.is_ready():
                    return self
            except Exception:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} on {self.host}:{self.port} not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL, no chance to flush or close anything: a crash, for fault tests."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Interrupted (Ctrl-C, SIGTERM): the user waits, so the child gets a short grace period.
        interrupted = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        self.stop(timeout=INTERRUPT_GRACE_SECONDS if interrupted else 10.0)
