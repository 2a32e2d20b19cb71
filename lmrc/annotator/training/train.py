"""Fine-tuning the mention tagger on text rebuilt from DocRED tokens.

Mentions need no relation labels, so besides the train split's 400 documents the tagger learns
from every document with gold entities that shares nothing with the validation and holdout
splits: by default DocRED's first 200 annotated train documents and its 999 unlabelled test
documents in ../shared/data/docred/ (1,599 documents in all).

Cross-entropy over each word's first word piece (13 tags: O and B/I of DocRED's six types), the
encoder's transformer layers and the layer on top trained, embeddings frozen. AdamW with linear
warm-up and decay. After every epoch the validation split's mention F1 (exact character spans,
typed) is measured; the best epoch is kept. Decoding is BIO-constrained Viterbi; the bias on the
O tag that it adds is then chosen on validation (``calibrate_tagger``).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lmrc import docred
from lmrc.annotator.tagger import (
    TAGS,
    MentionSpan,
    TaggerConfig,
    TaggerFeaturizer,
    TextPieces,
    decode_tags,
    merge_windows,
    save_tagger_config,
    tags_for,
    viterbi_tags,
    word_tag_ids,
)
from lmrc.annotator.training.tagger_model import TaggerModel, load_tagger, save_tagger
from lmrc.checkpoints import (
    CHECKPOINT_DIR,
    TrainingState,
    load_checkpoint,
    resumable_options,
    save_checkpoint,
)
from lmrc.docred.dataset import Dataset, redocred_dataset
from lmrc.docred.text import rebuild_text
from lmrc.paths import (
    DEFAULT_ENCODER,
    encoder_package,
    encoder_package_version,
    encoder_tokenizer_file,
    shared_dir,
)


@dataclass(frozen=True)
class TaggerTrainOptions:
    out: Path
    version: str = "mention-tagger-minilm-l6-v1"
    epochs: int = 5
    batch_windows: int = 4
    encoder_lr: float = 1e-4
    head_lr: float = 1e-3
    warmup: float = 0.06
    seed: int = 13
    threads: int = 0
    extra_documents: tuple[Path, ...] | None = None  # None: the shared DocRED files
    init_from: Path | None = None  # go on from a trained tagger instead of the pretrained encoder
    #: The pretrained encoder (ignored with ``init_from``, which brings its own).
    encoder: str = DEFAULT_ENCODER
    #: Stop after the epoch that ends past this many minutes (the best epoch so far is kept).
    max_minutes: float | None = None
    #: Go on from the checkpoint in ``out`` (written after every epoch).
    resume: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class _Example:
    window_ids: np.ndarray
    mask: np.ndarray
    labels: np.ndarray  # [windows, width]: tag of a word's first piece, -100 elsewhere


def _example(featurizer: TaggerFeaturizer, raw: dict, tags: tuple[str, ...]) -> _Example:
    rebuilt = rebuild_text(raw)
    pieces = featurizer.pieces(rebuilt.text)
    gold = [MentionSpan(m.start, m.end, m.type) for m in rebuilt.mentions]
    word_tags = word_tag_ids(pieces, gold, tags)
    piece_labels = np.full(len(pieces.ids), -100, dtype=np.int64)
    piece_labels[pieces.first_pieces] = word_tags
    window_ids, mask, offsets = featurizer.windows(pieces.ids)
    labels = np.full(window_ids.shape, -100, dtype=np.int64)
    for row, offset in enumerate(offsets):
        chunk = piece_labels[offset : offset + window_ids.shape[1] - 2]
        labels[row, 1 : 1 + len(chunk)] = chunk
    return _Example(window_ids, mask, labels)


def default_extra_documents() -> tuple[Path, ...]:
    """DocRED documents with gold mentions and no title in the project's split."""
    folder = shared_dir() / "data" / "docred"
    return (folder / "train_annotated_first200.json", folder / "test_unlabeled.json")


def outside_of(paths: Sequence[Path], held_out: Collection[str]) -> list[dict]:
    """The documents of the DocRED files at ``paths`` whose titles are not in ``held_out`` (the
    validation and holdout titles): what the tagger, and the levers' mention-pair model, learn from
    beside the train split."""
    return [raw for path in paths for raw in docred.load_raw(path) if raw["title"] not in held_out]


def word_logits(model: TaggerModel, featurizer: TaggerFeaturizer, text: str) -> tuple[np.ndarray, TextPieces]:
    """[words, tags] logits of a text (its words' first pieces, windows merged)."""
    pieces = featurizer.pieces(text)
    if not pieces.ids:
        return np.zeros((0, model.classifier.out_features)), pieces
    window_ids, mask, offsets = featurizer.windows(pieces.ids)
    with torch.no_grad():
        device = next(model.parameters()).device
        ids, attention = torch.from_numpy(window_ids).to(device), torch.from_numpy(mask).to(device)
        logits = model(ids, attention).float().cpu().numpy()
    return merge_windows(logits, offsets, len(pieces.ids))[pieces.first_pieces], pieces


def predict_spans(
    model: TaggerModel,
    featurizer: TaggerFeaturizer,
    text: str,
    outside_bias: float = 0.0,
    tags: tuple[str, ...] = TAGS,
) -> list[MentionSpan]:
    """As the service decodes: BIO-constrained Viterbi over the word logits."""
    logits, pieces = word_logits(model, featurizer, text)
    return decode_tags([tags[t] for t in viterbi_tags(logits, outside_bias, tags)], pieces.word_spans)


#: The O biases tried on validation.
OUTSIDE_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def calibrate_tagger(directory: Path, validation: list[dict] | None = None) -> TaggerConfig:
    """Choose the O bias by mention F1 (exact spans) on the validation documents (default:
    Re-DocRED's), with the shipped fp16 weights; written into the tagger's config with the
    validation figures at that bias."""
    model, config = load_tagger(directory)
    tags = tuple(config.tags)
    featurizer = TaggerFeaturizer(
        encoder_tokenizer_file(config.encoder), config.window_length, config.window_stride
    )
    validation = validation if validation is not None else redocred_dataset().validation
    texts = [rebuild_text(raw).text for raw in validation]
    cached = [(text, *word_logits(model, featurizer, text)) for text in texts]

    def scores(bias: float) -> dict[str, float]:
        spans = {
            text: decode_tags([tags[t] for t in viterbi_tags(logits, bias, tags)], pieces.word_spans)
            for text, logits, pieces in cached
        }
        return span_scores(validation, spans.__getitem__)

    table = {bias: scores(bias) for bias in OUTSIDE_BIASES}
    best = max(OUTSIDE_BIASES, key=lambda bias: (table[bias]["mention_f1"], -bias))
    config = config.model_copy(
        update={
            "outside_bias": best,
            "validation": {k: round(v, 4) for k, v in table[best].items()},
            "training": {
                **config.training,
                "outside_bias_table": {str(b): round(table[b]["mention_f1"], 4) for b in OUTSIDE_BIASES},
            },
        }
    )
    save_tagger_config(config, directory)
    return config


def span_scores(documents: list[dict], predict) -> dict[str, float]:
    """Mention precision/recall/F1 on exact character spans, untyped and typed."""
    counts = {"gold": 0, "predicted": 0, "exact": 0, "typed": 0}
    for raw in documents:
        rebuilt = rebuild_text(raw)
        gold = {(m.start, m.end): m.type for m in rebuilt.mentions}
        predicted = {(s.start, s.end): s.type for s in predict(rebuilt.text)}
        counts["gold"] += len(gold)
        counts["predicted"] += len(predicted)
        counts["exact"] += len(gold.keys() & predicted.keys())
        counts["typed"] += sum(1 for span, kind in predicted.items() if gold.get(span) == kind)
    scores: dict[str, float] = {}
    for name in ("exact", "typed"):
        precision = counts[name] / max(counts["predicted"], 1)
        recall = counts[name] / max(counts["gold"], 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        prefix = "mention" if name == "exact" else "typed_mention"
        scores |= {f"{prefix}_precision": precision, f"{prefix}_recall": recall, f"{prefix}_f1": f1}
    return scores


def train_tagger(options: TaggerTrainOptions, dataset: Dataset | None = None) -> TaggerConfig:
    """Train on ``dataset``'s documents (default: Re-DocRED's fixed split plus the DocRED files of
    ``extra_documents``), the epoch chosen on its validation documents; a checkpoint after every
    epoch in ``out``, ``options.resume`` goes on from it."""
    if options.threads:
        torch.set_num_threads(options.threads)
    random.seed(options.seed)
    torch.manual_seed(options.seed)
    # Going on from a trained tagger brings its encoder; else the pretrained one, made below once
    # the schema's tags are known.
    model: TaggerModel | None = None
    encoder = options.encoder
    if options.init_from:
        model, initial = load_tagger(options.init_from)
        encoder = initial.encoder
    featurizer = TaggerFeaturizer(encoder_tokenizer_file(encoder))
    default = dataset is None
    dataset = dataset or redocred_dataset()
    tags = tags_for(dataset.schema.entity_types)
    validation = dataset.validation
    held_out = {raw["title"] for raw in validation} | {
        raw["title"] for documents in dataset.holdouts.values() for raw in documents
    }
    documents = list(dataset.train)
    extra = options.extra_documents if options.extra_documents is not None else ()
    if default and options.extra_documents is None:
        extra = default_extra_documents()
    documents += outside_of(extra, held_out)
    train = [_example(featurizer, raw, tags) for raw in documents]
    windows = [(example, row) for example in train for row in range(example.window_ids.shape[0])]
    if model is None:
        model = TaggerModel.pretrained(len(tags), encoder)
    model.to(options.device)
    head = list(model.classifier.parameters())
    layers = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": layers, "lr": options.encoder_lr}, {"params": head, "lr": options.head_lr}]
    )
    steps = options.epochs * -(-len(windows) // options.batch_windows)
    warmup = max(1, int(steps * options.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "train_log.jsonl"
    checkpoint_dir = options.out / CHECKPOINT_DIR
    resumable = resumable_options(options, schema=dataset.schema.fingerprint(), train_documents=len(train))
    if options.resume:
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, resumable)
        config = TaggerConfig.model_validate(state.extra["config"])
    else:
        state = TrainingState()
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        log_path.write_text("", encoding="utf-8")
        config = TaggerConfig(
            version=options.version,
            encoder=encoder,
            encoder_package=encoder_package(encoder),
            encoder_package_version=encoder_package_version(encoder),
            tags=list(tags),
            window_length=featurizer.window_length,
            window_stride=featurizer.window_stride,
        )
    resumed_after = state.epoch
    session_started = time.monotonic()
    started = session_started - state.elapsed_seconds
    loss_function = torch.nn.CrossEntropyLoss(ignore_index=-100)
    stopped_at: int | None = None
    for epoch in range(state.epoch + 1, options.epochs + 1):
        model.train()
        random.shuffle(windows)
        total = 0.0
        batches = range(0, len(windows), options.batch_windows)
        progress = tqdm(batches, desc=f"tagger epoch {epoch}/{options.epochs}", unit="batch")
        for start in progress:
            batch = windows[start : start + options.batch_windows]
            width = max(int(example.mask[row].sum()) for example, row in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for index, (example, row) in enumerate(batch):
                length = int(example.mask[row].sum())
                ids[index, :length] = torch.from_numpy(example.window_ids[row, :length])
                mask[index, :length] = 1
                labels[index, :length] = torch.from_numpy(example.labels[row, :length])
            logits = model(ids.to(options.device), mask.to(options.device))
            loss = loss_function(logits.reshape(-1, logits.shape[-1]), labels.to(options.device).reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item()
            progress.set_postfix(loss=f"{loss.item():.4f}")
        model.eval()
        scores = span_scores(validation, lambda text: predict_spans(model, featurizer, text, tags=tags))
        session_seconds = time.monotonic() - session_started
        record = {
            "epoch": epoch,
            "loss": total / max(1, len(batches)),
            "elapsed_s": round(time.monotonic() - started, 1),
            "estimated_s_left": round(
                session_seconds / (epoch - resumed_after) * (options.epochs - epoch), 1
            ),
            **{f"validation_{k}": round(v, 4) for k, v in scores.items()},
        }
        tqdm.write(json.dumps(record))
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if scores["typed_mention_f1"] > state.best_score:
            state.best_score, state.best_epoch = scores["typed_mention_f1"], epoch
            config = config.model_copy(
                update={
                    "validation": {k: round(v, 4) for k, v in scores.items()},
                    "training": {
                        "epoch": epoch,
                        "epochs": options.epochs,
                        "train_documents": len(train),
                        "dataset": dataset.name,
                        "schema": dataset.schema.name,
                        "extra_documents": [str(path.name) for path in extra],
                        "train_windows": len(windows),
                        "batch_windows": options.batch_windows,
                        "encoder_lr": options.encoder_lr,
                        "head_lr": options.head_lr,
                        "seed": options.seed,
                        **({"init_from": str(options.init_from)} if options.init_from else {}),
                    },
                }
            )
            save_tagger(model, config, options.out)
        state.epoch, state.elapsed_seconds = epoch, time.monotonic() - started
        state.extra["config"] = config.model_dump(mode="json")
        save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state, resumable)
        over_budget = options.max_minutes is not None and session_seconds > 60 * options.max_minutes
        if over_budget and epoch < options.epochs:
            stopped_at = epoch
            break
    config.training["wall_s"] = round(time.monotonic() - started, 1)
    if stopped_at is not None:
        config.training["stopped_at_time_limit_after_epoch"] = stopped_at
    save_tagger_config(config, options.out)
    if stopped_at is None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    # What ships is the fp16 file: the decoding is calibrated and measured on it.
    return calibrate_tagger(options.out, validation)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=TaggerTrainOptions.epochs)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    print(
        train_tagger(
            TaggerTrainOptions(out=args.out, epochs=args.epochs, threads=args.threads)
        ).model_dump_json(indent=2)
    )
