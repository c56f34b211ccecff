"""Rules in mode: report in the engine: they never deny, and show up in the decision, the audit entry and replay."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from callgate.core.decision import Decision
from callgate.core.engine import conclude
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import REPORT, CallAttempt
from callgate.offline.replay import replay
from callgate.ops.audit import entry
from callgate.store.memory import MemoryStore
from tests.test_cdr import cdr_line, read

NY = ZoneInfo("America/New_York")
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
POLICY = load_policy(
    """\
version: 1
site: {name: s, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: "0.05", prefixes: {"53": "1.10"}}
profiles:
  office:
    destinations:
      allow_countries: {value: [US], mode: report}
      max_rate: {value: "0.50", mode: report}
    hours: {any: {value: "mon-fri 11:00-12:00", mode: report}}
    limits:
      calls_per_minute: {value: 1, mode: report}
      concurrent_calls: 5
      spend: {day: "0.10", mode: report}
extensions: [{match: "1001", profile: office}]
""",
    "report.yaml",
)


def decide(store: MemoryStore, call_id: str, number: str) -> Decision:
    p = prepare(Memo(POLICY), CallAttempt(call_id, "1001", number), TUE)
    assert p.admission is not None
    return conclude(p, store.admit_now(p.admission))


def test_report_only_rules_allow_and_record() -> None:
    """Every report-only rule that would deny is listed; the call is allowed all the same."""
    store = MemoryStore()
    first = decide(store, "a", "2125550123")
    assert first.verdict is Verdict.ALLOW
    assert [r.rule for r in first.reported] == ["hours"]
    cuba = decide(store, "b", "011537123456")
    assert cuba.verdict is Verdict.ALLOW
    assert {r.reason for r in cuba.reported} == {
        Reason.COUNTRY_NOT_ALLOWED,
        Reason.RATE_ABOVE_MAX,
        Reason.OUTSIDE_HOURS,
        Reason.VELOCITY_MINUTE,
        Reason.SPEND_CAP_DAY,
    }
    assert cuba.allowed_seconds > 60  # the report-only cap cuts nothing
    fields = entry(cuba, "ch", 1.0)
    assert "limits.calls_per_minute:velocity_minute" in fields["reported"]
    assert all(r.outcome == REPORT for r in cuba.reported)


def test_an_enforced_rule_still_denies_beside_report_ones() -> None:
    """Report mode on one rule leaves the others enforced (concurrent_calls here)."""
    store = MemoryStore()
    verdicts = [decide(store, f"c{i}", "2125550123").verdict for i in range(6)]
    assert verdicts == [Verdict.ALLOW] * 5 + [Verdict.DENY]


def test_replay_shows_what_report_rules_would_deny() -> None:
    """replay lists the report-only reasons per call (jsonl ``reported``)."""
    rows, errors = read(cdr_line(dst="011537123456"))
    assert errors == []
    (row,) = list(replay(POLICY, rows))
    assert row.verdict == "allow"
    assert "country_not_allowed" in row.reported
