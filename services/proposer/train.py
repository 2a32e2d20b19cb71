"""Fine-tuning the proposer on the train split; threshold chosen on the validation split.

Binary cross-entropy on "does any relation hold" for every ordered entity pair, as the paper's
RCP; AdamW with linear warm-up (6%) and decay; gradients accumulated over ``batch_docs``
documents. After every epoch the validation split is scored; the epoch with the lowest pass rate
at the recall target is kept. The artifact is then reloaded from its fp16 file and calibrated on
validation (thresholds for several recall targets), so the shipped thresholds match the shipped
weights exactly.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.functional import binary_cross_entropy_with_logits
from tqdm import tqdm

from lmrc import docred
from services.proposer.artifact import ProposerConfig, encoder_package_version, tokenizer_file
from services.proposer.calibrate import calibrate_model
from services.proposer.features import INPUT_NAMES, DocumentFeaturizer
from services.proposer.selection import (
    candidate_scores,
    pair_labels,
    relation_labels,
    score_documents,
    threshold_for_recall,
)
from services.proposer.torch_model import (
    build_model,
    load_artifact,
    save_artifact,
    torch_inputs,
    torch_scores,
)


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    version: str = "rcp-minilm-l6-v1"
    epochs: int = 12
    batch_docs: int = 4
    encoder_lr: float = 8e-5
    head_lr: float = 3e-4
    warmup: float = 0.06
    frozen_layers: int = 0
    type_size: int = 32
    relation_loss_weight: float = 1.0
    recall_target: float = 0.95
    device: str = "cpu"
    seed: int = 13
    max_train_docs: int | None = None
    threads: int | None = None


def _validate(model, featurizer, documents, device, recall_target):
    model.eval()
    scored = score_documents(documents, featurizer, lambda f: torch_scores(model, f, device))
    scores = np.concatenate([s for _raw, _f, s in scored])
    labels = np.concatenate([pair_labels(raw, f) for raw, f, _s in scored])
    threshold = threshold_for_recall(scores, labels, recall_target)
    return threshold, candidate_scores(scored, threshold)


def train(options: TrainOptions) -> ProposerConfig:
    random.seed(options.seed)
    np.random.seed(options.seed)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    featurizer = DocumentFeaturizer(tokenizer_file())
    train_docs = [raw for raw in docred.load_split("train") if len(raw["vertexSet"]) > 1]
    train_docs = train_docs[: options.max_train_docs]
    validation_docs = docred.load_split("validation")
    relation_index = {r: i for i, r in enumerate(sorted(docred.load_relation_names()))}
    use_relations = options.relation_loss_weight > 0
    examples = []
    for raw in train_docs:
        features = featurizer.featurize(docred.to_document_event(raw))
        relations = relation_labels(raw, features, relation_index) if use_relations else None
        examples.append((features, torch.from_numpy(pair_labels(raw, features)), relations))

    config = ProposerConfig(
        version=options.version,
        encoder_package_version=encoder_package_version(),
        frozen_layers=options.frozen_layers,
        type_size=options.type_size,
        relation_classes=len(relation_index) if use_relations else 0,
        threshold=0.5,
        recall_target=options.recall_target,
    )
    model = build_model(config).to(options.device)
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    head_params = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": options.encoder_lr}, {"params": head_params, "lr": options.head_lr}]
    )
    steps = options.epochs * -(-len(examples) // options.batch_docs)
    warmup = max(1, int(options.warmup * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "train_log.jsonl"
    log = log_path.open("w", encoding="utf-8")
    best_dir = Path(tempfile.mkdtemp(prefix="proposer-best-"))
    best_pass_rate, best_epoch = float("inf"), 0
    started = time.monotonic()
    try:
        for epoch in range(1, options.epochs + 1):
            model.train()
            order = list(range(len(examples)))
            random.shuffle(order)
            losses = []
            progress = tqdm(order, desc=f"epoch {epoch}/{options.epochs}", unit="doc")
            for position, index in enumerate(progress, start=1):
                features, labels, relations = examples[index]
                inputs = torch_inputs(features, options.device)
                pairs = model.pair_representations(*(inputs[name] for name in INPUT_NAMES))
                logits = model.bilinear(pairs).squeeze(-1)
                loss = binary_cross_entropy_with_logits(logits, labels.to(options.device))
                if relations is not None and model.relation_classifier is not None:
                    relation_logits = model.relation_classifier(pairs)
                    target = torch.from_numpy(relations).to(options.device)
                    loss = loss + options.relation_loss_weight * binary_cross_entropy_with_logits(
                        relation_logits, target
                    )
                (loss / options.batch_docs).backward()
                losses.append(loss.item())
                if position % options.batch_docs == 0 or position == len(order):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            threshold, figures = _validate(
                model, featurizer, validation_docs, options.device, options.recall_target
            )
            record = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "validation_threshold": threshold,
                "validation_pair_recall": figures.pair_recall,
                "validation_pass_rate": figures.pass_rate,
                "elapsed_seconds": round(time.monotonic() - started, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(json.dumps(record))
            if figures.pass_rate < best_pass_rate:
                best_pass_rate, best_epoch = figures.pass_rate, epoch
                save_artifact(model, config, best_dir)
        elapsed = time.monotonic() - started
        model, config = load_artifact(best_dir)
        model.to(options.device)
        config = calibrate_model(model, config, options.recall_target, device=options.device)
        config = config.model_copy(
            update={
                "training": {
                    "epochs": options.epochs,
                    "best_epoch": best_epoch,
                    "batch_docs": options.batch_docs,
                    "encoder_lr": options.encoder_lr,
                    "head_lr": options.head_lr,
                    "relation_loss_weight": options.relation_loss_weight,
                    "train_documents": len(examples),
                    "device": options.device,
                    "seconds": round(elapsed, 1),
                    "seed": options.seed,
                },
            }
        )
        save_artifact(model, config, options.out)
    finally:
        log.close()
        shutil.rmtree(best_dir, ignore_errors=True)
    return config
