"""Your data, your schema: a dataset folder with its own schema trained into a model bundle by
`lmrc train`, run by `lmrc run --models`, refused in one line when it is wrong.

The tiny bundle is trained for real (the MiniLM encoder, one epoch, a few documents) on a
two-relation schema cut from Re-DocRED's documents in the shared data, then run end to end on
the broker. Quality is not the point here (docs/results/cdr-live-evaluation.json is).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmrc import docred
from lmrc.contracts.schema import Schema, SchemaError, load_schema, parse_schema, shipped_schema
from lmrc.docred.dataset import DatasetError, load_dataset, normalise_document, write_dataset
from lmrc.paths import shared_dir
from tests.helpers import scaled

TWO_RELATIONS = Schema.model_validate(
    {
        "name": "places",
        "entity_types": ["PER", "ORG", "LOC", "TIME", "NUM", "MISC"],
        "relations": [
            {"id": "P17", "name": "country", "description": "The country the subject is in."},
            {
                "id": "P131",
                "name": "located in",
                "description": "The administrative area the subject lies in.",
            },
        ],
    }
)


def lmrc(*arguments: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmrc", *arguments], capture_output=True, text=True, timeout=scaled(timeout)
    )


def _places(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents with only the two relations' labels (the rest of Re-DocRED's are not in the schema)."""
    keep = set(TWO_RELATIONS.relation_ids)
    return [{**raw, "labels": [label for label in raw["labels"] if label["r"] in keep]} for raw in documents]


@pytest.fixture(scope="module")
def places_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder: 12 train documents (one held out for validation by the slice rule), 3 dev."""
    train = _places(docred.load_split("train")[:12])
    dev = _places(docred.load_split("holdout")[:3])
    return write_dataset(tmp_path_factory.mktemp("places"), TWO_RELATIONS, {"train": train, "dev": dev})


@pytest.fixture(scope="module")
def tiny_bundle(places_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "places"
    done = lmrc(
        "train", "--data", str(places_data), "--out", str(out), "--epochs", "1", "--tagger-epochs", "1"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_shipped_schemas_load_and_cdr_reads_its_pairs_the_right_way() -> None:
    redocred, cdr = shipped_schema("redocred"), shipped_schema("cdr")
    assert len(redocred.relations) == 96 and redocred.type_pairs is None
    assert redocred.relation("P361").inverse == "P527" and redocred.relation("P26").symmetric
    assert cdr.type_pairs == [("CHEM", "DISE")] and cdr.no_relation == "NR"
    raw = json.loads((shared_dir() / "data" / "cdr" / "train.json").read_text())[0]
    kinds = [vertex[0]["type"] for vertex in raw["vertexSet"]]
    normalised = normalise_document(raw, cdr)
    # NR dropped; every CID label now reads chemical -> disease, turned where the file had it backwards
    assert normalised["labels"] and all(label["r"] == "CID" for label in normalised["labels"])
    assert all((kinds[label["h"]], kinds[label["t"]]) == ("CHEM", "DISE") for label in normalised["labels"])
    written = {tuple(sorted((label["h"], label["t"]))) for label in raw["labels"] if label["r"] == "CID"}
    assert {tuple(sorted((label["h"], label["t"]))) for label in normalised["labels"]} == written


def test_a_published_folder_without_a_schema_file_gets_the_shipped_schema_of_its_rel_info(
    tmp_path: Path,
) -> None:
    """CDR's and Re-DocRED's folders as published hold a rel_info.json, no schema.json: the shipped
    schema with exactly those relations is used; any other rel_info is refused in one line."""
    assert load_dataset(shared_dir() / "data" / "cdr").schema == shipped_schema("cdr")
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "rel_info.json").write_text(json.dumps({"R1": "one"}), encoding="utf-8")
    (folder / "train.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no schema\.json; write one"):
        load_dataset(folder)


def test_a_schema_file_that_cannot_be_used_is_one_line_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"not JSON"):
        parse_schema("{", "schema.json")
    broken = {
        "name": "x",
        "entity_types": ["A", "B"],
        "relations": [{"id": "R1", "name": "r", "head_types": ["C"]}],
    }
    with pytest.raises(SchemaError, match=r"relations\[R1\]\.head_types: \['C'\] not in entity_types"):
        parse_schema(json.dumps(broken), "schema.json")
    one_sided = {
        "name": "x",
        "entity_types": ["A"],
        "relations": [{"id": "R1", "name": "r", "inverse": "R2"}, {"id": "R2", "name": "s"}],
    }
    with pytest.raises(SchemaError, match=r"R2 must name R1 as its inverse"):
        parse_schema(json.dumps(one_sided), "schema.json")
    (tmp_path / "schema.json").write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(SchemaError) as caught:
        load_schema(tmp_path / "schema.json")
    assert "\n" not in str(caught.value) and str(tmp_path / "schema.json") in str(caught.value)


def _bad_dataset(tmp_path: Path, name: str, change) -> Path:
    documents = _places(docred.load_split("train")[:3])
    change(documents[1])
    return write_dataset(tmp_path / name, TWO_RELATIONS, {"train": documents})


@pytest.mark.parametrize(
    ("case", "change", "expected"),
    [
        (
            "unknown relation",
            lambda raw: raw["labels"].append({"h": 0, "t": 1, "r": "P999", "evidence": []}),
            r"labels\[\d+\]\.r: 'P999' is not a relation",
        ),
        (
            "undeclared type",
            lambda raw: raw["vertexSet"][0][0].update(type="GENE"),
            r"vertexSet\[0\]\[0\]\.type: 'GENE' is not an entity type of the schema",
        ),
        (
            "span out of range",
            lambda raw: raw["vertexSet"][0][0].update(pos=[0, 999]),
            r"document 1 \(.*\): .*",
        ),
        ("empty document", lambda raw: raw.update(sents=[[]], vertexSet=[], labels=[]), r"document 1 \("),
    ],
)
def test_lmrc_train_refuses_a_bad_dataset_in_one_line_before_training(
    tmp_path: Path, case: str, change, expected: str
) -> None:
    data = _bad_dataset(tmp_path, case.replace(" ", "-"), change)
    out = tmp_path / "bundle"
    done = lmrc("train", "--data", str(data), "--out", str(out), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert message.count("\n") == 0 and str(data / "train.json") in message, message
    assert re.search(expected, message), message
    assert not out.exists(), "nothing is written before the data is checked"


def test_a_schema_that_does_not_parse_is_refused_before_training(tmp_path: Path) -> None:
    data = _bad_dataset(tmp_path, "schema", lambda raw: None)
    (data / "schema.json").write_text('{"name": "x", "entity_types": []}', encoding="utf-8")
    done = lmrc("train", "--data", str(data), "--out", str(tmp_path / "b"), timeout=120)
    assert done.returncode == 2 and "schema.json: entity_types" in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_redocreds_full_train_file_goes_through_the_same_command(tmp_path: Path) -> None:
    """A Re-DocRED-format train file as large as the shared data makes (Re-DocRED dev and DocRED's
    train slice, 700 documents), no validation file (a slice of train is held out), the shipped
    schema by name: checked whole, then trained (a few documents, one epoch, proposer only)."""
    dev = docred.load_raw(shared_dir() / "data" / "redocred" / "dev_revised.json")
    extra = docred.load_raw(shared_dir() / "data" / "docred" / "train_annotated_first200.json")
    titles = {raw["title"] for raw in dev}
    train = dev + [raw for raw in extra if raw["title"] not in titles]
    folder = tmp_path / "redocred-full"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(train), encoding="utf-8")
    dataset = load_dataset(folder, "redocred")
    assert len(dataset.train) + len(dataset.validation) == len(train) >= 690
    assert len(dataset.validation) == -(-len(train) // 10)
    out = tmp_path / "bundle"
    done = lmrc(
        "train", "--data", str(folder), "--schema", "redocred", "--out", str(out),
        "--no-tagger", "--epochs", "1", "--max-train-docs", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    manifest = json.loads((out / "bundle.json").read_text())
    assert set(manifest["models"]) == {"proposer"}
    proposer = json.loads((out / "proposer" / "proposer.json").read_text())
    assert len(proposer["relation_ids"]) == 96 and proposer["training"]["train_documents"] == 3


def test_a_tiny_bundle_trains_and_runs_end_to_end(tiny_bundle: Path, tmp_path: Path) -> None:
    """`lmrc train` wrote a complete bundle in the dataset's schema; `lmrc run --models` annotates
    a plain text with its tagger, proposes with its proposer and writes only the schema's
    relations to the graph."""
    manifest = json.loads((tiny_bundle / "bundle.json").read_text())
    assert set(manifest["models"]) == {"annotator", "proposer"}
    assert load_schema(tiny_bundle / "schema.json").fingerprint() == manifest["schema_fingerprint"]
    proposer = json.loads((tiny_bundle / "proposer" / "proposer.json").read_text())
    assert proposer["relation_ids"] == ["P131", "P17"] and proposer["relation_names"]["P17"] == "country"
    assert not (tiny_bundle / "proposer" / "checkpoint").exists(), "a finished run leaves no checkpoint"
    text = tmp_path / "text.txt"
    text.write_text(
        "Lyon is a city in France. It lies in the Auvergne-Rhône-Alpes region of France, on the "
        "Rhône. Paul Bocuse opened a restaurant near Lyon.\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    done = lmrc(
        "run", "--models", str(tiny_bundle), "--text", str(text), "--encoder-only",
        "--graph", str(tmp_path / "graph.lbug"), "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"models {tiny_bundle} (places)" in done.stdout
    figures = json.loads(report.read_text())
    assert figures["relation_sets"] == 1 and figures["dead_letters"]["texts"] == {}
    listed = lmrc(
        "graph", "--path", str(tmp_path / "graph.lbug"), "relations", "--all", "--json", timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {row["relation_id"] for row in rows} <= {"P17", "P131"}


def test_training_stops_at_its_budget_and_resumes_from_its_checkpoint(
    places_data: Path, tmp_path: Path
) -> None:
    """--max-minutes stops after the first epoch (each takes longer than the budget), leaving a
    checkpoint; --resume goes on from it to the last epoch; other options are refused."""
    out = tmp_path / "bundle"
    common = ["train", "--data", str(places_data), "--out", str(out), "--no-tagger", "--epochs", "2"]
    first = lmrc(*common, "--max-minutes", "0.001")
    assert first.returncode == 0, first.stderr[-2000:]
    log = [json.loads(line) for line in (out / "proposer" / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1]
    assert (out / "proposer" / "checkpoint" / "checkpoint.pt").exists()
    stopped = json.loads((out / "proposer" / "proposer.json").read_text())["training"]
    assert stopped["stopped_at_time_limit_after_epoch"] == 1

    mismatch = lmrc(*[a if a != "2" else "3" for a in common], "--resume", timeout=120)
    assert mismatch.returncode == 2 and "written with other options (epochs)" in mismatch.stderr

    resumed = lmrc(*common, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = [json.loads(line) for line in (out / "proposer" / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    assert not (out / "proposer" / "checkpoint").exists()


def test_training_goes_on_from_a_trained_proposer_and_refuses_another_schemas(
    tiny_bundle: Path, places_data: Path, tmp_path: Path
) -> None:
    """--init-from: the proposer starts from the bundle's weights and architecture (with learning
    rates of 0 it comes out unchanged, so it did not start from the pretrained encoder); a
    proposer of another schema, or a folder without one, is refused in one line before training."""
    import torch

    from lmrc.proposer.training.torch_model import load_artifact

    out = tmp_path / "continued"
    done = lmrc(
        "train", "--data", str(places_data), "--out", str(out), "--no-tagger", "--epochs", "1",
        "--max-train-docs", "2", "--init-from", str(tiny_bundle), "--encoder-lr", "0", "--head-lr", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    before, _ = load_artifact(tiny_bundle / "proposer")
    after, config = load_artifact(out / "proposer")
    assert config.training["init_from"] == str(tiny_bundle / "proposer")
    trained = dict(after.named_parameters())
    for name, parameter in before.named_parameters():
        assert parameter.requires_grad == trained[name].requires_grad
        if parameter.requires_grad:
            assert torch.equal(parameter, trained[name]), name
    for source, expected in (
        (Path(__file__).parents[1] / "models", "its proposer knows 96 relations"),
        (tmp_path, "no proposer there"),
    ):
        refused = lmrc(
            "train", "--data", str(places_data), "--out", str(tmp_path / "x"), "--init-from", str(source),
            timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
        assert refused.stderr.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_services_refuse_a_bundle_missing_a_model_and_dead_letter_another_schemas_events(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """A bundle without its proposer: the service does not start and says which model is
    missing, in one line. The proposer of a bundle in another schema (CDR's types) dead-letters a
    Re-DocRED document, with the reason; the classifier of the default bundle dead-letters
    candidates naming relations of another schema."""
    from lmrc.classifier.artifact import load_config as load_adapter_config
    from lmrc.classifier.service import ClassifierHandler, ClassifierSettings
    from lmrc.contracts import CandidatePair, CandidateSetEvent, ScoredRelation
    from lmrc.proposer.artifact import load_config
    from lmrc.proposer.service import ProposerHandler, ProposerSettings, build_runtime
    from lmrc.runtime import UnprocessableMessageError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    shutil.rmtree(broken / "proposer")
    started = subprocess.run(
        [sys.executable, "-m", "lmrc.proposer"],
        env={**os.environ, "PROPOSER_MODELS": str(broken)},
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert started.returncode == 2, started.stderr
    assert started.stderr.strip().count("\n") == 0 and "the proposer model is missing" in started.stderr

    cdr_like = tmp_path / "cdr-like"
    shutil.copytree(tiny_bundle, cdr_like)
    config = load_config(cdr_like / "proposer").model_copy(update={"entity_types": ["CHEM", "DISE"]})
    (cdr_like / "proposer" / "proposer.json").write_text(config.model_dump_json(), encoding="utf-8")
    runtime = build_runtime(ProposerSettings(artifact_dir=cdr_like / "proposer", http_port=0))
    handler = runtime.handler
    assert isinstance(handler, ProposerHandler)
    document = docred.to_document_event(docred.load_split("holdout")[0])
    with pytest.raises(UnprocessableMessageError) as caught:
        handler.propose(document)
    assert caught.value.error_class == "SchemaMismatch" and "CHEM, DISE" in str(caught.value)

    settings = ClassifierSettings()
    classifier = ClassifierHandler(settings, load_adapter_config(settings.artifact_dir))
    pair = CandidatePair(
        head=0, tail=1, score=0.9, shortlist=[ScoredRelation(relation_id="CID", probability=0.8)]
    )
    candidates = CandidateSetEvent(
        event_id="e", doc_id=document.doc_id, pairs=[pair], pairs_scored=1,
        proposer_model_version="rcp-cdr", document=document,
    )  # fmt: skip
    problem = classifier.schema_problem(candidates)
    assert problem is not None and "CID" in problem
    assert classifier.schema_problem(candidates.model_copy(update={"pairs": []})) is None


def test_lmrc_train_classifier_trains_the_adapter_on_out_of_fold_shortlists_and_resumes_mid_epoch(
    tmp_path: Path,
) -> None:
    """`lmrc train --classifier`: two fold proposers score the train documents each never saw, the
    fold proposers are removed once scored, and the LLM's adapter learns on those shortlists in the
    dataset's relation names. A budget stops the adapter mid-epoch with a checkpoint; `--resume`
    keeps every finished stage and goes on from the batch it stopped at; the bundle then serves
    its own adapter with its tuned decision."""
    from lmrc.bundle import load_bundle
    from lmrc.classifier.service import ClassifierSettings

    # The smallest documents (5 to 9 entities): a few dozen candidate pairs each keeps this quick.
    smallest = sorted(_places(docred.load_split("train")), key=lambda raw: len(raw["vertexSet"]))[:10]
    data = write_dataset(tmp_path / "small-places", TWO_RELATIONS, {"train": smallest})
    out = tmp_path / "bundle"
    common = [
        "train", "--data", str(data), "--out", str(out), "--no-tagger", "--epochs", "1",
        "--classifier", "--folds", "2", "--classifier-epochs", "1", "--classifier-max-docs", "2",
    ]  # fmt: skip
    stopped = lmrc(*common, "--max-minutes", "0.001")
    assert stopped.returncode == 0, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    adapter = out / "classifier"
    first = json.loads((adapter / "classifier.json").read_text())["training"]
    assert first["stopped_at_time_limit"] and first["steps"] >= 1
    assert (adapter / "checkpoint" / "checkpoint.pt").exists() and (adapter / "adapter_config.json").exists()
    assert not (out / "training" / "folds").exists(), "fold proposers are removed once they have scored"
    out_of_fold = json.loads((out / "training" / "out-of-fold-candidates.json").read_text())
    assert len(out_of_fold["documents"]) == len(load_dataset(data).train)
    shortlisted = {
        r for doc in out_of_fold["documents"] for *_pair, shortlist in doc["pairs"] for r, _p in shortlist
    }
    assert shortlisted <= {"P17", "P131"} and shortlisted

    resumed = lmrc(*common, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "proposer: finished earlier" in resumed.stdout
    assert "fold proposer" not in resumed.stdout, "the out-of-fold shortlists were kept, not re-made"
    config = json.loads((adapter / "classifier.json").read_text())
    training = config["training"]
    assert not training["stopped_at_time_limit"] and training["schema"] == "places"
    assert training["steps"] > first["steps"] and training["documents"] == 2
    log = [json.loads(line) for line in (adapter / "train_log.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in log if "step" in record]
    assert steps == sorted(set(steps)), "the resumed run goes on from the step it stopped at"
    assert [run["epoch"] for run in training["epochs_run"]][-1] == 1
    assert all("validation" in run for run in training["epochs_run"])
    assert "f1" in config["decision"]["validation"], "the decision is tuned on validation answers"
    assert not (adapter / "checkpoint").exists()
    bundle = load_bundle(out)
    assert (
        bundle.manifest.models["classifier"].version == config["version"] == "rc-bundle-smollm2-135m-lora-v1"
    )
    settings = ClassifierSettings(models=out)
    assert settings.artifact_dir == adapter == bundle.classifier_dir
    assert settings.schema().name == "places"
