"""Fine-tuning the proposer on the train split; threshold chosen on the validation split.

Binary cross-entropy on "does any relation hold" for every ordered entity pair, as the paper's
RCP; the relation head's loss (ATLOP or BCE); and, with ``evidence_loss_weight``, DREEAM's evidence
loss: the cross-entropy between a related pair's gold evidence sentences and its context attention
summed per sentence, so that the attention the pair pools its context with also points at its
evidence (Ma et al., 2023). AdamW with linear warm-up (6%) and decay; gradients accumulated over
``batch_docs`` documents. After every epoch the validation split is scored; the epoch with the best
relation F1 (ATLOP) or the lowest pass rate at the recall target (BCE) is kept. The artifact is
then reloaded from its fp16 file and calibrated on validation (thresholds for several recall
targets, the relation and evidence thresholds), so what ships matches the shipped weights exactly.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.functional import binary_cross_entropy_with_logits
from tqdm import tqdm

from lmrc import docred
from lmrc.checkpoints import (
    CHECKPOINT_DIR,
    TrainingState,
    load_checkpoint,
    resumable_options,
    save_checkpoint,
)
from lmrc.contracts.schema import Schema
from lmrc.docred.dataset import Dataset, redocred_dataset
from lmrc.paths import DEFAULT_ENCODER, encoder_package, encoder_package_version
from lmrc.proposer.artifact import ProposerConfig, featurizer_for, relation_probabilities
from lmrc.proposer.features import INPUT_NAMES
from lmrc.proposer.training.calibrate import (
    RELATION_THRESHOLDS,
    calibrate_evidence,
    calibrate_model,
    calibrate_relations,
    relation_figures,
)
from lmrc.proposer.training.candidates import in_fold
from lmrc.proposer.training.model import PairScorer
from lmrc.proposer.training.selection import (
    candidate_scores,
    evidence_targets,
    pair_labels,
    relation_labels,
    threshold_for_recall,
)
from lmrc.proposer.training.torch_model import (
    build_model,
    load_artifact,
    save_artifact,
    torch_inputs,
    torch_pair_and_relation_logits,
)


@dataclass(frozen=True)
class TrainOptions:
    out: Path
    version: str = "rcp-minilm-l6-v1"
    encoder: str = DEFAULT_ENCODER
    emb_size: int = 384
    block_size: int = 32
    epochs: int = 12
    batch_docs: int = 4
    encoder_lr: float = 8e-5
    head_lr: float = 3e-4
    warmup: float = 0.06
    frozen_layers: int = 0
    type_size: int = 32
    relation_loss_weight: float = 1.0
    relation_loss: str = "bce"
    evidence_loss_weight: float = 0.0
    recall_target: float = 0.95
    device: str = "cpu"
    seed: int = 13
    max_train_docs: int | None = None
    threads: int | None = None
    fold: int | None = None
    folds: int = 4
    #: Stop after the epoch that ends past this many minutes (the best epoch so far is kept).
    max_minutes: float | None = None
    #: Go on from the checkpoint in ``out`` (written after every epoch).
    resume: bool = False
    #: Start from this trained proposer's weights and architecture (its encoder, extractor,
    #: block and type sizes) instead of the pretrained encoder: continued training, e.g.
    #: self-training on its own pseudo-labels. Its relations and entity types must be the schema's.
    init_from: Path | None = None


def adaptive_threshold_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ATLOP's adaptive-thresholding loss (Zhou et al., 2021); output 0 is the threshold class.

    Every gold relation must score above the threshold class, and the threshold class above every
    other relation; pairs without a relation only push the threshold above all relations.
    """
    labels = torch.cat([torch.zeros_like(labels[:, :1]), labels], dim=1)
    threshold = torch.zeros_like(labels)
    threshold[:, 0] = 1.0
    positive_side = logits - (1 - (labels + threshold)) * 1e30
    negative_side = logits - labels * 1e30
    loss_positive = -(torch.log_softmax(positive_side, dim=-1) * labels).sum(1)
    loss_negative = -(torch.log_softmax(negative_side, dim=-1) * threshold).sum(1)
    return (loss_positive + loss_negative).mean()


def evidence_loss(
    pair_attention: torch.Tensor, token_sentences: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the gold evidence distribution [pairs, sentences] against the pairs'
    attention summed per sentence (KL up to a constant), over the pairs that have evidence."""
    onehot = torch.nn.functional.one_hot(token_sentences, targets.shape[1]).to(pair_attention.dtype)
    sentence_attention = pair_attention @ onehot  # [P, S]
    has_evidence = targets.sum(1) > 0
    if not bool(has_evidence.any()):
        return pair_attention.sum() * 0.0
    log_attention = torch.log(sentence_attention[has_evidence] + 1e-10)
    return -(targets[has_evidence] * log_attention).sum(1).mean()


def _relation_f1(validation: list[tuple[np.ndarray, np.ndarray]], relation_loss: str) -> tuple[float, float]:
    """Micro F1 of the relation head's predictions, from (gold multi-hot, logits) per document: at
    the model's own boundary (ATLOP: above the threshold class; BCE: sigmoid >= 0.5), and at the
    best of the thresholds calibration will choose from (what ships). The second picks the epoch:
    early in training the model's own boundary swings (a one-relation schema's F1 went 0.37, 0.20,
    0.29, 0.09 over CDR's first epochs) while its ranking improves."""
    gold = [relations for relations, _logits in validation]
    probabilities = [relation_probabilities(logits, relation_loss) for _relations, logits in validation]
    own = relation_figures(gold, probabilities, 0.5)[2]
    tuned = max(relation_figures(gold, probabilities, t)[2] for t in RELATION_THRESHOLDS)
    return own, tuned


def _validate(model, featurizer, documents, device, recall_target, relation_index, relation_loss):
    model.eval()
    scored, validation = [], []
    for raw in documents:
        features = featurizer.featurize(docred.to_document_event(raw))
        pair_logits, relation_logits = torch_pair_and_relation_logits(model, features, device)
        scored.append((raw, features, 1.0 / (1.0 + np.exp(-pair_logits.astype(np.float64)))))
        validation.append((relation_labels(raw, features, relation_index), relation_logits))
    scores = np.concatenate([s for _raw, _f, s in scored])
    labels = np.concatenate([pair_labels(raw, f) for raw, f, _s in scored])
    threshold = threshold_for_recall(scores, labels, recall_target)
    return threshold, candidate_scores(scored, threshold), *_relation_f1(validation, relation_loss)


def _initial_model(directory: Path, schema: Schema, relation_loss: str) -> tuple[PairScorer, ProposerConfig]:
    """The proposer in ``directory`` to go on training, checked against the schema first: its
    relation head's outputs and its type embedding must mean what the schema's ids mean."""
    model, config = load_artifact(directory)
    if config.relation_loss != relation_loss:
        raise ValueError(
            f"--init-from {directory}: its relation head was trained with the {config.relation_loss} "
            f"loss, not {relation_loss}"
        )
    if not config.same_labels(schema):
        raise ValueError(
            f"--init-from {directory}: its relations and entity types are not schema {schema.name}'s "
            f"({len(config.relation_ids)} relations, {len(config.entity_types)} entity types against "
            f"{len(schema.relation_ids)} and {len(schema.entity_types)})"
        )
    model.train()
    return model, config


def train(options: TrainOptions, dataset: Dataset | None = None) -> ProposerConfig:
    """Train on ``dataset`` (default: Re-DocRED's fixed split), choosing the epoch and every
    threshold on its validation documents. A checkpoint after every epoch in ``out``;
    ``options.resume`` goes on from it."""
    dataset = dataset or redocred_dataset()
    schema = dataset.schema
    random.seed(options.seed)
    np.random.seed(options.seed)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    train_docs = [
        raw
        for position, raw in enumerate(dataset.train)
        if docred.entity_count(raw) > 1
        and (options.fold is None or not in_fold(position, options.fold, options.folds))
    ]
    train_docs = train_docs[: options.max_train_docs]
    validation_docs = dataset.validation
    relation_index = {r: i for i, r in enumerate(schema.relation_ids)}
    use_relations = options.relation_loss_weight > 0 or options.relation_loss == "atlop"
    initial = _initial_model(options.init_from, schema, options.relation_loss) if options.init_from else None
    architecture = (
        initial[1].model_dump(
            include={
                "encoder",
                "encoder_package",
                "encoder_package_version",
                "emb_size",
                "block_size",
                "frozen_layers",
                "type_size",
                "window_length",
                "window_stride",
            }
        )
        if initial
        else {
            "encoder": options.encoder,
            "encoder_package": encoder_package(options.encoder),
            "encoder_package_version": encoder_package_version(options.encoder),
            "emb_size": options.emb_size,
            "block_size": options.block_size,
            "frozen_layers": options.frozen_layers,
            "type_size": options.type_size,
        }
    )
    config = ProposerConfig(
        version=options.version,
        **architecture,
        relation_classes=len(relation_index) if use_relations else 0,
        relation_loss=options.relation_loss,
        threshold=0.5,
        recall_target=options.recall_target,
        relation_ids=schema.relation_ids,
        relation_names=schema.relation_names,
        entity_types=list(schema.entity_types),
        type_pairs=schema.type_pairs,
    )
    featurizer = featurizer_for(config)
    examples = []
    for raw in train_docs:
        features = featurizer.featurize(docred.to_document_event(raw))
        if len(features.pair_heads) == 0:
            continue  # no pair the schema allows: nothing to learn from
        relations = relation_labels(raw, features, relation_index) if use_relations else None
        evidence = evidence_targets(raw, features) if options.evidence_loss_weight > 0 else None
        examples.append((features, torch.from_numpy(pair_labels(raw, features)), relations, evidence))
    if not examples:
        raise ValueError("no training document has a pair of entities the schema's relations allow")

    model = (initial[0] if initial else build_model(config)).to(options.device)
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
    checkpoint_dir = options.out / CHECKPOINT_DIR
    best_dir = checkpoint_dir / "best"
    resumable = resumable_options(
        options, schema=dataset.schema.fingerprint(), train_documents=len(dataset.train)
    )
    if options.resume:
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, resumable)
        model.to(options.device)
    else:
        state = TrainingState()
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log_path = options.out / "train_log.jsonl"
    log = log_path.open("a" if options.resume else "w", encoding="utf-8")
    stopped_at: int | None = None
    resumed_after = state.epoch
    started = time.monotonic() - state.elapsed_seconds
    session_started = time.monotonic()
    try:
        for epoch in range(state.epoch + 1, options.epochs + 1):
            model.train()
            order = list(range(len(examples)))
            random.shuffle(order)
            losses = []
            progress = tqdm(order, desc=f"proposer epoch {epoch}/{options.epochs}", unit="doc")
            for position, index in enumerate(progress, start=1):
                features, labels, relations, evidence = examples[index]
                inputs = torch_inputs(features, options.device)
                pairs, pair_attention = model.pair_representations_with_attention(
                    *(inputs[name] for name in INPUT_NAMES)
                )
                logits = model.bilinear(pairs).squeeze(-1)
                loss = binary_cross_entropy_with_logits(logits, labels.to(options.device))
                if relations is not None and model.relation_classifier is not None:
                    relation_logits = model.relation_classifier(pairs)
                    target = torch.from_numpy(relations).to(options.device)
                    relation_loss = (
                        adaptive_threshold_loss(relation_logits, target)
                        if options.relation_loss == "atlop"
                        else binary_cross_entropy_with_logits(relation_logits, target)
                    )
                    loss = loss + options.relation_loss_weight * relation_loss
                if evidence is not None:
                    loss = loss + options.evidence_loss_weight * evidence_loss(
                        pair_attention,
                        torch.from_numpy(features.token_sentences).to(options.device),
                        torch.from_numpy(evidence).to(options.device),
                    )
                (loss / options.batch_docs).backward()
                losses.append(loss.item())
                if position % options.batch_docs == 0 or position == len(order):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            threshold, figures, relation_f1, tuned_relation_f1 = _validate(
                model,
                featurizer,
                validation_docs,
                options.device,
                options.recall_target,
                relation_index,
                options.relation_loss,
            )
            elapsed = time.monotonic() - started
            epochs_this_session = epoch - resumed_after
            record = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "validation_threshold": threshold,
                "validation_pair_recall": figures.pair_recall,
                "validation_pass_rate": figures.pass_rate,
                "validation_relation_f1": relation_f1,
                "validation_relation_f1_tuned": tuned_relation_f1,
                "elapsed_seconds": round(elapsed, 1),
                "estimated_seconds_left": round(
                    (time.monotonic() - session_started) / epochs_this_session * (options.epochs - epoch), 1
                ),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(json.dumps(record))
            # ATLOP: the relation head is the encoder-only answer, so its F1 (at the threshold
            # calibration will choose) picks the epoch.
            score = tuned_relation_f1 if options.relation_loss == "atlop" else -figures.pass_rate
            if score > state.best_score:
                state.best_score, state.best_epoch = score, epoch
                save_artifact(model, config, best_dir)
            state.epoch, state.elapsed_seconds = epoch, elapsed
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state, resumable)
            budget = options.max_minutes
            over_budget = budget is not None and time.monotonic() - session_started > 60 * budget
            if over_budget and epoch < options.epochs:
                stopped_at = epoch
                break
        elapsed = time.monotonic() - started
        model, config = load_artifact(best_dir)
        model.to(options.device)
        config = calibrate_model(model, config, options.recall_target, validation_docs, device=options.device)
        if config.relation_classes:
            config = calibrate_relations(model, config, validation_docs, device=options.device)
            config = calibrate_evidence(model, config, validation_docs, device=options.device)
        config = config.model_copy(
            update={
                "training": {
                    "encoder": options.encoder,
                    "epochs": options.epochs,
                    "best_epoch": state.best_epoch,
                    **({"stopped_at_time_limit_after_epoch": stopped_at} if stopped_at else {}),
                    "batch_docs": options.batch_docs,
                    "encoder_lr": options.encoder_lr,
                    "head_lr": options.head_lr,
                    "relation_loss_weight": options.relation_loss_weight,
                    "relation_loss": options.relation_loss,
                    "evidence_loss_weight": options.evidence_loss_weight,
                    "train_documents": len(examples),
                    "dataset": dataset.name,
                    "schema": schema.name,
                    "validation": dataset.validation_source,
                    "device": options.device,
                    "seconds": round(elapsed, 1),
                    "seed": options.seed,
                    **({"init_from": str(options.init_from)} if options.init_from else {}),
                    **(
                        {"held_out_fold": f"{options.fold}/{options.folds}"}
                        if options.fold is not None
                        else {}
                    ),
                },
            }
        )
        save_artifact(model, config, options.out)
        if stopped_at is None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    finally:
        log.close()
    return config
