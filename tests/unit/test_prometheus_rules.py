"""The shipped Prometheus rules and Grafana dashboard (deploy/): the rules pass promtool's check
and its unit tests (deploy/prometheus/alerts.test.yml), the dashboard imports with a datasource
input, and every metric either one names is one the watcher really exports.

promtool is Debian's `prometheus` package (.ci/run installs it): without it these tests fail in
CI and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher import state_meta as sm
from watcher.config import Config, WebhookConfig
from watcher.metrics import Metrics
from watcher.store import Store

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
DATASOURCE = "${DS_PROMETHEUS}"
PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for every target."""
# Grafana's variables, as a query would see them with every webhook of every job chosen.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$webhook": ".*"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian's `prometheus` package)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: .ci/run installs it")
        pytest.skip(f"{reason}: apt-get install --no-install-recommends prometheus")
    return path


def _run(promtool: str, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtools_check(promtool: str) -> None:
    assert "SUCCESS: 7 rules found" in _run(promtool, "check", "rules", str(ALERTS))


def test_the_alert_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in _run(promtool, "test", "rules", str(ALERT_TESTS))


def test_every_alert_is_unit_tested_and_says_how_bad_and_what() -> None:
    rules = [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]
    tested = {
        case["alertname"]
        for test in _yaml(ALERT_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules} == tested
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_the_dashboards_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every query of the dashboard, as recording rules with Grafana's
    variables filled in."""
    exprs = list(_dashboard_expressions())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": _fill(expr)}
                    for i, expr in enumerate(exprs)
                    if not expr.startswith("label_values(")
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    assert "SUCCESS" in _run(promtool, "check", "rules", str(path))


def test_the_dashboard_imports_with_a_prometheus_datasource_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None  # a new dashboard where it is imported
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]
            assert target["expr"], panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE


def test_the_rules_and_the_dashboard_name_only_metrics_the_watcher_exports(
    tmp_path: Path,
) -> None:
    exported = _exported_names(tmp_path)
    expressions = {
        "alerts.yml": [rule["expr"] for g in _yaml(ALERTS)["groups"] for rule in g["rules"]],
        "dashboard.json": list(_dashboard_expressions()),
    }
    for source, exprs in expressions.items():
        for expr in exprs:
            names = _metric_names(expr)
            assert names, f"{source}: no metric found in {expr!r}"
            unknown = names - exported - PROMETHEUS_OWN
            assert not unknown, f"{source}: {expr!r} names {unknown}, not exported"


def test_the_metric_name_reader_sees_names_not_functions_labels_or_variables() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (webhook, le) (rate(a_bucket{job=~"$job"}[5m]))) '
        "/ on (job) group_left max(b) and time() - c > 5 * d"
    )
    assert _metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert _metric_names('label_values(e{job=~"$job"}, webhook)') == {"e"}


def _exported_names(tmp_path: Path) -> set[str]:
    """Every sample name a watcher exposes, read from a real registry over a state that has
    every meta key the gauges read (so gauges that wait for a first poll or scan are there)."""
    config = Config(webhooks=(WebhookConfig(name="deploy", url="http://127.0.0.1/h"),))
    with Store.open(tmp_path / "state.db") as store:
        store.set_meta(
            sm.meta(
                sm.LAST_POLL_AT.entry(1.0e9),
                sm.LAST_POLL_OK_AT.entry(1.0e9),
                sm.LAST_POLL_RESULT.entry(sm.POLL_OK),
                *(key.entry(60.0) for key in sm.SCAN_EVERY.values()),
                *(key.entry(1.0) for key in sm.SCAN_TOOK.values()),
            )
        )
        metrics = Metrics(config, store)
        return {s.name for family in metrics.registry.collect() for s in family.samples}


def _metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression (or a Grafana label_values query): what is left
    once strings, label matchers, ranges, grouping clauses and function names are removed."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"^label_values\(([^,)]+).*", r"\1", expr.strip())
    return {
        match.group(1)
        for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\()?", expr)
        if match.group(2) is None and match.group(1).lower() not in PROMQL_WORDS
    }


def _dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        yield variable["query"]["query"]


def _fill(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
