"""`lmrc run`, the README's main job, on one holdout document: every stage, real components."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrc import docred
from lmrc.bundle import DEFAULT_BUNDLE, load_bundle
from lmrc.docred.dataset import training_documents
from lmrc.local.run import run_local
from lmrc.sink.graph import TABLE_ID_TITLE
from lmrc.sink.settings import SinkSettings, open_store
from tests.helpers import scaled

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
    # No "0 candidate pairs": in this mode the proposer decides the relations itself.
    assert re.search(r"done in [\d.]+s: \d+ relations in 2 relation sets", output), output
    figures = json.loads(report.read_text())
    assert figures["mode"] == "encoder_only" and figures["llm_calls_per_document"] == 0.0
    assert figures["relation_sets"] == 2 and figures["relation_events"] > 0
    # The relations on the topic are the ones in the graph, and they score like the encoder alone
    # (but for those between two names of one node, "Kazakhstan" and "Republic of Kazakhstan").
    as_edges = figures.get("scores_relations_topic_as_edges", figures["scores_relations_topic"])
    assert figures["scores_graph"]["f1"] == as_edges["f1"] > 0.2


def bundle_with_classifier(tmp_path: Path, name: str) -> Path:
    """A copy of the default bundle (its annotator and proposer linked) whose classifier is the
    folder ``classifier/<name>``, for the caller to fill."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for file_name in ("bundle.json", "schema.json"):
        shutil.copy(DEFAULT_BUNDLE / file_name, bundle / file_name)
    for stage in ("annotator", "proposer"):
        (bundle / stage).symlink_to(DEFAULT_BUNDLE / stage, target_is_directory=True)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["models"]["classifier"] = {"path": f"classifier/{name}", "version": name}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return bundle


def test_a_bundle_whose_classifier_is_an_llm_as_it_is_runs_with_no_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A classifier folder with classifier.json alone (`lmrc classifier zero-shot`): the model server
    starts with the base model it names and no adapter, and requests name none (a named adapter the
    server lacks would fail every pair)."""
    bundle = bundle_with_classifier(tmp_path, "as-it-is")
    done = subprocess.run(
        [sys.executable, "-m", "lmrc", "classifier", "zero-shot", "--base-model", "smollm2-135m",
         "--out", str(bundle / "classifier" / "as-it-is")],
        capture_output=True, text=True, timeout=scaled(120),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    holdout = tmp_path / "one.json"
    holdout.write_text(json.dumps(docred.load_split("holdout")[:1]))
    report = tmp_path / "report.json"
    graph = tmp_path / "graph.lbug"
    assert run_local(holdout, graph_path=graph, report_path=report, models=bundle) == 0
    output = capsys.readouterr().out
    figures = json.loads(report.read_text())
    assert figures["mode"] == "encoder_llm" and figures["candidate_pairs"] > 0, output
    assert figures["failed_pairs"] == 0 and figures["relation_sets"] == 1, figures
    assert not any(figures["dead_letters"][topic] for topic in figures["dead_letters"]), figures
    # A copy of the shipped bundle learnt from Re-DocRED's train split: Ign F1 leaves its facts out.
    assert len(training_documents(load_bundle(bundle))) == len(docred.load_split("train"))


def test_the_first_run_announces_the_llm_the_bundle_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle on another base model announces that model's preparation (it said SmolLM2's, the
    default, whatever the bundle served), and nothing when it is prepared already."""
    from lmrc.classifier.training.base_model import QWEN_05B, is_materialized
    from lmrc.local.run import _say_what_is_prepared

    bundle = bundle_with_classifier(tmp_path, "qwen")
    classifier = bundle / "classifier" / "qwen"
    classifier.mkdir(parents=True)
    shipped = load_bundle(DEFAULT_BUNDLE).classifier_dir / "classifier.json"
    config = json.loads(shipped.read_text()) | {"version": "qwen", "base_model": QWEN_05B.model_id}
    (classifier / "classifier.json").write_text(json.dumps(config))
    _say_what_is_prepared(encoder_only=False, text=False, bundle=load_bundle(bundle))
    output = capsys.readouterr().out
    assert "smollm2" not in output.casefold(), output
    announced = f"preparing the LLM: de-quantizing {QWEN_05B.name}'s GGUF" in output
    assert announced == (not is_materialized(QWEN_05B.default_dir())), output
    _say_what_is_prepared(encoder_only=True, text=False, bundle=load_bundle(bundle))
    assert "preparing the LLM" not in capsys.readouterr().out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_within_seconds_and_leaves_no_process_behind(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C did nothing for two minutes, and after SIGTERM the broker and model server it had
    started kept running: now the run exits 130 within seconds with every child gone."""
    import psutil

    command = [sys.executable, "-m", "lmrc", "run", "--limit", "2", "--graph", str(tmp_path / "g.lbug")]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:  # until the documents are in: broker and model server are up
            lines.append(line)
            if line.startswith("published"):
                break
        children = psutil.Process(run.pid).children(recursive=True)
        names = " ".join(child.name() for child in children)
        assert len(children) >= 2, f"broker and model server expected, found: {names}\n{''.join(lines)}"
        interrupted = time.monotonic()
        run.send_signal(signum)
        output, _ = run.communicate(timeout=scaled(30))
        took = time.monotonic() - interrupted
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, "".join(lines) + output
    assert "interrupted" in output
    # Shutdown does not look like a failure (it printed "batch of 1 failed (circuit open ...)").
    assert "WARNING" not in output and "failed" not in output, output
    assert took < scaled(5), f"took {took:.1f}s to stop"
    _gone, alive = psutil.wait_procs(children, timeout=scaled(2))
    assert not alive, f"still running: {[p.name() for p in alive]}"


def test_local_run_reads_plain_text_and_shows_the_words_relations_come_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_annotator import PARAGRAPH

    text = tmp_path / "kafka.txt"
    text.write_text(PARAGRAPH, encoding="utf-8")
    graph, report = tmp_path / "graph.lbug", tmp_path / "report.json"
    assert run_local(text, graph_path=graph, report_path=report, encoder_only=True, text=True) == 0
    output = capsys.readouterr().out
    assert "1 text from" in output and "published 1 text to lmrc.texts" in output
    assert "annotator: 1/1 texts" in output and "sink: 1/1 documents" in output
    found = re.findall(
        r"^kafka: (.+?) \[(\d+):(\d+)\] --(.+?)--> (.+?) \[(\d+):(\d+)\] \([\d.]+\)$", output, re.M
    )
    assert found, output
    for head, head_start, head_end, _relation, tail, tail_start, tail_end in found:
        assert PARAGRAPH[int(head_start) : int(head_end)] == head
        assert PARAGRAPH[int(tail_start) : int(tail_end)] == tail
    assert re.search(r"^    sentence \d+: ", output, re.M)
    figures = json.loads(report.read_text())
    assert figures["relation_sets"] == 1 and len(found) == min(figures["relation_events"], 20)
    assert figures["dead_letters"]["texts"] == {}


def test_a_plain_text_run_is_scored_against_a_users_gold_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lmrc run --text FILE --gold GOLD`: the texts are annotated, run and scored against the
    gold documents titled as their ids, as `lmrc annotator evaluate` does; a text without its
    gold document is one line before anything starts. The relations are listed once (no second
    table in another order), most confident first within each text, each with its sentence."""
    from lmrc import docred
    from lmrc.annotator.training.evaluate import write_texts
    from lmrc.cli import main as lmrc_main

    documents = docred.load_split("holdout")[:2]
    texts = write_texts(documents, tmp_path / "texts.jsonl")
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(documents[::-1]), encoding="utf-8")  # any order
    report = tmp_path / "report.json"
    run = ["run", "--text", str(texts), "--encoder-only", "--graph", str(tmp_path / "graph.lbug")]
    assert lmrc_main([*run, "--gold", str(gold), "--report", str(report)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert TABLE_ID_TITLE not in "\n".join(lines)
    listed = [(i, line) for i, line in enumerate(lines) if re.search(r"\] --.+--> .+ \(\d\.\d\d\)$", line)]
    assert listed and all(lines[i + 1].startswith("    sentence ") for i, _line in listed)
    for title in {document["title"] for document in documents}:
        confidences = [float(line[-5:-1]) for _i, line in listed if line.startswith(f"{title}: ")]
        assert confidences == sorted(confidences, reverse=True)
    annotated = json.loads(report.read_text())["annotated"]
    assert annotated["annotation"]["mention_f1"] > 0.5
    assert 0.0 < annotated["relations"]["strict"]["f1"] <= annotated["relations"]["relaxed"]["f1"]

    gold.write_text(json.dumps(documents[:1]), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lmrc", *run, "--gold", str(gold)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert done.returncode == 2 and "no gold document titled" in done.stderr
    assert documents[1]["title"] in done.stderr and "starting" not in done.stdout


def test_a_run_whose_every_input_is_dead_lettered_says_so_and_fails(tmp_path: Path) -> None:
    """A French text was dead-lettered, yet the run printed an empty table and exited 0. Now it
    says that no document went through, prints no table, and exits 1."""
    text = tmp_path / "french.jsonl"
    text.write_text(
        json.dumps({"id": "fr", "title": "fr", "text": "Marie Curie est née à Varsovie.", "language": "fr"})
        + "\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmrc",
            "run",
            "--text",
            str(text),
            "--encoder-only",
            "--graph",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UnsupportedLanguage" in done.stdout and "0 relations: no document went through" in done.stdout
    assert TABLE_ID_TITLE not in done.stdout and "nothing was processed" in done.stderr


def test_lmrc_up_serves_publish_and_tail_until_ctrl_c(tmp_path: Path) -> None:
    """The README's use case on this machine: `lmrc up` starts the broker and the services as
    processes, `lmrc publish --text` and `lmrc tail` on its broker show the text's relations, a
    second `lmrc up` on the same graph is refused in one line, and Ctrl-C stops every process."""
    import psutil

    from lmrc.local.processes import free_port

    port, graph = free_port(), tmp_path / "graph.lbug"
    lmrc = [sys.executable, "-m", "lmrc"]
    command = [*lmrc, "up", "--encoder-only", "--port", str(port), "--graph", str(graph)]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:  # until every service has joined its group
            lines.append(line)
            if line.startswith("ready"):
                break
        assert lines and lines[-1].startswith("ready"), "".join(lines)
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 4, "".join(lines)  # the broker and three services
        bootstrap = ["--bootstrap-servers", f"127.0.0.1:{port}"]
        example = Path(__file__).parents[1] / "docs" / "examples" / "apache-kafka.txt"
        published = subprocess.run(
            [*lmrc, "publish", *bootstrap, "--text", str(example)],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert published.returncode == 0, published.stderr
        tailed = subprocess.run(
            [
                *lmrc,
                "tail",
                *bootstrap,
                "--from-beginning",
                "--max-messages",
                "1",
                "--timeout",
                str(scaled(120)),
            ],
            capture_output=True,
            text=True,
            timeout=scaled(180),
        )
        assert re.search(r"^apache-kafka: .+ --P\d+ .+--> .+", tailed.stdout, re.M), (
            tailed.stdout + tailed.stderr
        )
        second = subprocess.run(
            [*lmrc, "up", "--port", str(free_port()), "--graph", str(graph)],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert second.returncode == 2 and f"{graph} is in use by lmrc (pid {up.pid}" in second.stderr
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=scaled(60))
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, "".join(lines) + output
    _gone, alive = psutil.wait_procs(children, timeout=scaled(10))
    assert not alive, f"still running: {[p.name() for p in alive]}"
