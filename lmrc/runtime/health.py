"""HTTP endpoints for Kubernetes probes and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``.

Bounded: at most ``max_connections`` are served at once (one thread each) and a connection that
sends nothing is closed after ``read_timeout`` seconds, so idle or slow clients cannot pile up
threads; connections beyond the bound are closed at once.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

#: Probes and one Prometheus scrape need a handful; the rest would only be idle or hostile clients.
MAX_CONNECTIONS = 16
READ_TIMEOUT_SECONDS = 5.0


class BoundedThreadingHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but never more than ``max_connections`` threads; a client that
    goes away mid-answer is no error worth a traceback. Handlers bound idle connections with their
    ``timeout`` (seconds without a byte from the client)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the bound: closed, no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client left or went quiet: nothing to report
        super().handle_error(request, client_address)


class HealthServer:
    """Serves the endpoints in a daemon thread; ``port`` is the bound port (0 picks one)."""

    def __init__(
        self,
        host: str,
        port: int,
        liveness: HealthCheck,
        readiness: HealthCheck,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        checks = {"/healthz": liveness, "/readyz": readiness}

        class _Handler(BaseHTTPRequestHandler):
            timeout = read_timeout  # the socket's timeout: an idle connection is dropped

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

        self._server = BoundedThreadingHTTPServer((host, port), _Handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
