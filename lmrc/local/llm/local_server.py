"""Start and stop the local TGI-compatible server as a child process (tests, ``lmrc run``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from lmrc.local.processes import LocalProcess


class LocalTgiServer(LocalProcess):
    name = "the local TGI server"
    start_timeout_seconds = 180.0  # the first start de-quantizes the model

    def __init__(
        self,
        adapters: dict[str, Path] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        threads: int | None = None,
        log_path: Path | None = None,
        max_concurrent_requests: int | None = None,
        extra_arguments: Sequence[str] = (),
        model_dir: Path | None = None,
    ) -> None:
        super().__init__(port, host, log_path)
        self.adapters = adapters or {}
        self.threads = threads
        self.max_concurrent_requests = max_concurrent_requests
        self.extra_arguments = list(extra_arguments)  # e.g. ["--engine", "reference"]
        self.model_dir = model_dir  # None: the default base model

    @classmethod
    def for_classifier(cls, classifier_dir: Path, adapter_id: str | None, **options: Any) -> LocalTgiServer:
        """A server for a classifier folder: the base model it names (prepared from its wheels once),
        with its adapter loaded as ``adapter_id``, or alone (None: a folder with no adapter, zero- or
        few-shot)."""
        from lmrc.classifier.training.base_model import classifier_base_model, materialize

        model_dir = materialize(model=classifier_base_model(classifier_dir))
        adapters = {adapter_id: classifier_dir} if adapter_id else {}
        return cls(adapters, model_dir=model_dir, **options)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
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
        if self.model_dir:
            command += ["--model", str(self.model_dir)]
        if self.adapters:
            command += ["--lora-adapters", ",".join(f"{k}={v}" for k, v in self.adapters.items())]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if self.max_concurrent_requests:
            command += ["--max-concurrent-requests", str(self.max_concurrent_requests)]
        return command + self.extra_arguments

    def is_ready(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
