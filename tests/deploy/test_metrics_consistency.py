"""Dashboards and rules cannot drift from the code: every metric, label value and legend label
they name must be exported by a running daemon that has seen drift, rejects and Kafka lag."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DASHBOARD, RULES_DIR, RunningDaemon
from tests.helpers import scrape

#: Series Prometheus itself attaches to every scraped sample.
TARGET_LABELS = {"job", "instance"}
METRIC = re.compile(r"(?<![\w:])(adaptd_\w+)(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])([a-z_]+:\w+:\w+)")
SELECTOR = re.compile(r"(?<![\w:])(adaptd_\w+)\s*\{([^}]*)\}")
EQUALS = re.compile(r"(\w+)\s*=\s*\"([^\"]*)\"")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rule_exprs() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every rule."""
    for group in rule_groups():
        for rule in group["rules"]:
            yield f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]


def recorded_names() -> dict[str, str]:
    """Recording rule name → its expression."""
    return {r["record"]: r["expr"] for g in rule_groups() for r in g["rules"] if "record" in r}


def dashboard_queries() -> Iterator[tuple[str, str, str | None]]:
    """(where, PromQL, legend format) for every panel target, annotation and variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"], target.get("legendFormat")
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"], None
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']!r}", variable["definition"], None


def all_queries() -> list[tuple[str, str, str | None]]:
    return [(w, e, None) for w, e in rule_exprs()] + list(dashboard_queries())


@pytest.fixture(scope="module")
def exported(running_daemon: RunningDaemon) -> dict[str, list[dict[str, str]]]:
    """Sample name → label sets of every sample the running daemon exports."""
    out: dict[str, list[dict[str, str]]] = {}
    for name, labels in scrape(f"{running_daemon.url}/metrics"):
        out.setdefault(name, []).append(dict(labels))
    return out


def test_the_queries_name_adaptd_metrics() -> None:
    # Guards the parsing below: a regex that finds nothing would make every check pass.
    names = {m for _, expr, _ in all_queries() for m in METRIC.findall(expr)}
    assert {"adaptd_regret", "adaptd_cumulative_loss", "adaptd_consumer_lag_records",
            "adaptd_records_rejected_total", "adaptd_record_latency_seconds_bucket"} <= names


def test_the_stream_drove_the_events_the_dashboards_show(
    exported: dict[str, list[dict[str, str]]], running_daemon: RunningDaemon
) -> None:
    values = scrape(f"{running_daemon.url}/metrics")
    assert values[("adaptd_records_consumed_total", ())] == running_daemon.records_sent
    assert values[("adaptd_drift_events_total", ())] > 0, (
        "no drift alarm on a stream with abrupt task switches")
    assert sum(v for (name, _), v in values.items()
               if name == "adaptd_records_rejected_total") >= 3


def test_every_metric_named_in_rules_and_dashboard_is_exported(
    exported: dict[str, list[dict[str, str]]]
) -> None:
    missing = sorted({
        f"{name} (in {where})"
        for where, expr, _ in all_queries() for name in METRIC.findall(expr)
        if name not in exported
    })
    assert not missing, "named but not exported by a running daemon:\n" + "\n".join(missing)


def test_every_recording_rule_used_is_defined() -> None:
    defined = recorded_names()
    used = {(where, name) for where, expr, _ in all_queries() for name in RECORDED.findall(expr)}
    undefined = sorted(f"{name} (in {where})" for where, name in used if name not in defined)
    assert not undefined, undefined


def test_every_label_value_matched_is_exported(
    exported: dict[str, list[dict[str, str]]]
) -> None:
    problems = []
    for where, expr, _ in all_queries():
        for name, matchers in SELECTOR.findall(expr):
            for label, value in EQUALS.findall(matchers):
                if label in TARGET_LABELS or "$" in value:
                    continue  # set by Prometheus, or a Grafana variable
                if not any(s.get(label) == value for s in exported.get(name, [])):
                    problems.append(f'{name}{{{label}="{value}"}} (in {where})')
    assert not problems, "matched series the daemon does not export:\n" + "\n".join(problems)


def test_every_legend_label_exists_on_its_metrics(
    exported: dict[str, list[dict[str, str]]]
) -> None:
    problems = []
    recorded = recorded_names()
    for where, expr, legend in dashboard_queries():
        if not legend:
            continue
        # A recorded series carries (at most) the labels of the metrics its rule reads.
        sources = expr + " ".join(recorded.get(name, "") for name in RECORDED.findall(expr))
        labels = TARGET_LABELS | {
            label for name in METRIC.findall(sources) for s in exported.get(name, []) for label in s
        }
        for label in LEGEND_LABEL.findall(legend):
            if label not in labels:
                problems.append(f"{{{{{label}}}}} (in {where}: {expr})")
    assert not problems, "legends name labels the metrics do not have:\n" + "\n".join(problems)
