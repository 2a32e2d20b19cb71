"""The DocRED loader and the project's fixed split, on the real Re-DocRED dev file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrc import docred
from lmrc.paths import redocred_dir

DEV = redocred_dir() / "dev_revised.json"


@pytest.fixture(scope="module")
def dev() -> list[dict]:
    return docred.load_raw(DEV)


def test_every_dev_document_becomes_a_valid_document_event(dev: list[dict]) -> None:
    events = [docred.to_document_event(raw, dataset="redocred") for raw in dev]
    assert len(events) == 500
    assert sum(len(event.entities) for event in events) == sum(len(raw["vertexSet"]) for raw in dev)
    first = events[0]
    mention = first.entities[0].mentions[0]
    raw_mention = dev[0]["vertexSet"][0][0]
    sentence = first.sentences[mention.sent_id]
    assert (
        sentence[mention.start : mention.end]
        == dev[0]["sents"][raw_mention["sent_id"]][raw_mention["pos"][0] : raw_mention["pos"][1]]
    )
    assert sum(event.pair_count() for event in events) == 193_232


def test_gold_triples_and_relation_names(dev: list[dict]) -> None:
    triples = docred.gold_triples(dev)
    assert len(triples) == 17_284
    assert len({(t.title, t.h, t.t) for t in triples}) == 13_362
    names = docred.load_relation_names()
    assert len(names) == 96 and names["P17"] == "country"
    assert {t.r for t in triples} <= set(names)


def test_labels_are_parsed_once_into_typed_labels(dev: list[dict]) -> None:
    raw = dev[0]
    labels = docred.labels_of(raw)
    assert [(label.h, label.t, label.r, list(label.evidence)) for label in labels] == [
        (x["h"], x["t"], x["r"], x["evidence"]) for x in raw["labels"]
    ]
    assert docred.gold_pairs(raw) == {(x["h"], x["t"]) for x in raw["labels"]}
    by_pair = docred.relations_by_pair(raw)
    assert sum(len(found) for found in by_pair.values()) == len(
        {(x["h"], x["t"], x["r"]) for x in raw["labels"]}
    )
    assert docred.labels_of({"title": "unlabelled", "vertexSet": [], "sents": []}) == ()


def test_split_manifest_is_the_documented_hash_split(dev: list[dict]) -> None:
    manifest = docred.load_split_manifest()
    assert manifest == docred.compute_split(dev)
    assert {name: len(titles) for name, titles in manifest.items()} == {
        "train": 400,
        "validation": 50,
        "holdout": 50,
    }
    train, validation, holdout = (set(manifest[name]) for name in ("train", "validation", "holdout"))
    assert not (train & validation or train & holdout or validation & holdout)
    assert train | validation | holdout == {raw["title"] for raw in dev}


def test_split_does_not_depend_on_file_order(dev: list[dict]) -> None:
    assert docred.compute_split(list(reversed(dev))) == docred.compute_split(dev)


def test_written_split_files_load_with_the_same_loader(tmp_path: Path) -> None:
    paths = docred.write_split_files(tmp_path)
    holdout = docred.load_raw(paths["holdout"])
    assert [raw["title"] for raw in holdout] == docred.load_split_manifest()["holdout"]
    assert json.loads(paths["train"].read_text())[0]["labels"]
