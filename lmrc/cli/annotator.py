"""``lmrc annotator``: train, export and measure the annotator's mention tagger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmrc.annotator.tagger import DEFAULT_TAGGER_DIR


def _train(args: argparse.Namespace) -> int:
    from lmrc.annotator.training.train import TaggerTrainOptions, train_tagger
    from lmrc.cli import UserError
    from lmrc.paths import DEFAULT_ENCODER

    if args.encoder != DEFAULT_ENCODER and args.out == DEFAULT_TAGGER_DIR:
        raise UserError(
            f"--encoder {args.encoder}: give --out DIR (a tagger on another encoder would replace the "
            f"shipped one in {DEFAULT_TAGGER_DIR})"
        )
    name = "minilm-l6" if args.encoder == DEFAULT_ENCODER else Path(args.encoder).name.lower()
    options = TaggerTrainOptions(
        out=args.out,
        encoder=args.encoder,
        version=args.version or f"mention-tagger-{name}-v1",
        epochs=args.epochs,
        threads=args.threads,
        encoder_lr=args.encoder_lr,
        head_lr=args.head_lr,
        init_from=args.init_from,
        max_minutes=args.max_minutes,
        resume=args.resume,
    )
    config = train_tagger(options)
    print(json.dumps(config.validation, indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from lmrc.annotator.training.train import calibrate_tagger

    config = calibrate_tagger(args.tagger)
    print(json.dumps({"outside_bias": config.outside_bias, **config.validation}, indent=2))
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lmrc.annotator.tagger import CONFIG_FILE, WEIGHTS_FILE
    from lmrc.annotator.training.tagger_model import load_tagger, save_tagger
    from lmrc.cli import UserError, report_compression

    if not (args.tagger / CONFIG_FILE).exists():
        raise UserError(f"--tagger {args.tagger}: no {CONFIG_FILE} (`lmrc annotator train --out` writes one)")
    model, config = load_tagger(args.tagger)
    save_tagger(model, config.model_copy(update={"weights_format": "int4-delta"}), args.out)
    report_compression(args.tagger, args.out, WEIGHTS_FILE)
    return 0


def _export(args: argparse.Namespace) -> int:
    from lmrc.annotator.training.export import export_tagger

    print(export_tagger(args.tagger, args.out))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmrc.bundle import DEFAULT_BUNDLE, BundleError, load_bundle
    from lmrc.cli import UserError
    from lmrc.docred.dataset import DatasetError, load_documents
    from lmrc.local.annotator_report import evaluate

    documents = None
    split = args.split
    try:
        bundle = load_bundle(args.models or DEFAULT_BUNDLE)
    except BundleError as error:
        raise UserError(str(error)) from None
    if args.input is None and not bundle.is_default:
        raise UserError("--models: give --input (the bundle's dataset, e.g. its dev.json)")
    if args.input is not None:
        try:
            documents = load_documents(args.input, bundle.schema)
        except DatasetError as error:
            raise UserError(str(error)) from error
        split = f"file {args.input}"
    if args.out is None:
        args.out = (
            Path("var") / f"annotator-{args.input.stem}.json"
            if args.input is not None
            else Path("docs/results") / f"annotator-{args.split}.json"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = evaluate(
        split, args.out, live=not args.no_live, limit=args.limit, documents=documents, models=args.models
    )
    keys = ("mention_f1", "entity_f1", "typed_entity_f1", "relation_f1_strict", "relation_f1_relaxed")
    print(json.dumps({key: report.get(key) for key in keys}, indent=2))
    print(f"written to {args.out}")
    return 0


def _levers(args: argparse.Namespace) -> int:
    from lmrc import docred
    from lmrc.annotator.tagger import CONFIG_FILE
    from lmrc.annotator.training.levers import measure_levers
    from lmrc.cli import UserError

    for tagger_dir in args.other_tagger:
        if not (tagger_dir / CONFIG_FILE).is_file():
            raise UserError(
                f"--other-tagger {tagger_dir}: no {CONFIG_FILE} (`lmrc annotator train --out` writes one)"
            )
    validation, holdout = docred.load_split("validation"), docred.load_split("holdout")
    if args.limit:
        validation, holdout = validation[: args.limit], holdout[: args.limit]
    report = measure_levers(validation, holdout, other_taggers=args.other_tagger)
    for name, row in report["rows"].items():
        print(
            f"{name:<40} strict F1 validation {row['validation']['relations_strict']['f1']:.4f}  "
            f"holdout {row['holdout']['relations_strict']['f1']:.4f}  "
            f"(relaxed {row['holdout']['relations_relaxed']['f1']:.4f}, entity F1 "
            f"{row['holdout']['entity_f1']:.4f})  {row['holdout']['seconds_per_document']:.3f} s/doc"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    annotator = commands.add_parser(
        "annotator", help="the annotator's mention tagger: train, export, evaluate"
    )
    verbs = annotator.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="fine-tune the mention tagger on the train split's text")
    train.add_argument("--out", type=Path, default=DEFAULT_TAGGER_DIR, help="default: %(default)s")
    train.add_argument("--epochs", type=int, default=5, help="default: %(default)s")
    train.add_argument(
        "--encoder",
        default="all-MiniLM-L6-v2",
        help="the pretrained encoder: all-MiniLM-L6-v2 (default, fast), all-mpnet-base-v2 (after "
        "`lmrc proposer install-encoder`; slower, a GPU advised) or a Hugging Face encoder folder; "
        "ignored with --init-from",
    )
    train.add_argument("--version", help="the tagger's version (default: mention-tagger-<encoder>-v1)")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: torch decides)")
    train.add_argument("--encoder-lr", type=float, default=1e-4, help="the encoder's learning rate")
    train.add_argument("--head-lr", type=float, default=1e-3, help="the tag layer's learning rate")
    train.add_argument(
        "--init-from", type=Path, help="go on from a trained tagger (default: the pretrained encoder)"
    )
    train.add_argument(
        "--max-minutes", type=float, help="stop after the epoch that ends past this (best epoch kept)"
    )
    train.add_argument(
        "--resume", action="store_true", help="go on from the checkpoint the last run left in --out"
    )
    train.set_defaults(func=_train)

    calibrate = verbs.add_parser(
        "calibrate", help="choose the decoding's O bias on validation (train does it at its end)"
    )
    calibrate.add_argument("--tagger", type=Path, default=DEFAULT_TAGGER_DIR, help="the tagger to calibrate")
    calibrate.set_defaults(func=_calibrate)

    compress = verbs.add_parser(
        "compress", help="store a tagger's weights as int4 deltas from its pretrained encoder (base-size)"
    )
    compress.add_argument("--tagger", type=Path, required=True, help="the tagger to read (fp16 weights)")
    compress.add_argument("--out", type=Path, required=True, help="where the compressed tagger is written")
    compress.set_defaults(func=_compress)

    export = verbs.add_parser("export", help="export the tagger to ONNX (the service serves that)")
    export.add_argument("--tagger", type=Path, default=DEFAULT_TAGGER_DIR, help="default: %(default)s")
    export.add_argument("--out", type=Path, help="default: beside the tagger")
    export.set_defaults(func=_export)

    evaluate = verbs.add_parser(
        "evaluate",
        help="mentions, entities and end-to-end relations on a split's or a file's text (both "
        "engines; live run)",
    )
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        type=Path,
        help="a DocRED-format JSON file with gold entities and labels instead (checked whole first)",
    )
    source.add_argument(
        "--split",
        default="holdout",
        choices=["train", "validation", "holdout"],
        help="which split of Re-DocRED dev",
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        help="where the report goes (default: docs/results/annotator-<split>.json; with --input, "
        "var/annotator-<file name>.json)",
    )
    evaluate.add_argument("--limit", type=int, help="only the first N documents")
    evaluate.add_argument(
        "--models", type=Path, help="a model bundle from `lmrc train` (its tagger and schema; needs --input)"
    )
    evaluate.add_argument(
        "--no-live", action="store_true", help="annotation figures only, no pipeline run (no relation F1)"
    )
    evaluate.set_defaults(func=_evaluate)

    levers = verbs.add_parser(
        "levers",
        help="raw-text levers and bounds: relations from plain text, strict and relaxed, in-process "
        "with the shipped proposer (encoder only), chosen on validation, scored on the holdout",
    )
    levers.add_argument(
        "--out", type=Path, default=Path("docs/results/annotator-levers.json"), help="default: %(default)s"
    )
    levers.add_argument("--limit", type=int, help="first N documents of each split only")
    levers.add_argument(
        "--other-tagger",
        type=Path,
        action="append",
        default=[],
        help="a trained tagger (`lmrc annotator train --out`) measured beside the shipped one, alone and "
        "with name propagation (repeatable)",
    )
    levers.set_defaults(func=_levers)
