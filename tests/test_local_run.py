"""`lmrc run`, the README's main job, on one holdout document: every stage, real components."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmrc.local.run import run_local
from lmrc.sink.settings import SinkSettings, open_store

pytestmark = pytest.mark.broker


def test_local_run_turns_a_document_into_a_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "graph.lbug"
    report = tmp_path / "report.json"
    assert run_local(None, limit=1, graph_path=graph, report_path=report) == 0
    output = capsys.readouterr().out
    done = re.search(r"done in [\d.]+s: (\d+) candidate pairs, (\d+) relations", output)
    assert done, output
    candidates, relations = int(done.group(1)), int(done.group(2))
    assert candidates > 0 and relations > 0
    assert "proposer: 1/1 documents" in output and f"classifier: {candidates}/{candidates}" in output
    assert "sink: 1/1 documents" in output
    assert "pair recall" in output
    scores = dict(
        re.findall(r"DocRED scores of the (relations topic|graph) on these 1 documents: (F1 [\d.]+)", output)
    )
    assert set(scores) == {"relations topic", "graph"}, output
    # What the sink wrote scores as what the classifier published: nothing lost on the way.
    assert scores["graph"] == scores["relations topic"]
    figures = json.loads(report.read_text())
    assert figures["candidate_pairs"] == candidates and figures["relation_events"] == relations
    assert figures["scores_graph"]["f1"] == figures["scores_relations_topic"]["f1"]
    assert figures["proposer"]["all_pairs"] > candidates
    store = open_store(SinkSettings(ladybug_path=graph), read_only=True)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts.documents == 1 and 0 < counts.relations <= relations


def test_encoder_only_run_needs_no_llm_and_scores_the_encoders_relations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "graph.lbug"
    report = tmp_path / "report.json"
    assert run_local(None, limit=2, graph_path=graph, report_path=report, encoder_only=True) == 0
    output = capsys.readouterr().out
    assert "encoder only" in output and "TGI server" not in output
    figures = json.loads(report.read_text())
    assert figures["mode"] == "encoder_only" and figures["llm_calls_per_document"] == 0.0
    assert figures["relation_sets"] == 2 and figures["relation_events"] > 0
    # The relations on the topic are the ones in the graph, and they score like the encoder alone.
    assert figures["scores_graph"]["f1"] == figures["scores_relations_topic"]["f1"] > 0.2
