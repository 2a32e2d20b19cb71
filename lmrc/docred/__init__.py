"""DocRED-format data: documents to DocumentEvents, labels to gold triples, and the fixed split.

DocRED JSON is a list of documents with ``title``, ``sents`` (token lists), ``vertexSet`` (entities
as lists of mentions with ``name``, ``pos`` [start, end), ``sent_id``, ``type``) and, for annotated
splits, ``labels`` (``h``, ``t``, ``r``, ``evidence``). Any file in that format loads here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmrc.contracts import DocumentEvent, Entity, Mention, SourceMetadata
from lmrc.paths import redocred_dir

SplitName = Literal["train", "validation", "holdout"]
SPLIT_SIZES: dict[SplitName, int] = {"train": 400, "validation": 50, "holdout": 50}
SPLIT_MANIFEST = Path(__file__).parent / "splits" / "redocred_dev_revised.json"


@dataclass(frozen=True, order=True)
class Triple:
    """A gold or predicted fact: relation ``r`` from entity ``h`` to entity ``t`` of document ``title``."""

    title: str
    h: int
    t: int
    r: str


@dataclass(frozen=True)
class Label:
    """One gold label of a DocRED document: relation ``r`` from entity ``h`` to entity ``t``."""

    h: int
    t: int
    r: str
    evidence: tuple[int, ...] = ()


def labels_of(raw: dict[str, Any]) -> tuple[Label, ...]:
    """A DocRED document's gold labels, typed: the one place that reads ``labels`` (none in an
    unlabelled split)."""
    return tuple(
        Label(int(label["h"]), int(label["t"]), str(label["r"]), tuple(label.get("evidence", ())))
        for label in raw.get("labels", [])
    )


def gold_pairs(raw: dict[str, Any]) -> set[tuple[int, int]]:
    """The ordered entity pairs that hold at least one gold relation."""
    return {(label.h, label.t) for label in labels_of(raw)}


def relations_by_pair(raw: dict[str, Any]) -> dict[tuple[int, int], set[str]]:
    """Gold relation P-ids of each related pair."""
    found: dict[tuple[int, int], set[str]] = {}
    for label in labels_of(raw):
        found.setdefault((label.h, label.t), set()).add(label.r)
    return found


def entity_count(raw: dict[str, Any]) -> int:
    return len(raw["vertexSet"])


def load_raw(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        documents = json.load(handle)
    if not isinstance(documents, list):
        raise ValueError(f"{path}: expected a JSON list of DocRED documents")
    return documents


class GoldFileError(ValueError):
    """A DocRED-format file that cannot be evaluated on: the message names the file, the document
    and the field."""


def _check_labels(raw: dict[str, Any], relation_ids: Collection[str] | None) -> None:
    entities, sentences = len(raw["vertexSet"]), len(raw["sents"])
    labels = raw.get("labels", [])
    if not isinstance(labels, list):
        raise ValueError("labels: not a list")
    for position, label in enumerate(labels):
        where = f"labels[{position}]"
        if not isinstance(label, dict) or not {"h", "t", "r"} <= label.keys():
            raise ValueError(f"{where}: needs h, t and r")
        for role in ("h", "t"):
            if not isinstance(label[role], int) or not 0 <= label[role] < entities:
                raise ValueError(
                    f"{where}.{role}: {label[role]!r} is not an entity (document has {entities})"
                )
        if relation_ids is not None and label["r"] not in relation_ids:
            raise ValueError(f"{where}.r: {label['r']!r} is not a relation the model knows")
        for sentence in label.get("evidence") or []:
            if sentence is not None and not (isinstance(sentence, int) and 0 <= sentence < sentences):
                raise ValueError(
                    f"{where}.evidence: {sentence!r} is not a sentence (document has {sentences})"
                )


def load_gold_file(path: str | Path, relation_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
    """A DocRED-format file of the user's, every document checked before any work starts: its
    fields, its mentions (as the contract checks them) and its labels (entities in range, the
    relation among ``relation_ids``, evidence sentences in range). GoldFileError otherwise."""
    try:
        documents = load_raw(path)
    except json.JSONDecodeError as error:
        raise GoldFileError(f"{path}: not JSON ({error})") from error
    except ValueError as error:
        raise GoldFileError(str(error)) from error
    if not documents:
        raise GoldFileError(f"{path}: holds no documents")
    titles: set[str] = set()
    for number, raw in enumerate(documents):
        where = f"{path}: document {number}"
        if not isinstance(raw, dict) or not {"title", "sents", "vertexSet"} <= raw.keys():
            raise GoldFileError(f"{where}: a DocRED document needs title, sents and vertexSet")
        where += f" ({raw['title']!r})"
        if raw["title"] in titles:
            raise GoldFileError(f"{where}: the title occurs twice (it is the document's id)")
        titles.add(raw["title"])
        try:
            to_document_event(raw)
            _check_labels(raw, relation_ids)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            problem = str(error).strip().splitlines()
            summary = " ".join(line.strip() for line in problem[:3]) if problem else type(error).__name__
            raise GoldFileError(f"{where}: {summary}") from error
    return documents


def load_relation_names(path: str | Path | None = None) -> dict[str, str]:
    """P-id -> relation name, from DocRED's ``rel_info.json``."""
    path = Path(path) if path else redocred_dir() / "rel_info.json"
    with open(path, encoding="utf-8") as handle:
        return dict(json.load(handle))


def to_document_event(raw: dict[str, Any], dataset: str | None = None) -> DocumentEvent:
    """One DocRED document as a DocumentEvent; ``doc_id`` is the title, DocRED's own key."""
    entities = [
        Entity(
            mentions=[
                Mention(
                    sent_id=mention["sent_id"],
                    start=mention["pos"][0],
                    end=mention["pos"][1],
                    name=mention["name"],
                    type=mention["type"],
                )
                for mention in vertex
            ]
        )
        for vertex in raw["vertexSet"]
    ]
    return DocumentEvent(
        doc_id=raw["title"],
        title=raw["title"],
        sentences=raw["sents"],
        entities=entities,
        source=SourceMetadata(dataset=dataset) if dataset else None,
    )


def gold_triples(documents: Iterable[dict[str, Any]]) -> set[Triple]:
    return {Triple(doc["title"], label.h, label.t, label.r) for doc in documents for label in labels_of(doc)}


def split_key(title: str) -> str:
    """Order documents by a hash of their title: a split that does not depend on file order."""
    return hashlib.sha256(title.encode("utf-8")).hexdigest()


def compute_split(documents: Sequence[dict[str, Any]]) -> dict[SplitName, list[str]]:
    """The project's fixed 400/50/50 split of Re-DocRED dev by document title."""
    expected = sum(SPLIT_SIZES.values())
    if len(documents) != expected:
        raise ValueError(f"the fixed split needs {expected} documents, got {len(documents)}")
    titles = sorted((doc["title"] for doc in documents), key=split_key)
    if len(set(titles)) != len(titles):
        raise ValueError("document titles are not unique")
    split: dict[SplitName, list[str]] = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        split[name] = sorted(titles[start : start + size])
        start += size
    return split


def load_split_manifest() -> dict[SplitName, list[str]]:
    with open(SPLIT_MANIFEST, encoding="utf-8") as handle:
        return json.load(handle)["splits"]


def load_split(name: SplitName, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The raw DocRED documents of one split of Re-DocRED dev, in manifest order."""
    path = Path(path) if path else redocred_dir() / "dev_revised.json"
    by_title = {doc["title"]: doc for doc in load_raw(path)}
    titles = load_split_manifest()[name]
    missing = [title for title in titles if title not in by_title]
    if missing:
        raise ValueError(f"{path}: {len(missing)} documents of split {name!r} are missing")
    return [by_title[title] for title in titles]


def write_split_files(out_dir: str | Path, path: str | Path | None = None) -> dict[str, Path]:
    """Write ``train.json``, ``validation.json`` and ``holdout.json`` in DocRED format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in SPLIT_SIZES:
        target = out / f"{name}.json"
        with open(target, "w", encoding="utf-8") as handle:
            json.dump(load_split(name, path), handle, ensure_ascii=False)
        written[name] = target
    return written
