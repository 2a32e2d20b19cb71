"""``lmrc train``: every model of a dataset into one bundle.

The dataset is checked whole first (lmrc.docred.dataset): a bad file stops the command in one line
before any model loads. Then the mention tagger (the schema's entity types) and the proposer
(relation head, calibrated candidate filter, shortlist, on the schema's relations and argument
types) are trained, each choosing its epoch and thresholds on the validation documents; both are
exported to ONNX. Where asked (``classifier``), the classifier's LoRA adapter follows: k fold
proposers score the train documents each never saw (out-of-fold shortlists, as the shipped
proposer's look on new documents), and the adapter learns on those, its epoch and decision chosen
on the validation documents. The manifest is written last, so a bundle with a manifest is complete.

Budget and resuming: ``max_minutes`` is split, 30% for the tagger and the rest shared equally by
the proposer, each fold proposer and the adapter (what a stage leaves unused goes to the next);
each stops after the epoch that ends past its share (the adapter: at its share, mid-epoch) and
keeps its best epoch. All write a checkpoint after every epoch; ``resume`` skips a finished stage
and goes on from a stage's checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrc.bundle import SCHEMA_FILE, BundleManifest, ModelEntry, write_manifest
from lmrc.checkpoints import has_checkpoint
from lmrc.docred.dataset import Dataset
from lmrc.paths import DEFAULT_ENCODER

TAGGER_SHARE = 0.3
#: Inside a bundle: what training keeps between runs but serving never reads.
TRAINING_DIR = "training"
OUT_OF_FOLD_FILE = "out-of-fold-candidates.json"


@dataclass(frozen=True)
class BundleTrainOptions:
    out: Path
    encoder: str = DEFAULT_ENCODER
    device: str = "cpu"
    max_minutes: float | None = None
    resume: bool = False
    tagger_epochs: int = 4
    proposer_epochs: int = 10
    threads: int = 0
    #: Cap on training documents (tests train a tiny bundle on a few).
    max_train_docs: int | None = None
    skip_tagger: bool = False
    #: The dataset folder, recorded in the manifest (evaluations read its train facts for Ign F1).
    data_dir: Path | None = None
    #: Train the classifier's LoRA adapter too (k fold proposers first, for out-of-fold shortlists).
    classifier: bool = False
    folds: int = 4
    classifier_epochs: int = 2
    #: Cap on the documents the adapter trains on (their pairs are its examples).
    classifier_max_docs: int | None = None
    #: Continue from this proposer (a bundle, or a proposer folder) instead of the pretrained
    #: encoder: its architecture and weights, e.g. self-training on its own pseudo-labels.
    init_from: Path | None = None
    #: The proposer's learning rates (continued training wants lower ones).
    encoder_lr: float = 8e-5
    head_lr: float = 3e-4


def proposer_source(path: Path) -> Path:
    """The proposer folder of a bundle, or ``path`` itself when it is one."""
    return path if (path / "proposer.json").exists() else path / "proposer"


def _finished(stage_dir: Path, config_file: str) -> bool:
    return (stage_dir / config_file).exists() and not has_checkpoint(stage_dir)


def _log(message: str) -> None:
    print(f"lmrc train: {message}", flush=True)


def _train_classifier(
    dataset: Dataset,
    options: BundleTrainOptions,
    name: str,
    proposer_options: Callable[..., Any],
    minutes_left: Callable[[float], float | None],
) -> str:
    """The fold proposers (each trained without one fold of the train documents), their shortlists
    on the fold each never saw (kept in ``training/``; the fold proposers are removed once they
    are scored), then the adapter on them, its epoch and decision chosen on the validation
    documents' shortlists from the bundle's proposer. Returns the adapter's version."""
    from lmrc.classifier.artifact import load_config as load_classifier_config
    from lmrc.classifier.training.offline import SplitCandidates, load_candidates, save_candidates
    from lmrc.classifier.training.train import TrainOptions as AdapterOptions
    from lmrc.classifier.training.train import train as train_adapter
    from lmrc.proposer.artifact import load_config
    from lmrc.proposer.training.candidates import out_of_fold_candidates, score_candidates
    from lmrc.proposer.training.train import train

    out = options.out
    classifier_dir = out / "classifier"
    if options.resume and _finished(classifier_dir, "classifier.json"):
        _log(f"classifier: finished earlier ({classifier_dir}), kept")
        return load_classifier_config(classifier_dir).version
    shortlist_size = min(AdapterOptions.shortlist_size, len(dataset.schema.relations))
    folds_dir = out / TRAINING_DIR / "folds"
    fold_dirs = tuple(folds_dir / f"fold-{fold}" for fold in range(options.folds))
    out_of_fold = out / TRAINING_DIR / OUT_OF_FOLD_FILE
    if out_of_fold.exists():  # scored by an earlier run (its fold proposers are gone)
        candidates = load_candidates(out_of_fold, dataset.train).documents
    else:
        for fold, fold_dir in enumerate(fold_dirs):
            if options.resume and _finished(fold_dir, "proposer.json"):
                _log(f"classifier: fold proposer {fold + 1}/{options.folds} finished earlier, kept")
                continue
            _log(f"classifier: fold proposer {fold + 1}/{options.folds} (trained without fold {fold})")
            share = 1 / (options.folds - fold + 1)
            train(proposer_options(fold_dir, f"rcp-{name}-fold{fold}", share, fold), dataset)
        found = out_of_fold_candidates(fold_dirs, shortlist_size, options.device, dataset.train)
        save_candidates(out_of_fold, "train", "out-of-fold", shortlist_size, [c for _raw, c in found])
        shutil.rmtree(folds_dir)
        candidates = found
    proposer_dir = out / "proposer"
    scored = score_candidates(proposer_dir, dataset.validation, shortlist_size)
    validation = SplitCandidates(
        "validation",
        load_config(proposer_dir).version,
        shortlist_size,
        list(zip(dataset.validation, scored, strict=True)),
    )
    _log(
        f"classifier: LoRA on {sum(len(c.pairs) for _raw, c in candidates)} out-of-fold candidate pairs "
        f"of {len(candidates)} documents"
    )
    config = train_adapter(
        AdapterOptions(
            out=classifier_dir,
            fold_proposers=fold_dirs,
            version=f"rc-{name}-smollm2-135m-lora-v1",
            shortlist_size=shortlist_size,
            epochs=options.classifier_epochs,
            max_docs=options.classifier_max_docs,
            max_minutes=minutes_left(1.0),
            device=options.device,
            threads=options.threads or None,
            tune_decision=True,
            resume=options.resume and has_checkpoint(classifier_dir),
        ),
        dataset,
        validation,
        candidates,
    )
    return config.version


def train_bundle(dataset: Dataset, options: BundleTrainOptions) -> BundleManifest:
    from lmrc.annotator.tagger import load_tagger_config
    from lmrc.annotator.training.export import export_tagger
    from lmrc.annotator.training.train import TaggerTrainOptions, train_tagger
    from lmrc.proposer.artifact import load_config
    from lmrc.proposer.training.export import export_onnx
    from lmrc.proposer.training.train import TrainOptions, train

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    (out / SCHEMA_FILE).write_text(dataset.schema.model_dump_json(indent=1), encoding="utf-8")
    started = time.monotonic()
    name = out.resolve().name
    models: dict[str, ModelEntry] = {}
    timings: dict[str, float] = {}

    def minutes_left(share: float) -> float | None:
        if options.max_minutes is None:
            return None
        left = options.max_minutes - (time.monotonic() - started) / 60
        return max(0.01, left * share)

    tagger_dir = out / "annotator"
    if not options.skip_tagger:
        if options.resume and _finished(tagger_dir, "tagger.json"):
            _log(f"tagger: finished earlier ({tagger_dir}), kept")
            timings["tagger_seconds"] = float(str(load_tagger_config(tagger_dir).training.get("wall_s", 0)))
        else:
            _log(f"tagger: {len(dataset.train)} train documents, {len(dataset.validation)} validation")
            stage_started = time.monotonic()
            train_docs = dataset.train[: options.max_train_docs]
            train_tagger(
                TaggerTrainOptions(
                    out=tagger_dir,
                    version=f"mention-tagger-{name}-v1",
                    epochs=options.tagger_epochs,
                    threads=options.threads,
                    max_minutes=minutes_left(TAGGER_SHARE),
                    resume=options.resume and has_checkpoint(tagger_dir),
                    device=options.device,
                ),
                Dataset(dataset.name, dataset.schema, train_docs, dataset.validation, dataset.holdouts),
            )
            timings["tagger_seconds"] = round(time.monotonic() - stage_started, 1)
        export_tagger(tagger_dir)
        models["annotator"] = ModelEntry(path="annotator", version=load_tagger_config(tagger_dir).version)

    # The proposer, each fold proposer and the adapter are a unit of the budget each.
    units = 1 + (options.folds + 1 if options.classifier else 0)
    proposer_dir = out / "proposer"
    encoder_tag = Path(options.encoder).name.lower().replace("all-", "").replace("-v2", "")

    def proposer_options(target: Path, version: str, share: float, fold: int | None = None) -> TrainOptions:
        return TrainOptions(
            out=target,
            version=version,
            encoder=options.encoder,
            epochs=options.proposer_epochs,
            relation_loss="atlop",
            evidence_loss_weight=0.1,
            encoder_lr=options.encoder_lr,
            head_lr=options.head_lr,
            # Fold proposers start from the pretrained encoder: a model that saw their held-out
            # fold would make the adapter's shortlists look better than a new document's.
            init_from=proposer_source(options.init_from) if options.init_from and fold is None else None,
            device=options.device,
            threads=options.threads or None,
            max_train_docs=options.max_train_docs,
            max_minutes=minutes_left(share),
            resume=options.resume and has_checkpoint(target),
            **({"fold": fold, "folds": options.folds} if fold is not None else {}),
        )

    if options.resume and _finished(proposer_dir, "proposer.json"):
        _log(f"proposer: finished earlier ({proposer_dir}), kept")
        timings["proposer_seconds"] = float(load_config(proposer_dir).training.get("seconds", 0))
    else:
        _log(f"proposer: encoder {options.encoder}, {len(dataset.schema.relations)} relations")
        stage_started = time.monotonic()
        train(proposer_options(proposer_dir, f"rcp-{name}-{encoder_tag}-v1", 1 / units), dataset)
        timings["proposer_seconds"] = round(time.monotonic() - stage_started, 1)
    export_onnx(proposer_dir)
    models["proposer"] = ModelEntry(path="proposer", version=load_config(proposer_dir).version)

    if options.classifier:
        stage_started = time.monotonic()
        version = _train_classifier(dataset, options, name, proposer_options, minutes_left)
        models["classifier"] = ModelEntry(path="classifier", version=version)
        timings["classifier_seconds"] = round(time.monotonic() - stage_started, 1)

    manifest = BundleManifest(
        name=name,
        schema_fingerprint=dataset.schema.fingerprint(),
        models=models,
        training={
            "dataset": dataset.name,
            "data": str(options.data_dir.resolve()) if options.data_dir else None,
            "train_documents": len(dataset.train),
            "validation": dataset.validation_source,
            "encoder": options.encoder,
            "device": options.device,
            "seconds": round(time.monotonic() - started, 1),
            **timings,
        },
    )
    write_manifest(out, manifest)
    _log(
        f"bundle written to {out} in {manifest.training['seconds']} s: "
        + json.dumps({stage: entry.version for stage, entry in models.items()})
    )
    return manifest
