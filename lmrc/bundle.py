"""A model bundle: one folder with the schema its models were trained in and every model.

Layout::

    BUNDLE/bundle.json     the manifest: name, the schema's fingerprint, each model's path and version
    BUNDLE/schema.json     the schema (lmrc.contracts.schema)
    BUNDLE/annotator/      the mention tagger (tagger.json, tagger.safetensors)
    BUNDLE/proposer/       the proposer (proposer.json, proposer.safetensors)
    BUNDLE/classifier/...  optional: the classifier (classifier.json: its base LLM, prompt and
                           decision; with a LoRA adapter, or alone for the LLM as it is)

``models/`` is the default bundle (Re-DocRED). ``lmrc train`` writes one; ``lmrc run --models``
and each service's ``*_MODELS`` setting select one. A bundle that lacks a model its manifest
names, or whose models were trained in another schema, is refused with one line saying which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from lmrc.contracts.schema import Schema, SchemaError, load_schema, shipped_schema
from lmrc.paths import REPO_ROOT

DEFAULT_BUNDLE = REPO_ROOT / "models"
MANIFEST_FILE = "bundle.json"
SCHEMA_FILE = "schema.json"
#: The file each model's folder must hold.
MODEL_FILES = {"annotator": "tagger.json", "proposer": "proposer.json", "classifier": "classifier.json"}


class BundleError(ValueError):
    """A bundle that cannot be used: one line naming the bundle and what is wrong."""


class ModelEntry(BaseModel):
    path: str = Field(description="Relative to the bundle.")
    version: str


class BundleManifest(BaseModel):
    name: str
    schema_fingerprint: str
    models: dict[str, ModelEntry]
    training: dict[str, object] = Field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    directory: Path
    manifest: BundleManifest
    schema: Schema

    def model_dir(self, stage: str) -> Path | None:
        entry = self.manifest.models.get(stage)
        return self.directory / entry.path if entry else None

    @property
    def classifier_dir(self) -> Path:
        """The classifier adapter the bundle serves: its own, else the default bundle's (the
        adapter reads any schema's shortlist: relation names come from the schema)."""
        own = self.model_dir("classifier")
        if own is not None:
            return own
        return load_bundle(DEFAULT_BUNDLE).require("classifier")

    @property
    def is_default(self) -> bool:
        return self.directory.resolve() == DEFAULT_BUNDLE.resolve()

    def require(self, stage: str) -> Path:
        found = self.model_dir(stage)
        if found is None:
            raise BundleError(f"{self.directory}: the bundle has no {stage} model")
        return found


def load_bundle(directory: str | Path = DEFAULT_BUNDLE) -> Bundle:
    """A bundle, checked: its manifest and schema parse, the schema is the one its models were
    trained in, and every model it names is there."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.exists():
        raise BundleError(f"{directory}: not a model bundle (no {MANIFEST_FILE}; `lmrc train` writes one)")
    try:
        manifest = BundleManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BundleError(f"{manifest_path}: {where}: {first['msg']}") from None
    try:
        schema = load_schema(directory / SCHEMA_FILE)
    except SchemaError as error:
        raise BundleError(str(error)) from None
    if schema.fingerprint() != manifest.schema_fingerprint:
        raise BundleError(
            f"{directory}: {SCHEMA_FILE} is not the schema the models were trained in "
            f"(fingerprint {schema.fingerprint()}, models {manifest.schema_fingerprint})"
        )
    for stage, entry in manifest.models.items():
        needed = directory / entry.path / MODEL_FILES.get(stage, "")
        if not needed.exists():
            raise BundleError(f"{directory}: the {stage} model is missing ({needed} not found)")
    return Bundle(directory, manifest, schema)


def bundle_model_dir(models: str | Path, stage: str) -> Path:
    """A service's ``*_MODELS`` setting: the bundle checked, its model for ``stage``."""
    return load_bundle(models).require(stage)


def schema_of_model(model_dir: str | Path) -> Schema:
    """The schema a model was trained in: its bundle's (the folder above it, or two above for
    the classifier's adapter), else Re-DocRED's, the default bundle's."""
    model_dir = Path(model_dir).resolve()
    for folder in (model_dir.parent, model_dir.parent.parent):
        if (folder / MANIFEST_FILE).exists() and (folder / SCHEMA_FILE).exists():
            return load_bundle(folder).schema
    return shipped_schema()


def write_manifest(directory: Path, manifest: BundleManifest) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path
