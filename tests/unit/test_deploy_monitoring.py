"""The shipped alerting rules and dashboard: promtool's own tests pass, and every metric
they name is one reconciliation exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from postback_hub.adjust.reconcile import Line
from postback_hub.adjust.reconcile_run import Report
from postback_hub.adjust.reconcile_watch import ReconcileMetrics
from postback_hub.kpi.reconciliations import LastActivity

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "postback-hub-reconcile.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "postback-hub-reconcile.tests.yml"
DASHBOARD = DEPLOY / "grafana" / "postback-hub-reconcile.json"
METRIC = re.compile(r"\bpostback_hub_[a-z_]+\b")


def exported_names() -> set[str]:
    """The sample names /metrics of `reconcile --watch` shows once it has published."""
    metrics = ReconcileMetrics()
    day = date(2026, 3, 1)
    lines = [Line(day, "installs", "all", "", Decimal(95), Decimal(100), "missing")]
    metrics.publish(Report("demo", day, day, lines, datetime(2026, 3, 3, tzinfo=UTC)))
    metrics.runs.labels("demo", "ok").inc()
    metrics.publish_last([LastActivity("demo", "install", "", 1_772_323_200)])
    text = metrics.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_the_alert_rules_pass_their_promtool_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus (make test does)"
    checked = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    # (promtool itself checks the file's shape; see the test above.)
    exprs = re.findall(r"^\s+expr: (.+)$", RULES.read_text(), flags=re.MULTILINE)
    assert len(exprs) == 3
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    named |= set(METRIC.findall(RULE_TESTS.read_text()))
    assert named
    assert named <= exported, named - exported


def test_the_dashboard_loads_and_its_panels_query_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    queried: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        for target in panel["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, target["expr"]
            queried.update(names)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    queried.update(METRIC.findall(variables["app"]["definition"]))
    assert queried <= exported, queried - exported
    # Every gauge reconciliation exports is on the dashboard.
    gauges = {
        "postback_hub_reconcile_ours",
        "postback_hub_reconcile_adjust",
        "postback_hub_reconcile_ratio",
        "postback_hub_reconcile_gap",
        "postback_hub_last_callback_timestamp_seconds",
    }
    assert gauges <= queried
