"""The proposer: features, threshold, the shipped model on the holdout split, ONNX parity, service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrc import docred
from lmrc.contracts import CandidateSetEvent, DeadLetterEvent, DocumentEvent, Entity, RelationSetEvent
from lmrc.local.broker import LocalBroker
from lmrc.proposer.artifact import (
    DEFAULT_ARTIFACT_DIR,
    ProposerConfig,
    load_config,
    threshold_for,
    tokenizer_file,
)
from lmrc.proposer.features import MARKER, DocumentFeaturizer
from lmrc.proposer.inference import OnnxPairScorer
from lmrc.proposer.service import ProposerSettings, build_runtime
from lmrc.proposer.training.selection import (
    candidate_scores,
    pair_labels,
    relation_labels,
    score_documents,
    threshold_for_recall,
)
from tests.helpers import (
    committed_offsets,
    produce,
    read_topic,
    running,
    service_test_fields,
    small_documents,
    wait_for,
)


@pytest.fixture(scope="module")
def config() -> ProposerConfig:
    return load_config(DEFAULT_ARTIFACT_DIR)


@pytest.fixture(scope="module")
def featurizer(config: ProposerConfig) -> DocumentFeaturizer:
    return DocumentFeaturizer(tokenizer_file(config.encoder))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped artifact exported to ONNX, as `lmrc proposer export` does."""
    from lmrc.proposer.training.export import export_onnx

    return export_onnx(DEFAULT_ARTIFACT_DIR, tmp_path_factory.mktemp("onnx") / "proposer.onnx")


@pytest.fixture(scope="module")
def scorer(onnx_file: Path) -> OnnxPairScorer:
    return OnnxPairScorer(onnx_file, ["CPUExecutionProvider"])


def proposer_settings(
    broker: LocalBroker, unique: str, onnx_file: Path, **overrides: object
) -> ProposerSettings:
    """The proposer on its own topics of the test broker, serving ``onnx_file``."""
    fields = service_test_fields(broker.bootstrap_servers, "proposer", unique, "documents")
    fields.update(onnx_path=onnx_file, **overrides)
    return ProposerSettings(**fields)


def longest(documents: list[dict]) -> dict:
    return max(documents, key=lambda raw: sum(len(s) for s in raw["sents"]))


def test_every_mention_is_represented_by_its_start_marker(featurizer: DocumentFeaturizer) -> None:
    raw = docred.load_split("holdout")[0]
    document = docred.to_document_event(raw)
    pieces, positions, sentences = featurizer.word_pieces(document)
    marker_id = featurizer.tokenizer.token_to_id(MARKER)
    assert [len(p) for p in positions] == [len(entity.mentions) for entity in document.entities]
    assert all(pieces[position] == marker_id for entity in positions for position in entity)
    assert len(sentences) == len(pieces)
    assert sentences == sorted(sentences) and set(sentences) == set(range(len(document.sentences)))
    for entity, entity_positions in zip(document.entities, positions, strict=True):
        earliest = min(entity.mentions, key=lambda m: (m.sent_id, m.start))  # positions are in text order
        assert sentences[entity_positions[0]] == earliest.sent_id  # a marker counts with its mention
        words = document.sentences[earliest.sent_id][earliest.start : earliest.end]
        start = entity_positions[0] + 1
        expected = featurizer.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False).ids
        assert pieces[start : start + len(expected)] == expected
        assert pieces[start + len(expected)] == marker_id  # the end marker closes the mention


def test_long_documents_are_cut_into_overlapping_windows(featurizer: DocumentFeaturizer) -> None:
    features = featurizer.featurize(docred.to_document_event(longest(docred.load_split("train"))))
    assert features.token_count > 510
    windows, length = features.window_input_ids.shape
    assert windows == 2 and length == 512
    assert features.window_offsets[0] == 0 and features.window_offsets[-1] == features.token_count - 510
    assert (features.window_input_ids[:, 0] == featurizer.cls_id).all()
    assert (features.window_input_ids[:, -1] == featurizer.sep_id).all()
    n = features.mention_positions.shape[0]
    assert len(features.pair_heads) == n * (n - 1) and not (features.pair_heads == features.pair_tails).any()


def test_training_labels_follow_the_gold_annotations(featurizer: DocumentFeaturizer) -> None:
    raw = docred.load_split("train")[0]
    features = featurizer.featurize(docred.to_document_event(raw))
    relation_index = {r: i for i, r in enumerate(sorted(docred.load_relation_names()))}
    pairs, relations = pair_labels(raw, features), relation_labels(raw, features, relation_index)
    gold_pairs = {(label["h"], label["t"]) for label in raw["labels"]}
    assert pairs.sum() == len(gold_pairs) and relations.sum() == len(raw["labels"])
    first = raw["labels"][0]
    row = next(
        i
        for i, (h, t) in enumerate(zip(features.pair_heads, features.pair_tails, strict=True))
        if (h, t) == (first["h"], first["t"])
    )
    assert pairs[row] == 1 and relations[row, relation_index[first["r"]]] == 1


def test_threshold_keeps_the_recall_target() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    assert threshold_for_recall(scores, labels, 0.75) == 0.5  # 3 of 4 positives kept
    assert threshold_for_recall(scores, labels, 1.0) == 0.3


def test_recall_target_picks_a_calibrated_threshold(config: ProposerConfig) -> None:
    assert threshold_for(config, None) == config.threshold == config.thresholds["0.950"]["threshold"]
    assert threshold_for(config, 0.90) >= config.threshold >= threshold_for(config, 0.99)
    rows = [config.thresholds[key] for key in sorted(config.thresholds)]
    assert [row["pair_recall"] for row in rows] == sorted(row["pair_recall"] for row in rows)
    with pytest.raises(ValueError, match=r"no threshold for recall target 0\.800"):
        threshold_for(config, 0.8)


def test_shipped_model_keeps_gold_pairs_and_drops_most_others_on_holdout(
    scorer: OnnxPairScorer, featurizer: DocumentFeaturizer, config: ProposerConfig
) -> None:
    scored = score_documents(docred.load_split("holdout"), featurizer, scorer.score)
    figures = candidate_scores(scored, config.threshold)
    print(f"holdout: pair recall {figures.pair_recall:.4f}, pass rate {figures.pass_rate:.4f}")
    assert figures.pair_recall >= 0.90
    assert figures.pass_rate <= 0.30


def test_onnx_and_torch_give_the_same_relation_probabilities(
    scorer: OnnxPairScorer, featurizer: DocumentFeaturizer, config: ProposerConfig
) -> None:
    """The relation head is in the pair graph, beside the pair score, and agrees with torch."""
    from lmrc.proposer.artifact import relation_probabilities
    from lmrc.proposer.training.torch_model import load_artifact, torch_pair_and_relation_logits

    model, _config = load_artifact(DEFAULT_ARTIFACT_DIR)
    assert scorer.has_relation_head and config.has_relation_head
    for raw in docred.load_split("holdout")[:2]:
        features = featurizer.featurize(docred.to_document_event(raw))
        _pair_logits, relation_logits = torch_pair_and_relation_logits(model, features)
        expected = relation_probabilities(relation_logits, config.relation_loss)
        pairs, got, _evidence = scorer.score_with_relations(features, config.relation_loss)
        assert got.shape == expected.shape == (len(features.pair_heads), config.relation_classes)
        assert float(np.abs(expected - got).max()) < 1e-3
        assert np.allclose(pairs, scorer.score(features))


def test_onnx_and_torch_give_the_same_sentence_attention(
    scorer: OnnxPairScorer, featurizer: DocumentFeaturizer, config: ProposerConfig
) -> None:
    """The pairs' context attention is a third output of the graph; summed per sentence it is a
    distribution over the document's sentences, the same as torch's."""
    from lmrc.proposer.artifact import sentence_attention
    from lmrc.proposer.training.torch_model import load_artifact, torch_pair_attention

    model, _config = load_artifact(DEFAULT_ARTIFACT_DIR)
    assert scorer.has_evidence
    for raw in [docred.load_split("holdout")[0], longest(docred.load_split("train"))]:
        features = featurizer.featurize(docred.to_document_event(raw))
        _pairs, _relations, got = scorer.score_with_relations(features, config.relation_loss)
        expected = sentence_attention(
            torch_pair_attention(model, features), features.token_sentences, features.sentence_count
        )
        assert got is not None
        assert got.shape == expected.shape == (len(features.pair_heads), len(raw["sents"]))
        # Normalised with a small epsilon: a pair whose head and tail barely attend to the same
        # word pieces sums to a little less than one.
        totals = got.sum(1)
        assert (totals <= 1.0 + 1e-4).all() and (totals > 0.5).all()
        assert float(np.mean(np.abs(totals - 1.0) < 0.05)) >= 0.95
        assert float(np.abs(expected - got).max()) < 1e-3


def test_evidence_is_trained_and_calibrated_on_validation(
    scorer: OnnxPairScorer, featurizer: DocumentFeaturizer, config: ProposerConfig
) -> None:
    """The shipped proposer learned evidence (DREEAM's loss): on the holdout's gold relations its
    evidence sentences beat the most naive rule, the sentences that mention head or tail."""
    from lmrc.proposer.artifact import evidence_sentences

    assert config.training.get("evidence_loss_weight", 0) > 0
    assert config.evidence_threshold is not None and config.evidence_validation["f1"] > 0.45
    model_hits = model_count = rule_hits = rule_count = gold_count = 0
    for raw in docred.load_split("holdout"):
        features = featurizer.featurize(docred.to_document_event(raw))
        _pairs, _relations, attention = scorer.score_with_relations(features, config.relation_loss)
        assert attention is not None
        pairs = zip(features.pair_heads, features.pair_tails, strict=True)
        index = {(int(h), int(t)): i for i, (h, t) in enumerate(pairs)}
        for label in raw["labels"]:
            gold = set(label["evidence"])
            row = attention[index[(label["h"], label["t"])]]
            chosen = set(evidence_sentences(row, config.evidence_threshold))
            mentioned = {m["sent_id"] for e in (label["h"], label["t"]) for m in raw["vertexSet"][e]}
            model_hits, model_count = model_hits + len(chosen & gold), model_count + len(chosen)
            rule_hits, rule_count = rule_hits + len(mentioned & gold), rule_count + len(mentioned)
            gold_count += len(gold)

    def f1(hits: int, count: int) -> float:
        return 2 * hits / (count + gold_count)

    print(
        f"holdout evidence F1 on gold relations: model {f1(model_hits, model_count):.4f}, "
        f"mention rule {f1(rule_hits, rule_count):.4f}"
    )
    assert f1(model_hits, model_count) > f1(rule_hits, rule_count) + 0.05


def test_pairs_scored_in_several_runs_score_as_in_one(
    onnx_file: Path, scorer: OnnxPairScorer, featurizer: DocumentFeaturizer, config: ProposerConfig
) -> None:
    """Memory stays bounded with many entities: the pairs go through in runs sized by a budget;
    a tiny budget (one pair per run here) gives the same outputs as one run, and the text is
    still encoded once (the document graph runs once, the pair graph once per pair)."""
    from lmrc.proposer.inference import pairs_per_run

    tiny = OnnxPairScorer(onnx_file, ["CPUExecutionProvider"], pair_budget_bytes=1)
    assert pairs_per_run(10_000, 1) == 1 and pairs_per_run(300) > 500
    features = featurizer.featurize(small_documents(1, entities=5)[0])
    one_run = scorer.score_with_relations(features, config.relation_loss)
    many_runs = tiny.score_with_relations(features, config.relation_loss)
    assert tiny.document_runs == 1 and len(features.pair_heads) == 20
    for expected, got in zip(one_run, many_runs, strict=True):
        assert expected is not None and got is not None
        assert expected.shape == got.shape and float(np.abs(expected - got).max()) < 1e-5


def test_the_relation_head_is_calibrated_on_validation(config: ProposerConfig) -> None:
    assert config.relation_ids == sorted(docred.load_relation_names())
    assert config.relation_threshold is not None and 0 < config.relation_threshold < 1
    recalls = [config.relation_validation[f"shortlist_recall@{k}"] for k in range(1, 11)]
    assert recalls == sorted(recalls)  # a longer shortlist never covers less
    assert config.relation_validation[f"shortlist_recall@{config.shortlist_size}"] >= 0.9


def test_onnx_and_torch_give_the_same_pair_scores(
    scorer: OnnxPairScorer, featurizer: DocumentFeaturizer
) -> None:
    from lmrc.proposer.training.torch_model import load_artifact, torch_scores

    model, _config = load_artifact(DEFAULT_ARTIFACT_DIR)
    holdout = docred.load_split("holdout")
    documents = [holdout[0], holdout[1], longest(docred.load_split("train"))]
    differences = []
    for raw in documents:
        features = featurizer.featurize(docred.to_document_event(raw))
        expected, got = torch_scores(model, features), scorer.score(features)
        assert expected.shape == got.shape == (len(features.pair_heads),)
        differences.append(float(np.abs(expected - got).max()))
    assert max(differences) < 1e-3, differences


@pytest.mark.broker
def test_service_turns_documents_into_candidate_events(
    broker: LocalBroker,
    unique: str,
    onnx_file: Path,
    scorer: OnnxPairScorer,
    featurizer: DocumentFeaturizer,
    config: ProposerConfig,
) -> None:
    documents = [docred.to_document_event(raw) for raw in docred.load_split("holdout")[:4]]
    big = docred.to_document_event(longest(docred.load_split("train")))
    crowded = DocumentEvent(
        doc_id="crowded", sentences=documents[0].sentences, entities=list(documents[0].entities) * 10
    )
    first = documents[0].entities[0].mentions[0]
    mentioned = DocumentEvent(  # 3 entities, one with 200 mentions: 600 slots over a limit of 500
        doc_id="mentioned",
        sentences=documents[0].sentences,
        entities=[documents[0].entities[1], documents[0].entities[2], Entity(mentions=[first] * 200)],
    )
    broken = json.loads(documents[1].model_dump_json())
    broken["entities"][0]["mentions"][0]["end"] = 10_000
    settings = proposer_settings(
        broker,
        unique,
        onnx_file,
        output_topic=f"{unique}.candidates",
        max_document_tokens=600,
        max_entities=100,
        max_mention_slots=500,
    )
    values = [d.model_dump_json().encode() for d in [*documents, big, crowded, mentioned]] + [
        json.dumps(broken).encode()
    ]
    with running(build_runtime(settings)):
        produce(broker.bootstrap_servers, settings.input_topic, values)
        scored = {  # as the service scores them: pair and relation outputs in one run
            d.doc_id: list(zip(f.pair_heads, f.pair_tails, probabilities, strict=True))
            for d in documents
            for f in [featurizer.featurize(d)]
            for probabilities in [scorer.score_with_relations(f, config.relation_loss)[0]]
        }
        expected = {
            doc_id: {(int(h), int(t)) for h, t, s in pairs if s >= config.threshold}
            for doc_id, pairs in scored.items()
        }
        # Scores within the ONNX parity tolerance of the threshold may fall either way between two
        # runs (the graph's scatter-adds sum in no fixed order): those pairs are not compared.
        borderline = {
            doc_id: {(int(h), int(t)) for h, t, s in pairs if abs(s - config.threshold) < 1e-3}
            for doc_id, pairs in scored.items()
        }
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=len(documents))
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=4)
    sets = [CandidateSetEvent.model_validate_json(record.value or b"") for record in out]
    got: dict[str, set[tuple[int, int]]] = {}
    for candidates in sets:  # one per document, its pairs best first
        got[candidates.doc_id] = {(pair.head, pair.tail) for pair in candidates.pairs}
        scores = [pair.score for pair in candidates.pairs]
        assert scores == sorted(scores, reverse=True) and all(s >= config.threshold for s in scores)
        assert candidates.proposer_model_version == config.version
        assert candidates.document.doc_id == candidates.doc_id
        assert candidates.pairs_scored == candidates.document.pair_count()
        for pair in candidates.pairs:  # the encoder's ranked shortlist and its own predictions
            shortlist = [r.probability for r in pair.shortlist]
            assert len(shortlist) == config.shortlist_size and shortlist == sorted(shortlist, reverse=True)
            assert all(r.probability >= (config.relation_threshold or 0.5) for r in pair.predicted)
            assert all(r.relation_id in config.relation_ids for r in pair.shortlist)
            assert pair.evidence and pair.evidence == sorted(set(pair.evidence))  # sentence ids
            assert max(pair.evidence) < len(candidates.document.sentences)
    assert {d: got[d] - borderline[d] for d in got} == {d: expected[d] - borderline[d] for d in expected}
    assert any(pair.predicted for candidates in sets for pair in candidates.pairs)
    assert all(0 < len(pairs) < len(d.entities) ** 2 for d in documents for pairs in [expected[d.doc_id]])
    letters = sorted(
        (DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq), key=lambda x: x.origin.offset
    )
    assert [letter.error_class for letter in letters] == [
        "DocumentTooLarge",
        "TooManyEntities",
        "TooManyMentions",
        "SchemaValidationError",
    ]
    assert "word pieces (limit 600)" in letters[0].error_message
    assert "has 120 entities (limit 100)" in letters[1].error_message
    assert "3 entities with up to 200 mentions each (limit 500" in letters[2].error_message


@pytest.mark.broker
def test_encoder_only_mode_emits_the_encoders_relations_as_one_set_per_document(
    broker: LocalBroker,
    unique: str,
    onnx_file: Path,
    scorer: OnnxPairScorer,
    featurizer: DocumentFeaturizer,
    config: ProposerConfig,
) -> None:
    documents = [docred.to_document_event(raw) for raw in docred.load_split("holdout")[:3]]
    settings = proposer_settings(
        broker, unique, onnx_file, output_topic=f"{unique}.relations", mode="encoder_only"
    )
    with running(build_runtime(settings)):
        produce(
            broker.bootstrap_servers, settings.input_topic, [d.model_dump_json().encode() for d in documents]
        )
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=len(documents))
    threshold = config.relation_threshold or 0.5
    for document, record in zip(documents, out, strict=True):
        relation_set = RelationSetEvent.model_validate_json(record.value or b"")
        features = featurizer.featurize(document)
        _pairs, probabilities, _evidence = scorer.score_with_relations(features, config.relation_loss)
        expected = {
            (int(h), int(t), config.relation_ids[r])
            for (i, r) in zip(*np.nonzero(probabilities >= threshold), strict=True)
            for h, t in [(features.pair_heads[i], features.pair_tails[i])]
        }
        got = {(r.head.index, r.tail.index, r.relation_id) for r in relation_set.relations}
        assert relation_set.doc_id == document.doc_id and got == expected and expected
        assert all(
            r.models.classifier is None and r.models.proposer == config.version
            for r in relation_set.relations
        )
        assert all(r.relation_name == config.relation_names[r.relation_id] for r in relation_set.relations)
        sentences = len(document.sentences)
        assert all(r.evidence and max(r.evidence) < sentences for r in relation_set.relations)


@pytest.mark.broker
def test_an_output_larger_than_the_broker_takes_dead_letters_its_input_and_the_partition_moves_on(
    broker: LocalBroker, unique: str, onnx_file: Path
) -> None:
    """A candidate set carries its document and every pair: it can outgrow the input. Past the one
    message limit the producer raised MSG_SIZE_TOO_LARGE, nothing caught it, the service exited and
    every restart re-read the batch. Now that input is dead-lettered (whole, it fits) and the
    documents after it flow."""
    limit = 12_000
    big = docred.to_document_event(docred.load_split("holdout")[2])
    small = small_documents(2, entities=2)
    settings = proposer_settings(
        broker, unique, onnx_file, output_topic=f"{unique}.candidates", max_message_bytes=limit
    )
    values = [event.model_dump_json().encode() for event in (small[0], big, small[1])]
    assert len(values[1]) < limit
    with running(build_runtime(settings)):
        produce(broker.bootstrap_servers, settings.input_topic, values)
        out = read_topic(broker.bootstrap_servers, [settings.output_topic], expect=2)
        dlq = read_topic(broker.bootstrap_servers, [settings.dead_letter_topic], expect=1)
        wait_for(
            lambda: (
                committed_offsets(broker.bootstrap_servers, settings.group_id, settings.input_topic, 1)
                == {0: 3}
            ),
            what="the whole batch committed",
        )
    assert [r.key for r in out] == [small[0].doc_id, small[1].doc_id]
    (letter,) = [DeadLetterEvent.model_validate_json(r.value or b"") for r in dlq]
    assert letter.error_class == "OutputTooLarge" and letter.origin.offset == 1
    assert "CandidateSetEvent made from this message is" in letter.error_message
    assert f"over the message limit of {limit}" in letter.error_message
    assert letter.payload == values[1].decode() and not letter.payload_truncated
    assert all(len(r.value or b"") <= limit for r in [*out, *dlq])


def test_the_int8_export_keeps_the_relations_of_the_fp32_one(
    onnx_file: Path,
    scorer: OnnxPairScorer,
    featurizer: DocumentFeaturizer,
    config: ProposerConfig,
    tmp_path: Path,
) -> None:
    """`--precision int8`: both graphs quantized, smaller, served by the same scorer; the encoder's
    feed-forward output projections stay fp32 (one per layer), and the relations decided on holdout
    documents are nearly all the fp32 export's."""
    import onnx

    from lmrc.proposer.artifact import pair_graph_path
    from lmrc.proposer.training.export import down_projections, quantize_onnx

    int8_file = quantize_onnx(onnx_file, tmp_path / "proposer.int8.onnx")
    assert int8_file.stat().st_size < 0.7 * onnx_file.stat().st_size
    assert pair_graph_path(int8_file).stat().st_size < 0.5 * pair_graph_path(onnx_file).stat().st_size
    kept = set(down_projections(onnx_file))
    layers = 12  # all-mpnet-base-v2
    assert len(kept) == layers
    quantized = onnx.load(str(int8_file), load_external_data=False)
    fp32_matmuls = {node.name for node in quantized.graph.node if node.op_type == "MatMul"}
    assert kept <= fp32_matmuls
    assert sum(node.op_type == "MatMulInteger" for node in quantized.graph.node) >= 4 * layers
    int8 = OnnxPairScorer(int8_file, ["CPUExecutionProvider"], pair_width=config.pair_width)
    threshold = config.relation_threshold
    assert threshold is not None
    both = fp32_count = int8_count = 0
    for raw in docred.load_split("holdout")[:3]:
        features = featurizer.featurize(docred.to_document_event(raw))
        _pairs, expected, _evidence = scorer.score_with_relations(features, config.relation_loss)
        _pairs, got, evidence = int8.score_with_relations(features, config.relation_loss)
        assert got.shape == expected.shape and evidence is not None
        both += int(((expected >= threshold) & (got >= threshold)).sum())
        fp32_count, int8_count = (
            fp32_count + int((expected >= threshold).sum()),
            int8_count + int((got >= threshold).sum()),
        )
    # int8's relations scored against fp32's as if they were gold (a few near the threshold flip;
    # F1 against the true gold stays within 0.002 on validation: docs/results/proposer-speed.json)
    assert fp32_count > 20 and 2 * both / (fp32_count + int8_count) >= 0.85, (both, fp32_count, int8_count)


def test_pseudo_labels_join_the_teachers_relations_to_a_files_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lmrc proposer pseudo-label`: a document's labels are kept and the teacher's confident
    relations, with evidence, joined to them; a document without labels gets the teacher's alone;
    a file that breaks the schema is refused in one line before anything is scored."""
    from lmrc.cli import main

    holdout = docred.load_split("holdout")[:2]
    unlabelled = {key: value for key, value in holdout[1].items() if key != "labels"}
    source = tmp_path / "documents.json"
    source.write_text(json.dumps([holdout[0], unlabelled]), encoding="utf-8")
    out = tmp_path / "labelled.json"
    assert main(["proposer", "pseudo-label", "--input", str(source), "--out", str(out)]) == 0
    first, second = json.loads(out.read_text(encoding="utf-8"))
    own = {(label["h"], label["t"], label["r"]) for label in holdout[0]["labels"]}
    got = {(label["h"], label["t"], label["r"]) for label in first["labels"]}
    assert own < got and len(got) == len(first["labels"])
    assert second["labels"] and all(label["evidence"] for label in second["labels"])
    gold = {(label["h"], label["t"], label["r"]) for label in holdout[1]["labels"]}
    taught = {(label["h"], label["t"], label["r"]) for label in second["labels"]}
    assert len(taught & gold) >= 0.5 * len(taught)  # the teacher is mostly right
    broken = json.loads(json.dumps(holdout[0]))
    broken["labels"][0]["r"] = "P999999"
    source.write_text(json.dumps([broken]), encoding="utf-8")
    capsys.readouterr()
    assert main(["proposer", "pseudo-label", "--input", str(source), "--out", str(tmp_path / "x.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "P999999" in error and error.startswith("lmrc: error:")
    assert not (tmp_path / "x.json").exists()


def test_the_cpu_serves_the_int8_export_and_a_gpu_the_fp32_one(tmp_path: Path) -> None:
    """PROPOSER_PRECISION=auto (the default) picks the export by the execution provider; a
    precision that is set wins; a missing export is named with the command that makes it."""
    from lmrc.proposer.artifact import onnx_path, precision_for
    from lmrc.proposer.service import onnx_file

    assert precision_for("CUDAExecutionProvider") == "fp32"
    assert precision_for("CPUExecutionProvider") == "int8"
    assert ProposerSettings(execution_provider="cpu").chosen_precision() == "int8"
    assert ProposerSettings(execution_provider="cuda").chosen_precision() == "fp32"
    assert ProposerSettings(execution_provider="cuda", precision="int8").chosen_precision() == "int8"
    config = load_config(DEFAULT_ARTIFACT_DIR)
    (tmp_path / "proposer.json").write_text(config.model_dump_json(), encoding="utf-8")
    settings = ProposerSettings(artifact_dir=tmp_path, execution_provider="cpu")
    with pytest.raises(FileNotFoundError, match=r"lmrc proposer export .* --precision int8"):
        onnx_file(settings, config)
    document_graph = onnx_path(tmp_path, config, "int8")
    document_graph.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"\.int8\.pairs\.onnx is missing"):
        onnx_file(settings, config)


def test_the_speed_benchmark_runs_each_variant_apart_and_writes_its_figures(tmp_path: Path) -> None:
    """`lmrc proposer benchmark`: every variant in its own process on the same documents; the
    split graphs give the one graph's relations exactly, each row says how often it encoded a text."""
    from lmrc.cli import main

    out = tmp_path / "speed.json"
    minilm = Path(DEFAULT_ARTIFACT_DIR).parent / "proposer-minilm"
    arguments = ["proposer", "benchmark", "--artifact", str(minilm), "--limit", "3", "--out", str(out)]
    assert main([*arguments, "--variant", "fp32-reencoded", "--variant", "fp32"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    before, after = report["rows"]
    assert report["documents"] == 3 and (before["variant"], after["variant"]) == ("fp32-reencoded", "fp32")
    assert after["encoder_passes_per_document"] == 1.0 <= before["encoder_passes_per_document"]
    assert (before["f1"], before["evidence_f1"]) == (after["f1"], after["evidence_f1"]) and after["f1"] > 0.3
    assert before["speed_vs_first"] == 1.0 and after["documents_per_second"] > 0
    assert after["peak_rss_mib"] >= after["model_loaded_mib"] > 100


def test_levers_are_chosen_on_validation_and_scored_beside_the_artifact(tmp_path: Path) -> None:
    """`lmrc proposer levers`: the artifact's own row is what the evaluator scores; a proposer
    averaged with itself can only match or beat its own validation F1 (its threshold among those
    tried); the inverse rules come from the train facts, directed; evidence fusion runs extra
    passes."""
    from lmrc.cli import main
    from lmrc.proposer.training.evaluate import evaluate_artifact

    minilm = Path(DEFAULT_ARTIFACT_DIR).parent / "proposer-minilm"
    out = tmp_path / "levers.json"
    arguments = ["proposer", "levers", "--artifact", str(minilm), *["--member", str(minilm)] * 2]
    assert main([*arguments, "--precision", "fp32", "--limit", "5", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    version = report["artifact"]
    levers = report["levers"]
    assert list(levers) == [
        "artifact as shipped",
        "per_relation_thresholds",
        "inverse_rules",
        "evidence_fusion",
        f"ensemble with {version}",
        f"{version} alone",
        "ensemble with every member",
    ]
    shipped = evaluate_artifact(minilm, split="holdout", limit=5).relations
    assert shipped is not None and levers["artifact as shipped"]["holdout"]["f1"] == round(shipped.f1, 4)
    assert levers[f"{version} alone"]["holdout"]["f1"] == round(shipped.f1, 4)
    ensemble = levers[f"ensemble with {version}"]
    assert ensemble["validation"]["f1"] >= levers["artifact as shipped"]["validation"]["f1"]
    # two more copies of itself, averaged the service's way: its own probabilities again, so the
    # same figures as the ensemble with one copy, for the time of three
    every = levers["ensemble with every member"]
    assert every["chosen_on_validation"]["members_share_rest"]
    assert every["validation"]["f1"] == ensemble["validation"]["f1"]
    assert every["holdout"]["f1"] == ensemble["holdout"]["f1"]
    assert every["seconds_per_document"] > ensemble["seconds_per_document"]
    rules = levers["inverse_rules"]["chosen_on_validation"]["rules"]
    assert any(rule.startswith("P361 -> inverse P527") for rule in rules)  # part of -> has part
    assert not any(rule.startswith("P131 -> inverse P150") for rule in rules)  # not every place contains
    assert levers["evidence_fusion"]["chosen_on_validation"]["extra_passes_per_document"] > 0
    thresholds = levers["per_relation_thresholds"]
    assert len(thresholds["chosen_on_validation"]["cross_validated_f1"]) >= 3
    assert thresholds["validation"]["cross_validated"]  # not the in-sample figure


def test_an_ensemble_averages_its_members_relations_and_names_them(tmp_path: Path) -> None:
    """PROPOSER_ENSEMBLE: the MiniLM proposer averaged with the mpnet one (weight 0.7 / 0.3) gives
    exactly the weighted mean of their relation probabilities, predicts what that mean passes, and
    its events name both; a member of another schema is refused before anything is served."""
    from lmrc.proposer.service import ProposerHandler, ensemble_members
    from lmrc.proposer.service import onnx_file as served_file
    from lmrc.proposer.training.export import ensure_onnx

    minilm = Path(DEFAULT_ARTIFACT_DIR).parent / "proposer-minilm"
    for artifact in (minilm, Path(DEFAULT_ARTIFACT_DIR)):
        ensure_onnx(artifact, precision="fp32")
    settings = ProposerSettings(
        artifact_dir=minilm,
        precision="fp32",
        execution_provider="cpu",
        mode="encoder_only",
        ensemble=[DEFAULT_ARTIFACT_DIR],
        ensemble_weight=0.7,
    )
    config = load_config(minilm)
    (member,) = ensemble_members(settings, config)
    scorer = OnnxPairScorer(
        served_file(settings, config), ["CPUExecutionProvider"], pair_width=config.pair_width
    )
    handler = ProposerHandler(settings, config, scorer, [member])
    document = docred.to_document_event(docred.load_split("holdout")[0])
    candidates = handler.propose(document)

    ours = handler.featurizer.featurize(document)
    theirs = member.featurizer.featurize(document)
    _scores, mine, _evidence = scorer.score_with_relations(ours, config.relation_loss)
    _scores, other, _evidence = member.scorer.score_with_relations(theirs, member.config.relation_loss)
    expected = 0.7 * mine + 0.3 * other
    row = {(int(h), int(t)): i for i, (h, t) in enumerate(zip(ours.pair_heads, ours.pair_tails, strict=True))}
    column = {relation: i for i, relation in enumerate(config.relation_ids)}
    assert candidates.pairs
    for pair in candidates.pairs:
        for scored in pair.shortlist:
            assert scored.probability == pytest.approx(
                expected[row[(pair.head, pair.tail)], column[scored.relation_id]], abs=1e-6
            )
    predicted = {(p.head, p.tail, s.relation_id) for p in candidates.pairs for s in p.predicted}
    rows, columns = np.nonzero(expected >= handler.relation_threshold)
    assert predicted == {
        (int(ours.pair_heads[r]), int(ours.pair_tails[r]), config.relation_ids[c])
        for r, c in zip(rows, columns, strict=True)
    }
    assert candidates.proposer_model_version == f"{config.version}+{member.config.version}"

    other_schema = tmp_path / "other-schema"
    other_schema.mkdir()
    narrower = config.model_copy(update={"relation_ids": config.relation_ids[:2]})
    (other_schema / "proposer.json").write_text(narrower.model_dump_json(), encoding="utf-8")
    with pytest.raises(ValueError, match="not those of"):
        ensemble_members(settings.model_copy(update={"ensemble": [other_schema]}), config)
