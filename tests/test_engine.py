"""The decision core, rule by rule, as a table of calls against the policy.md example and small policies."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from callgate import cli
from callgate.core import memo as memo_module
from callgate.core.admission import from_micro, money_text
from callgate.core.bursts import lockdown_rule, short_call_rule
from callgate.core.decision import Decision
from callgate.core.engine import conclude, decide, on_store_failure, peeked
from callgate.core.memo import Memo
from callgate.core.origins import Origin
from callgate.core.plan import above_problem, prepare
from callgate.core.policy import FailMode, Policy
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import RULES, CallAttempt
from callgate.store.memory import MemoryStore

NY = ZoneInfo("America/New_York")
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=NY)  # a Tuesday, inside office hours
SAT = datetime(2026, 11, 21, 10, 0, tzinfo=NY)
XMAS = datetime(2026, 12, 25, 10, 0, tzinfo=NY)  # a Friday, and a holiday
EXAMPLE = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8"),
    "example",
)

SMALL = """
version: 1
site: {name: small, region: US, timezone: America/New_York, currency: USD, on_store_error: deny_international}
emergency: ["911"]
rates: {default: "0.10", increment: 60, prefixes: {"44": "0.60", "1212": "0.00"}}
profiles:
  p:
    destinations: {deny_countries: [US], allow_prefixes: ["+1212"], max_rate: "0.50"}
    limits:
      calls_per_minute: 2
      same_number: {calls: 2, within: 10m}
      distinct_numbers: {numbers: 3, within: 1h}
      max_call_duration: 30m
      spend: {day: "1.00"}
extensions:
  - {match: "100-199", profile: p}
"""


def run(
    policy: Policy | Memo,  # a policy: decided with a new Memo
    ext: str,
    dialled: str,
    at: datetime = TUE,
    *,
    store: MemoryStore | None = None,
    call_id: str = "",
) -> Decision:
    store = store or MemoryStore()
    memo = policy if isinstance(policy, Memo) else Memo(policy)
    prepared = prepare(
        memo, CallAttempt(call_id or f"{ext}-{dialled}-{at.timestamp()}", ext, dialled), at
    )
    return conclude(prepared, store.admit_now(prepared.admission) if prepared.admission else None)


@pytest.mark.parametrize(
    ("ext", "dialled", "at", "verdict", "reason"),
    [
        ("1001", "2125550123", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "912125550123", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "9175550123", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "911", SAT, Verdict.ALLOW, Reason.EMERGENCY),
        ("1001", "9911", SAT, Verdict.ALLOW, Reason.EMERGENCY),
        ("9999", "933", SAT, Verdict.ALLOW, Reason.EMERGENCY),
        ("1001", "011442079460000", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "011442079460000", SAT, Verdict.DENY, Reason.OUTSIDE_HOURS),
        ("1001", "011442079460000", XMAS, Verdict.DENY, Reason.HOLIDAY),
        ("1001", "2125550123", XMAS, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "18765550123", TUE, Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED),
        ("1001", "0118816123456789", TUE, Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED),
        ("1001", "19005550199", TUE, Verdict.DENY, Reason.NUMBER_TYPE_PREMIUM_RATE),
        ("1001", "011447012345678", TUE, Verdict.DENY, Reason.NUMBER_TYPE_PERSONAL_NUMBER),
        ("1001", "18005551234", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("1001", "15146661234", TUE, Verdict.ALLOW, Reason.ALLOWED),
        ("3000", "011442079460000", TUE, Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED),
        ("3000", "15146661234", TUE, Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED),
        ("1001", "abc", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "1001'; DROP TABLE", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "9" * 400, TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        # security issue 8: the dialled string is judged as it stands, never trimmed
        ("1001", " 011442079460000", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "sip:011442079460000@pbx", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "+1 (212) 555-0123", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "011532345678,ext=1005", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "０１１４４２０７９４６００００", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", "*97", TUE, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        ("1001", " 911", SAT, Verdict.DENY, Reason.UNPARSEABLE_NUMBER),
        # ... and extensions are ASCII: 1001 in other digits is no extension, not even for "*"
        ("１００１", "2125550123", TUE, Verdict.DENY, Reason.UNKNOWN_EXTENSION),
        ("١٠٠١", "2125550123", TUE, Verdict.DENY, Reason.UNKNOWN_EXTENSION),
        ("1001 ", "2125550123", TUE, Verdict.DENY, Reason.UNKNOWN_EXTENSION),
        ("١٠٠١", "911", SAT, Verdict.ALLOW, Reason.EMERGENCY),
    ],
)
def test_example_policy(
    ext: str, dialled: str, at: datetime, verdict: Verdict, reason: Reason
) -> None:
    """Each row of the table is one call against the policy.md example; the first denying rule wins."""
    d = run(EXAMPLE, ext, dialled, at)
    assert (d.verdict, d.reason) == (verdict, reason), [r for r in d.rules if r.outcome == "deny"]


@pytest.mark.parametrize(
    ("ext", "dialled", "verdict", "reason"),
    [
        (
            "150",
            "12125550123",
            Verdict.ALLOW,
            Reason.ALLOWED,
        ),  # allow_prefixes beats deny_countries
        ("150", "13105550123", Verdict.DENY, Reason.COUNTRY_NOT_ALLOWED),
        ("150", "011442079460000", Verdict.DENY, Reason.RATE_ABOVE_MAX),
        ("200", "011492079460000", Verdict.DENY, Reason.UNKNOWN_EXTENSION),
    ],
)
def test_small_policy(ext: str, dialled: str, verdict: Verdict, reason: Reason) -> None:
    """Exceptions, max_rate and unknown extensions."""
    d = run(load_policy(SMALL, "small"), ext, dialled)
    assert (d.verdict, d.reason) == (verdict, reason)


def test_explain_refuses_what_a_trunk_would_not_dial(capsys: pytest.CaptureFixture[str]) -> None:
    """`callgate explain` judges the string as given: spaces and brackets make it unparseable."""
    assert (
        cli.main(["explain", "--from", "1001", "--at", "2026-11-17T10:00", "+1 (212) 555-0123"])
        == 1
    )
    assert "unparseable_number" in capsys.readouterr().out
    assert cli.main(["explain", "--from", "1001", "--at", "2026-11-17T10:00", "+12125550123"]) == 0


def test_velocity_same_number_and_distinct() -> None:
    """calls_per_minute, same_number and distinct_numbers deny the call that goes over, in that order."""
    roomy = SMALL.replace('spend: {day: "1.00"}', 'spend: {day: "100.00"}')
    policy, store = load_policy(roomy, "small"), MemoryStore()
    t = TUE.timestamp()
    at = [datetime.fromtimestamp(t + 61 * i, NY) for i in range(6)]
    assert run(policy, "150", "011493012345678", at[0], store=store).allowed
    assert run(policy, "150", "011493012345679", at[0], store=store).allowed
    assert (
        run(policy, "150", "011493012345670", at[0], store=store).reason is Reason.VELOCITY_MINUTE
    )
    assert run(policy, "150", "011493012345678", at[1], store=store).allowed
    assert run(policy, "150", "011493012345678", at[2], store=store).reason is Reason.SAME_NUMBER
    assert run(policy, "150", "011493012345671", at[3], store=store).allowed
    assert (
        run(policy, "150", "011493012345672", at[4], store=store).reason is Reason.DISTINCT_NUMBERS
    )


def test_spend_sets_allowed_seconds_and_denies_when_one_increment_does_not_fit() -> None:
    """The remaining day budget bounds the allowed seconds, rounded down to the increment."""
    policy, store = load_policy(SMALL, "small"), MemoryStore()
    first = run(
        policy, "150", "011493012345678", TUE, store=store
    )  # 0.10/min, 1.00/day, 30 min max
    assert (first.allowed_seconds, first.reserved) == (600, Decimal("1.000000"))
    assert first.variables() == {
        "CALLGATE_VERDICT": "ALLOW",
        "CALLGATE_REASON": "allowed",
        "CALLGATE_NUMBER": "+493012345678",
        "CALLGATE_MAX_SECONDS": "600",
        "CALLGATE_CALL": first.reservation,
    }
    second = run(policy, "150", "011493012345679", TUE.replace(minute=5), store=store)
    assert (second.verdict, second.reason, second.rule) == (
        Verdict.DENY,
        Reason.SPEND_CAP_DAY,
        "limits.spend.day",
    )
    store.settle_now("small", first.reservation, 130, int(TUE.timestamp() * 1000) + 200_000)
    third = run(policy, "150", "011493012345679", TUE.replace(minute=6), store=store)
    assert third.allowed_seconds == 420  # 1.00 - 0.30 (130 s billed as 3 min) = 0.70 -> 7 min
    free = run(policy, "150", "12125550123", TUE.replace(minute=7), store=store)
    assert free.allowed_seconds == 1800  # a zero rate is bounded by max_call_duration only


def test_max_duration_and_default() -> None:
    """Office calls get max_call_duration (2h); the cap is the shorter of duration and budget."""
    d = run(EXAMPLE, "1001", "2125550123")
    assert d.allowed_seconds == 7200
    assert d.rate == Decimal("0.01")


@pytest.mark.parametrize(
    ("lock", "panic", "dialled", "reason"),
    [
        ("international", False, "011442079460000", Reason.EXTENSION_LOCKED),
        ("international", False, "2125550123", Reason.ALLOWED),
        ("all", False, "2125550123", Reason.EXTENSION_LOCKED),
        (
            "all",
            False,
            "18765550123",
            Reason.EXTENSION_LOCKED,
        ),  # the lock comes before destinations
        ("", True, "011442079460000", Reason.SITE_PANIC),
        ("", True, "2125550123", Reason.ALLOWED),
        ("all", False, "911", Reason.EMERGENCY),
    ],
)
async def test_locks(lock: str, panic: bool, dialled: str, reason: Reason) -> None:
    """A locked extension or a panicking site refuses by scope; emergency numbers still pass."""
    store = MemoryStore()
    await store.set_lock("acme-nyc", "1001", lock or None)
    await store.set_panic("acme-nyc", panic)
    assert run(EXAMPLE, "1001", dialled, TUE, store=store).reason is reason


@pytest.mark.parametrize(
    ("mode", "dialled", "verdict"),
    [
        (FailMode.DENY, "2125550123", Verdict.DENY),
        (FailMode.ALLOW, "011442079460000", Verdict.ALLOW),
        (FailMode.DENY_INTERNATIONAL, "011442079460000", Verdict.DENY),
        (FailMode.DENY_INTERNATIONAL, "2125550123", Verdict.ALLOW),
        (FailMode.ALLOW, "18765550123", Verdict.DENY),  # a static rule still denies
        (FailMode.DENY, "911", Verdict.ALLOW),
    ],
)
def test_store_failure_modes(mode: FailMode, dialled: str, verdict: Verdict) -> None:
    """With the store down, on_store_error decides what the static rules did not already refuse."""
    d = on_store_failure(prepare(Memo(EXAMPLE), CallAttempt("x", "1001", dialled), TUE), mode)
    assert d.verdict is verdict
    if d.reason is not Reason.EMERGENCY and d.rule == "store":
        assert d.reason is Reason.STORE_UNAVAILABLE


def test_same_call_id_gets_same_decision_once() -> None:
    """A second trunk attempt (same linkedid) is admitted again without being counted twice."""
    store = MemoryStore()
    first = run(EXAMPLE, "1001", "2125550123", TUE, store=store, call_id="L1")
    again = run(EXAMPLE, "1001", "2125550123", TUE.replace(minute=1), store=store, call_id="L1")
    assert again.replayed
    assert again.allowed_seconds == first.allowed_seconds
    assert store.reservations("acme-nyc") == 1


def test_explain_lists_every_rule_without_counting() -> None:
    """peek-based decisions list every rule in order and change no counter."""
    store = MemoryStore()
    prepared = prepare(Memo(EXAMPLE), CallAttempt("x", "1001", "011442079460000"), TUE)
    assert prepared.admission is not None
    d = peeked(prepared, store.read_now(prepared.admission))
    names = [r.rule for r in d.rules]
    assert names[:3] == ["emergency", "extension", "lock"]
    assert "site_limits.spend.day" in names
    assert d.allowed
    assert store.reservations("acme-nyc") == 0
    assert RULES[0] == "emergency"


def test_decide_is_one_pure_call() -> None:
    """decide() chains prepare, the counter read and conclude for callers that hold the counters."""
    store = MemoryStore()
    d = decide(Memo(EXAMPLE), CallAttempt("y", "2000", "2125550123"), store.admit_now, TUE)
    assert d.allowed
    assert d.profile == "office"


def test_memo_never_changes_a_decision() -> None:
    """Decisions made with a warm Memo are those of a fresh policy, and the memo stays bounded."""
    calls = [
        (ext, dialled, at)
        for ext in ("1001", "2000", "3000", "9999", "1" * 200)
        for dialled in ("2125550123", "011442079460000", "19005550199", "911", "abc", "9" * 400)
        for at in (TUE, SAT, XMAS)
    ]
    memo = Memo(EXAMPLE)
    warm = [run(memo, *call, call_id="m") for call in calls * 2][len(calls) :]
    fresh = load_policy(
        resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"),
        "example",
    )
    for call, decision in zip(calls, warm, strict=True):
        assert run(fresh, *call, call_id="m") == decision  # each with a new Memo
    keys = [*memo.callers, *memo.destinations, *memo.hours, *memo.short_calls]
    assert all(len(str(key)) < 300 for key in keys)  # hostile lengths are not kept
    assert 0 < len(memo) <= memo_module.MEMO_MAX + 1


def test_a_full_memo_is_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MEMO_MAX entries, counted over every table (the bursts' too), the next call empties the
    memo before it fills it again; a hostile length is worked out and never kept."""
    monkeypatch.setattr(memo_module, "MEMO_MAX", 4)
    memo = Memo(EXAMPLE)
    run(memo, "1001", "9" * 400)
    assert len(memo) == 0
    assert short_call_rule(memo, "1" * 200, 5) is None
    assert len(memo) == 0
    run(memo, "1001", "2125550123")  # the caller, the destination, the hours
    assert (len(memo.callers), len(memo.destinations), len(memo.hours)) == (1, 1, 1)
    assert lockdown_rule(memo, Reason.COUNTRY_NOT_ALLOWED) is not None
    short_call_rule(memo, "1001", 5)
    assert len(memo) == 5
    run(memo, "1001", "2125550124")  # emptied first: the caller, this destination, the hours
    assert (len(memo), len(memo.callers), len(memo.destinations), len(memo.hours)) == (3, 1, 1, 1)


@pytest.mark.parametrize(
    ("micro", "text", "short"),
    [
        (0, "0.000000", "0.00"),
        (12_500_000, "12.500000", "12.50"),
        (1_234, "0.001234", "0.001234"),
        (3_610_000, "3.610000", "3.61"),
        (-5, "-0.000005", "-0.000005"),
    ],
)
def test_money_text_is_exact(micro: int, text: str, short: str) -> None:
    """Micro-units as text: what str(from_micro) gives, or with short at least two decimals."""
    assert money_text(micro) == text == str(from_micro(micro))
    assert money_text(micro, short=True) == short


# --- a provider's caps in its tenants' admissions (plan.prepare's ``above``) ---------------------

TENANT = """
version: 1
site: {{name: {name}, region: US, timezone: America/New_York, currency: {currency}}}
emergency: ["911"]
rates: {{default: "1.00", increment: 60}}
profiles:
  p:
    limits: {{max_call_duration: 1m, calls_per_minute: 5}}
extensions: [{{match: "1*", profile: p}}]
{site_limits}
"""
PROVIDER_LIMITS = """site_limits:
  international_calls_per_hour: 3
  concurrent_calls: {value: 2, mode: report}
  same_number: {calls: 2, within: 10m}
  spend: {day: "2.00", month: "30.00"}
"""


def tenant_memo(
    name: str, site_limits: str = "", tz: str = "America/New_York", currency: str = "USD"
) -> Memo:
    text = TENANT.format(name=name, site_limits=site_limits, currency=currency)
    return Memo(load_policy(text.replace("America/New_York", tz), f"{name}.yaml"))


def test_a_providers_caps_come_after_the_tenants_own() -> None:
    """Every cap of the provider's site_limits is a check of its tenant's admission, after the
    tenant's own, under the provider's site keys, denying with provider_limit; international-only
    ones for international calls only; its mode: report kept."""
    provider, tenant = tenant_memo("hosted", PROVIDER_LIMITS), tenant_memo("hosted/acme")
    domestic = prepare(tenant, CallAttempt("c", "1001", "2125550123"), TUE, above=provider)
    assert [(c.rule, c.site, c.reason) for c in domestic.checks] == [
        ("limits.calls_per_minute", "", Reason.VELOCITY_MINUTE),
        ("provider_limits.concurrent_calls", "hosted", Reason.PROVIDER_LIMIT),
        ("provider_limits.same_number", "hosted", Reason.PROVIDER_LIMIT),
        ("provider_limits.spend.day", "hosted", Reason.PROVIDER_LIMIT),
        ("provider_limits.spend.month", "hosted", Reason.PROVIDER_LIMIT),
    ]
    assert [c.key for c in domestic.checks[1:]] == [
        "c:site", "w:site:n:+12125550123", "s:site:2026-11-17", "s:site:2026-11",
    ]  # fmt: skip
    assert domestic.checks[1].report == 2  # mode: report: the provider's
    abroad = prepare(tenant, CallAttempt("c", "1001", "011442079460000"), TUE, above=provider)
    assert abroad.checks[1].rule == "provider_limits.international_calls_per_hour"
    assert [
        c.rule for c in prepare(tenant, CallAttempt("c", "1001", "2125550123"), TUE).checks
    ] == ["limits.calls_per_minute"]  # no provider: as ever
    places = [RULES.index(c.rule) for c in abroad.checks]
    assert places == sorted(places)
    assert provider.provider is not None  # worked out once, kept in the provider's Memo


def test_a_providers_caps_count_every_origin_and_never_an_emergency() -> None:
    """A forward leg is counted on the provider's caps like a dialled call; an emergency call is
    never counted."""
    provider, tenant = tenant_memo("hosted", PROVIDER_LIMITS), tenant_memo("hosted/acme")
    forward = CallAttempt("c", "1001", "2125550123", origin=Origin.FORWARD)
    p = prepare(tenant, forward, TUE, above=provider)
    assert "provider_limits.spend.day" in [c.rule for c in p.checks]
    sos = prepare(tenant, CallAttempt("c", "1001", "911"), TUE, above=provider)
    assert (sos.admission, sos.checks) == (None, ())


def test_a_providers_spend_periods_are_in_its_time_zone() -> None:
    """All tenants share the provider's buckets: its day, in its zone, whatever the tenant's."""
    provider = tenant_memo("hosted", 'site_limits: {spend: {day: "2.00"}}', tz="Asia/Tokyo")
    p = prepare(
        tenant_memo("hosted/acme"), CallAttempt("c", "1001", "2125550123"), TUE, above=provider
    )
    assert p.checks[-1].key == "s:site:2026-11-18"  # 10:00 in New York, midnight in Tokyo


def test_a_provider_refusal_is_provider_limit() -> None:
    """A call the provider's cap refuses is denied with provider_limit by the provider's rule."""
    provider, tenant = tenant_memo("hosted", PROVIDER_LIMITS), tenant_memo("hosted/acme")
    other = tenant_memo("hosted/other")
    store = MemoryStore()
    for i, memo in enumerate((tenant, other, other)):
        p = prepare(memo, CallAttempt(f"c{i}", "1001", "2125550123"), TUE, above=provider)
        assert p.admission is not None
        decision = conclude(p, store.admit_now(p.admission))
    assert (decision.verdict, decision.reason, decision.rule) == (
        Verdict.DENY,
        Reason.PROVIDER_LIMIT,
        "provider_limits.same_number",
    )
    assert "(provider hosted, all its tenants)" in next(
        r.detail for r in decision.rules if r.rule == decision.rule
    )


@pytest.mark.parametrize(
    ("tenant", "currency", "problem"),
    [
        ("acme", "USD", "site 'acme' is no tenant of provider 'hosted'"),
        ("other/acme", "USD", "site 'other/acme' is no tenant of provider 'hosted'"),
        ("hosted/acme", "EUR", "provider 'hosted' counts in USD, its tenant 'hosted/acme' in EUR"),
    ],
)
def test_a_provider_must_be_the_tenants(tenant: str, currency: str, problem: str) -> None:
    """A policy is counted under no caps but its own provider's, in its own currency."""
    provider = tenant_memo("hosted", PROVIDER_LIMITS)
    memo = tenant_memo(tenant, currency=currency)
    assert problem in (above_problem(memo.policy, provider.policy) or "")
    with pytest.raises(ValueError, match=re.escape(problem)):
        prepare(memo, CallAttempt("c", "1001", "2125550123"), TUE, above=provider)
