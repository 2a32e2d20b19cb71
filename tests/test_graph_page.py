"""`lmrc graph serve`: the read-only graph page, run as a user runs it (a subprocess), looked at in
a real headless browser (Debian's Chromium through its chromedriver), and its API on both stores."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from lmrc import docred
from lmrc.contracts import Relation
from lmrc.local.graph_page import MAX_CONNECTIONS
from lmrc.local.graph_server import LocalFalkorDB
from lmrc.local.processes import free_port
from lmrc.paths import REPO_ROOT
from lmrc.runtime.health import READ_TIMEOUT_SECONDS
from lmrc.sink.falkordb_store import FalkorDBGraphStore
from lmrc.sink.ladybug_store import LadybugGraphStore
from tests.helpers import closed_by_server, gold_relation_events, graph_edge_count, scaled, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def events() -> list[Relation]:
    documents = docred.load_split("holdout")[:3]
    return gold_relation_events(documents, docred.load_relation_names(), datetime(2026, 11, 26, tzinfo=UTC))


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:
        return json.loads(response.read())


def _answers(url: str) -> bool:
    try:
        _get(f"{url}/api/summary")
        return True
    except OSError:
        return False


def _serve(*store_arguments: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lmrc", "graph", *store_arguments, "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url) or process.poll() is not None, timeout=60, what="the graph page")
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
    return process, url


def _chrome() -> Any:
    """Debian's Chromium, headless, through its chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    assert process.wait(scaled(10)) == 0


@pytest.fixture(scope="module")
def ladybug_page(tmp_path_factory: pytest.TempPathFactory, events: list[Relation]) -> Iterator[str]:
    path = tmp_path_factory.mktemp("graph") / "graph.lbug"
    store = LadybugGraphStore(path)
    store.upsert(events)
    store.close()
    process, url = _serve("--path", str(path))
    yield url
    _stop(process)


def _check_api(url: str, events: list[Relation]) -> None:
    summary = _get(f"{url}/api/summary")
    assert summary == {"entities": summary["entities"], "relations": graph_edge_count(events), "documents": 3}
    found = _get(f"{url}/api/entities?q=AYALA")["items"]
    assert [e["id"] for e in found] == ["PER:ayala"]
    relations = _get(f"{url}/api/relations?entity=PER:ayala")["items"]
    expected = [
        e for e in events if "PER:ayala" in (f"PER:{e.head.name.lower()}", f"PER:{e.tail.name.lower()}")
    ]
    assert len(relations) == len(expected) > 0
    for relation in relations:
        event = next(
            e
            for e in expected
            if e.relation_id == relation["relation_id"] and e.tail.name == relation["tail_name"]
        )
        assert relation["evidence"] == event.evidence and relation["evidence_text"] == event.evidence_text
    documents = _get(f"{url}/api/documents")["items"]
    assert sum(d["relations"] for d in documents) == graph_edge_count(events)


def test_the_page_api_answers_from_the_embedded_store(ladybug_page: str, events: list[Relation]) -> None:
    _check_api(ladybug_page, events)
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(f"{ladybug_page}/api/nothing")
    assert missing.value.code == 404


def test_the_page_api_answers_from_falkordb(tmp_path: Path, events: list[Relation]) -> None:
    with LocalFalkorDB(data_dir=tmp_path / "falkordb") as server:
        store = FalkorDBGraphStore(port=server.port)
        store.upsert(events)
        store.close()
        process, url = _serve("--backend", "falkordb", "--falkordb-port", str(server.port))
        try:
            _check_api(url, events)
        finally:
            _stop(process)


def test_idle_connections_to_the_page_are_bounded_and_dropped(tmp_path: Path, events: list[Relation]) -> None:
    """100 idle connections held 104 threads, still there 12 s later: now at most MAX_CONNECTIONS
    are served at once, the rest closed at once, the idle ones dropped after the read timeout; a
    client that hangs up mid-answer prints no traceback."""
    path = tmp_path / "graph.lbug"
    store = LadybugGraphStore(path)
    store.upsert(events)
    store.close()
    process, url = _serve("--path", str(path))
    page = psutil.Process(process.pid)
    port = int(url.rsplit(":", 1)[1])
    before = page.num_threads()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        wait_for(lambda: sum(closed_by_server(s) for s in idle) >= 100 - MAX_CONNECTIONS, timeout=10)
        assert page.num_threads() <= before + MAX_CONNECTIONS
        wait_for(lambda: all(closed_by_server(s) for s in idle), timeout=3 * READ_TIMEOUT_SECONDS)
        wait_for(lambda: page.num_threads() <= before, timeout=10, what="threads to end")
        for _ in range(5):  # asks, then hangs up before the answer is read
            with socket.create_connection(("127.0.0.1", port)) as rude:
                rude.sendall(b"GET /api/relations?doc=x HTTP/1.1\r\nHost: x\r\n\r\n")
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert _get(f"{url}/api/summary")["relations"] == graph_edge_count(events)
    finally:
        for connection in idle:
            connection.close()
        _stop(process)
    assert "Traceback" not in (process.stdout.read() if process.stdout else "")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed"
)
def test_a_user_finds_an_entity_and_sees_its_edges_and_evidence(ladybug_page: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome()
    wait = WebDriverWait(driver, scaled(20))
    try:
        driver.get(ladybug_page)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert "3 documents" in driver.find_element(By.ID, "summary").text
        driver.find_element(By.ID, "search").send_keys("ayal")
        # The list narrows as the user types: one entity left.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#entities button")) == 1)
        result = driver.find_element(By.CSS_SELECTOR, "#entities button")
        assert result.text.startswith("Ayala") and "PER" in result.text
        result.click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "focus-title"), "Ayala: 4 relations"))
        edges = driver.find_elements(By.CSS_SELECTOR, "#edges .edge")
        assert len(edges) == 4
        assert len(driver.find_elements(By.CSS_SELECTOR, "#graph line")) == 4
        labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#graph text.edge-label")]
        assert "place of birth 1.00" in labels
        detroit = next(e for e in edges if "University of Detroit" in e.text)
        assert "educated at" in detroit.text and "document: Aramis Ayala" in detroit.text
        evidence = [block.text for block in detroit.find_elements(By.CSS_SELECTOR, ".evidence")]
        assert len(evidence) == 2 and evidence[1].startswith("sentence 3:")
        assert "obtained her law degree from the University of Detroit" in evidence[1]
        marked = [m.text for m in detroit.find_elements(By.TAG_NAME, "mark")]
        assert "University of Detroit" in marked and "Ayala" in marked
        assert driver.current_url.endswith("?entity=PER%3Aayala")
        # A document opens as a graph of its relations too.
        driver.find_element(By.XPATH, "//ul[@id='documents']//button[contains(., 'Aramis Ayala')]").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "focus-title"), "Document Aramis Ayala"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#edges .edge")) > 4
        if os.environ.get("LMRC_GRAPH_SCREENSHOT"):
            driver.get(f"{ladybug_page}/?entity=PER%3Aayala")
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
            driver.save_screenshot(os.environ["LMRC_GRAPH_SCREENSHOT"])
    finally:
        driver.quit()


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed"
)
def test_dense_views_never_overlap_labels_and_documents_show_versions_and_deletions(tmp_path: Path) -> None:
    """The densest holdout document drawn: no two edge labels (nor a label and a node's name)
    overlap; a label with no free place is left out and its edge dashed. Documents carry their
    version, a deleted one is listed as deleted, and a document's view says what its version changed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from lmrc.sink.graph import DocumentChange, node_id
    from tests.helpers import relation_sets

    raw = sorted(docred.load_split("holdout"), key=lambda d: -len(d.get("labels", [])))[:3]
    sets = relation_sets(
        gold_relation_events(raw, docred.load_relation_names(), datetime(2026, 12, 2, tzinfo=UTC))
    )
    dense, edited, gone = sets
    path = tmp_path / "graph.lbug"
    store = LadybugGraphStore(path)
    store.apply([DocumentChange(s.doc_id, 1, s) for s in sets])
    store.apply(
        [DocumentChange(edited.doc_id, 2, edited.model_copy(update={"relations": edited.relations[:2]}))]
    )
    store.apply([DocumentChange(gone.doc_id, 1, None)])
    store.close()
    process, url = _serve("--path", str(path))
    driver = _chrome()
    wait = WebDriverWait(driver, scaled(20))
    try:
        driver.get(f"{url}/?doc={urllib.parse.quote(dense.doc_id)}")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        boxes = driver.execute_script(
            "return [...document.querySelectorAll('#graph text')].map(t => {"
            "const b = t.getBBox(); return [b.x, b.y, b.width, b.height, t.getAttribute('class')]; });"
        )
        labels = [b for b in boxes if b[4] == "edge-label"]
        assert len(dense.relations) >= 20 and labels, "a dense view with labels"
        for i, first in enumerate(boxes):
            for second in boxes[i + 1 :]:
                if "edge-label" not in (first[4], second[4]):
                    continue  # node names may touch each other; labels never touch anything
                apart = (
                    first[0] + first[2] <= second[0]
                    or second[0] + second[2] <= first[0]
                    or first[1] + first[3] <= second[1]
                    or second[1] + second[3] <= first[1]
                )
                assert apart, f"labels overlap: {first} {second}"
        dashed = driver.find_elements(By.CSS_SELECTOR, "#graph line.unlabelled")
        note = driver.find_element(By.ID, "graph-note").text
        assert bool(dashed) == bool(note) and (not note or "left out where" in note)

        rows = {b.text for b in driver.find_elements(By.CSS_SELECTOR, "#documents li")}
        assert any(row.startswith(gone.doc_id) and "deleted" in row for row in rows), rows
        assert any(row.startswith(edited.doc_title) and "v2" in row for row in rows), rows
        driver.find_element(
            By.XPATH, f"//ul[@id='documents']//button[contains(., '{edited.doc_title}')]"
        ).click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "doc-info"), "replaced version 1"))
        info = driver.find_element(By.ID, "doc-info").text
        removed = graph_edge_count(edited.relations) - graph_edge_count(edited.relations[:2])
        assert f"added 0 and removed {removed} relations" in info
        assert len(driver.find_elements(By.CSS_SELECTOR, "#doc-info .removed")) == removed
        # Which documents say X: an entity's view lists the documents that mention it.
        head = dense.relations[0].head
        driver.get(f"{url}/?entity={urllib.parse.quote(node_id(head.name, head.type))}")
        wait.until(ready.text_to_be_present_in_element((By.ID, "doc-info"), "mentioned in"))
        mentioned = driver.find_element(By.CSS_SELECTOR, "#doc-info .mentioned")
        assert dense.doc_title in mentioned.text and gone.doc_id not in mentioned.text
    finally:
        driver.quit()
        _stop(process)


@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")
def test_a_headless_snapshot_of_the_page_shows_the_graph_not_an_empty_shell(ladybug_page: str) -> None:
    """`chromium --headless --screenshot` of the page was an empty shell: the page now says it is
    loading until its data arrives, and a headless browser given time for scripts sees the data."""
    shell = urllib.request.urlopen(ladybug_page, timeout=scaled(10)).read().decode()
    assert "loading the graph" in shell  # what a snapshot before the scripts ran shows
    dom = subprocess.run(
        [
            CHROMIUM or "",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            ladybug_page,
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    ).stdout
    assert "3 documents (read-only)" in dom and "Aramis Ayala" in dom and 'data-ready="true"' in dom
    # Opened plain, it draws the first document with relations at once: a graph, not empty lists.
    assert re.search(r'id="focus-title"[^>]*>Document [^<]+: \d+ relations', dom), dom[:2000]
    assert dom.count("<line") >= 2
