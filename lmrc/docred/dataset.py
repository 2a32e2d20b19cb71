"""A user's dataset folder: DocRED-format documents and the schema they are labelled in.

Layout::

    DIR/schema.json        entity and relation types (lmrc.contracts.schema), or --schema;
                           without both, a shipped schema whose relations are exactly those of
                           DIR/rel_info.json (DocRED's own layout) is used
    DIR/train.json         the documents models learn from
    DIR/validation.json    optional: where epochs and thresholds are chosen; without it a slice
                           of train (every tenth document by a hash of its title) is held out
    DIR/dev.json           optional: the holdout that figures are reported on, never chosen on
    DIR/test.json          optional: a second holdout

Every document is checked against the schema before anything starts (fields, mention spans and
types, labels' entities, relations and argument types, evidence sentences); the first problem is
one line naming the file, the document and the field. Read documents are normalised: labels of
the schema's "no relation" are dropped and, with ``label_direction: by-argument-types``, labels
written the other way round are turned around.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrc.bundle import DEFAULT_BUNDLE, Bundle, load_bundle
from lmrc.contracts.schema import Schema, SchemaError, resolve_schema, shipped_schema, shipped_schemas
from lmrc.docred import GoldFileError, load_gold_file, load_split, split_key

SCHEMA_FILE = "schema.json"
#: Without a validation.json, one document in this many of train is held out for choosing.
VALIDATION_SHARE = 10


class DatasetError(ValueError):
    """A dataset that cannot be trained or evaluated on: one line naming the file and the field."""


@dataclass(frozen=True)
class Dataset:
    name: str
    schema: Schema
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    holdouts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Where the validation documents come from ("validation.json", "a slice of train.json"...).
    validation_source: str = ""


def normalise_document(raw: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The document with its labels in the schema's terms (see the module's docstring); raises
    ValueError naming the label when a label breaks the schema."""
    types = [vertex[0]["type"] if vertex else "" for vertex in raw["vertexSet"]]
    for number, vertex in enumerate(raw["vertexSet"]):
        if not vertex:
            raise ValueError(f"vertexSet[{number}]: an entity without mentions")
        for position, mention in enumerate(vertex):
            if mention.get("type") not in schema.entity_types:
                raise ValueError(
                    f"vertexSet[{number}][{position}].type: {mention.get('type')!r} is not an entity type "
                    f"of the schema ({', '.join(schema.entity_types)})"
                )
    if not any(raw["sents"]):
        raise ValueError("sents: the document has no tokens")
    known = set(schema.relation_ids)
    labels = []
    for position, label in enumerate(raw.get("labels", [])):
        relation = label["r"]
        if relation == schema.no_relation:
            continue
        if relation not in known:
            raise ValueError(f"labels[{position}].r: {relation!r} is not a relation of the schema")
        direction = schema.oriented(relation, types[label["h"]], types[label["t"]])
        if direction is None:
            raise ValueError(
                f"labels[{position}]: {relation} does not take a {types[label['h']]} head and a "
                f"{types[label['t']]} tail"
            )
        if direction is False:
            label = {**label, "h": label["t"], "t": label["h"]}
        # "evidence": [null] is how converted data says "not annotated".
        evidence = [sentence for sentence in label.get("evidence") or [] if sentence is not None]
        labels.append({**label, "evidence": evidence})
    # One label per (h, t, r): a turned-around label may meet one written the right way.
    unique = {(label["h"], label["t"], label["r"]): label for label in labels}
    return {**raw, "labels": list(unique.values())}


def load_documents(path: str | Path, schema: Schema) -> list[dict[str, Any]]:
    """A DocRED-format file, every document checked against ``schema`` and normalised; a
    DatasetError (one line: file, document, field) at the first problem."""
    try:
        documents = load_gold_file(
            path, relation_ids=[*schema.relation_ids, *filter(None, [schema.no_relation])]
        )
    except GoldFileError as error:
        raise DatasetError(str(error)) from None
    normalised = []
    for number, raw in enumerate(documents):
        try:
            normalised.append(normalise_document(raw, schema))
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise DatasetError(f"{path}: document {number} ({raw['title']!r}): {error}") from None
    return normalised


def schema_of(directory: Path, schema: Schema | str | Path | None = None) -> Schema:
    """The dataset's schema: given, or ``DIR/schema.json``."""
    if isinstance(schema, Schema):
        return schema
    path = Path(schema) if schema is not None else directory / SCHEMA_FILE
    if schema is None and not path.exists():
        matching = shipped_schema_for_rel_info(directory)
        if matching is not None:
            return matching
        raise DatasetError(
            f"{directory}: no {SCHEMA_FILE}; write one (docs/your-data.md) or pass --schema "
            "(a file, or a shipped schema: redocred, cdr)"
        )
    try:
        return resolve_schema(schema if schema is not None else path)
    except SchemaError as error:
        raise DatasetError(str(error)) from None


def shipped_schema_for_rel_info(directory: Path) -> Schema | None:
    """The shipped schema whose relation ids (and no-relation label) are exactly those of the
    folder's DocRED-style ``rel_info.json``, for a dataset that has no schema.json (Re-DocRED's and
    CDR's folders as they are published)."""
    rel_info = directory / "rel_info.json"
    if not rel_info.exists():
        return None
    try:
        ids = set(json.loads(rel_info.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        return None
    for name in shipped_schemas():
        candidate = shipped_schema(name)
        if {*candidate.relation_ids, *([candidate.no_relation] if candidate.no_relation else [])} == ids:
            return candidate
    return None


def validation_slice(documents: Sequence[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(train, validation): every VALIDATION_SHARE-th document by a hash of its title."""
    ranked = sorted(documents, key=lambda raw: split_key(raw["title"]))
    held = {raw["title"] for raw in ranked[::VALIDATION_SHARE]} if len(ranked) > 1 else set()
    return [raw for raw in documents if raw["title"] not in held], [
        raw for raw in documents if raw["title"] in held
    ]


def load_dataset(directory: str | Path, schema: Schema | str | Path | None = None) -> Dataset:
    """A dataset folder (see the module's docstring), checked whole before anything starts."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory")
    chosen = schema_of(directory, schema)
    if not (directory / "train.json").exists():
        raise DatasetError(f"{directory}: no train.json")
    train = load_documents(directory / "train.json", chosen)
    if (directory / "validation.json").exists():
        validation, source = load_documents(directory / "validation.json", chosen), "validation.json"
    else:
        train, validation = validation_slice(train)
        source = f"every {VALIDATION_SHARE}th document of train.json by title hash ({len(validation)})"
    if len(train) < 1 or len(validation) < 1:
        raise DatasetError(f"{directory}: train.json needs at least two documents (train and validation)")
    holdouts = {
        name: load_documents(directory / f"{name}.json", chosen)
        for name in ("dev", "test")
        if (directory / f"{name}.json").exists()
    }
    overlap = {raw["title"] for raw in train + validation} & {
        raw["title"] for documents in holdouts.values() for raw in documents
    }
    if overlap:
        raise DatasetError(
            f"{directory}: {len(overlap)} titles are both in training and in a holdout file "
            f"(first: {sorted(overlap)[0]!r})"
        )
    return Dataset(directory.name, chosen, train, validation, holdouts, source)


def redocred_dataset() -> Dataset:
    """Re-DocRED as the project has always used it: the fixed 400/50/50 split of its dev file."""
    schema = shipped_schema("redocred")
    return Dataset(
        "redocred",
        schema,
        [normalise_document(raw, schema) for raw in load_split("train")],
        [normalise_document(raw, schema) for raw in load_split("validation")],
        {"holdout": [normalise_document(raw, schema) for raw in load_split("holdout")]},
        "the fixed split's validation documents",
    )


def training_documents(bundle: Bundle) -> list[dict[str, Any]]:
    """The train documents a bundle learnt from, when its dataset is still where it was (Ign F1
    leaves out facts seen in training; the type-prior baseline learns from them); Re-DocRED's
    train split for the default bundle and its copies (another classifier beside the shipped
    proposer); none when the dataset is gone."""
    if bundle.is_default:
        return redocred_dataset().train
    shipped = load_bundle(DEFAULT_BUNDLE)
    if bundle.manifest.schema_fingerprint == shipped.manifest.schema_fingerprint and (
        bundle.manifest.training == shipped.manifest.training
    ):
        return redocred_dataset().train
    data = bundle.manifest.training.get("data")
    if not isinstance(data, str) or not (Path(data) / "train.json").exists():
        return []
    try:
        return load_documents(Path(data) / "train.json", bundle.schema)
    except DatasetError:
        return []


def write_dataset(directory: str | Path, schema: Schema, files: dict[str, list[dict[str, Any]]]) -> Path:
    """A dataset folder from documents in memory (tests, conversions)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SCHEMA_FILE).write_text(
        schema.model_dump_json(indent=1, exclude_defaults=True), encoding="utf-8"
    )
    for name, documents in files.items():
        (directory / f"{name}.json").write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    return directory
