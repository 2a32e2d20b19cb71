"""`lmrc run`, the README's main job, on one holdout document: every stage, real components."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmrc.local_run import run_local
from services.sink.settings import SinkSettings, open_store

pytestmark = pytest.mark.broker


def test_local_run_turns_a_document_into_a_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "graph.lbug"
    assert run_local(None, limit=1, graph_path=graph) == 0
    output = capsys.readouterr().out
    done = re.search(r"done in [\d.]+s: (\d+) candidate pairs, (\d+) relations", output)
    assert done, output
    candidates, relations = int(done.group(1)), int(done.group(2))
    assert candidates > 0 and relations > 0
    assert "proposer: 1/1 documents" in output and f"classifier: {candidates}/{candidates}" in output
    assert "pair recall" in output and "DocRED scores of the pipeline" in output
    store = open_store(SinkSettings(ladybug_path=graph), read_only=True)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts.documents == 1 and 0 < counts.relations <= relations
