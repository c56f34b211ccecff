"""The engine rules on what the store judged: the check that failed and the lock or panic that refused
come in the Outcome (admit.lua and MemoryStore judge once), and the rules come in RULES order."""

from __future__ import annotations

import re
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callgate.core.admission import Outcome, Refusal
from callgate.core.engine import conclude, on_store_failure, peeked, rule_on
from callgate.core.memo import Memo
from callgate.core.plan import Prepared, prepare
from callgate.core.policy import FailMode, LockScope
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import DENY, ORDER, REPORT, RULES, CallAttempt, RuleGroup
from callgate.store.memory import MemoryStore

TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
SMALL = load_policy(
    """
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: "0.10", increment: 60}
profiles:
  p:
    limits:
      calls_per_minute: {value: 1, mode: report}
      concurrent_calls: 2
      spend: {day: "1.00"}
extensions:
  - {match: "1*", profile: p}
""",
    "small.yaml",
)
EXAMPLE = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"), "example"
)


def small_call() -> Prepared:
    p = prepare(Memo(SMALL), CallAttempt("c", "1001", "2125550123", leg="ch"), TUE)
    assert [c.rule for c in p.checks] == [
        "limits.calls_per_minute",
        "limits.concurrent_calls",
        "limits.spend.day",
    ]
    return p


CPM = "limits.calls_per_minute"
SLOTS = "limits.concurrent_calls"
LOCK = ["lock"]
LOCKED = Refusal.LOCKED


@pytest.mark.parametrize(
    ("values", "seen", "reason", "denied", "reported"),
    [
        ((0, 0, 0), {"admitted": True}, Reason.ALLOWED, [], []),
        ((1, 0, 0), {"admitted": True}, Reason.ALLOWED, [], [CPM]),
        ((1, 2, 0), {"failed": 1}, Reason.CONCURRENT_CALLS, [SLOTS], [CPM]),
        # the store's judgement is taken as it is: the values are not judged again
        ((0, 0, 0), {"failed": 2}, Reason.SPEND_CAP_DAY, ["limits.spend.day"], []),
        ((0, 0, 0), {"refused": LOCKED, "lock": LockScope.ALL}, Reason.EXTENSION_LOCKED, LOCK, []),
        ((0, 0, 0), {"refused": Refusal.PANIC, "panic": True}, Reason.SITE_PANIC, LOCK, []),
        # the lock comes first in RULES: it gives the reason
        ((0, 2, 0), {"refused": LOCKED, "failed": 1}, Reason.EXTENSION_LOCKED, [*LOCK, SLOTS], []),
        # nothing failed, yet nothing admitted (the store's deadline passed): nothing reserved
        ((0, 0, 0), {}, Reason.STORE_UNAVAILABLE, [], []),
    ],
)
@pytest.mark.parametrize("detail", [True, False])
def test_the_engine_rules_on_the_stores_judgement(
    values: tuple[int, ...],
    seen: dict[str, object],
    reason: Reason,
    denied: list[str],
    reported: list[str],
    *,
    detail: bool,
) -> None:
    """Verdict and reason come from the store's refused and failed; the rules that denied and the
    report-only ones that would have are listed whether the rules are described (serve, explain)
    or not (replay)."""
    p = small_call()
    outcome = Outcome(values, allowed_seconds=600, reserved=1_000_000)._replace(**seen)  # type: ignore[arg-type]
    ruling = rule_on(p, outcome, detail=detail)
    allowed = reason is Reason.ALLOWED
    assert (ruling.verdict, ruling.reason) == (Verdict.ALLOW if allowed else Verdict.DENY, reason)
    assert ruling.rule == (denied[0] if denied else "" if allowed else "store")
    assert [r.rule for r in ruling.results if r.outcome == DENY] == denied
    assert [r.rule for r in ruling.results if r.outcome == REPORT] == reported
    assert ruling.seconds == (600 if allowed else 0)


@pytest.mark.parametrize(
    ("lock", "panic", "dialled", "outcome", "detail"),
    [
        ("", False, "2125550123", "pass", "not locked"),
        ("international", False, "2125550123", "pass", "locked (international), call is domestic"),
        (
            "international",
            False,
            "011442079460000",
            DENY,
            "extension 1001 is locked (international)",
        ),
        ("all", False, "2125550123", DENY, "extension 1001 is locked (all)"),
        ("", True, "011442079460000", DENY, "site panic: international calls are refused"),
        ("", True, "2125550123", "pass", "not locked"),
    ],
)
async def test_the_lock_rule_is_what_the_store_refused(
    lock: str, panic: bool, dialled: str, outcome: str, detail: str
) -> None:
    """The lock rule reads the store's refused (MemoryStore, mirrored by admit.lua): by its scope."""
    store = MemoryStore()
    await store.set_lock("acme-nyc", "1001", lock or None)
    await store.set_panic("acme-nyc", panic)
    p = prepare(Memo(EXAMPLE), CallAttempt("c", "1001", dialled, leg="ch"), TUE)
    assert p.admission is not None
    admitted = rule_on(p, store.admit_now(p.admission))
    explained = peeked(p, store.read_now(p.admission))
    for results in (admitted.results, explained.rules):
        (found,) = (r for r in results if r.rule == "lock")
        assert (found.outcome, found.detail) == (outcome, detail)


@pytest.mark.parametrize(
    ("extension", "dialled"),
    [
        ("1001", "2125550123"),  # domestic: every counted rule of the office profile
        ("1001", "011442079460000"),  # international: the international limits too
        ("2000", "2125550123"),
        ("1001", "19005550199"),  # a static rule denies: the counters are still listed
        ("9999", "2125550123"),  # no entry: no counted rule
    ],
)
def test_the_rules_come_in_rules_order(extension: str, dialled: str) -> None:
    """A described decision lists its rules in RULES order: the store's lock after the caller rule,
    then the rest of the static rules, then the counted ones."""
    p = prepare(Memo(EXAMPLE), CallAttempt("c", extension, dialled, leg="ch"), TUE)
    assert p.admission is not None
    names = [r.rule for r in peeked(p, MemoryStore().read_now(p.admission)).rules]
    places = [RULES.index(name) for name in names]
    assert names[:3] == ["emergency", "extension", "lock"]
    assert places == sorted(places)
    assert names[-1] == "limits.max_call_duration"


CALLS = [
    (extension, dialled)
    for extension in ("1001", "2000", "9999")
    for dialled in ("2125550123", "011442079460000", "19005550199", "911", "abc")
]


@pytest.mark.parametrize(("extension", "dialled"), CALLS)
@pytest.mark.parametrize("lock", ["", "international", "all"])
async def test_every_decision_lists_its_rules_in_rules_order(
    extension: str, dialled: str, lock: str
) -> None:
    """Whatever decides (an admission, explain's peek, replay's undescribed ruling, each
    on_store_error with the store down), the rules listed and the rule that gave the reason are in
    RULES, in its order."""
    store = MemoryStore()
    await store.set_lock("acme-nyc", extension, lock or None)
    p = prepare(Memo(EXAMPLE), CallAttempt("c", extension, dialled, leg="ch"), TUE)
    admitted = store.admit_now(p.admission) if p.admission is not None else None
    seen = store.read_now(p.admission) if p.admission is not None else None
    listed = [
        (d.rule, d.rules)
        for d in (
            conclude(p, admitted),
            peeked(p, seen),
            *(on_store_failure(p, mode) for mode in FailMode),
        )
    ]
    undescribed = rule_on(p, admitted, detail=False)
    for rule, results in [*listed, (undescribed.rule, undescribed.results)]:
        places = [RULES.index(r.rule) for r in results]
        assert places == sorted(places)
        assert rule in (*RULES, "")


def test_policy_md_lists_the_rules_in_rules_order() -> None:
    """docs/policy.md's "The order of the rules" names the rules (by their first name in each step:
    the policy key of a counted one) in RULES order, each step of it, and every kind of rule."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "policy.md").read_text(encoding="utf-8")
    section = text.split("## The order of the rules", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\d+\. ([^\n]*)", section, re.MULTILINE)
    named = []
    for step in steps:
        for word in re.findall(r"`([a-z_.]+)`", step):
            rule = word if word in RULES else f"limits.{word}"
            if rule in RULES:
                named.append(rule)
                break
    assert len(named) == len(steps)
    places = [RULES.index(rule) for rule in named]
    assert places == sorted(places)
    groups = {group for name, group, _ in ORDER if name in named}
    assert groups == set(RuleGroup)
