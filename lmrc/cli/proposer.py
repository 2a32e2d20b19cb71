"""``lmrc proposer``: train, export to ONNX, evaluate, benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR


def add_commands(commands: argparse._SubParsersAction) -> None:
    proposer = commands.add_parser("proposer", help="the relation candidate proposer (RCP) model")
    verbs = proposer.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="fine-tune on the train split, threshold on validation")
    train.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT_DIR, help="where the artifact is written")
    train.add_argument(
        "--version", default="rcp-minilm-l6-v1", help="the artifact's version name (in every event it scores)"
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
    train.set_defaults(func=_train)

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
    export.add_argument("--out", type=Path, help="default: <artifact>/<version>.onnx")
    export.set_defaults(func=_export)

    evaluate = verbs.add_parser("evaluate", help="pair recall and pass rate with the ONNX model")
    evaluate.add_argument(
        "--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to evaluate"
    )
    evaluate.add_argument(
        "--split",
        choices=["train", "validation", "holdout"],
        default="holdout",
        help="which split of Re-DocRED dev",
    )
    evaluate.add_argument("--recall-target", type=float, help="use the artifact's threshold for this target")
    evaluate.add_argument("--threshold", type=float, help="default: the artifact's")
    evaluate.set_defaults(func=_evaluate)

    memory = verbs.add_parser(
        "memory", help="peak RSS of the worst documents the proposer's limits admit (JSON)"
    )
    memory.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to measure")
    memory.add_argument(
        "--limit-mib", type=int, default=6144, help="the memory limit to compare with (the chart's)"
    )
    memory.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    memory.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    memory.set_defaults(func=_memory)

    benchmark = verbs.add_parser("benchmark", help="torch eager vs onnxruntime, printed as a table")
    benchmark.add_argument(
        "--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR, help="the artifact to benchmark"
    )
    benchmark.add_argument(
        "--split",
        choices=["train", "validation", "holdout"],
        default="validation",
        help="which split of Re-DocRED dev",
    )
    benchmark.add_argument("--limit", type=int, help="first N documents only")
    benchmark.set_defaults(func=_benchmark)


def _train(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.train import TrainOptions, train

    options = TrainOptions(
        out=args.out,
        version=args.version,
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
    )
    config = train(options)
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def _memory(args: argparse.Namespace) -> int:
    from lmrc.proposer.service import ProposerSettings
    from lmrc.proposer.training.export import ensure_onnx
    from lmrc.proposer.training.memory import measure, worst_cases

    settings = ProposerSettings()
    onnx = ensure_onnx(args.artifact)
    cases = worst_cases(settings.max_document_tokens, settings.max_entities, settings.max_mention_slots)
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
    }
    print(f"worst admitted document: peak RSS {peak} MiB of a {args.limit_mib} MiB limit")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if peak < args.limit_mib else 1


def _export(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.export import export_onnx

    print(f"wrote {export_onnx(args.artifact, args.out)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmrc import docred
    from lmrc.docred.evaluation import format_candidates
    from lmrc.proposer.artifact import load_config, threshold_for, tokenizer_file
    from lmrc.proposer.features import DocumentFeaturizer
    from lmrc.proposer.inference import OnnxPairScorer
    from lmrc.proposer.training.export import ensure_onnx
    from lmrc.proposer.training.selection import candidate_scores, score_documents

    config = load_config(args.artifact)
    scorer = OnnxPairScorer(ensure_onnx(args.artifact))
    featurizer = DocumentFeaturizer(tokenizer_file(), config.window_length, config.window_stride)
    scored = score_documents(docred.load_split(args.split), featurizer, scorer.score)
    threshold = threshold_for(config, args.recall_target) if args.threshold is None else args.threshold
    print(f"{config.version} on {args.split}, threshold {threshold:.4f} ({scorer.provider})")
    print(format_candidates(candidate_scores(scored, threshold)))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.benchmark import format_rows, run_benchmark

    rows = run_benchmark(args.artifact, args.split, args.limit)
    from lmrc import docred

    count = len(docred.load_split(args.split)[: args.limit])
    print(format_rows(rows, count))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from lmrc.proposer.training.calibrate import calibrate

    config = calibrate(args.artifact, args.recall_target)
    print(json.dumps(config.thresholds, indent=2))
    return 0
