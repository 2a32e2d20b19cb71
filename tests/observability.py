"""What the dashboards and alerting rules ask of Prometheus: their PromQL and the metric names in it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lmrc.paths import REPO_ROOT

REPO = REPO_ROOT
CHART = REPO / "deploy" / "helm" / "lmrc"
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
RULES_TESTS = REPO / "deploy" / "prometheus" / "rules.test.yaml"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
# What Grafana substitutes before it sends a query; the tests send the same.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_CHILDREN = ("lhs", "rhs", "expr", "param", "vector_selector")


@dataclass(frozen=True)
class Query:
    source: str  # "dashboard <uid>: <panel title>" or "alert <name>"
    expr: str


def tool(name: str) -> str:
    """A Prometheus tool from Debian's package (installed by .ci/system-packages)."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: run `bash .ci/system-packages` (Debian's prometheus)")
    return path


def dashboard_queries() -> list[Query]:
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                queries.append(Query(f"dashboard {dashboard['uid']}: {panel['title']}", expr))
    return queries


def rule_queries() -> list[Query]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [Query(f"alert {rule['alert']}", rule["expr"]) for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects, from its syntax tree."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            return
        for attribute in _CHILDREN:
            child = getattr(node, attribute, None)
            if child is not None:
                walk(child)
        for argument in getattr(node, "args", None) or []:
            walk(argument)

    walk(promql_parser.parse(expr))
    return names


def exported_names(exposition: str) -> set[str]:
    """Series names a /metrics page serves or declares (a labelled counter not yet incremented
    still declares its family in # TYPE, so its name counts)."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["_sum", "_count"],
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
        names.update(sample.name for sample in family.samples)
    return names
