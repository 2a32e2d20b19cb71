"""The evaluator against hand-computed scores (see the arithmetic in each comment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrc.cli import main
from lmrc.docred.evaluation import evaluate_candidates, evaluate_relations


def mention(name: str) -> dict:
    return {"name": name, "sent_id": 0, "pos": [0, 1], "type": "MISC"}


GOLD = [
    {
        "title": "A",
        "sents": [["x"], ["y"]],
        "vertexSet": [[mention("Alice")], [mention("Paris"), mention("City of Light")], [mention("France")]],
        "labels": [
            {"h": 0, "t": 1, "r": "P19", "evidence": [0]},
            {"h": 1, "t": 2, "r": "P17", "evidence": [0, 1]},
            {"h": 0, "t": 2, "r": "P27", "evidence": [1]},
        ],
    },
    {
        "title": "B",
        "sents": [["z"]],
        "vertexSet": [[mention("Bob")], [mention("Berlin")]],
        "labels": [{"h": 0, "t": 1, "r": "P19", "evidence": [0]}],
    },
]
# ("Paris", "France", P17) is a training fact: a correct prediction of it is ignored by Ign F1.
TRAIN = [
    {
        "title": "T",
        "sents": [["w"]],
        "vertexSet": [[mention("Paris")], [mention("France")]],
        "labels": [{"h": 0, "t": 1, "r": "P17", "evidence": []}],
    }
]
PREDICTIONS = [
    {"title": "A", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": [0]},  # correct
    {"title": "A", "h_idx": 1, "t_idx": 2, "r": "P17", "evidence": [1]},  # correct, in train
    {"title": "A", "h_idx": 1, "t_idx": 2, "r": "P17", "evidence": [1]},  # duplicate: dropped
    {"title": "A", "h_idx": 0, "t_idx": 2, "r": "P17"},  # wrong relation
    {"title": "B", "h_idx": 0, "t_idx": 1, "r": "P19", "evidence": []},  # correct
    {"title": "C", "h_idx": 0, "t_idx": 1, "r": "P19"},  # unknown document: counts as a prediction
]


def test_f1_and_ign_f1_match_hand_computation() -> None:
    scores = evaluate_relations(GOLD, PREDICTIONS, TRAIN).scores
    # 5 unique predictions, 3 correct, 4 gold facts.
    assert (scores.predictions, scores.correct, scores.gold) == (5, 3, 4)
    assert scores.precision == pytest.approx(3 / 5)
    assert scores.recall == pytest.approx(3 / 4)
    assert scores.f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))  # 0.6667
    # One correct fact is in train: Ign precision (3 - 1) / (5 - 1) = 0.5, with the same recall.
    assert scores.correct_in_train == 1
    assert scores.ign_f1 == pytest.approx(2 * 0.5 * 0.75 / (0.5 + 0.75))  # 0.6
    # Evidence: 2 predicted sentence ids (document C is skipped), both right; 5 gold ids.
    assert scores.evidence_f1 == pytest.approx(2 * 1.0 * 0.4 / 1.4)


def test_ign_f1_is_absent_without_a_training_file() -> None:
    scores = evaluate_relations(GOLD, PREDICTIONS).scores
    assert scores.ign_f1 is None and scores.correct_in_train is None


def test_a_training_fact_matches_through_any_mention_name() -> None:
    train = [{**TRAIN[0], "vertexSet": [[mention("City of Light")], [mention("France")]]}]
    assert evaluate_relations(GOLD, PREDICTIONS, train).scores.correct_in_train == 1
    other_relation = [{**TRAIN[0], "labels": [{"h": 0, "t": 1, "r": "P131", "evidence": []}]}]
    assert evaluate_relations(GOLD, PREDICTIONS, other_relation).scores.correct_in_train == 0


def test_per_relation_scores() -> None:
    rows = {row.relation: row for row in evaluate_relations(GOLD, PREDICTIONS).per_relation}
    assert (rows["P19"].gold, rows["P19"].predicted, rows["P19"].correct) == (2, 3, 2)
    assert rows["P19"].f1 == pytest.approx(0.8)
    assert rows["P17"].f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert rows["P27"].f1 == 0.0 and rows["P27"].gold == 1


def test_no_prediction_scores_zero() -> None:
    scores = evaluate_relations(GOLD, [], TRAIN).scores
    assert (scores.precision, scores.recall, scores.f1, scores.ign_f1) == (0.0, 0.0, 0.0, 0.0)


def test_candidate_recall_and_pass_rate() -> None:
    candidates = [
        {"title": "A", "h_idx": 0, "t_idx": 1},
        {"title": "A", "h_idx": 0, "t_idx": 1},  # duplicate
        {"title": "A", "h_idx": 1, "t_idx": 2},
        {"title": "A", "h_idx": 1, "t_idx": 0},  # not a gold pair (direction matters)
        {"title": "B", "h_idx": 1, "t_idx": 0},
        {"title": "C", "h_idx": 0, "t_idx": 1},  # unknown document
    ]
    scores = evaluate_candidates(GOLD, candidates)
    # Gold pairs: A(0,1) A(1,2) A(0,2) B(0,1); kept 2. All ordered pairs: 3*2 + 2*1 = 8; passed 4.
    assert (scores.gold_pairs, scores.gold_pairs_kept, scores.all_pairs, scores.candidates) == (4, 2, 8, 4)
    assert scores.pair_recall == pytest.approx(0.5)
    assert scores.triple_recall == pytest.approx(0.5)
    assert scores.pass_rate == pytest.approx(0.5)
    assert scores.unknown_titles == 1


def test_cli_prints_official_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, train, pred = tmp_path / "gold.json", tmp_path / "train.json", tmp_path / "pred.jsonl"
    gold.write_text(json.dumps(GOLD))
    train.write_text(json.dumps(TRAIN))
    pred.write_text("\n".join(json.dumps(p) for p in PREDICTIONS))
    assert main(["eval", "--gold", str(gold), "--pred", str(pred), "--train", str(train)]) == 0
    out = capsys.readouterr().out
    assert "F1          0.6667" in out and "Ign F1      0.6000" in out
    assert main(["eval", "--gold", str(gold), "--pred", str(pred), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scores"]["correct"] == 3 and report["scores"]["ign_f1"] is None


def test_cli_scores_candidate_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = tmp_path / "gold.json", tmp_path / "candidates.json"
    gold.write_text(json.dumps(GOLD))
    pred.write_text(json.dumps([{"title": "A", "h_idx": 0, "t_idx": 1}]))
    assert main(["eval", "--gold", str(gold), "--pred", str(pred)]) == 0
    assert "pair recall   0.2500" in capsys.readouterr().out
