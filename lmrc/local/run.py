"""The local run: the whole pipeline on this machine, documents in, a graph of relations out.

A real broker (Tansu), the local TGI-compatible server with the shipped classifier adapter, the
three services (proposer, classifier, sink into the embedded LadybugDB graph), each in a thread
of this process, assembled by :mod:`lmrc.local.pipeline`. Documents are published to the
documents topic; each is followed through the pipeline's own records (its candidate set, its
relation set, the sink's commit of it). Then the relations are printed, the graph's location is
given, and for DocRED-format input the proposer's recall and the pipeline's official DocRED scores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmrc import docred
from lmrc.bundle import DEFAULT_BUNDLE, Bundle, load_bundle
from lmrc.classifier.artifact import served_adapter_id
from lmrc.contracts.text import printable, shorten, terminal_width
from lmrc.docred.dataset import load_documents, training_documents
from lmrc.docred.evaluation import evaluate_candidates, evaluate_relations, format_candidates, type_prior
from lmrc.local.broker import LocalBroker
from lmrc.local.graph_lock import graph_lock
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.local.pipeline import (
    CompletionTracker,
    DocumentProgress,
    LocalPipeline,
    start_thread,
    stop_all,
)
from lmrc.local.publish import iter_document_payloads, iter_text_payloads, publish
from lmrc.paths import REPO_ROOT
from lmrc.runtime import KafkaSettings
from lmrc.sink.entities import node_id
from lmrc.sink.graph import StoredRelation, entity_id, format_table
from lmrc.sink.settings import SinkSettings, open_store

DEFAULT_DOCUMENTS = 3  # from the holdout split when no input is given: the LLM on CPU is the slow part
STAGE_TIMEOUT_SECONDS = 3600
#: On Ctrl-C or SIGTERM the services get this long to finish, then the broker and model server go.
INTERRUPT_GRACE_SECONDS = 2.0
EXIT_INTERRUPTED = 130
#: Exit status of a run in which no input went through (every one dead-lettered).
EXIT_NOTHING_PROCESSED = 1


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, so that every ``with`` block
    stops what it started: without it SIGTERM ends the interpreter at once and the broker and
    model server, in sessions of their own, keep running; and SIGINT does nothing when the shell
    that started us ignored it (a background job), since Python then keeps it ignored."""

    def _interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def default_input(bundle: Bundle) -> Path | None:
    """What a run without input reads: Re-DocRED's holdout split for the default bundle, the dev
    file of the dataset another bundle was trained on (None: the holdout split)."""
    if bundle.is_default:
        return None
    data = bundle.manifest.training.get("data")
    dev = Path(str(data)) / "dev.json" if data else None
    if dev is None or not dev.exists():
        raise FileNotFoundError(
            f"{bundle.directory}: its dataset's dev.json is not where it was trained from; "
            "give --input or --text"
        )
    return dev


def _inputs(
    input_path: Path | None, limit: int | None, bundle: Bundle, text: bool = False
) -> tuple[list[tuple[str, bytes]], list[dict], str]:
    if text:
        assert input_path is not None
        return list(iter_text_payloads(input_path))[:limit], [], str(input_path)
    if input_path is None and not bundle.is_default:
        input_path = default_input(bundle)
        limit = limit or DEFAULT_DOCUMENTS
    if input_path is None:
        raw = docred.load_split("holdout")[: limit or DEFAULT_DOCUMENTS]
        payloads = [
            (event.doc_id, event.model_dump_json().encode())
            for event in (docred.to_document_event(doc, dataset="redocred-holdout") for doc in raw)
        ]
        return payloads, raw, "the Re-DocRED holdout split"
    payloads = list(iter_document_payloads(input_path))[:limit]
    text = input_path.read_text(encoding="utf-8").lstrip()
    # Gold in the bundle's terms: CDR's NR labels dropped, pairs turned as the schema reads them.
    gold = load_documents(input_path, bundle.schema)[:limit] if text.startswith("[") else []
    return payloads, gold, str(input_path)


def run_local(
    input_path: Path | None,
    limit: int | None = None,
    graph_path: Path | None = None,
    report_path: Path | None = None,
    encoder_only: bool = False,
    text: bool = False,
    text_gold: list[dict] | None = None,
    models: Path | None = None,
) -> int:
    """Run the pipeline on the input; 0 when done, 1 when no input went through (every one
    dead-lettered), 130 when interrupted (Ctrl-C or SIGTERM), with the broker and model server
    stopped either way.

    ``text``: the input is plain text (a file, a folder, JSON lines), annotated first.
    ``text_gold``: the DocRED documents the texts were rebuilt from, to score the annotated run
    (strict and relaxed relation F1; ``lmrc annotator evaluate``).
    ``models``: the model bundle (default: models/, Re-DocRED's)."""
    bundle = load_bundle(models or DEFAULT_BUNDLE)
    try:
        with interrupt_on_signals():
            return _run_local(
                input_path, limit, graph_path, report_path, encoder_only, bundle, text, text_gold
            )
    except KeyboardInterrupt:
        print("interrupted: the pipeline, the broker and the model server were stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        logging.disable(logging.NOTSET)


def _run_local(
    input_path: Path | None,
    limit: int | None,
    graph_path: Path | None,
    report_path: Path | None,
    encoder_only: bool,
    bundle: Bundle,
    text: bool = False,
    text_gold: list[dict] | None = None,
) -> int:
    payloads, gold, source = _inputs(input_path, limit, bundle, text)
    fresh_graph = graph_path is None
    graph_path = graph_path or REPO_ROOT / "var" / "graph.lbug"
    # The graph is this run's alone until it ends (another run or `lmrc graph` is refused in one
    # line), taken before the default graph is emptied.
    with graph_lock(graph_path, exclusive=True):
        if fresh_graph and graph_path.exists():
            # The default graph holds this run alone, so that its figures are this run's: edges
            # left by an earlier run (another model, another mode) would be scored with it.
            shutil.rmtree(graph_path) if graph_path.is_dir() else graph_path.unlink()
        return _run_on_graph(
            payloads, gold, source, graph_path, report_path, encoder_only, bundle, text, text_gold
        )


def _run_on_graph(
    payloads: list[tuple[str, bytes]],
    gold: list[dict],
    source: str,
    graph_path: Path,
    report_path: Path | None,
    encoder_only: bool,
    bundle: Bundle,
    text: bool,
    text_gold: list[dict] | None,
) -> int:
    adapter_dir = bundle.classifier_dir
    adapter_id = served_adapter_id(adapter_dir)
    mode = "encoder only (the proposer's relation head, no LLM)" if encoder_only else "encoder + LLM"
    noun = "text" if text else "document"
    what = noun if len(payloads) == 1 else f"{noun}s"
    models = "" if bundle.is_default else f"; models {bundle.directory} ({bundle.schema.name})"
    print(f"local run: {len(payloads)} {what} from {source}; {mode}{models}", flush=True)
    _say_what_is_prepared(encoder_only, text, bundle)
    log_dir = REPO_ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    model_server = (
        contextlib.nullcontext()
        if encoder_only
        else LocalTgiServer.for_classifier(adapter_dir, adapter_id, log_path=log_dir / "tgi.log")
    )
    with LocalBroker(log_path=log_dir / "broker.log") as broker, model_server as tgi:
        pipeline = LocalPipeline(
            KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            tgi.url if tgi else "",
            adapter_id,
            graph_path,
            encoder_only=encoder_only,
            annotate=text,
            models=None if bundle.is_default else bundle.directory,
        )
        runtimes = [pipeline.build(stage) for stage in pipeline.stages]
        threads = [start_thread(runtime) for runtime in runtimes]
        serving = f"; local TGI server on {tgi.url}" if tgi else ""
        print(f"broker (Tansu) on {broker.bootstrap_servers}{serving}")
        for runtime in runtimes:
            print(f"  {runtime.service} metrics on http://127.0.0.1:{runtime.http_port}/metrics")
        client = pipeline.kafka.client_config()
        started = time.monotonic()
        tracker = CompletionTracker(client, pipeline, {doc_id for doc_id, _payload in payloads})
        interrupted = False
        try:
            publish(client, pipeline.input_topic, iter(payloads))
            print(f"published {len(payloads)} {what} to {pipeline.input_topic}", flush=True)
            progress = tracker.wait(STAGE_TIMEOUT_SECONDS, _printer(len(payloads), annotate=text))
            elapsed = time.monotonic() - started
        except KeyboardInterrupt:
            interrupted = True
            # What the services say while they are stopped mid-batch (a model server going away
            # under the classifier) is the interrupt, not a failure: not shown.
            logging.disable(logging.WARNING)
            raise
        finally:
            tracker.close()
            stop_all(runtimes, threads, timeout=INTERRUPT_GRACE_SECONDS if interrupted else 60.0)
    summary = {
        "mode": "encoder_only" if encoder_only else "encoder_llm",
        **_report(progress, elapsed, gold, graph_path, bundle, text),
    }
    if text_gold:
        summary["annotated"] = _annotated_scores(progress, text_gold)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps({"input": source, **summary}, indent=2) + "\n")
        print(f"figures written to {report_path}")
    if summary["relation_sets"] == 0:
        print("lmrc: nothing was processed: every input was dead-lettered", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    return 0


def _say_what_is_prepared(encoder_only: bool, text: bool, bundle: Bundle) -> None:
    """The first run prepares models once; say so, and why it takes a while."""
    from lmrc.annotator.tagger import load_tagger_config, tagger_onnx_path
    from lmrc.classifier.training.base_model import SMOLLM2, classifier_base_model, is_materialized
    from lmrc.paths import encoder_dir, encoder_tokenizer_file
    from lmrc.proposer.artifact import graphs_exist, load_config, onnx_path
    from lmrc.proposer.service import ProposerSettings

    tagger_dir = bundle.require("annotator") if text else None
    if tagger_dir is not None and not tagger_onnx_path(tagger_dir, load_tagger_config(tagger_dir)).exists():
        print("preparing the annotator: exporting its mention tagger to ONNX (once, ~20 s)", flush=True)
    proposer_dir = bundle.require("proposer")
    proposer = load_config(proposer_dir)
    encoder_tokenizer_file(proposer.encoder)  # not installed: one line that says how, before anything starts
    if not graphs_exist(onnx_path(proposer_dir, proposer, ProposerSettings().chosen_precision())):
        encoder_dir(proposer.encoder)
        print("preparing the proposer: exporting it to ONNX and quantizing it (once, ~45 s)", flush=True)
    llm = None if encoder_only else classifier_base_model(bundle.classifier_dir)
    if llm is not None and not is_materialized(llm.default_dir()):
        print(
            f"preparing the LLM: de-quantizing {llm.name}'s GGUF for the model server "
            f"(once{', ~20 s' if llm is SMOLLM2 else ''})",
            flush=True,
        )
    print("starting the broker" + ("" if encoder_only else " and the model server"), flush=True)


def _printer(documents: int, annotate: bool = False) -> Callable[[DocumentProgress], None]:
    """Each stage's count, rate and time left: live progress bars (tqdm) on a terminal, one line
    per change elsewhere (a log, a pipe)."""
    shown: dict[str, tuple[int, int]] = {}
    started = time.monotonic()
    live = sys.stdout.isatty()
    bars: dict[str, tqdm] = {}

    def line(stage: str, done: int, total: int, unit: str) -> str:
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else None
        when = "done" if done == total else (f"{tqdm.format_interval(left)} left" if left else "starting")
        return f"  {stage}: {done}/{total} {unit} ({rate:.2f} {unit}/s, {when})"

    def report(progress: DocumentProgress) -> None:
        counts = {
            **({"annotator": (len(progress.through_annotator), documents)} if annotate else {}),
            "proposer": (len(progress.through_proposer), documents),
            "classifier": progress.pairs(),
            "sink": (len(progress.written & progress.accepted), len(progress.accepted)),
        }
        units = {
            "annotator": "texts",
            "proposer": "documents",
            "classifier": "candidate pairs",
            "sink": "documents",
        }
        for stage, count in counts.items():
            if shown.get(stage) == count or not count[1]:
                continue
            shown[stage] = count
            if not live:
                if count[0]:  # a log gets a line per step forward, not the zeros before
                    print(line(stage, count[0], count[1], units[stage]), flush=True)
                continue
            if stage not in bars:
                bars[stage] = tqdm(desc=f"  {stage}", unit=f" {units[stage]}", position=len(bars), leave=True)
            bar = bars[stage]
            bar.total = count[1]
            bar.n = count[0]
            bar.refresh()
        if live and progress.done:
            for bar in bars.values():
                bar.close()

    return report


def _print_text_relations(progress: DocumentProgress, more: str, limit: int = 20) -> None:
    """The relations found in plain texts, most confident first within each text, each with the
    sentence its evidence points at as the annotator cut it out of the text (one listing: the
    graph's table would show the same relations again)."""
    width = terminal_width()
    found = [
        (doc_id, relation)
        for doc_id in sorted(progress.classified)
        if doc_id in progress.annotated
        for relation in sorted(progress.classified[doc_id]["relations"], key=lambda r: -r["confidence"])
    ]
    for doc_id, relation in found[:limit]:
        document = progress.annotated[doc_id]
        heads = document["entities"][relation["head"]["index"]]["mentions"]
        tails = document["entities"][relation["tail"]["index"]]["mentions"]
        # The evidence, else the first sentence naming both, else the head's first.
        both = sorted({m["sent_id"] for m in heads} & {m["sent_id"] for m in tails})
        where = (relation.get("evidence") or both or [heads[0]["sent_id"]])[0]
        head = next((m for m in heads if m["sent_id"] == where), heads[0])
        tail = next((m for m in tails if m["sent_id"] == where), tails[0])
        sentence = printable(" ".join(document["sentences"][where]))
        print(
            shorten(
                f"{printable(doc_id)}: {printable(head['name'])} [{head.get('start_char')}:"
                f"{head.get('end_char')}] --{printable(relation['relation_name'])}--> "
                f"{printable(tail['name'])} [{tail.get('start_char')}:{tail.get('end_char')}] "
                f"({relation['confidence']:.2f})",
                width,
            )
        )
        print(shorten(f"    sentence {where}: {sentence}", width))
    if len(found) > limit:
        print(f"showing {limit} of {len(found)} relations; {more}")


def _annotated_scores(progress: DocumentProgress, text_gold: list[dict]) -> dict[str, Any]:
    """The annotator's mentions and entities, and the relations found on its documents, against
    the gold documents the texts were rebuilt from (doc_id = title)."""
    from lmrc.docred.annotation import AnnotationScores, relation_scores

    documents = {doc_id: document for doc_id, document in progress.annotated.items()}
    annotation = AnnotationScores()
    for raw in text_gold:
        annotation.add(raw, documents.get(raw["title"], {"entities": []}))
    found = [
        (r["doc_id"], r["head"]["index"], r["tail"]["index"], r["relation_id"])
        for s in progress.classified.values()
        for r in s["relations"]
    ]
    encoder = [
        (s["doc_id"], pair["head"], pair["tail"], scored["relation_id"])
        for s in progress.proposed.values()
        for pair in s["pairs"]
        for scored in pair.get("predicted", [])
    ]
    scores = {"annotation": annotation.as_dict(), "relations": relation_scores(text_gold, documents, found)}
    if not progress.encoder_only:
        scores["relations_encoder_same_run"] = relation_scores(text_gold, documents, encoder)
    for name in ("relations", "relations_encoder_same_run"):
        if name in scores:
            strict, relaxed = scores[name]["strict"], scores[name]["relaxed"]
            print(
                f"annotated texts, {name.replace('_', ' ')}: strict F1 {strict['f1']:.4f}, "
                f"relaxed F1 {relaxed['f1']:.4f}"
            )
    return scores


def graph_predictions(stored: list[StoredRelation], gold: list[dict]) -> tuple[list[dict[str, Any]], int]:
    """The graph's edges as DocRED predictions, for the documents in ``gold``.

    The graph keys entities by normalised name and type, not by the document's entity index, so
    an edge maps back to every entity of its document with that key; returns the predictions and
    how many edges mapped to more than one index pair (two entities sharing name and type).
    """
    keys: dict[str, dict[str, list[int]]] = {}
    for raw in gold:
        event = docred.to_document_event(raw)
        by_key: dict[str, list[int]] = {}
        for index, entity in enumerate(event.entities):
            by_key.setdefault(entity_id(entity.name, entity.type), []).append(index)
        keys[event.doc_id] = by_key
    predictions, ambiguous = [], 0
    for edge in stored:
        by_key = keys.get(edge.doc_id)
        if by_key is None:
            continue  # an earlier run's document in the same graph directory
        # The entities the edge stands for, by the names the document used ("French" is the node
        # France; "Kazakhstan" and "Republic of Kazakhstan" one node, one edge naming both).
        named = edge.named_pairs() or [(edge.head_name, edge.tail_name)]
        pairs = {
            (h, t)
            for head, tail in named
            for h in by_key.get(entity_id(head, edge.head_type), [])
            for t in by_key.get(entity_id(tail, edge.tail_type), [])
        }
        ambiguous += len(pairs) > len(named)  # a name two entities of the document share
        predictions += [
            {
                "title": edge.doc_id,
                "h_idx": h,
                "t_idx": t,
                "r": edge.relation_id,
                "evidence": list(edge.evidence),
            }
            for h, t in sorted(pairs)
            if h != t
        ]
    return predictions, ambiguous


def _report(
    progress: DocumentProgress, elapsed: float, gold: list[dict], graph_path: Path, bundle: Bundle, text: bool
) -> dict[str, Any]:
    """Print what the run produced (plain texts: each relation with its sentence; documents: the
    graph's table) and, for DocRED input, its scores; return the figures."""
    candidate_sets = [progress.proposed[d] for d in sorted(progress.proposed) if d in progress.documents]
    relation_sets = [progress.classified[d] for d in sorted(progress.classified) if d in progress.documents]
    candidates = [
        {"doc_id": s["doc_id"], "head": pair["head"], "tail": pair["tail"]}
        for s in candidate_sets
        for pair in s["pairs"]
    ]
    relations = [relation for s in relation_sets for relation in s["relations"]]
    failed_pairs = sum(len(s["failed_pairs"]) for s in relation_sets)

    def letters(stage: str) -> dict[str, int]:
        return dict(Counter(event["error_class"] for event in progress.dead_letters.get(stage, [])))

    dead_letters = {
        **(
            {"texts": letters("annotator")}
            if progress.annotated or progress.dead_letters.get("annotator")
            else {}
        ),
        "documents": letters("proposer"),
        "candidate_sets": letters("classifier"),
        "relation_sets": letters("sink"),
    }
    print(
        f"done in {elapsed:.1f}s: "
        # Encoder-only runs pass no candidate sets on: the proposer decides the relations itself.
        + (f"{len(candidates)} candidate pairs, " if candidate_sets or not relation_sets else "")
        + f"{len(relations)} relations "
        f"in {len(relation_sets)} relation sets ({failed_pairs} pairs failed); dead letters: "
        + (f"texts {dead_letters['texts']}, " if "texts" in dead_letters else "")
        + f"documents {dead_letters['documents']}, candidate sets {dead_letters['candidate_sets']}, "
        f"relation sets {dead_letters['relation_sets']}"
    )
    store = open_store(SinkSettings(ladybug_path=graph_path), read_only=True)
    try:
        counts = store.counts()
        stored = store.relations(limit=None)
        more = f"`lmrc graph --path {graph_path} relations --all` shows every one"
        if stored and text:
            _print_text_relations(progress, more)
        elif stored:
            print(format_table(stored[:40], total=len(stored), more=more, width=terminal_width()))
        elif not relation_sets:
            print("0 relations: no document went through the pipeline (see the dead letters above)")
        else:
            print(f"0 relations: the pipeline found none in its {len(relation_sets)} documents")
    finally:
        store.close()
    print(
        f"graph: {graph_path} (LadybugDB, embedded): {counts.entities} entities, "
        f"{counts.relations} relations from {counts.documents} documents; "
        f"query it with `lmrc graph --path {graph_path} relations`"
    )
    summary: dict[str, Any] = {
        "documents": len(gold) or None,
        "seconds": round(elapsed, 1),
        "candidate_pairs": len(candidates),
        "relation_events": len(relations),
        "relation_sets": len(relation_sets),
        "failed_pairs": failed_pairs,
        "dead_letters": dead_letters,
        "graph_store": {"path": str(graph_path), **asdict(counts)},
    }
    if not gold:
        return summary
    if progress.encoder_only:  # no candidate sets on the wire, no LLM call
        summary.update(proposer=None, llm_calls_per_document=0.0)
    else:
        scores = evaluate_candidates(
            gold, [{"title": c["doc_id"], "h_idx": c["head"], "t_idx": c["tail"]} for c in candidates]
        )
        print(format_candidates(scores))
        print(
            f"LLM calls per document: {scores.candidates / len(gold):.1f} "
            f"instead of {scores.all_pairs / len(gold):.1f} (every pair)"
        )
        summary["proposer"] = asdict(scores)
        summary["llm_calls_per_document"] = round(scores.candidates / len(gold), 2)
        summary["pairs_per_document"] = round(scores.all_pairs / len(gold), 2)
    from_topic = [
        {
            "title": r["doc_id"],
            "h_idx": r["head"]["index"],
            "t_idx": r["tail"]["index"],
            "r": r["relation_id"],
            "evidence": r.get("evidence") or [],
        }
        for r in relations
    ]
    from_graph, ambiguous = graph_predictions(stored, gold)
    train = training_documents(bundle)  # Ign F1 leaves out facts seen in training

    def score(key: str, what: str, predictions: list[dict[str, Any]]) -> None:
        result = evaluate_relations(gold, predictions, train).scores
        summary[key] = asdict(result)
        print(
            f"{what}: F1 {result.f1:.4f}, Ign F1 {result.ign_f1 or 0.0:.4f} "
            f"(P {result.precision:.4f}, R {result.recall:.4f}), evidence F1 {result.evidence_f1:.4f}"
        )

    for where, predictions in (("relations topic", from_topic), ("graph", from_graph)):
        key = f"scores_{where.replace(' ', '_')}"
        score(key, f"DocRED scores of the {where} on these {len(gold)} documents", predictions)
    # A relation between two entities that are one graph node ("German" -> "Germany") is no edge.
    one_node = [
        node_id(r["head"]["name"], r["head"]["type"]) == node_id(r["tail"]["name"], r["tail"]["type"])
        for r in relations
    ]
    summary["relations_one_node"] = sum(one_node)
    if any(one_node):
        score(
            "scores_relations_topic_as_edges",
            f"  the relations topic without its {sum(one_node)} relations between two names of one "
            "graph node (no edge)",
            [p for p, same in zip(from_topic, one_node, strict=True) if not same],
        )
    if ambiguous:
        print(f"  ({ambiguous} graph edges join entities that share a name and type in their document)")
    summary["graph_edges_ambiguous"] = ambiguous
    if not progress.encoder_only:
        # The baseline from the same run: the encoder's own predictions that rode along with the
        # candidate pairs the LLM judged (encoder-only mode also judges pairs below the pair threshold).
        encoder = [
            {
                "title": s["doc_id"],
                "h_idx": pair["head"],
                "t_idx": pair["tail"],
                "r": scored["relation_id"],
                "evidence": pair.get("evidence") or [],
            }
            for s in candidate_sets
            for pair in s["pairs"]
            for scored in pair.get("predicted", [])
        ]
        prior = type_prior(train)

        def entity_type(candidate_set: dict[str, Any], index: int) -> str:
            return candidate_set["document"]["entities"][index]["mentions"][0]["type"]

        typed = [
            {"title": s["doc_id"], "h_idx": pair["head"], "t_idx": pair["tail"], "r": relation}
            for s in candidate_sets
            for pair in s["pairs"]
            if (relation := prior.get((entity_type(s, pair["head"]), entity_type(s, pair["tail"]))))
        ]
        for name, predictions in (("encoder", encoder), ("type_prior", typed)):
            what = f"baseline on the same candidate pairs, {name.replace('_', ' ')}"
            score(f"baseline_{name}_same_run", what, predictions)
    return summary
