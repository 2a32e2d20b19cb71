"""``lmrc``: the project's command line (evaluation, data, broker, publishing, local run)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmrc import docred
from lmrc.contracts.schema import Schema
from lmrc.contracts.text import printable
from lmrc.docred import evaluation
from lmrc.local.graph_lock import GraphInUseError
from lmrc.topology import DEAD_LETTER_SUFFIX, TOPICS

DESCRIPTION = """lmrc: document-level relation extraction on Kafka (LMRC).

Run the whole pipeline on this machine (lmrc run), publish documents or plain texts to your own
Kafka (lmrc publish), follow the relations (lmrc tail), query the graph (lmrc graph), and train,
export and measure the models (lmrc proposer | classifier | annotator | llm)."""

EPILOG = """environment:
  KAFKA_BOOTSTRAP_SERVERS   brokers of publish, tail and topics (or --bootstrap-servers);
                            KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* as the services
  SINK_*                    the graph store of lmrc graph (SINK_STORE_BACKEND, SINK_LADYBUG_PATH, ...)
  LMRC_SHARED_DIR           the data directory (default: ../shared beside the checkout)
  LMRC_ENCODERS_DIR         encoders from lmrc proposer install-encoder (default: var/encoders)"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (when it has one) and keeps the descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default:" in text:
            return text
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _format_every_parser(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's help formatted alike; each remembers its parser, so that an option it
    does not know is reported with its own usage (``lmrc run --txt`` showed the top-level one)."""
    parser.formatter_class = HelpFormatter
    parser.set_defaults(command_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _format_every_parser(sub)


def add_bootstrap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka brokers (default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)",
    )


def kafka_client(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """The Kafka client settings of a command (KAFKA_* variables, --bootstrap-servers first) and
    the topics the broker has; a broker that does not answer is one line, not a stream of
    connection errors."""
    from lmrc.runtime import KafkaSettings

    settings = KafkaSettings()
    if getattr(args, "bootstrap_servers", None):
        settings = settings.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    config = settings.client_config()
    return config, _existing_topics(config)


def _existing_topics(config: dict[str, Any], timeout: float = 10.0) -> set[str]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("lmrc.kafka-client")
    quiet.setLevel(logging.CRITICAL)
    admin = AdminClient({**config, "log_level": 0}, logger=quiet)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        raise UserError(
            f"no Kafka broker answers at {config['bootstrap.servers']} within {timeout:.0f}s "
            "(set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers; `lmrc broker` starts a local one)"
        ) from error
    return {name for name, topic in metadata.topics.items() if not topic.error}


def report_compression(source: Path, out: Path, weights_file: str) -> None:
    """After a stage's `compress`: the training log beside the compressed weights, and the sizes."""
    log = source / "train_log.jsonl"
    if log.exists() and out.resolve() != source.resolve():
        shutil.copy(log, out / log.name)
    before, after = (directory / weights_file for directory in (source, out))
    print(f"{after}: {after.stat().st_size / 1e6:.1f} MB (was {before.stat().st_size / 1e6:.1f} MB)")


class UserError(Exception):
    """A mistake the user can fix (a file, a value): one line on stderr, exit status 2."""


def _eval(args: argparse.Namespace) -> int:
    from lmrc.contracts.schema import SchemaError, resolve_schema
    from lmrc.docred.dataset import DatasetError, load_documents

    try:  # gold in the schema's terms (CDR: NR dropped, pairs turned); names from it too
        schema = resolve_schema(args.schema)
        gold = load_documents(args.gold, schema)
    except (SchemaError, DatasetError) as error:
        raise UserError(str(error)) from None
    try:
        predictions = evaluation.load_predictions(args.pred)
    except json.JSONDecodeError as error:
        raise UserError(f"{args.pred} is not JSON (a list, or JSON lines): {error}") from error
    missing = [i for i, p in enumerate(predictions) if not isinstance(p, dict) or "title" not in p]
    if missing:
        raise UserError(
            f'{args.pred}: prediction {missing[0]} has no "title" (each needs title, h_idx, t_idx, '
            "and r for relations)"
        )
    titles = {document["title"] for document in gold}
    unknown = [p["title"] for p in predictions if p["title"] not in titles]
    if unknown:
        print(
            f"lmrc eval: {len(unknown)} prediction(s) name titles not in {args.gold} (counted as wrong), "
            f"e.g. {unknown[0]!r}",
            file=sys.stderr,
        )
    if predictions and all("r" not in p for p in predictions):
        scores = evaluation.evaluate_candidates(gold, predictions)
        print(json.dumps(asdict(scores), indent=2) if args.json else evaluation.format_candidates(scores))
        return 0
    train = load_documents(args.train, schema) if args.train else None
    report = evaluation.evaluate_relations(gold, predictions, train)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    if not args.per_relation:
        report = evaluation.Report(scores=report.scores)
    names = (
        (docred.load_relation_names(args.rel_info) if args.rel_info else schema.relation_names)
        if args.per_relation
        else None
    )
    print(evaluation.format_report(report, names))
    return 0


def _split(args: argparse.Namespace) -> int:
    for name, path in docred.write_split_files(args.out, args.source).items():
        print(f"{name:<10} {path}")
    return 0


def _broker(args: argparse.Namespace) -> int:
    import time

    from lmrc.local.broker import LocalBroker, S3Storage

    storage = S3Storage(args.s3_endpoint, args.s3_bucket) if args.s3_endpoint else None
    from lmrc.local.processes import port_free

    if not port_free(args.port):
        raise UserError(
            f"port {args.port} is in use (another broker or program holds it); choose another with --port"
        )
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the broker child as Ctrl-C does
    broker = LocalBroker(port=args.port, storage=storage).start()
    where = f"bucket {args.s3_bucket} on {args.s3_endpoint}" if storage else "in memory"
    print(f"Kafka-protocol broker (Tansu, {where}) on {broker.bootstrap_servers}; Ctrl-C stops it")
    try:
        while broker.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _publish(args: argparse.Namespace) -> int:
    from lmrc.local.publish import TextInputError, iter_document_payloads, iter_text_payloads, publish

    topic = args.topic or (TOPICS.texts if args.text else TOPICS.documents)
    if (args.file is None) == (not args.delete):
        raise UserError("publish: give a FILE to publish, or --delete DOC_ID (not both)")
    if args.delete:
        empty = [doc_id for doc_id in args.delete if not doc_id.strip()]
        if empty:
            raise UserError("publish --delete: a document id is empty")
        publish(kafka_client(args)[0], topic, iter([(doc_id, None) for doc_id in args.delete]))
        print(f"published {len(args.delete)} tombstones (deletions) to {topic}: {', '.join(args.delete)}")
        return 0
    try:
        payloads = list(iter_text_payloads(args.file) if args.text else iter_document_payloads(args.file))
    except TextInputError as error:
        raise UserError(str(error)) from error
    publish(kafka_client(args)[0], topic, iter(payloads))
    print(f"published {len(payloads)} {'texts' if args.text else 'documents'} to {topic}")
    return 0


def format_relations(value: Any) -> str:
    """A relation set as one line per relation (a document without any says so); anything else
    (a poison message) as it came. Control characters are shown escaped, never sent raw."""
    from pydantic import ValidationError

    from lmrc.contracts import RelationSetEvent
    from lmrc.local.publish import Deleted

    if isinstance(value, Deleted):
        return printable(f"{value.doc_id}: deleted (a tombstone)")
    try:
        event = RelationSetEvent.model_validate(value)
    except ValidationError:
        return printable(value) if isinstance(value, str) else json.dumps(value)
    if not event.relations:
        return printable(f"{event.doc_id}: no relations ({event.candidate_pairs} candidate pairs)")
    return "\n".join(
        printable(
            f"{event.doc_id}: {r.head.name} ({r.head.type}) --{r.relation_id} {r.relation_name}--> "
            f"{r.tail.name} ({r.tail.type})  {r.confidence:.2f}"
        )
        for r in event.relations
    )


def _tail(args: argparse.Namespace) -> int:
    """Print events as they arrive; Ctrl-C (or --max-messages, --timeout) stops."""
    from lmrc.local.publish import Deleted, tail

    client, existing = kafka_client(args)
    where = "from the beginning" if args.from_beginning else "from now on"
    exists = "" if args.topic in existing else " (it does not exist yet: waiting for it)"
    print(f"reading {args.topic} {where}{exists}; Ctrl-C stops", file=sys.stderr, flush=True)
    seen = 0

    def show(_topic: str, value: Any) -> bool:
        nonlocal seen
        seen += 1
        if args.json:
            shown = {"doc_id": value.doc_id, "deleted": True} if isinstance(value, Deleted) else value
            print(json.dumps(shown), flush=True)
        else:
            print(format_relations(value), flush=True)
        return args.max_messages is None or seen < args.max_messages

    try:
        tail(
            client,
            [args.topic],
            show,
            timeout=args.timeout,
            from_beginning=args.from_beginning,
        )
    except KeyboardInterrupt:
        pass
    except TimeoutError:
        if not seen:
            print(f"no message on {args.topic} within {args.timeout:g}s", file=sys.stderr)
        if args.max_messages is not None:
            print(f"{seen} of {args.max_messages} messages before the timeout", file=sys.stderr)
            return 1
    return 0


def _topics(args: argparse.Namespace) -> int:
    """Create the pipeline's topics (the Helm chart's Job runs this); existing ones stay as they are."""
    from lmrc.runtime.topics import compaction_config, ensure_topics

    topics = args.topic or TOPICS.all
    compacted = [t for t in topics if not t.endswith(DEAD_LETTER_SUFFIX)] if args.compact else []
    created = ensure_topics(
        kafka_client(args)[0],
        topics,
        args.partitions,
        replication_factor=args.replication_factor,
        configs={topic: compaction_config(args.tombstone_retention_ms) for topic in compacted},
    )
    for topic in topics:
        state = "created" if topic in created else "exists"
        print(f"{topic:<32} {state}{', compacted' if topic in compacted and topic in created else ''}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from lmrc.local.processes import port_free
    from lmrc.local.up import UpError, up

    if not port_free(args.port):
        raise UserError(
            f"port {args.port} is in use (a broker, or another lmrc up?); choose another with --port"
        )
    try:
        return up(args.port, args.graph, args.encoder_only, args.models)
    except UpError as error:
        print(f"lmrc up: {error}", file=sys.stderr)
        return 1


STAGE_MEMORY = ("annotator", "classifier", "sink")


def _memory(args: argparse.Namespace) -> int:
    from lmrc.local.memory import measure

    unknown = sorted(set(args.stages) - set(STAGE_MEMORY))
    if unknown:
        raise UserError(f"no memory benchmark for {', '.join(unknown)}; stages: {', '.join(STAGE_MEMORY)}")
    if args.out_dir is not None and not args.out_dir.is_dir():
        raise UserError(f"--out-dir {args.out_dir} is not a directory")
    over = []
    for stage in args.stages or STAGE_MEMORY:
        figures = measure(stage)
        print(
            f"{stage}: peak {figures['peak_rss_mib']} MiB of the chart's {figures['limit_mib']} MiB "
            f"(headroom {figures['headroom']:.0%})",
            flush=True,
        )
        if args.out_dir is not None:
            path = args.out_dir / f"{stage}-memory.json"
            path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        if figures["errors"] or figures["peak_rss_mib"] > figures["limit_mib"]:
            over.append(stage)
    if over:
        print(f"lmrc: over the chart's limit or failed: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from lmrc.bundle import DEFAULT_BUNDLE, BundleError, load_bundle
    from lmrc.local.publish import TextInputError, iter_text_events
    from lmrc.local.run import run_local

    if args.gold is not None and args.text is None:
        raise UserError("--gold scores a plain-text run (--text); a DocRED --input carries its own labels")
    try:
        bundle = load_bundle(args.models or DEFAULT_BUNDLE)
    except BundleError as error:
        raise UserError(str(error)) from None
    if args.text is not None and bundle.model_dir("annotator") is None:
        raise UserError(f"{bundle.directory}: the bundle has no annotator model; --text needs one (--input)")
    text_gold = None
    if args.input is not None:
        _check_document_input(args.input, bundle.schema)
    if args.text is not None:
        if args.input is not None:
            raise UserError("--text and --input name the input twice; give one")
        try:  # every record checked before anything starts
            events = list(iter_text_events(args.text))
            if not events:
                raise UserError(f"{args.text} holds no text records")
        except TextInputError as error:
            raise UserError(str(error)) from error
        if args.gold is not None:
            text_gold = _gold_for_texts(
                args.gold, [event.doc_id for event in events[: args.limit]], bundle.schema
            )
    return run_local(
        args.text or args.input,
        args.limit,
        args.graph,
        args.report,
        encoder_only=args.encoder_only,
        text=args.text is not None,
        text_gold=text_gold,
        models=args.models,
    )


def _check_document_input(path: Path, schema: Schema) -> None:
    """``lmrc run --input``, checked whole before anything starts: a DocRED JSON list (as a
    dataset's files are checked, against the bundle's schema) or JSON lines of DocumentEvents,
    each valid."""
    from pydantic import ValidationError

    from lmrc.contracts import DocumentEvent
    from lmrc.docred.dataset import DatasetError, load_documents

    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            load_documents(path, schema)
        except DatasetError as error:
            raise UserError(str(error)) from error
        return
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise UserError(f"{path} holds no documents (a DocRED JSON list or JSON lines of DocumentEvents)")
    for number, line in lines:
        try:
            DocumentEvent.model_validate_json(line)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(document)"
            raise UserError(
                f"{path}:{number}: not a DocumentEvent (nor a DocRED JSON list): {where}: {first['msg']}"
            ) from None


def _gold_for_texts(path: Path, doc_ids: list[str], schema: Schema) -> list[dict]:
    """The gold documents of the texts a run will annotate (a text's id is its document's title),
    checked before anything starts: every text needs its gold document."""
    from lmrc.docred.dataset import DatasetError, load_documents

    try:
        gold = {raw["title"]: raw for raw in load_documents(path, schema)}
    except DatasetError as error:
        raise UserError(str(error)) from error
    missing = [doc_id for doc_id in doc_ids if doc_id not in gold]
    if missing:
        shown = ", ".join(repr(doc_id) for doc_id in missing[:3])
        raise UserError(
            f"{path}: no gold document titled {shown}{' and others' if len(missing) > 3 else ''} "
            f"({len(missing)} of {len(doc_ids)} texts); a text's id must be its gold document's title"
        )
    return [gold[doc_id] for doc_id in doc_ids]


def _benchmark(args: argparse.Namespace) -> int:
    from lmrc.local.benchmark import format_report, run_benchmark

    report = run_benchmark(args.documents, args.interval, args.split)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrc", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)

    ev = commands.add_parser("eval", help="official DocRED scores (F1, Ign F1) or proposer recall")
    ev.add_argument("--gold", required=True, type=Path, help="DocRED-format file with labels")
    ev.add_argument("--pred", required=True, type=Path, help="predictions: JSON list or JSON lines")
    ev.add_argument("--train", type=Path, help="training file, for Ign F1")
    ev.add_argument("--per-relation", action="store_true", help="print per-relation P/R/F1")
    ev.add_argument("--rel-info", type=Path, help="rel_info.json for relation names (default: the schema's)")
    ev.add_argument(
        "--schema",
        default="redocred",
        help="the schema the files are labelled in: a schema file or a shipped one (redocred, cdr)",
    )
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_eval)

    split = commands.add_parser("split", help="write the fixed train/validation/holdout files")
    split.add_argument(
        "--out",
        type=Path,
        default=Path("var/data"),
        help="directory for train.json, validation.json, holdout.json",
    )
    split.add_argument("--source", type=Path, help="dev_revised.json (default: ../shared)")
    split.set_defaults(func=_split)

    broker = commands.add_parser("broker", help="run the local Kafka-protocol broker")
    broker.add_argument("--port", type=int, default=9092, help="port to listen on (127.0.0.1)")
    broker.add_argument(
        "--s3-endpoint", help="keep data in S3 (an S3-compatible URL; AWS_* credentials) instead of memory"
    )
    broker.add_argument("--s3-bucket", default="tansu", help="an existing bucket")
    broker.set_defaults(func=_broker)

    pub = commands.add_parser("publish", help="publish documents or plain texts (KAFKA_* settings)")
    pub.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="DocRED JSON or JSON lines of DocumentEvents; with --text a text file, a folder of them, "
        'or JSON lines of {"id", "title", "text", "version"}',
    )
    pub.add_argument(
        "--delete",
        metavar="DOC_ID",
        action="append",
        default=[],
        help="publish a tombstone (the key, a null value) that deletes the document from the graph; "
        "send it to the topic the document went to (--text: the texts topic); repeatable",
    )
    pub.add_argument("--text", action="store_true", help=f"plain text for the annotator (to {TOPICS.texts})")
    pub.add_argument("--topic", help=f"default: {TOPICS.documents}, or {TOPICS.texts} with --text")
    add_bootstrap_option(pub)
    pub.set_defaults(func=_publish)

    tl = commands.add_parser("tail", help="print relation sets as they arrive (KAFKA_* settings)")
    tl.add_argument("--topic", default=TOPICS.relations, help="the topic to read (default: %(default)s)")
    tl.add_argument("--from-beginning", action="store_true", help="start at the first offset, not the end")
    tl.add_argument("--json", action="store_true", help="print each event as JSON")
    tl.add_argument("--max-messages", type=int, help="stop after this many")
    tl.add_argument("--timeout", type=float, help="stop after this many seconds")
    add_bootstrap_option(tl)
    tl.set_defaults(func=_tail)

    topics = commands.add_parser("topics", help="create the pipeline's topics (KAFKA_* settings)")
    topics.add_argument("topic", nargs="*", help="topics to create (default: the pipeline's eight)")
    topics.add_argument("--partitions", type=int, default=4, help="partitions of each topic created")
    topics.add_argument("--replication-factor", type=int, default=-1, help="-1: the broker's default")
    topics.add_argument(
        "--compact",
        action="store_true",
        help="create the data topics compacted (the latest record per document, tombstones delete); "
        "dead-letter topics never are",
    )
    topics.add_argument(
        "--tombstone-retention-ms",
        type=int,
        default=7 * 24 * 3600 * 1000,
        help="with --compact: how long a tombstone stays (more than any consumer may lag; default 7 days)",
    )
    add_bootstrap_option(topics)
    topics.set_defaults(func=_topics)

    from lmrc.cli.graph import add_commands as add_graph_commands

    add_graph_commands(commands)

    from lmrc.cli.proposer import add_commands as add_proposer_commands

    add_proposer_commands(commands)

    from lmrc.cli.classifier import add_commands as add_classifier_commands

    add_classifier_commands(commands)

    from lmrc.cli.annotator import add_commands as add_annotator_commands

    add_annotator_commands(commands)

    from lmrc.cli.llm import add_commands as add_llm_commands
    from lmrc.cli.train import add_commands as add_train_commands

    add_llm_commands(commands)
    add_train_commands(commands)

    run = commands.add_parser(
        "run",
        help="run the whole pipeline locally (broker, TGI, services, graph)",
        description="Run the whole pipeline on this machine: a Kafka-protocol broker, the local\n"
        "TGI-compatible model server (not with --encoder-only), the services and the embedded\n"
        "graph. Publish the input (by default three Re-DocRED holdout documents), follow every\n"
        "document to the graph, print the relations found and, for labelled input, their scores;\n"
        "then stop everything it started.",
    )
    run.add_argument("--input", type=Path, help="DocRED JSON or JSON lines (default: holdout split)")
    run.add_argument(
        "--text",
        type=Path,
        help="plain text, annotated first: a text file, a folder of .txt/.md files, or JSON lines of "
        '{"id", "title", "text"}',
    )
    run.add_argument("--limit", type=int, help="only the first N documents (holdout default: 3)")
    run.add_argument(
        "--graph",
        type=Path,
        help="embedded graph directory, added to (default: var/graph.lbug, emptied at the start of each run)",
    )
    run.add_argument("--report", type=Path, help="also write the figures to this JSON file")
    run.add_argument(
        "--models",
        type=Path,
        help="a model bundle from `lmrc train` (default: models/, Re-DocRED's); without --input or "
        "--text, three documents of its dataset's dev.json",
    )
    run.add_argument(
        "--gold",
        type=Path,
        help="with --text: DocRED-format gold documents, titled as the texts' ids, to score the run "
        "against (mentions, entities, relations strict and relaxed)",
    )
    run.add_argument(
        "--encoder-only",
        action="store_true",
        help="no LLM: the proposer's own relation predictions go straight to the relations topic and graph",
    )
    run.set_defaults(func=_run)

    bench = commands.add_parser(
        "benchmark", help="end-to-end and per-stage documents/s, publish-to-graph latency, bottleneck"
    )
    bench.add_argument("--documents", type=int, default=3, help="how many documents of the split")
    bench.add_argument(
        "--split",
        default="holdout",
        choices=["train", "validation", "holdout"],
        help="which split of Re-DocRED dev",
    )
    bench.add_argument(
        "--interval", type=float, default=0.0, help="seconds between publications (0: all at once)"
    )
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.set_defaults(func=_benchmark)

    upc = commands.add_parser(
        "up",
        help="the broker, the model server and the four services as processes, until Ctrl-C",
        description="Start the pipeline as it runs in production, on this machine: the broker, the\n"
        "model server (not with --encoder-only) and the annotator, proposer, classifier and sink as\n"
        "processes of their own. Publish with `lmrc publish`, subscribe with `lmrc tail`; Ctrl-C\n"
        "stops everything it started.",
    )
    upc.add_argument("--port", type=int, default=9092, help="the broker's port")
    upc.add_argument(
        "--graph", type=Path, default=Path("var/graph.lbug"), help="the embedded graph the sink writes (kept)"
    )
    upc.add_argument(
        "--encoder-only", action="store_true", help="no LLM: the proposer's relations go to the sink"
    )
    upc.add_argument("--models", type=Path, help="a model bundle from `lmrc train` (default: models/)")
    upc.set_defaults(func=_up)

    memory = commands.add_parser(
        "memory",
        help="peak RSS of the annotator, classifier and sink on the worst inputs their limits admit, "
        "beside the chart's memory limits (the proposer: lmrc proposer memory)",
    )
    memory.add_argument(
        "stages", nargs="*", metavar="STAGE", help=f"{', '.join(STAGE_MEMORY)} (default: all three)"
    )
    memory.add_argument(
        "--out-dir", type=Path, help="write <stage>-memory.json here (the project's: docs/results)"
    )
    memory.set_defaults(func=_memory)
    _format_every_parser(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader left early (`| head`): not an error. Point stdout at /dev/null so that the
        # interpreter's last flush does not fail again on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (UserError, GraphInUseError) as error:
        print(f"lmrc: error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"lmrc: error: {_missing(error)}", file=sys.stderr)
        return 2


def _missing(error: FileNotFoundError) -> str:
    """What is missing and, for the shared data, where it is looked for."""
    from lmrc.paths import shared_dir

    if error.filename is None:  # a message of ours that says what to do (an encoder to install)
        return str(error)
    name = str(error.filename)
    message = f"no such file: {name}"
    if error.filename and str(shared_dir()) in str(error.filename):
        message += " (data from ../shared beside the checkout; set LMRC_SHARED_DIR to where it is)"
    return message


if __name__ == "__main__":
    sys.exit(main())
