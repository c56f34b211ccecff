"""Prometheus itself, on what callgate ships for it.

The alert rules (packaging/prometheus/callgate-alerts.yml, which docs/monitoring.md quotes) pass
`promtool check rules`, and `promtool test rules` proves each alert fires on its condition and stays quiet
otherwise (tests/prometheus/callgate-alerts-test.yml). Then a real Prometheus scrapes a real `callgate
serve` (real Redis and Asterisk, a few calls decided), loads those rules, and answers every query of the
Grafana dashboard (packaging/grafana/callgate-dashboard.json) with data; the metric and label names of the
rules, the dashboard and the promtool series are checked against the gate's own /metrics.

Prometheus and promtool come from Debian's `prometheus` package (`make deps`). Without them a test is
skipped, except in CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import EXTENSIONS, ROOT, Serving, Watch, serving
from tests.servers import WAIT, prometheus_server

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
# what the gate's /metrics says after them (and so Prometheus)
AFTER_CALLS = {
    'callgate_decisions_total{reason="allowed", verdict="ALLOW"}': 2,
    'callgate_decisions_total{reason="country_not_allowed", verdict="DENY"}': 2,
    'callgate_decisions_total{reason="store_unavailable", verdict="ALLOW"}': 0,  # from the start
    'callgate_decisions_total{reason="store_unavailable", verdict="DENY"}': 0,
    'callgate_reported_total{reason="velocity_minute"}': 1,
    'callgate_alerts_total{kind="lock"}': 1,
    'callgate_locked_extensions{scope="international"}': 1,
    'callgate_spend_cap_micro{period="day", scope="site"}': 500_000_000,
}


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


# --- PromQL: the metric and label names an expression uses ---------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)
      | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<punct>=~|!~|!=|==|>=|<=|[(){},=<>+\-*/%^])
      | (?P<space>\s+)""",
    re.VERBOSE,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | {"bool", "and", "or", "unless", "offset", "inf", "nan"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(the metric names, the label names) of a PromQL expression: names not called like a function
    are metrics (`sum by (le) (...)` calls one too); labels are those of `by (...)`, `on (...)` and the
    like, and of `{...}` matchers."""
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(expr):
        m = _TOKEN.match(expr, at)
        assert m is not None, f"cannot read {expr[at:]!r} in {expr!r}"
        kind = m.lastgroup or ""
        if kind != "space":
            tokens.append((kind, m.group()))
        at = m.end()
    metrics: set[str] = set()
    labels: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if (kind == "name" and text in _GROUPING and following == "(") or text == "{":
            end = ")" if text != "{" else "}"
            i += 1 if text == "{" else 2
            while tokens[i][1] != end:  # label lists and matchers: every name in them is a label
                if tokens[i][0] == "name":
                    labels.add(tokens[i][1])
                i += 1
        elif kind == "name" and following not in {"(", "by", "without"} and text not in _KEYWORDS:
            metrics.add(text)
        i += 1
    return metrics, labels


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        ("rate(a_total[5m])", {"a_total"}, set()),
        (
            "histogram_quantile(0.99, sum(rate(a_bucket{job=~'$job'}[$__rate_interval])) by (le))",
            {"a_bucket"},
            {"le", "job"},
        ),
        ("sum by (verdict, reason) (rate(d[1m] offset 5m)) * 60", {"d"}, {"verdict", "reason"}),
        (
            'd_total{verdict="A{,}", reason!~"x"} / on (reason) group_left e',
            {"d_total", "e"},
            {"verdict", "reason"},
        ),
        ("topk(10, max by (scope) (s{scope=~'ext:.*'})) / 1e6", {"s"}, {"scope"}),
        ("changes(t[15m] offset 1h) > 2 and on (instance) u == bool 1", {"t", "u"}, {"instance"}),
        ("count(count by (digest) (p)) > 1", {"p"}, {"digest"}),
    ],
)
def test_promql_names(expr: str, metrics: set[str], labels: set[str]) -> None:
    """The reader of metric and label names handles ranges, groupings, matchers, offsets, numbers."""
    assert promql_names(expr) == (metrics, labels)


# --- the rules and the dashboard as files ---------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text("utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return loaded


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", ())]


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


def test_the_dashboard_reads_its_prometheus_from_a_variable() -> None:
    """Every panel and query of the dashboard uses the `datasource` variable, so an import asks for
    nothing but the Prometheus to use; `instance` picks gates."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ours = {"type": "prometheus", "uid": "${datasource}"}
    for panel in board["panels"]:
        for where in (panel, *panel.get("targets", ())):
            assert where.get("datasource", ours) == ours, panel["title"]
    assert variables["instance"]["datasource"] == ours
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_exprs()) >= 20
    for expr in dashboard_exprs():
        promql_names(expr)  # readable


# --- a real Prometheus scraping a real gate -------------------------------------------------------


@dataclass
class Scraped:
    """A running gate after a few decisions, what its /metrics said, and a Prometheus scraping it."""

    serving: Serving
    prometheus: str  # its URL
    exposition: str  # the gate's /metrics after the calls
    exposed: dict[str, set[str]]  # each sample name in it: its label names
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def until(self, what: str, check: Callable[[], object]) -> Any:
        """Poll ``check`` until it returns something true (WAIT seconds at most)."""
        deadline = time.monotonic() + WAIT
        while not (got := check()):
            if time.monotonic() > deadline:
                tail = self.log.read_text("utf-8", errors="replace")[-3000:]
                raise AssertionError(f"still waiting after {WAIT:g} s: {what}\n{tail}")
            time.sleep(0.1)
        return got


async def _place_calls(s: Serving) -> None:
    watch = await Watch.open(s.ast)
    try:
        for ext, number in CALLS:
            await watch.originate(ext, number)
    finally:
        await watch.close()


def _scrape(s: Serving) -> tuple[str, dict[str, float]]:
    """The gate's /metrics: its text, and each sample by its selector (labels sorted)."""
    url = f"http://127.0.0.1:{s.gate.env['CALLGATE_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text: str = reply.read().decode()
    samples = {
        sample.name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}":
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }  # fmt: skip
    return text, samples


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """`callgate serve` on a real Redis and Asterisk (tests/e2e.serving) after CALLS were decided, and
    a Prometheus with docs/monitoring.md's configuration and the shipped rules, scraping it every
    second."""
    binary = tool("prometheus")
    root = Path(tmp_path_factory.mktemp("prom"))
    with serving(root, EXTENSIONS, POLICY) as s:
        asyncio.run(_place_calls(s))
        deadline = time.monotonic() + WAIT
        while True:  # until the gate has counted them all (the lock is written after the refusal)
            text, samples = _scrape(s)
            if all(samples.get(k) == v for k, v in AFTER_CALLS.items()):
                break
            assert time.monotonic() < deadline, f"{samples}\n{s.gate.tail()}"
            time.sleep(0.1)
        exposed: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                exposed.setdefault(sample.name, set()).update(sample.labels)
        # the documented configuration, scraping this gate every second
        port = s.gate.env["CALLGATE_METRICS_PORT"]
        config = re.sub(r"targets: \[.*\]", f'targets: ["127.0.0.1:{port}"]', doc_config())
        config = "global: {evaluation_interval: 1s}\n" + config.replace(
            "scrape_interval: 15s", "scrape_interval: 1s"
        )
        (root / "prometheus").mkdir()
        shutil.copy(RULES, root / "prometheus" / RULES.name)
        with prometheus_server(binary, root / "prometheus", config) as url:
            yield Scraped(s, url, text, exposed, root / "prometheus" / "prometheus.log")


def _check_names(scraped: Scraped, expr: str) -> None:
    """Each metric of ``expr`` is one the gate exposed (or Prometheus' own `up`), and each label it
    groups or matches by is one of those metrics' (or one Prometheus adds)."""
    metrics, labels = promql_names(expr)
    assert metrics, expr
    unknown = metrics - set(scraped.exposed) - FROM_PROMETHEUS
    assert not unknown, f"{expr}: the gate exposes no {unknown}"
    known = FROM_SCRAPE.union(*(scraped.exposed.get(m, set()) for m in metrics))
    assert labels <= known, f"{expr}: no label {labels - known} on {metrics}"


@pytest.mark.redis
@pytest.mark.asterisk
def test_prometheus_scrapes_the_gate(scraped: Scraped) -> None:
    """The target is up, and Prometheus holds the values the gate produced: two calls allowed, two
    refused, one over a report-only limit, one extension locked and its alert, the site's day cap."""
    scraped.until(
        "the gate's target up",
        lambda: [t["health"] for t in scraped.api("targets")["activeTargets"]] == ["up"],
    )
    (up,) = scraped.query(f'up{{job="{JOB}"}}')
    assert up["value"][1] == "1"
    for selector, value in AFTER_CALLS.items():
        (got,) = scraped.until(selector, lambda q=selector: scraped.query(q))  # type: ignore[misc]
        assert (float(got["value"][1]), got["metric"]["job"]) == (value, JOB), (selector, got)


@pytest.mark.redis
@pytest.mark.asterisk
def test_the_exposition_passes_promtools_lint(scraped: Scraped) -> None:
    """`promtool check metrics` (names, units, counters' `_total`, help texts) finds nothing to say
    about the gate's /metrics."""
    done = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=scraped.exposition, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.redis
@pytest.mark.asterisk
def test_prometheus_loads_the_shipped_rules(scraped: Scraped) -> None:
    """Prometheus loads every rule of the shipped file and evaluates each without error; their
    metrics and labels are the gate's. Nothing alarming happened: none fires."""

    def evaluated() -> list[dict[str, Any]]:
        found = [r for g in scraped.api("rules")["groups"] for r in g["rules"]]
        return found if found and all(r["health"] != "unknown" for r in found) else []

    loaded = scraped.until("the rules evaluated", evaluated)
    assert [r["name"] for r in loaded] == [r["alert"] for r in rules()]
    for rule in loaded:
        assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule
        assert rule["state"] == "inactive", rule
    for rule in rules():
        _check_names(scraped, rule["expr"])


@pytest.mark.redis
@pytest.mark.asterisk
def test_the_promtool_series_are_the_gates(scraped: Scraped) -> None:
    """The recorded series of the promtool cases have the names and labels of the real gate's."""
    for test in yaml.safe_load(RULE_TESTS.read_text("utf-8"))["tests"]:
        for series in test["input_series"]:
            m = re.fullmatch(r"(\w+)\{(.*)\}", series["series"])
            assert m is not None, series
            name, labels = m.group(1), set(re.findall(r"(\w+)=", m.group(2)))
            if name in FROM_PROMETHEUS:
                assert labels == FROM_SCRAPE
                continue
            assert name in scraped.exposed, name
            assert labels == scraped.exposed[name] | FROM_SCRAPE, series


@pytest.mark.redis
@pytest.mark.asterisk
def test_every_dashboard_query_answers_with_the_gates_metrics(scraped: Scraped) -> None:
    """Each query of the dashboard (and of its `instance` variable) names metrics and labels the gate
    exposes, parses in the real Prometheus, and returns data."""
    board = dashboard()
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
    m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
    assert m is not None
    assert m.group(1) in scraped.exposed
    values = scraped.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
    assert values == [f"127.0.0.1:{scraped.serving.gate.env['CALLGATE_METRICS_PORT']}"]
    for expr in dashboard_exprs():
        _check_names(scraped, expr)
        real = expr.replace("$instance", variable["allValue"]).replace("$__rate_interval", "1m")
        scraped.until(f"data for {real}", lambda q=real: scraped.query(q))  # type: ignore[misc]
