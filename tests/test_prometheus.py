"""Prometheus itself, on what callgate ships for it.

The alert rules (packaging/prometheus/callgate-alerts.yml, which docs/monitoring.md quotes) pass
`promtool check rules`, and `promtool test rules` proves each alert fires on its condition and stays quiet
otherwise (tests/prometheus/callgate-alerts-test.yml).

Prometheus and promtool come from Debian's `prometheus` package (`make deps`). Without them a test is
skipped, except in CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import ROOT

RULES = ROOT / "packaging" / "prometheus" / "callgate-alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "callgate-alerts-test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "callgate-dashboard.json"
DOC = ROOT / "docs" / "monitoring.md"
JOB = "callgate"  # the job name of docs/monitoring.md's scrape configuration (the rules use it)
FROM_PROMETHEUS = {"up"}  # series Prometheus writes for each target itself, not the gate
FROM_SCRAPE = {"instance", "job"}  # labels Prometheus adds to every series it scrapes

POLICY = """\
version: 1
site: {name: prom, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}
site_limits: {spend: {day: "500.00"}}
emergency: ["911"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "44": "0.60"}}
profiles:
  office:
    destinations: {allow_countries: [US, GB]}
    limits: {calls_per_minute: {value: 1, mode: report}, max_call_duration: 1h,
             spend: {day: "40.00"}}
extensions:
  - {match: "1001-1019", profile: office}
lockdown:
  after_denied: {calls: 2, within: 10m}
  locks: international
"""
# what the rig dials: two calls allowed (the second one over a report-only limit), two refused (which
# lock the extension and raise an alert)
CALLS = (("1001", "2125550101"), ("1001", "2125550102"), ("1002", "011537123451"),
         ("1002", "011537123452"))  # fmt: skip


def tool(name: str) -> str:
    """The path of a Prometheus program; skip the test without it, but fail in CI, where `make deps`
    installs it."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (Debian's prometheus package: `make deps` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


# --- the rules as a file ---------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text("utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_doc_quotes_the_shipped_rules() -> None:
    """docs/monitoring.md's rules are the shipped file, character for character."""
    (block,) = re.findall(r"^```yml\n(.*?)^```", DOC.read_text("utf-8"), re.MULTILINE | re.DOTALL)
    assert block == RULES.read_text("utf-8")


def doc_config() -> str:
    """docs/monitoring.md's Prometheus configuration (its rule file named beside it)."""
    blocks = re.findall(r"^```text\n(.*?)^```", DOC.read_text("utf-8"), re.MULTILINE | re.DOTALL)
    (config,) = [b for b in blocks if "scrape_configs:" in b]
    return str(config)


def test_the_doc_configuration_loads_the_rules(tmp_path: Path) -> None:
    """docs/monitoring.md's Prometheus configuration, the rules copied beside it as the page says,
    passes `promtool check config` (which reads the rule file too)."""
    (tmp_path / "prometheus.yml").write_text(doc_config(), encoding="utf-8")
    shutil.copy(RULES, tmp_path / RULES.name)
    done = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the shipped file."""
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_each_alert_fires_on_its_condition_and_only_then() -> None:
    """`promtool test rules` passes, and it has for every alert at least one case where it fires and
    one where it stays quiet (below its threshold, before its `for:`, or once it is over)."""
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text("utf-8"))["tests"]
        for case in test["alert_rule_test"]
    ]
    alerts = {rule["alert"] for rule in rules()}
    assert {c["alertname"] for c in cases} == alerts
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == alerts  # fires
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == alerts  # stays quiet
