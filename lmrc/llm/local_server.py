"""Start and stop the local TGI-compatible server as a child process (tests, ``lmrc run``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from lmrc.broker import free_port


class LocalTgiServer:
    def __init__(
        self,
        adapters: dict[str, Path] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        threads: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.adapters = adapters or {}
        self.host = host
        self.port = port or free_port(host)
        self.threads = threads
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180.0) -> LocalTgiServer:
        command = [
            sys.executable,
            "-m",
            "lmrc",
            "llm",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.adapters:
            command += ["--lora-adapters", ",".join(f"{k}={v}" for k, v in self.adapters.items())]
        if self.threads:
            command += ["--threads", str(self.threads)]
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (closed in stop)
        output = self._log or subprocess.DEVNULL
        self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the local TGI server exited with {self._process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"the local TGI server did not answer on {self.url} in {timeout}s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalTgiServer:
        return self.start()

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
