"""``lmrc train``: every model of a dataset into one bundle.

The dataset is checked whole first (lmrc.docred.dataset): a bad file stops the command in one line
before any model loads. Then the mention tagger (the schema's entity types) and the proposer
(relation head, calibrated candidate filter, shortlist, on the schema's relations and argument
types) are trained, each choosing its epoch and thresholds on the validation documents; both are
exported to ONNX, and the manifest is written last, so a bundle with a manifest is complete.

Budget and resuming: ``max_minutes`` is split, 30% for the tagger and the rest for the proposer
(what a stage leaves unused goes to the next); each stops after the epoch that ends past its
share and keeps its best epoch. Both write a checkpoint after every epoch; ``resume`` skips a
finished stage and goes on from a stage's checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lmrc.bundle import SCHEMA_FILE, BundleManifest, ModelEntry, write_manifest
from lmrc.checkpoints import has_checkpoint
from lmrc.docred.dataset import Dataset
from lmrc.paths import DEFAULT_ENCODER

TAGGER_SHARE = 0.3


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


def _finished(stage_dir: Path, config_file: str) -> bool:
    return (stage_dir / config_file).exists() and not has_checkpoint(stage_dir)


def _log(message: str) -> None:
    print(f"lmrc train: {message}", flush=True)


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

    proposer_dir = out / "proposer"
    if options.resume and _finished(proposer_dir, "proposer.json"):
        _log(f"proposer: finished earlier ({proposer_dir}), kept")
        timings["proposer_seconds"] = float(load_config(proposer_dir).training.get("seconds", 0))
    else:
        _log(f"proposer: encoder {options.encoder}, {len(dataset.schema.relations)} relations")
        stage_started = time.monotonic()
        encoder_tag = Path(options.encoder).name.lower().replace("all-", "").replace("-v2", "")
        train(
            TrainOptions(
                out=proposer_dir,
                version=f"rcp-{name}-{encoder_tag}-v1",
                encoder=options.encoder,
                epochs=options.proposer_epochs,
                relation_loss="atlop",
                evidence_loss_weight=0.1,
                device=options.device,
                threads=options.threads or None,
                max_train_docs=options.max_train_docs,
                max_minutes=minutes_left(1.0),
                resume=options.resume and has_checkpoint(proposer_dir),
            ),
            dataset,
        )
        timings["proposer_seconds"] = round(time.monotonic() - stage_started, 1)
    export_onnx(proposer_dir)
    models["proposer"] = ModelEntry(path="proposer", version=load_config(proposer_dir).version)

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
