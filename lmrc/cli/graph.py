"""``lmrc graph``: query the graph (relations of an entity, a relation, a document; counts) and
export it as JSON lines or GraphML."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from lmrc.contracts.text import printable, terminal_width, xml_text
from lmrc.sink.graph import GraphStore, StoredDocument, StoredEntity, StoredRelation, format_table
from lmrc.sink.settings import SinkSettings, open_store

GRAPHML = "http://graphml.graphdrawing.org/xmlns"
EDGE_KEYS = (
    ("relation_id", "string"),
    ("relation_name", "string"),
    ("doc_id", "string"),
    ("doc_title", "string"),
    ("confidence", "double"),
    ("evidence", "string"),
    ("evidence_text", "string"),
    ("proposer_model", "string"),
    ("classifier_model", "string"),
    ("source_uri", "string"),
    ("event_id", "string"),
    ("first_seen", "string"),
    ("last_seen", "string"),
)


def write_jsonl(relations: list[StoredRelation], out: TextIO) -> None:
    for relation in relations:
        out.write(json.dumps(asdict(relation), ensure_ascii=False) + "\n")


def write_graphml(entities: list[StoredEntity], relations: list[StoredRelation], out: TextIO) -> None:
    ET.register_namespace("", GRAPHML)
    root = ET.Element(f"{{{GRAPHML}}}graphml")
    for name in ("name", "type"):
        ET.SubElement(
            root,
            f"{{{GRAPHML}}}key",
            id=name,
            attrib={"for": "node", "attr.name": name, "attr.type": "string"},
        )
    for name, kind in EDGE_KEYS:
        ET.SubElement(
            root, f"{{{GRAPHML}}}key", id=name, attrib={"for": "edge", "attr.name": name, "attr.type": kind}
        )
    graph = ET.SubElement(root, f"{{{GRAPHML}}}graph", id="lmrc", edgedefault="directed")
    for entity in entities:
        node = ET.SubElement(graph, f"{{{GRAPHML}}}node", id=xml_text(entity.id))
        ET.SubElement(node, f"{{{GRAPHML}}}data", key="name").text = xml_text(entity.name)
        ET.SubElement(node, f"{{{GRAPHML}}}data", key="type").text = xml_text(entity.type)
    for number, relation in enumerate(relations):
        edge = ET.SubElement(
            graph,
            f"{{{GRAPHML}}}edge",
            id=f"e{number}",
            source=xml_text(relation.head_id),
            target=xml_text(relation.tail_id),
        )
        values = asdict(relation)
        values["evidence"] = ",".join(str(sentence) for sentence in relation.evidence)
        for name, _kind in EDGE_KEYS:
            ET.SubElement(edge, f"{{{GRAPHML}}}data", key=name).text = xml_text(str(values[name]))
    ET.ElementTree(root).write(out, encoding="unicode", xml_declaration=True)


def format_documents(documents: list[StoredDocument]) -> str:
    """Documents as a table: id, version, relations, status, title."""
    rows = [
        (
            printable(d.doc_id),
            str(d.version),
            str(d.relation_count),
            "deleted" if d.deleted else "",
            printable(d.title),
        )
        for d in documents
    ]
    titles = ("document", "version", "relations", "status", "title")
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(titles)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [titles, *rows]
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def describe_document(store: GraphStore, doc_id: str) -> str:
    """One document: the version the graph holds, what it changed from the one before, its relations."""
    found = store.documents(doc_id=doc_id, deleted=True)
    if not found:
        return f"no document {printable(doc_id)!r} in the graph"
    d = found[0]
    if d.deleted:
        return f"{printable(d.doc_id)}: deleted (it held version {d.version})"
    before = f", replaced version {d.previous_version}" if d.previous_version >= 0 else ", its first version"
    lines = [
        f"{printable(d.doc_id)}: version {d.version}{before}; {d.relation_count} relations",
        f"  title: {printable(d.title)}",
        f"  models: proposer {d.proposer_model or '-'}, classifier {d.classifier_model or '-'}; "
        f"processed {d.processed_at}; content {d.content_hash or '-'}",
    ]
    if d.previous_version >= 0:
        lines.append(f"  this version added {len(d.added)} and removed {len(d.removed)} relations:")
        lines += [f"    + {printable(label)}" for label in d.added]
        lines += [f"    - {printable(label)}" for label in d.removed]
    relations = store.relations(doc_id=doc_id, limit=None)
    table = format_table(relations, width=terminal_width())
    return "\n".join([*lines, "", table]) if relations else "\n".join(lines)


def add_commands(commands: argparse._SubParsersAction) -> None:
    graph = commands.add_parser("graph", help="query or export the relation graph (SINK_* settings)")
    graph.add_argument(
        "--backend",
        choices=["ladybug", "falkordb"],
        help="which store (default: $SINK_STORE_BACKEND, else ladybug)",
    )
    graph.add_argument(
        "--path", type=Path, help="embedded database (default: $SINK_LADYBUG_PATH, else var/graph.lbug)"
    )
    graph.add_argument(
        "--falkordb-port", type=int, help="FalkorDB's port (default: $SINK_FALKORDB_PORT, else 6379)"
    )
    verbs = graph.add_subparsers(dest="verb", required=True)
    relations = verbs.add_parser("relations", help="relations as a table (filters combine)")
    relations.add_argument("--entity", help="entity name (any case) or id, as head or tail")
    relations.add_argument("--relation", help="relation id (a P-id, CID...) or relation name")
    relations.add_argument("--doc", help="document id")
    relations.add_argument(
        "--limit",
        type=_positive,
        default=50,
        help="show at most N relations; the table says when it cuts",
    )
    relations.add_argument("--all", action="store_true", help="show every relation that matches")
    relations.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    verbs.add_parser("counts", help="entities, relations, documents")
    documents = verbs.add_parser(
        "documents", help="the documents the graph holds, with their versions (which documents say X)"
    )
    documents.add_argument("--entity", help="only documents mentioning this entity (name in any case, or id)")
    documents.add_argument("--deleted", action="store_true", help="list deleted documents' markers too")
    document = verbs.add_parser(
        "document", help="what one document says: its version, what that version changed, its relations"
    )
    document.add_argument("doc_id", help="the document id")
    export = verbs.add_parser("export", help="the whole graph")
    export.add_argument(
        "--format",
        choices=["jsonl", "graphml"],
        default="jsonl",
        help="JSON lines (one relation each) or GraphML (entities and relations)",
    )
    export.add_argument("--out", type=Path, required=True, help="the file to write")
    serve = verbs.add_parser(
        "serve", help="a read-only page to look at the graph: search entities, open documents, see evidence"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8050, help="port to listen on")
    graph.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value} (--all shows every relation)")
    return value


def _settings(args: argparse.Namespace) -> SinkSettings:
    overrides = {
        "store_backend": args.backend,
        "ladybug_path": args.path,
        "falkordb_port": args.falkordb_port,
    }
    return SinkSettings(**{key: value for key, value in overrides.items() if value is not None})


def _serve(store: GraphStore, host: str, port: int) -> None:
    import signal

    from lmrc.local.graph_page import serve

    server = serve(store, host, port)

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"the graph on http://{host}:{server.server_port}/ (read-only); Ctrl-C stops", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run(args: argparse.Namespace) -> int:
    from lmrc.local.graph_lock import graph_lock

    settings = _settings(args)
    embedded = settings.store_backend == "ladybug"
    with graph_lock(settings.ladybug_path, exclusive=False) if embedded else contextlib.nullcontext():
        return _run(args, open_store(settings, read_only=True))


def _run(args: argparse.Namespace, store: GraphStore) -> int:
    try:
        if args.verb == "serve":
            _serve(store, args.host, args.port)
        elif args.verb == "counts":
            counts = store.counts()
            print(f"entities {counts.entities}  relations {counts.relations}  documents {counts.documents}")
        elif args.verb == "documents":
            found = store.documents(entity=args.entity, deleted=args.deleted)
            print(format_documents(found) if found else "no documents")
        elif args.verb == "document":
            print(describe_document(store, args.doc_id))
        elif args.verb == "relations":
            found = store.relations(entity=args.entity, relation=args.relation, doc_id=args.doc, limit=None)
            shown = found if args.all else found[: args.limit]
            if args.json:
                write_jsonl(shown, sys.stdout)
            else:
                more = "--all shows every one"
                print(format_table(shown, total=len(found), more=more, width=terminal_width()))
        else:
            relations = store.relations(limit=None)
            with open(args.out, "w", encoding="utf-8") as out:
                if args.format == "jsonl":
                    write_jsonl(relations, out)
                else:
                    write_graphml(store.entities(), relations, out)
            print(f"wrote {len(relations)} relations to {args.out}")
    finally:
        store.close()
    return 0
