"""Dashboards and alerting rules against real tools: promtool parses and unit-tests the rules, and a
real Prometheus scrapes the four services (separate processes, as in a cluster) and the local TGI
server while documents flow, then answers every dashboard query with data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lmrc.local.broker import LocalBroker
from lmrc.local.llm.local_server import LocalTgiServer
from lmrc.local.processes import free_port
from lmrc.local.publish import publish
from lmrc.runtime.topics import ensure_topics
from tests.faults import FaultyProxy
from tests.helpers import produce, scaled, small_documents, topic_ends, wait_committed, wait_for
from tests.observability import (
    DASHBOARDS,
    REPO,
    RULES_FILE,
    RULES_TESTS,
    Query,
    dashboard_queries,
    exported_names,
    metric_names,
    rule_queries,
    tool,
)

# Series that exist only once their fault happens (a Kafka client error, a graph store failure),
# which this run does not cause. Their queries must still run; they need not return data.
FAULT_ONLY = {"lmrc_kafka_errors_total", "lmrc_sink_store_errors_total"}
SERVICES = ("annotator", "proposer", "classifier", "sink")


# ---- static checks ---------------------------------------------------------------------------


def test_rules_file_passes_promtool_check() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES_FILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in result.stdout


def test_standalone_prometheus_config_is_valid() -> None:
    config = REPO / "deploy" / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_as_their_unit_tests_say() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(RULES_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert tested == {query.source.removeprefix("alert ") for query in rule_queries()}


def test_every_dashboard_query_parses_with_prometheus_own_parser(tmp_path: Path) -> None:
    """promtool checks recording rules with Prometheus's parser; each query becomes one."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"lmrc:dashboard_query:{index}", "expr": query.expr}
                    for index, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for query in queries:
        assert metric_names(query.expr), f"{query.source} selects no metric: {query.expr}"


def test_dashboards_are_grafana_dashboards_covering_every_stage() -> None:
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]
    used = {name for query in dashboard_queries() for name in metric_names(query.expr)}
    exprs = " ".join(query.expr for query in dashboard_queries())
    # The list: throughput, pass rate, per-stage latency quantiles, TGI, DLQ, lag, sink writes.
    assert {
        "lmrc_proposer_documents_total",
        "lmrc_proposer_pairs_passed_total",
        "lmrc_classifier_relations_total",
        "lmrc_proposer_pairs_scored_total",
        "lmrc_messages_dead_lettered_total",
        "lmrc_consumer_lag_messages",
        "lmrc_classifier_tgi_requests_total",
        "tgi_request_duration_bucket",
    } <= used
    for histogram in (
        "lmrc_batch_processing_seconds",
        "lmrc_proposer_inference_seconds",
        "lmrc_classifier_tgi_request_seconds",
        "lmrc_sink_write_seconds",
    ):
        for quantile in ("0.5", "0.95", "0.99"):
            pattern = rf"histogram_quantile\({quantile}, sum by \(le[\w, ]*\) \(rate\({histogram}_bucket\["
            assert re.search(pattern, exprs), f"no p{quantile} of {histogram}"


# ---- a real Prometheus scraping the running services -----------------------------------------


@dataclass
class Scraped:
    prometheus: str
    metrics_urls: dict[str, str]  # service -> its /metrics
    candidates: int


def _service(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _prometheus_query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=scaled(10)) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def scraped(
    broker: LocalBroker, tgi_server: LocalTgiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    from lmrc.classifier.artifact import DEFAULT_ADAPTER_DIR, load_config
    from lmrc.proposer.artifact import DEFAULT_ARTIFACT_DIR, graphs_exist, onnx_path
    from lmrc.proposer.artifact import load_config as load_proposer_config

    work = tmp_path_factory.mktemp("observability")
    bootstrap = broker.bootstrap_servers
    stem = f"obs{time.time_ns() % 10**8}"
    texts = f"{stem}.texts"
    documents, candidates, relations = f"{stem}.documents", f"{stem}.candidates", f"{stem}.relations"
    topics = [
        texts,
        f"{texts}.dead-letter",
        documents,
        candidates,
        relations,
        *(f"{t}.dead-letter" for t in (documents, candidates, relations)),
    ]
    ensure_topics({"bootstrap.servers": bootstrap}, topics, partitions=1)

    onnx = onnx_path(DEFAULT_ARTIFACT_DIR, load_proposer_config(DEFAULT_ARTIFACT_DIR))
    if not graphs_exist(onnx):
        from lmrc.proposer.training.export import export_onnx

        onnx = export_onnx(DEFAULT_ARTIFACT_DIR, work / "proposer.onnx")

    ports = {name: free_port() for name in (*SERVICES, "prometheus")}
    tgi_target = tgi_server.url.removeprefix("http://").rstrip("/")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            # honor_labels: as the chart's ServiceMonitor, the services' own `service` label wins.
            {
                "job_name": "lmrc",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{ports[s]}" for s in SERVICES]}],
            },
            {"job_name": "tgi", "static_configs": [{"targets": [tgi_target]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
    processes = [
        subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--log.level=warn",
            ],
            stdout=(work / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    ]
    common = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_COMPRESSION_TYPE": "none"}
    with FaultyProxy(tgi_server.url) as proxy:
        # Three 503s open the circuit (threshold 2): TGI errors, retries, a rewound batch.
        proxy.faults.extend(["503"] * 3)
        adapter_id = load_config(DEFAULT_ADAPTER_DIR).version
        settings = {
            "lmrc.annotator": {
                "ANNOTATOR_INPUT_TOPIC": texts,
                "ANNOTATOR_OUTPUT_TOPIC": documents,
                "ANNOTATOR_DEAD_LETTER_TOPIC": f"{texts}.dead-letter",
                "ANNOTATOR_GROUP_ID": f"{stem}-annotator",
                "ANNOTATOR_ENGINE": "spacy",  # the tagger's metrics are the same; no export needed
                "ANNOTATOR_HTTP_PORT": str(ports["annotator"]),
                "ANNOTATOR_MAX_BATCH_WAIT_SECONDS": "0.2",
            },
            "lmrc.proposer": {
                "PROPOSER_INPUT_TOPIC": documents,
                "PROPOSER_OUTPUT_TOPIC": candidates,
                "PROPOSER_DEAD_LETTER_TOPIC": f"{documents}.dead-letter",
                "PROPOSER_GROUP_ID": f"{stem}-proposer",
                "PROPOSER_ONNX_PATH": str(onnx),
                "PROPOSER_HTTP_PORT": str(ports["proposer"]),
                "PROPOSER_MAX_BATCH_WAIT_SECONDS": "0.2",
            },
            "lmrc.classifier": {
                "CLASSIFIER_INPUT_TOPIC": candidates,
                "CLASSIFIER_OUTPUT_TOPIC": relations,
                "CLASSIFIER_DEAD_LETTER_TOPIC": f"{candidates}.dead-letter",
                "CLASSIFIER_GROUP_ID": f"{stem}-classifier",
                "CLASSIFIER_TGI_URL": proxy.url,
                "CLASSIFIER_TGI_ADAPTER_ID": adapter_id,
                "CLASSIFIER_HTTP_PORT": str(ports["classifier"]),
                "CLASSIFIER_CIRCUIT_FAILURE_THRESHOLD": "2",
                "CLASSIFIER_CIRCUIT_RESET_SECONDS": "1",
                "CLASSIFIER_TGI_BACKOFF_INITIAL_SECONDS": "0.05",
                "CLASSIFIER_RETRY_BACKOFF_INITIAL_SECONDS": "0.2",
                "CLASSIFIER_MAX_BATCH_WAIT_SECONDS": "0.2",
            },
            "lmrc.sink": {
                "SINK_INPUT_TOPIC": relations,
                "SINK_DEAD_LETTER_TOPIC": f"{relations}.dead-letter",
                "SINK_GROUP_ID": f"{stem}-sink",
                "SINK_LADYBUG_PATH": str(work / "graph.lbug"),
                "SINK_HTTP_PORT": str(ports["sink"]),
                "SINK_MAX_BATCH_WAIT_SECONDS": "0.2",
            },
        }
        for module, env in settings.items():
            processes.append(_service(module, {**common, **env}, work / f"{module}.log"))
        try:
            for name in SERVICES:
                url = f"http://127.0.0.1:{ports[name]}/readyz"
                wait_for(lambda u=url: _ready(u), timeout=120, what=f"{name} ready")
            wait_for(lambda: _ready(f"{prometheus_url}/-/ready"), timeout=60, what="Prometheus ready")

            # A request TGI refuses (validation), so its failure counter exists, as on a real server.
            refused = httpx.post(f"{tgi_server.url}/generate", json={"inputs": ""}, timeout=scaled(30))
            assert refused.status_code == 422
            # A poison message in every topic; the documents topic gets one now and one later, so
            # that the dead-letter counter is seen rising.
            produce(bootstrap, candidates, [b"{not json"])
            produce(bootstrap, relations, [b'{"event_type": "relation_event"}'])
            # One plain text through the annotator (and on through the others), and a poison one.
            text = {"doc_id": "text", "text": "Jay Kreps founded Confluent in Mountain View in 2014."}
            text_ends = publish(
                {"bootstrap.servers": bootstrap},
                texts,
                iter([("text", json.dumps(text).encode()), ("poison", b'{"doc_id": "x"}')]),
            )
            wait_committed(bootstrap, f"{stem}-annotator", texts, text_ends, timeout=240)
            payloads = [d.model_dump_json().encode() for d in small_documents(2)] + [b"{not json"]
            ends = publish(
                {"bootstrap.servers": bootstrap},
                documents,
                iter([(f"d{i}", p) for i, p in enumerate(payloads)]),
            )
            wait_committed(bootstrap, f"{stem}-proposer", documents, ends, timeout=240)
            time.sleep(scaled(2.5))
            ends = publish({"bootstrap.servers": bootstrap}, documents, iter([("poison", b"[1, 2")]))
            wait_committed(bootstrap, f"{stem}-proposer", documents, ends, timeout=240)
            candidate_ends = topic_ends(bootstrap, candidates)
            wait_committed(bootstrap, f"{stem}-classifier", candidates, candidate_ends, timeout=240)
            wait_committed(
                bootstrap, f"{stem}-sink", relations, topic_ends(bootstrap, relations), timeout=240
            )
            time.sleep(scaled(4))  # a few more scrapes and rule evaluations after the last commit
            yield Scraped(
                prometheus=prometheus_url,
                metrics_urls={
                    **{name: f"http://127.0.0.1:{ports[name]}/metrics" for name in SERVICES},
                    "tgi": f"{tgi_server.url}/metrics",
                },
                candidates=sum(candidate_ends.values()) - 1,  # less the poison message
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=scaled(2)) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.broker
def test_every_metric_the_dashboards_and_rules_use_is_one_the_services_export(scraped: Scraped) -> None:
    exported: set[str] = set()
    for url in scraped.metrics_urls.values():
        exported |= exported_names(httpx.get(url, timeout=scaled(10)).text)
    for query in [*dashboard_queries(), *rule_queries()]:
        missing = metric_names(query.expr) - exported
        assert not missing, f"{query.source} uses {sorted(missing)}, which no service exports"


@pytest.mark.broker
def test_prometheus_scrapes_every_service(scraped: Scraped) -> None:
    with urllib.request.urlopen(f"{scraped.prometheus}/api/v1/targets", timeout=scaled(10)) as response:
        targets = json.loads(response.read())["data"]["activeTargets"]
    assert len(targets) == 5 and all(t["health"] == "up" for t in targets), targets
    services = _prometheus_query(scraped.prometheus, "count by (service) (lmrc_messages_consumed_total)")
    assert {r["metric"]["service"] for r in services["data"]["result"]} == set(SERVICES)


@pytest.mark.broker
def test_prometheus_answers_every_dashboard_query_with_data(scraped: Scraped) -> None:
    assert scraped.candidates > 0, "the proposer passed no pair: nothing reached TGI"
    empty: list[Query] = []
    for query in dashboard_queries():
        answer = _prometheus_query(scraped.prometheus, query.expr)
        assert answer["status"] == "success", (query, answer)
        if not answer["data"]["result"] and not metric_names(query.expr) <= FAULT_ONLY:
            empty.append(query)
    assert not empty, "no data for:\n" + "\n".join(f"{q.source}: {q.expr}" for q in empty)
    # The figures are the run's: two documents and one text in, their candidates out, the poison
    # dead-lettered.
    documents = _prometheus_query(scraped.prometheus, "sum(lmrc_proposer_documents_total)")
    assert float(documents["data"]["result"][0]["value"][1]) == 3
    annotated = _prometheus_query(scraped.prometheus, "sum(lmrc_annotator_documents_total)")
    assert float(annotated["data"]["result"][0]["value"][1]) == 1
    letters = _prometheus_query(scraped.prometheus, "sum by (service) (lmrc_messages_dead_lettered_total)")
    assert {r["metric"]["service"]: float(r["value"][1]) for r in letters["data"]["result"]} == {
        "annotator": 1,
        "proposer": 2,
        "classifier": 1,
        "sink": 1,
    }


@pytest.mark.broker
def test_prometheus_evaluates_the_alerting_rules_on_the_live_series(scraped: Scraped) -> None:
    with urllib.request.urlopen(f"{scraped.prometheus}/api/v1/rules", timeout=scaled(10)) as response:
        groups = json.loads(response.read())["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {query.source.removeprefix("alert ") for query in rule_queries()}
    assert all(rule["health"] == "ok" for rule in rules.values()), rules
    # Half of the proposer's input was poison: its dead-letter alert is pending (it waits `for`).
    dead_letters = rules["LmrcDeadLetterRateHigh"]["alerts"]
    assert [
        (a["labels"]["service"], a["state"]) for a in dead_letters if a["labels"]["service"] == "proposer"
    ] == [("proposer", "pending")]
