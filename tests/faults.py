"""A real HTTP proxy in front of the local TGI server that misbehaves on cue (503s, slowness).

It forwards every request it does not sabotage, so the client under test talks HTTP to a real
server throughout; only the failures are scripted.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

from tests.helpers import scaled


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        # "503", "429", "slow:<seconds>", "garbage" (a 200 with an answer no grammar allows),
        # "401", "403", "404" (a misconfigured deployment), "424" (TGI's generation error),
        # "html" (a 200 from something that is not TGI, say a login page), "500-text" (a 500 whose
        # body is not JSON, as from a crashed proxy), "drop" (the connection closed, no answer)
        self.faults: deque[str] = deque()
        self.always: str | None = None
        # Requests whose body holds this text fail as a crashed server's would (a 500 that is not
        # JSON), every time: a poison request. Every other request is served.
        self.poison: str | None = None
        self.generate_requests = 0
        self.authorizations: list[str | None] = []  # the Authorization header of each /generate
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/generate":
                    proxy.authorizations.append(self.headers.get("authorization"))
                    fault = proxy._next_fault()
                    if proxy.poison is not None and proxy.poison.encode() in body:
                        fault = "500-text"
                    if fault in ("503", "429"):
                        payload = {"error": "injected fault", "error_type": "overloaded"}
                        self._reply(int(fault), json.dumps(payload).encode(), {})
                        return
                    if fault in ("401", "403", "404"):
                        payload = {"error": "injected fault", "error_type": "not_found_or_unauthorized"}
                        self._reply(int(fault), json.dumps(payload).encode(), {})
                        return
                    if fault == "424":
                        payload = {"error": "Request failed during generation", "error_type": "generation"}
                        self._reply(424, json.dumps(payload).encode(), {})
                        return
                    if fault == "500-text":
                        self._reply(500, b"Internal Server Error", {})
                        return
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault == "html":
                        self._reply(200, b"<html><body>Please log in</body></html>", {})
                        return
                    if fault == "garbage":
                        payload = {"generated_text": "I think they are related.\n"}
                        self._reply(200, json.dumps(payload).encode(), {})
                        return
                    if fault and fault.startswith("slow:"):
                        time.sleep(float(fault.split(":", 1)[1]))
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                try:
                    answer = httpx.request(
                        self.command,
                        proxy.upstream + self.path,
                        content=body,
                        headers={"content-type": self.headers.get("content-type", "application/json")},
                        timeout=scaled(300),
                    )
                except httpx.HTTPError:
                    return  # the client gave up and closed the connection
                headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-")}
                self._reply(answer.status_code, answer.content, headers)

            def _reply(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(content)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_fault(self) -> str | None:
        with self._lock:
            self.generate_requests += 1
            if self.faults:
                return self.faults.popleft()
            return self.always

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
