"""``lmrc train``: train every model of a dataset into one model bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lmrc.local.train import BundleTrainOptions

if TYPE_CHECKING:
    from lmrc.proposer.artifact import ProposerConfig


def _train(args: argparse.Namespace) -> int:
    from lmrc.checkpoints import CheckpointMismatchError
    from lmrc.cli import UserError
    from lmrc.docred.dataset import DatasetError, load_dataset
    from lmrc.local.train import train_bundle
    from lmrc.paths import encoder_dir

    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UserError("--max-minutes must be above 0")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here")
    encoder = args.encoder
    initial: ProposerConfig | None = None
    if args.init_from is not None:
        from lmrc.local.train import proposer_source
        from lmrc.proposer.artifact import load_config

        if not (proposer_source(args.init_from) / "proposer.json").exists():
            raise UserError(
                f"--init-from {args.init_from}: no proposer there (a bundle or a proposer folder)"
            )
        if args.classifier:
            raise UserError(
                "--init-from with --classifier: the fold proposers must not start from a model that saw "
                "their held-out folds; train the adapter in a run without --init-from"
            )
        initial = load_config(proposer_source(args.init_from))
        encoder = initial.encoder
    try:  # the whole dataset and the encoder checked before any model loads
        dataset = load_dataset(args.data, args.schema)
        encoder_dir(encoder, needed="tokenizer.json")
    except (DatasetError, ValueError) as error:
        raise UserError(str(error)) from None
    if initial is not None and not initial.same_labels(dataset.schema):
        raise UserError(
            f"--init-from {args.init_from}: its proposer knows {len(initial.relation_ids)} relations and "
            f"entity types {', '.join(initial.entity_types)}; schema {dataset.schema.name} has "
            f"{len(dataset.schema.relation_ids)} and {', '.join(dataset.schema.entity_types)}"
        )
    if args.folds < 2:
        raise UserError("--folds must be at least 2 (each fold proposer trains on the other folds)")
    if args.resume and not (args.out / "schema.json").exists():
        raise UserError(f"--resume: {args.out} holds no earlier run of lmrc train")
    print(
        f"lmrc train: {args.data} (schema {dataset.schema.name}: {len(dataset.schema.entity_types)} "
        f"entity types, {len(dataset.schema.relations)} relations), {len(dataset.train)} train documents, "
        f"validation: {dataset.validation_source}; holdouts: "
        f"{', '.join(f'{k} ({len(v)})' for k, v in dataset.holdouts.items()) or 'none'}",
        flush=True,
    )
    options = BundleTrainOptions(
        out=args.out,
        encoder=encoder,
        device=args.device,
        max_minutes=args.max_minutes,
        resume=args.resume,
        tagger_epochs=args.tagger_epochs,
        proposer_epochs=args.epochs,
        threads=args.threads,
        max_train_docs=args.max_train_docs,
        skip_tagger=args.no_tagger,
        data_dir=args.data,
        classifier=args.classifier,
        folds=args.folds,
        classifier_epochs=args.classifier_epochs,
        classifier_max_docs=args.classifier_max_docs,
        init_from=args.init_from,
        encoder_lr=args.encoder_lr,
        head_lr=args.head_lr,
    )
    try:
        train_bundle(dataset, options)
    except CheckpointMismatchError as error:
        raise UserError(str(error)) from None
    print(f"run it: lmrc run --models {args.out} --text FILE (--encoder-only: no LLM)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmrc.bundle import BundleError, load_bundle
    from lmrc.cli import UserError
    from lmrc.docred.dataset import DatasetError, load_documents
    from lmrc.local.bundle_evaluation import STEPS, evaluate_bundle

    unknown = sorted(set(args.steps or ()) - set(STEPS))
    if unknown:
        raise UserError(f"--steps: {', '.join(unknown)} unknown; steps: {', '.join(STEPS)}")
    try:  # the bundle and the holdout file checked before anything starts
        bundle = load_bundle(args.models)
        load_documents(args.holdout, bundle.schema)
    except (BundleError, DatasetError) as error:
        raise UserError(str(error)) from None
    report = evaluate_bundle(args.models, args.holdout, args.out, tuple(args.steps or STEPS), args.limit)
    print(json.dumps({k: v for k, v in report.items() if isinstance(v, dict) and "f1" in v}, indent=2))
    print(f"written to {args.out}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train every model of a dataset (tagger, proposer, the LLM's adapter) into one model bundle",
        description="Train the mention tagger, the proposer and, with --classifier, the LLM's LoRA\n"
        "adapter of a dataset folder (train.json, an optional validation.json, dev.json and\n"
        "test.json in DocRED format, and schema.json) into a model bundle that `lmrc run --models`\n"
        "and the services' *_MODELS settings select. Epochs and thresholds are chosen on\n"
        "validation.json, or on a slice of train.json without it; dev and test are never looked at.\n"
        "A checkpoint is written after every epoch.",
    )
    train.add_argument("--data", type=Path, required=True, help="the dataset folder")
    train.add_argument(
        "--schema", help="a schema file, or a shipped schema (redocred, cdr); default: DIR/schema.json"
    )
    train.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    train.add_argument(
        "--encoder",
        default=BundleTrainOptions.encoder,
        help="the proposer's pretrained encoder: all-MiniLM-L6-v2 (default, fast on CPU), "
        "all-mpnet-base-v2 (after `lmrc proposer install-encoder`), or a Hugging Face encoder folder "
        "(SciBERT, PubMedBERT...)",
    )
    train.add_argument("--device", default="cpu", help="cpu, or cuda (a GPU torch sees)")
    train.add_argument(
        "--max-minutes", type=float, help="time budget: each stage stops after the epoch past its share"
    )
    train.add_argument("--resume", action="store_true", help="go on from the checkpoints in --out")
    train.add_argument(
        "--epochs", type=int, default=BundleTrainOptions.proposer_epochs, help="proposer epochs"
    )
    train.add_argument(
        "--tagger-epochs", type=int, default=BundleTrainOptions.tagger_epochs, help="mention tagger epochs"
    )
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    train.add_argument("--max-train-docs", type=int, help="train on the first N documents only (a quick try)")
    train.add_argument(
        "--no-tagger", action="store_true", help="the proposer only (documents come with their entities)"
    )
    train.add_argument(
        "--classifier",
        action="store_true",
        help="also the classifier's LoRA adapter (trains --folds extra proposers for its data; without "
        "it the bundle is served with the default bundle's adapter)",
    )
    train.add_argument(
        "--folds",
        type=int,
        default=BundleTrainOptions.folds,
        help="fold proposers for the adapter's out-of-fold shortlists (default %(default)s)",
    )
    train.add_argument(
        "--classifier-epochs",
        type=int,
        default=BundleTrainOptions.classifier_epochs,
        help="adapter epochs (default %(default)s)",
    )
    train.add_argument("--classifier-max-docs", type=int, help="train the adapter on N documents' pairs only")
    train.add_argument(
        "--init-from",
        type=Path,
        help="continue from this trained proposer (a bundle or a proposer folder; its encoder and sizes, "
        "--encoder ignored) instead of the pretrained encoder: self-training on pseudo-labels from "
        "`lmrc proposer pseudo-label`, or adapting a shipped model to your data",
    )
    train.add_argument(
        "--encoder-lr",
        type=float,
        default=BundleTrainOptions.encoder_lr,
        help="the proposer encoder's learning rate (default %(default)s; lower when continuing)",
    )
    train.add_argument(
        "--head-lr",
        type=float,
        default=BundleTrainOptions.head_lr,
        help="the proposer heads' learning rate (default %(default)s)",
    )
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="a bundle's figures on a holdout file, live: encoder only, the LLM pipeline, the tagger, "
        "plain text; beside the default bundle's Re-DocRED holdout",
    )
    evaluate.add_argument("--models", type=Path, required=True, help="the model bundle")
    evaluate.add_argument("--holdout", type=Path, required=True, help="a DocRED-format file with gold labels")
    evaluate.add_argument("--out", type=Path, required=True, help="the JSON report to write")
    evaluate.add_argument("--limit", type=int, help="only the first N documents of the holdout")
    evaluate.add_argument("--steps", nargs="+", metavar="STEP", help="only these steps (default: all)")
    evaluate.set_defaults(func=_evaluate)
