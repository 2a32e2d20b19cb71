"""``lmrc classifier``: LoRA training, merging, evaluation and benchmark of the RC stage."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR


def add_commands(commands: argparse._SubParsersAction) -> None:
    from lmrc.classifier.training.train import TrainOptions

    defaults = {f.name: f.default for f in fields(TrainOptions) if f.name != "out"}
    classifier = commands.add_parser("classifier", help="the relation classification (RC) LLM")
    verbs = classifier.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="LoRA fine-tuning on the train split (PEFT adapter)")
    train.add_argument("--out", type=Path, default=DEFAULT_ADAPTER_DIR)
    train.add_argument("--version", default=defaults["version"])
    train.add_argument("--base-model", type=Path, help="checkpoint dir (default: the local SmolLM2)")
    train.add_argument("--base-model-id", default=defaults["base_model_id"], help="recorded name")
    train.add_argument("--rank", type=int, default=defaults["rank"])
    train.add_argument("--alpha", type=int, default=defaults["alpha"])
    train.add_argument("--dropout", type=float, default=defaults["dropout"])
    train.add_argument("--lr", type=float, default=defaults["lr"])
    train.add_argument("--epochs", type=int, default=defaults["epochs"])
    train.add_argument("--batch-pairs", type=int, default=defaults["batch_pairs"], help="pairs per step")
    train.add_argument("--max-docs", type=int, default=defaults["max_docs"], help="0: all train docs")
    train.add_argument("--positives-per-doc", type=int, default=defaults["positives_per_doc"])
    train.add_argument("--negatives-per-doc", type=int, default=defaults["negatives_per_doc"])
    train.add_argument("--max-minutes", type=float, default=defaults["max_minutes"], help="0: no limit")
    train.add_argument("--full-backprop", action="store_true", help="no shared prefix cache (GPU)")
    train.add_argument("--device", default="cpu")
    train.add_argument("--seed", type=int, default=defaults["seed"])
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.set_defaults(func=_train)

    merge = verbs.add_parser("merge", help="fold an adapter into the base model (one checkpoint)")
    merge.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR)
    merge.add_argument("--out", type=Path, required=True)
    merge.add_argument("--base-model", type=Path)
    merge.set_defaults(func=_merge)

    evaluate = verbs.add_parser("evaluate", help="RC scores on gold or proposer pairs via TGI")
    evaluate.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR)
    evaluate.add_argument("--split", choices=["train", "validation", "holdout"], default="holdout")
    evaluate.add_argument("--pairs", choices=["gold", "proposer"], default="gold")
    evaluate.add_argument("--limit", type=int, help="first N documents only")
    evaluate.add_argument("--tgi-url", help="a running TGI (default: start the local server)")
    evaluate.add_argument("--adapter-id", help="TGI adapter id (default: the adapter's version)")
    evaluate.add_argument("--concurrency", type=int, default=4)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=_evaluate)

    benchmark = verbs.add_parser("benchmark", help="requests/s and tokens/s, prefix shared or not")
    benchmark.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR)
    benchmark.add_argument("--tgi-url", help="a running TGI (default: start the local server)")
    benchmark.add_argument("--adapter-id", help="TGI adapter id (default: the adapter's version)")
    benchmark.add_argument("--documents", type=int, default=4)
    benchmark.add_argument("--pairs-per-document", type=int, default=8)
    benchmark.add_argument("--concurrency", type=int, default=4)
    benchmark.set_defaults(func=_benchmark)


def _train(args: argparse.Namespace) -> int:
    from lmrc.classifier.training.train import TrainOptions, train

    options = TrainOptions(
        out=args.out,
        version=args.version,
        base_model=args.base_model,
        base_model_id=args.base_model_id,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        lr=args.lr,
        epochs=args.epochs,
        batch_pairs=args.batch_pairs,
        max_docs=args.max_docs or None,
        positives_per_doc=args.positives_per_doc,
        negatives_per_doc=args.negatives_per_doc,
        max_minutes=args.max_minutes or None,
        full_backprop=args.full_backprop,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
    )
    print(json.dumps(train(options).model_dump(mode="json"), indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from lmrc.classifier.training.train import merge

    print(f"wrote {merge(args.adapter, args.out, args.base_model)}")
    return 0


@contextmanager
def _tgi(url: str | None, adapter_dir: Path, adapter_id: str) -> Iterator[str]:
    """The given TGI URL, or a local server started for the command with the adapter loaded."""
    if url:
        yield url
        return
    from lmrc.local.llm.local_server import LocalTgiServer

    with LocalTgiServer({adapter_id: adapter_dir}) as server:
        yield server.url


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lmrc.classifier.artifact import load_config
    from lmrc.classifier.service import ClassifierSettings
    from lmrc.classifier.training.evaluate import evaluate, format_report

    config = load_config(args.adapter)
    adapter_id = args.adapter_id or config.version
    with _tgi(args.tgi_url, args.adapter, adapter_id) as url:
        settings = ClassifierSettings(
            tgi_url=url,
            tgi_adapter_id=adapter_id,
            tgi_max_concurrency=args.concurrency,
            artifact_dir=args.adapter,
        )
        with tqdm(unit="pair", desc=f"RC on {args.pairs} pairs") as bar:
            report, _outcomes = evaluate(settings, config, args.split, args.pairs, args.limit, bar.update)
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from lmrc.classifier.artifact import load_config
    from lmrc.classifier.training.benchmark import format_rows, run_benchmark

    adapter_id = args.adapter_id or load_config(args.adapter).version
    with _tgi(args.tgi_url, args.adapter, adapter_id) as url:
        rows = run_benchmark(
            url, adapter_id, "validation", args.documents, args.pairs_per_document, args.concurrency
        )
    print(format_rows(rows))
    return 0
