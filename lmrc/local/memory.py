"""Peak memory of the annotator, the classifier and the sink on the worst inputs their limits
admit (``lmrc memory``; the proposer has its own, ``lmrc proposer memory``).

Each case runs the stage's real handler in a fresh process (peak RSS is per process) on inputs at
the corners of its limits: the longest text of three shapes for the annotator; the largest
candidate set for the classifier; a full consume of the largest relation sets, cut into batches
as the runtime cuts them, for the sink on each store. The figures are compared with the chart's
memory limits (``deploy/helm/lmrc/values.yaml``); a test keeps the two in step.

The classifier's model server here answers every request at once (``none``): what is measured is
the classifier process, which holds prompts and answers, not the model's own memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lmrc.contracts import (
    MAX_TEXT_CHARS,
    CandidatePair,
    CandidateSetEvent,
    DocumentEvent,
    Entity,
    EntityRef,
    Mention,
    Relation,
    RelationSetEvent,
    ScoredRelation,
    TextDocumentEvent,
    event_id,
)
from lmrc.contracts.events import MAX_EVIDENCE_CHARS

STAGES = ("annotator", "classifier", "sink")
#: The message limit every service shares (ServiceSettings.max_message_bytes' default).
MESSAGE_BYTES = 1_000_000

#: The child's peak RSS in MiB: VmHWM, the high-water mark of this process's own address space.
#: Not ru_maxrss, which a child inherits from the parent it was forked from (exec keeps it).
_PEAK = """
def peak():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024)
"""

_ANNOTATOR = (
    _PEAK
    + """
import json, sys, time
from lmrc.annotator.engine import Annotator
from lmrc.annotator.service import AnnotatorHandler, AnnotatorSettings
from lmrc.contracts import TextDocumentEvent
event = TextDocumentEvent.model_validate_json(sys.stdin.read())
settings = AnnotatorSettings()
handler = AnnotatorHandler(settings, Annotator(settings.engine, threads=2))
loaded = peak()
started = time.perf_counter()
document = handler.annotate(event)
print(json.dumps({"model_loaded_mib": loaded, "peak_rss_mib": peak(), "entities": len(document.entities),
    "sentences": len(document.sentences), "seconds": round(time.perf_counter() - started, 1)}))
"""
)

_CLASSIFIER = (
    _PEAK
    + """
import json, sys, time
from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
from lmrc.contracts import CandidateSetEvent
from lmrc.runtime import Consumed
raw = sys.stdin.read()
settings = ClassifierSettings(tgi_url=sys.argv[1], decision="llm")
handler = ClassifierHandler(settings, load_config(DEFAULT_ADAPTER_DIR))
handler.start()
loaded = peak()
started = time.perf_counter()
event = CandidateSetEvent.model_validate_json(raw)
del raw
result = handler.handle([Consumed(event, None)])
size = max(len(output.value.model_dump_json()) for output in result.outputs)
print(json.dumps({"model_loaded_mib": loaded, "peak_rss_mib": peak(), "pairs": len(event.pairs),
    "output_bytes": size, "seconds": round(time.perf_counter() - started, 1)}))
handler.close()
"""
)

_SINK = (
    _PEAK
    + """
import json, sys, tempfile, time
from lmrc.contracts import RelationSetEvent
from lmrc.runtime.loop import byte_bounded_batches
from lmrc.sink.service import SinkHandler
from lmrc.sink.settings import SinkSettings, open_store
from lmrc.runtime import Consumed
backend, port, copies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
value = sys.stdin.buffer.read()
path = tempfile.mkdtemp() + "/g.lbug"
settings = SinkSettings(store_backend=backend, falkordb_port=port, ladybug_path=path)
handler = SinkHandler(open_store(settings), "sink-memory")
loaded = peak()

class Message:  # what the runtime hands over: a consumed record's value
    def __init__(self, value): self._value = value
    def value(self): return self._value

started = time.perf_counter()
batches = byte_bounded_batches([Message(value)] * copies, settings.max_batch_bytes)
for batch in batches:
    handler.handle([Consumed(RelationSetEvent.model_validate_json(m.value()), m) for m in batch])
print(json.dumps({"model_loaded_mib": loaded, "peak_rss_mib": peak(), "batches": len(batches),
    "max_batch_bytes": settings.max_batch_bytes, "seconds": round(time.perf_counter() - started, 1)}))
handler.close()
"""
)


def _run_child(code: str, stdin: bytes, *arguments: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", code, *arguments], input=stdin, capture_output=True, check=False
    )
    if run.returncode != 0:
        lines = run.stderr.decode(errors="replace").strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {run.returncode}"}
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


def _words() -> list[str]:
    """Real words (the holdout split's), so that the text tokenizes and tags as text does."""
    from lmrc import docred

    return [word for raw in docred.load_split("holdout") for sentence in raw["sents"] for word in sentence]


def annotator_texts(max_chars: int = MAX_TEXT_CHARS) -> dict[str, str]:
    """Three shapes at the length limit: prose in sentences, a list of names (the most mentions),
    and one sentence without an end (the longest span spaCy's parser reads at once)."""
    words = _words()
    words = words * (max_chars // len(words) + 1)  # as many as the longest text needs
    prose = " ".join(" ".join(words[i : i + 24]) + "." for i in range(0, max_chars // 2, 24))
    names = ", ".join(f"{first} {last}" for first, last in zip(words[::2], words[1::2], strict=False))
    one_sentence = " ".join(word for word in words if word not in ".!?;")
    return {
        "prose": prose[:max_chars],
        "a list of names": names.title()[:max_chars],
        "one sentence": one_sentence[:max_chars],
    }


def measure_annotator(max_chars: int = MAX_TEXT_CHARS) -> list[dict[str, Any]]:
    results = []
    for name, text in annotator_texts(max_chars).items():
        event = TextDocumentEvent(doc_id=name, text=text)
        figures = _run_child(_ANNOTATOR, event.model_dump_json().encode())
        results.append({"case": name, "characters": len(text), **figures})
        print(json.dumps(results[-1]), flush=True)
    return results


def largest_candidate_set(limit: int = MESSAGE_BYTES) -> CandidateSetEvent:
    """A document as long as a message allows, with 150 entities and as many pairs as fit."""
    words = _words() * 10
    sentences = [words[i : i + 24] for i in range(0, len(words), 24)]
    entities = [
        Entity(mentions=[Mention(sent_id=i * 3, start=0, end=1, name=sentences[i * 3][0], type="MISC")])
        for i in range(150)
    ]
    shortlist = [ScoredRelation(relation_id="P17", probability=0.5)] * 4

    all_pairs = [
        CandidatePair(head=h, tail=t, score=0.9, shortlist=shortlist, evidence=[h * 3, t * 3])
        for h in range(150)
        for t in range(150)
        if h != t
    ]

    def candidate_set(sentence_count: int, pair_count: int) -> CandidateSetEvent:
        document = DocumentEvent(doc_id="largest", sentences=sentences[:sentence_count], entities=entities)
        return CandidateSetEvent(
            event_id="largest",
            doc_id="largest",
            pairs=all_pairs[:pair_count],
            pairs_scored=150 * 149,
            proposer_model_version="memory",
            document=document,
        )

    # Most of the message is the document's text (every prompt repeats it), the rest pairs.
    per_sentence = len(candidate_set(501, 0).model_dump_json()) - len(candidate_set(500, 0).model_dump_json())
    sentence_count = min(len(sentences), int(limit * 0.6 / per_sentence))
    base = len(candidate_set(sentence_count, 0).model_dump_json())
    per_pair = len(candidate_set(sentence_count, 101).model_dump_json()) - len(
        candidate_set(sentence_count, 100).model_dump_json()
    )
    pair_count = min(len(all_pairs), int((limit - base) / per_pair) - 10)
    return candidate_set(sentence_count, pair_count)


@contextmanager
def _instant_model_server() -> Iterator[str]:
    """Answers every /generate with ``none`` at once, as TGI's API does."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps({"generated_text": "none\n"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def measure_classifier() -> list[dict[str, Any]]:
    event = largest_candidate_set()
    value = event.model_dump_json().encode()
    with _instant_model_server() as url:
        figures = _run_child(_CLASSIFIER, value, url)
    result = {"case": "the largest candidate set", "input_bytes": len(value), **figures}
    print(json.dumps(result), flush=True)
    return [result]


def largest_relation_sets(limit: int = MESSAGE_BYTES) -> dict[str, RelationSetEvent]:
    """Relation sets as large as a message allows, of two shapes: many relations with a sentence
    of evidence each, and few relations with evidence at its limits (64 sentences)."""
    words = _words()
    sentence = " ".join(words[:30])

    long_sentence = ((sentence + " ") * (MAX_EVIDENCE_CHARS // len(sentence)))[:MAX_EVIDENCE_CHARS]

    def relations(count: int, evidence_sentences: int) -> RelationSetEvent:
        evidence_text = [long_sentence if evidence_sentences > 1 else sentence] * evidence_sentences
        return RelationSetEvent(
            event_id="largest",
            doc_id="largest",
            relations=[
                Relation(
                    event_id=event_id("largest", index),
                    doc_id="largest",
                    head=EntityRef(
                        index=index % 150, name=f"{words[index % len(words)]} {index}", type="PER"
                    ),
                    tail=EntityRef(index=(index + 1) % 150, name=f"place {index}", type="LOC"),
                    relation_id="P19",
                    relation_name="place of birth",
                    confidence=0.9,
                    evidence=list(range(evidence_sentences)),
                    evidence_text=evidence_text,
                )
                for index in range(count)
            ],
            candidate_pairs=count,
        )

    shapes = {}
    for name, evidence_sentences, step in (("many relations", 1, 100), ("long evidence", 64, 1)):
        count = step
        while len(relations(count + step, evidence_sentences).model_dump_json()) < limit:
            count += step
        shapes[name] = relations(count, evidence_sentences)
    return shapes


def measure_sink(batch_size: int = 64) -> list[dict[str, Any]]:
    """A consume of ``batch_size`` (the sink's max_batch_size) of the largest sets, on each store."""
    from lmrc.local.graph_server import LocalFalkorDB

    results = []
    for name, relation_set in largest_relation_sets().items():
        value = relation_set.model_dump_json().encode()
        for backend in ("ladybug", "falkordb"):
            if backend == "falkordb":
                with LocalFalkorDB() as server:
                    figures = _run_child(_SINK, value, backend, str(server.port), str(batch_size))
            else:
                figures = _run_child(_SINK, value, backend, "0", str(batch_size))
            results.append(
                {
                    "case": f"{batch_size} sets of {name}",
                    "backend": backend,
                    "relations_per_set": len(relation_set.relations),
                    "set_bytes": len(value),
                    **figures,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


MEASURES = {"annotator": measure_annotator, "classifier": measure_classifier, "sink": measure_sink}


def chart_limit_mib(stage: str) -> int:
    """The stage's memory limit in the chart's values, in MiB."""
    import yaml

    from lmrc.paths import REPO_ROOT

    values = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "lmrc" / "values.yaml").read_text())
    limit = str(values[stage]["resources"]["limits"]["memory"])
    units = {"Mi": 1, "Gi": 1024}
    return int(limit[:-2]) * units[limit[-2:]]


def measure(stage: str) -> dict[str, Any]:
    """Every case of one stage, its peak and the chart's limit beside it."""
    cases = MEASURES[stage]()
    peak = max(int(case.get("peak_rss_mib", 0)) for case in cases)
    limit = chart_limit_mib(stage)
    return {
        "stage": stage,
        "cases": cases,
        "peak_rss_mib": peak,
        "limit_mib": limit,
        "headroom": round(1 - peak / limit, 3),
        "errors": [case["error"] for case in cases if "error" in case],
        "machine": "2 CPU cores (x86-64), CPython 3.11; each case in a fresh process (VmHWM)",
    }
