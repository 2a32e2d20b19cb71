"""The health and metrics server stays bounded under idle or hostile connections."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

from lmrc.runtime.health import HealthServer
from tests.helpers import closed_by_server, scaled, wait_for


def test_idle_connections_neither_pile_up_threads_nor_starve_the_probes() -> None:
    """300 idle sockets held 300 threads before: now at most ``max_connections`` are served at
    once, an idle one is dropped after the read timeout, and the probes answer again."""
    server = HealthServer(
        "127.0.0.1",
        0,
        liveness=lambda: (True, {"check": "live"}),
        readiness=lambda: (True, {}),
        max_connections=4,
        read_timeout=scaled(1.0),
    )
    server.start()
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    try:
        # Past the bound, connections are closed at once, with no thread.
        wait_for(lambda: sum(closed_by_server(s) for s in idle) >= 90, timeout=10, what="refusals")
        assert threading.active_count() <= before + 4
        # The ones being served are dropped after the read timeout; then probes get through.
        wait_for(lambda: all(closed_by_server(s) for s in idle), timeout=10, what="idle ones dropped")
        url = f"http://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url, timeout=scaled(5)) as reply:
            assert json.loads(reply.read()) == {"status": "ok", "check": "live"}
        wait_for(lambda: threading.active_count() <= before, timeout=10, what="threads to end")
    finally:
        for connection in idle:
            connection.close()
        server.stop()
