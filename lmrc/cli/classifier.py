"""``lmrc classifier``: LoRA training, merging, evaluation and benchmark of the RC stage."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import get_args

from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR
from lmrc.classifier.prompt import PromptFormat
from lmrc.classifier.training.base_model import BASE_MODELS
from lmrc.cli.llm import MODEL_NAMES


def add_commands(commands: argparse._SubParsersAction) -> None:
    from lmrc.classifier.training.train import TrainOptions

    defaults = {f.name: f.default for f in fields(TrainOptions) if f.name != "out"}
    classifier = commands.add_parser("classifier", help="the relation classification (RC) LLM")
    verbs = classifier.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="LoRA fine-tuning on the train split's out-of-fold candidates")
    train.add_argument("--out", type=Path, default=DEFAULT_ADAPTER_DIR, help="where the adapter is written")
    shortlists = train.add_mutually_exclusive_group(required=True)
    shortlists.add_argument(
        "--fold-proposers",
        type=Path,
        nargs="+",
        help="proposer artifacts trained with --fold 0, 1, ... (in fold order): out-of-fold shortlists",
    )
    shortlists.add_argument(
        "--train-candidates",
        type=Path,
        help="a file from `lmrc classifier candidates --split train` (in-sample when its proposer "
        "trained on the split: pair it with --hardest-pairs)",
    )
    train.add_argument(
        "--hardest-pairs",
        type=int,
        help="train on the N pairs the encoder is least sure of (a CPU budget)",
    )
    train.add_argument(
        "--encoder-threshold",
        type=float,
        default=defaults["encoder_threshold"],
        help="the encoder's relation threshold, from which --hardest-pairs measures sureness "
        "(default: the one the candidates file records, else the shipped proposer's)",
    )
    train.add_argument(
        "--version",
        default=defaults["version"],
        help="the adapter's version name (the adapter id TGI serves it as)",
    )
    train.add_argument(
        "--base-model", type=Path, help="checkpoint dir (default: the known --base-model-id, prepared)"
    )
    train.add_argument(
        "--base-model-id",
        default=defaults["base_model_id"],
        help=f"a known base model's id ({', '.join(model.model_id for model in BASE_MODELS.values())}) "
        "or the name TGI serves --base-model as",
    )
    train.add_argument(
        "--prompt-format",
        choices=get_args(PromptFormat),
        help="how prompts are written (default: the known base model's own, else plain)",
    )
    train.add_argument(
        "--shortlist-size", type=int, default=defaults["shortlist_size"], help="options per pair"
    )
    train.add_argument("--rank", type=int, default=defaults["rank"], help="LoRA rank")
    train.add_argument("--alpha", type=int, default=defaults["alpha"], help="LoRA alpha")
    train.add_argument("--dropout", type=float, default=defaults["dropout"], help="LoRA dropout")
    train.add_argument("--lr", type=float, default=defaults["lr"], help="learning rate")
    train.add_argument(
        "--epochs", type=int, default=defaults["epochs"], help="passes over the training pairs"
    )
    train.add_argument("--batch-pairs", type=int, default=defaults["batch_pairs"], help="pairs per step")
    train.add_argument(
        "--micro-batch-pairs",
        type=int,
        default=defaults["micro_batch_pairs"],
        help="pairs per forward pass (memory: each attends to the whole document)",
    )
    train.add_argument("--max-docs", type=int, help="train on N documents only")
    train.add_argument("--max-minutes", type=float, help="stop after this long")
    train.add_argument(
        "--prefix-gradient", action="store_true", help="backpropagate through the document prefix (GPU)"
    )
    train.add_argument(
        "--validation-candidates", type=Path, help="candidates file: keep the epoch with the best offline F1"
    )
    train.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    train.add_argument("--seed", type=int, default=defaults["seed"], help="random seed")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    train.set_defaults(func=_train)

    candidates = verbs.add_parser(
        "candidates", help="a proposer's candidates and shortlists for a split (file)"
    )
    candidates.add_argument(
        "--split",
        choices=["train", "validation", "holdout"],
        default="validation",
        help="which split of Re-DocRED dev (train: in-sample for the shipped proposer)",
    )
    candidates.add_argument("--proposer", type=Path, help="proposer artifact (default: the shipped one)")
    candidates.add_argument(
        "--shortlist-size",
        type=int,
        help="relations per pair in its shortlist (default: the proposer's, what the service sends)",
    )
    candidates.add_argument("--out", type=Path, required=True, help="the candidates file to write (JSON)")
    candidates.set_defaults(func=_candidates)

    offline = verbs.add_parser(
        "offline", help="an adapter's F1 on a candidates file, in-process, beside the encoder"
    )
    offline.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR, help="the adapter to evaluate")
    offline.add_argument(
        "--candidates", type=Path, required=True, help="a file from `lmrc classifier candidates`"
    )
    offline.add_argument(
        "--base-model",
        type=Path,
        help="the base model's directory (default: the local small LLM, prepared once)",
    )
    offline.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    offline.add_argument("--limit", type=int, help="first N documents only")
    offline.set_defaults(func=_offline)

    merge = verbs.add_parser("merge", help="fold an adapter into the base model (one checkpoint)")
    merge.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR, help="the adapter to merge")
    merge.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory of the merged checkpoint (what TGI can serve without LoRA)",
    )
    merge.add_argument(
        "--base-model",
        type=Path,
        help="the base model's directory (default: the local small LLM, prepared once)",
    )
    merge.set_defaults(func=_merge)

    zero_shot = verbs.add_parser(
        "zero-shot",
        help="a classifier folder that prompts a base LLM as it is (no adapter), to evaluate and tune",
    )
    zero_shot.add_argument("--base-model", required=True, choices=MODEL_NAMES, help="the base LLM")
    zero_shot.add_argument("--out", type=Path, required=True, help="the folder to write classifier.json to")
    zero_shot.add_argument(
        "--examples",
        type=int,
        default=0,
        help="worked examples shown in every prompt (few-shot), from the train split's shortest "
        "suitable document and the shipped proposer's shortlists (default 0: zero-shot)",
    )
    zero_shot.add_argument("--shortlist-size", type=int, default=5, help="options per example pair")
    zero_shot.set_defaults(func=_zero_shot)

    evaluate = verbs.add_parser("evaluate", help="RC scores on a candidates file through TGI")
    evaluate.add_argument(
        "--adapter", type=Path, default=DEFAULT_ADAPTER_DIR, help="the adapter (its classifier.json)"
    )
    evaluate.add_argument("--candidates", type=Path, required=True, help="from lmrc classifier candidates")
    evaluate.add_argument("--limit", type=int, help="first N documents only")
    evaluate.add_argument("--tgi-url", help="a running TGI (default: start the local server)")
    evaluate.add_argument("--adapter-id", help="TGI adapter id (default: the adapter's version)")
    evaluate.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    evaluate.add_argument("--outcomes", type=Path, help="write every pair's answer here (JSON lines)")
    evaluate.add_argument(
        "--decision", choices=["tuned", "llm"], default="tuned", help="llm: the LLM's answer alone"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")

    tune = verbs.add_parser("tune", help="choose how LLM answers and encoder probabilities combine")
    tune.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER_DIR, help="gets the decision")
    tune.add_argument("--outcomes", type=Path, required=True, help="evaluate --decision llm --outcomes")
    tune.add_argument("--candidates", type=Path, required=True, help="the validation candidates file")
    tune.set_defaults(func=_tune)
    evaluate.set_defaults(func=_evaluate)

    benchmark = verbs.add_parser(
        "benchmark",
        help="the local server's engines side by side on the classifier's holdout requests",
        description="Starts the local TGI-compatible server once per engine (reference: one request "
        "at a time in fp32, as before batching; batching-fp32; batching, the default) and sends each "
        "the same requests: pairs/s, tokens/s, document latency, peak memory, agreement with the "
        "reference's answers.",
    )
    benchmark.add_argument(
        "--adapter", type=Path, default=DEFAULT_ADAPTER_DIR, help="default: the shipped one"
    )
    benchmark.add_argument("--documents", type=int, default=8, help="first N holdout documents (default 8)")
    benchmark.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight, as the classifier (default 32)"
    )
    benchmark.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results/llm-serving-benchmark.json"),
        help="JSON report (default docs/results/llm-serving-benchmark.json)",
    )
    benchmark.set_defaults(func=_benchmark)


def _train(args: argparse.Namespace) -> int:
    from lmrc.classifier.training.train import TrainOptions, check_train_candidates, train
    from lmrc.cli import UserError

    train_payload = None
    if args.train_candidates is not None:
        try:
            train_payload = check_train_candidates(args.train_candidates, args.shortlist_size)
        except ValueError as error:
            raise UserError(str(error)) from None
    options = TrainOptions(
        out=args.out,
        fold_proposers=tuple(args.fold_proposers or ()),
        train_candidates=args.train_candidates,
        hardest_pairs=args.hardest_pairs,
        encoder_threshold=args.encoder_threshold,
        version=args.version,
        base_model=args.base_model,
        base_model_id=args.base_model_id,
        prompt_format=args.prompt_format,
        shortlist_size=args.shortlist_size,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        lr=args.lr,
        epochs=args.epochs,
        batch_pairs=args.batch_pairs,
        micro_batch_pairs=args.micro_batch_pairs,
        max_docs=args.max_docs,
        max_minutes=args.max_minutes,
        prefix_gradient=args.prefix_gradient,
        validation_candidates=args.validation_candidates,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
        resume=args.resume,
    )
    print(json.dumps(train(options, train_payload=train_payload).model_dump(mode="json"), indent=2))
    return 0


def _candidates(args: argparse.Namespace) -> int:
    from lmrc import docred
    from lmrc.classifier.training.offline import save_candidates
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, load_config
    from lmrc.proposer.training.candidates import score_candidates

    proposer = args.proposer or DEFAULT_ARTIFACT_DIR
    config = load_config(proposer)
    size = args.shortlist_size or config.shortlist_size
    found = score_candidates(proposer, docred.load_split(args.split), size)
    save_candidates(args.out, args.split, config.version, size, found, config.relation_threshold)
    print(f"wrote {args.out}: {sum(len(d.pairs) for d in found)} pairs of {len(found)} documents")
    return 0


def _offline(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from peft import PeftModel

    from lmrc.classifier.artifact import has_adapter, load_config
    from lmrc.classifier.prompt import docred_labels
    from lmrc.classifier.training.offline import load_candidates, offline_scores
    from lmrc.classifier.training.train import load_base

    candidates = load_candidates(args.candidates)
    if args.limit:
        candidates = replace(candidates, documents=candidates.documents[: args.limit])
    config = load_config(args.adapter)
    tokenizer, model = load_base(args.base_model, args.device, config.base_model)
    if has_adapter(args.adapter):
        model = PeftModel.from_pretrained(model, args.adapter)
    scores, _outcomes = offline_scores(
        model.eval(), tokenizer, docred_labels(), candidates, args.device, style=config.prompt_style()
    )
    print(json.dumps(asdict(scores), indent=2))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from lmrc.classifier.training.train import merge

    print(f"wrote {merge(args.adapter, args.out, args.base_model)}")
    return 0


def _zero_shot(args: argparse.Namespace) -> int:
    from lmrc.classifier.artifact import ClassifierConfig, save_config
    from lmrc.classifier.prompt import PROMPT_VERSION
    from lmrc.classifier.training.base_model import base_model

    model = base_model(args.base_model)
    examples = ""
    if args.examples:
        from lmrc import docred
        from lmrc.classifier.prompt import docred_labels
        from lmrc.classifier.training.examples import few_shot_examples
        from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR

        examples = few_shot_examples(
            args.examples,
            DEFAULT_ARTIFACT_DIR,
            args.shortlist_size,
            docred_labels(),
            docred.load_split("train"),
        )
    shots = f"{args.examples}-shot" if args.examples else "zero-shot"
    config = ClassifierConfig(
        version=f"rc-{model.name}-{shots}",
        prompt_version=PROMPT_VERSION,
        base_model=model.model_id,
        prompt_format=model.prompt_format,
        prompt_examples=examples,
        training={"method": f"none: the base model prompted as it is ({shots})", "licence": model.licence},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_config(config, args.out)
    print(f"wrote {args.out / 'classifier.json'} ({config.version}, prompt {model.prompt_format})")
    return 0


@contextmanager
def _tgi(url: str | None, adapter_dir: Path, adapter_id: str | None) -> Iterator[str]:
    """The given TGI URL, or a local server started for the command: the adapter's base model with
    the adapter loaded, or the base model alone for a zero-shot folder (``adapter_id`` None)."""
    if url:
        yield url
        return
    from lmrc.local.llm.local_server import LocalTgiServer

    with LocalTgiServer.for_classifier(adapter_dir, adapter_id) as server:
        yield server.url


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from lmrc.classifier.artifact import has_adapter, load_config
    from lmrc.classifier.service import ClassifierSettings
    from lmrc.classifier.training.evaluate import evaluate, format_report
    from lmrc.classifier.training.offline import load_candidates

    config = load_config(args.adapter)
    adapter_id = (args.adapter_id or config.version) if has_adapter(args.adapter) else None
    candidates = load_candidates(args.candidates)
    if args.limit:
        candidates = replace(candidates, documents=candidates.documents[: args.limit])
    with _tgi(args.tgi_url, args.adapter, adapter_id) as url:
        settings = ClassifierSettings(
            tgi_url=url,
            tgi_adapter_id=adapter_id,
            tgi_max_concurrency=args.concurrency,
            artifact_dir=args.adapter,
            decision=args.decision,
        )
        with tqdm(unit="pair", desc=f"RC on {candidates.split}") as bar:
            report, outcomes = evaluate(settings, config, candidates, bar.update)
    if args.outcomes:
        with open(args.outcomes, "w", encoding="utf-8") as handle:
            for outcome in outcomes:
                record = asdict(outcome)
                record["gold"] = sorted(outcome.gold)
                handle.write(json.dumps(record) + "\n")
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from lmrc.classifier.artifact import load_config, save_config
    from lmrc.classifier.training.decision import load_outcomes, tune_decision
    from lmrc.classifier.training.offline import load_candidates

    candidates = load_candidates(args.candidates)
    if candidates.split != "validation":
        raise SystemExit(f"tune on the validation split, not {candidates.split}")
    decision, grid = tune_decision(load_outcomes(args.outcomes), [raw for raw, _ in candidates.documents])
    for row in grid:
        print(json.dumps(row))
    config = load_config(args.adapter)
    save_config(config.model_copy(update={"decision": decision}), args.adapter)
    print(f"decision written to {args.adapter}: {decision.model_dump_json()}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from lmrc.local.llm_benchmark import run_benchmark
    from lmrc.paths import REPO_ROOT

    report = run_benchmark(
        documents=args.documents,
        concurrency=args.concurrency,
        adapter_dir=args.adapter,
        log_dir=REPO_ROOT / "var" / "log",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"speedup {report['speedup']}x ({report['pairs_per_second']} vs "
        f"{report['baseline_pairs_per_second']} pairs/s), agreement {report['agreement']}; wrote {args.out}"
    )
    return 0
