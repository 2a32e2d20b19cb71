"""``lmrc graph serve``: a read-only page to look at the graph (documents, entities, and the
relations of one entity or one document drawn as a graph, with each edge's evidence in the text).

The standard library's threaded HTTP server and one static page (vanilla JavaScript, SVG): no
web framework, nothing fetched from elsewhere. The store is opened read-only and used under a
lock (an embedded database's connection is not shared between threads).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from lmrc.runtime.health import READ_TIMEOUT_SECONDS, BoundedThreadingHTTPServer
from lmrc.sink.graph import GraphStore, StoredRelation, normalise_name

#: At most this many search results or relations in one answer (the page says when it cuts).
MAX_ITEMS = 500
#: Connections served at once (a thread each): a browser opens about six; idle ones close after
#: READ_TIMEOUT_SECONDS, and connections beyond the bound are closed at once.
MAX_CONNECTIONS = 32


class GraphReader:
    """What the page asks of the store, answered from one read-only store under a lock."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.lock = threading.Lock()

    def _relations(self, **filters: Any) -> list[StoredRelation]:
        with self.lock:
            return self.store.relations(limit=None, **filters)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return asdict(self.store.counts())

    def entities(self, query: str) -> dict[str, Any]:
        wanted = normalise_name(query)
        degree: dict[str, int] = {}
        for relation in self._relations():
            degree[relation.head_id] = degree.get(relation.head_id, 0) + 1
            degree[relation.tail_id] = degree.get(relation.tail_id, 0) + 1
        with self.lock:
            entities = self.store.entities()
        found = [
            {"id": e.id, "name": e.name, "type": e.type, "relations": degree.get(e.id, 0)}
            for e in entities
            if wanted in normalise_name(e.name)
        ]
        found.sort(key=lambda e: (-e["relations"], e["name"]))
        return {"total": len(found), "items": found[:MAX_ITEMS]}

    def documents(self, entity: str | None = None) -> dict[str, Any]:
        """The Document nodes (deleted ones marked), those mentioning ``entity`` (an id or a
        name), or for a graph without them (written by ``upsert`` alone) the documents its edges
        name."""
        with self.lock:
            nodes = self.store.documents(entity=entity, deleted=entity is None)
        if nodes or entity is not None:
            items = [
                {
                    "doc_id": d.doc_id,
                    "title": d.title,
                    "relations": d.relation_count,
                    "version": d.version,
                    "deleted": d.deleted,
                }
                for d in nodes
            ]
            return {"total": len(items), "items": items[:MAX_ITEMS]}
        by_doc: dict[str, dict[str, Any]] = {}
        for relation in self._relations():
            entry = by_doc.setdefault(
                relation.doc_id, {"doc_id": relation.doc_id, "title": relation.doc_title, "relations": 0}
            )
            entry["relations"] += 1
        found = sorted(by_doc.values(), key=lambda d: d["doc_id"])
        return {"total": len(found), "items": found[:MAX_ITEMS]}

    def document(self, doc_id: str) -> dict[str, Any]:
        """One Document node: its version and what that version changed ({} when the graph has none)."""
        with self.lock:
            found = self.store.documents(doc_id=doc_id, deleted=True)
        if not found:
            return {}
        document = asdict(found[0])
        return {**document, "added": list(document["added"]), "removed": list(document["removed"])}

    def relations(self, entity: str | None, doc_id: str | None) -> dict[str, Any]:
        if entity is not None:
            found = [r for r in self._relations(entity=entity) if entity in (r.head_id, r.tail_id)]
        else:
            found = self._relations(doc_id=doc_id)
        items = [
            {**asdict(r), "evidence": list(r.evidence), "evidence_text": r.evidence_text.splitlines()}
            for r in sorted(found, key=lambda r: (-r.confidence, r.doc_id, r.head_name, r.tail_name))
        ]
        return {"total": len(items), "items": items[:MAX_ITEMS]}


def page() -> bytes:
    return resources.files(__package__).joinpath("page.html").read_bytes()


def make_handler(reader: GraphReader) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "lmrc-graph"
        timeout = READ_TIMEOUT_SECONDS  # an idle connection is dropped, its thread freed

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a page load is a dozen requests."""

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(value, ensure_ascii=False).encode(), "application/json")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            try:
                if url.path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, page(), "text/html; charset=utf-8")
                elif url.path == "/api/summary":
                    self._json(reader.summary())
                elif url.path == "/api/entities":
                    self._json(reader.entities(query.get("q", "")))
                elif url.path == "/api/documents":
                    self._json(reader.documents(query.get("entity")))
                elif url.path == "/api/document" and "doc" in query:
                    self._json(reader.document(query["doc"]))
                elif url.path == "/api/relations" and ("entity" in query or "doc" in query):
                    self._json(reader.relations(query.get("entity"), query.get("doc")))
                else:
                    self._json({"error": f"nothing at {url.path}"}, HTTPStatus.NOT_FOUND)
            except Exception as error:  # the store went away: say so, keep serving
                self._json({"error": f"{type(error).__name__}: {error}"}, HTTPStatus.SERVICE_UNAVAILABLE)

    return Handler


def serve(
    store: GraphStore, host: str = "127.0.0.1", port: int = 8050, max_connections: int = MAX_CONNECTIONS
) -> BoundedThreadingHTTPServer:
    """The page's server, bound and ready; ``serve_forever`` runs it."""
    return BoundedThreadingHTTPServer((host, port), make_handler(GraphReader(store)), max_connections)
