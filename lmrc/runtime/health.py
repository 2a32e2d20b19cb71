"""HTTP endpoints for Kubernetes probes and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serves the endpoints in a daemon thread; ``port`` is the bound port (0 picks one)."""

    def __init__(self, host: str, port: int, liveness: HealthCheck, readiness: HealthCheck) -> None:
        checks = {"/healthz": liveness, "/readyz": readiness}

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                elif path in checks:
                    ok, detail = checks[path]()
                    body = json.dumps({"status": "ok" if ok else "unavailable", **detail})
                    self._reply(200 if ok else 503, "application/json", body.encode())
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes every few seconds would drown the service's own log."""

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
