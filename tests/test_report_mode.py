"""Report-only rules: how ``mode: report`` is written, what the model holds, and the engine's question."""

from __future__ import annotations

from decimal import Decimal

import pytest

from callgate.core.numbers import NumberType
from callgate.core.policy import (
    Burst,
    HolidayMode,
    Limits,
    Policy,
    ShortCallAction,
    ShortCalls,
    Spend,
    report_only,
)
from callgate.core.policyfile import load_policy, merge_limits
from callgate.core.policysummary import describe
from callgate.errors import PolicyError, Problem

# Line numbers below are counted in this text (line 1 is "version: 1").
POLICY = """\
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05, increment: 6}
profiles:
  office:
    destinations:
      allow_countries: {value: [US, CA], mode: report}
      deny_number_types: {value: [premium_rate], mode: enforce}
      deny_prefixes: {value: ["+1900", {file: callgate:irsf-starter}], mode: report}
      allow_prefixes: ["+18005551"]
      max_rate: {value: "0.50", mode: report}
    hours:
      international: {value: "mon-fri 08:00-18:00", mode: report}
      any: "mon-sun 00:00-24:00"
      on_holidays: {value: closed, mode: report}
    limits:
      calls_per_minute: {value: 4, mode: report}
      calls_per_hour: 60
      concurrent_calls: {value: 3}
      same_number: {calls: 3, within: 10m, mode: report}
      distinct_numbers: {numbers: 25, within: 1h, mode: enforce}
      short_calls: {calls: 5, shorter_than: 15s, within: 10m, mode: report}
      max_call_duration: {value: 1h, mode: report}
      spend: {day: "40.00", month: "400.00", mode: report}
    profile_limits:
      international_calls_per_hour: {value: 10, mode: report}
      spend: {month: "2000.00"}
  lobby: {}
extensions:
  - match: "2000"
    profile: office
    limits:
      spend: {day: "150.00"}
      same_number: {calls: 5, within: 10m}
      calls_per_hour: {value: 100, mode: report}
  - {match: "1*", profile: office}
  - {match: "*", profile: lobby}
site_limits:
  concurrent_calls: 20
  spend: {day: "300.00", mode: report}
lockdown:
  after_denied: {calls: 5, within: 10m, mode: report}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY, "p.yaml")


def test_values_are_read_in_both_forms(policy: Policy) -> None:
    """The long form gives the same value as the short one; mode is not part of the value."""
    office = policy.profiles["office"]
    d, h, limits = office.destinations, office.hours, office.limits
    assert d.allow_countries == frozenset({"US", "CA"})
    assert d.deny_number_types == frozenset({NumberType.PREMIUM_RATE})
    assert d.deny_prefixes[0] == "1900"
    assert "979" in d.deny_prefixes
    assert d.max_rate == Decimal("0.50")
    assert h.international is not None
    assert h.international.text == "mon-fri 08:00-18:00"
    assert h.on_holidays is HolidayMode.CLOSED
    assert limits.calls_per_minute == 4
    assert limits.concurrent_calls == 3
    assert limits.same_number == Burst(3, 600)
    assert limits.distinct_numbers == Burst(25, 3600)
    assert limits.short_calls == ShortCalls(5, 15, 600, ShortCallAction.LOCK)
    assert limits.max_call_duration == 3600
    assert limits.spend == Spend(None, Decimal("40.00"), Decimal("400.00"))


def test_report_names_the_keys_in_report_mode(policy: Policy) -> None:
    """Each section's ``report`` names its keys in report mode; spend names each period it sets."""
    office = policy.profiles["office"]
    assert office.destinations.report == {"allow_countries", "deny_prefixes", "max_rate"}
    assert office.hours.report == {"international", "on_holidays"}
    assert office.limits.report == {
        "calls_per_minute",
        "same_number",
        "short_calls",
        "max_call_duration",
        "spend.day",
        "spend.month",
    }
    assert office.group_limits.report == {"international_calls_per_hour"}
    assert policy.site_limits.report == {"spend.day"}
    assert policy.lockdown is not None
    assert policy.lockdown.report == {"after_denied"}
    assert policy.profiles["lobby"].limits.report == frozenset()


def test_overrides_merge_modes_like_values(policy: Policy) -> None:
    """An entry's override takes the entry's mode; spend merges period by period; the rest is kept."""
    boss, staff = policy.extensions[0].limits, policy.extensions[1].limits
    assert boss.report == {
        "calls_per_minute",  # kept from the profile
        "short_calls",
        "max_call_duration",
        "spend.month",  # the month cap is the profile's, still report-only
        "calls_per_hour",  # the entry's own report-only override
    }  # same_number and spend.day: overridden with enforce values
    assert boss.spend == Spend(None, Decimal("150.00"), Decimal("400.00"))
    assert staff == policy.profiles["office"].limits


def test_merge_limits_modes() -> None:
    """merge_limits: a set value brings its mode, in either direction; an unset one keeps the base's."""
    base = Limits(
        calls_per_minute=4,
        calls_per_hour=60,
        spend=Spend(Decimal(1), Decimal(5)),
        report=frozenset({"calls_per_minute", "spend.hour"}),
    )
    over = Limits(
        calls_per_minute=2,
        calls_per_hour=30,
        spend=Spend(day=Decimal(9)),
        report=frozenset({"spend.day"}),
    )
    merged = merge_limits(base, over)
    assert merged.report == {"spend.hour", "spend.day"}
    assert merge_limits(base, Limits()).report == base.report


# (the extension, the name the engine asks about, report-only?)
ASKED: list[tuple[str, str, bool]] = [
    ("1001", "destinations.countries", True),
    ("1001", "destinations.allow_countries", True),
    ("1001", "destinations.number_types", False),
    ("1001", "destinations.prefixes", True),
    ("1001", "destinations.deny_prefixes", True),
    ("1001", "destinations.allow_prefixes", False),
    ("1001", "destinations.max_rate", True),
    ("1001", "rates", False),  # no_rate is always enforced: ask destinations.max_rate
    ("1001", "hours", False),  # ambiguous: ask hours.any / hours.international / hours.on_holidays
    ("1001", "hours.international", True),
    ("1001", "hours.any", False),
    ("1001", "hours.on_holidays", True),
    ("1001", "limits.calls_per_minute", True),
    ("1001", "limits.calls_per_hour", False),
    ("1001", "limits.concurrent_calls", False),
    ("1001", "limits.same_number", True),
    ("1001", "limits.distinct_numbers", False),
    ("1001", "limits.short_calls", True),
    ("1001", "limits.max_call_duration", True),
    ("1001", "limits.spend.day", True),
    ("1001", "limits.spend.month", True),
    ("1001", "limits.spend.hour", False),
    ("1001", "limits.spend", False),
    ("1001", "profile_limits.international_calls_per_hour", True),
    ("1001", "profile_limits.spend.month", False),
    ("1001", "site_limits.spend.day", True),
    ("1001", "site_limits.concurrent_calls", False),
    ("1001", "lockdown.after_denied", True),
    ("1001", "emergency", False),
    ("1001", "extension", False),
    ("1001", "lock", False),
    ("1001", "number", False),
    ("1001", "store", False),
    ("1001", "limits.calls_per_minit", False),  # a typo never switches a rule off
    ("2000", "limits.same_number", False),
    ("2000", "limits.spend.day", False),
    ("2000", "limits.spend.month", True),
    ("2000", "limits.calls_per_hour", True),
    ("3000", "destinations.countries", False),
    ("3000", "limits.calls_per_minute", False),
    ("unknown", "limits.calls_per_minute", False),
    ("unknown", "site_limits.spend.day", True),
]


@pytest.mark.parametrize(("extension", "name", "expected"), ASKED)
def test_report_only(policy: Policy, extension: str, name: str, expected: bool) -> None:
    """The engine's question, by result name or key path, for an extension's rule (or none)."""
    rule = policy.rule_for(extension) if extension != "unknown" else None
    assert report_only(policy, rule, name) is expected


def test_report_only_without_lockdown() -> None:
    """A policy without a lockdown section has no report-only lockdown."""
    plain = load_policy(POLICY[: POLICY.index("lockdown:")], "p")
    assert report_only(plain, None, "lockdown.after_denied") is False


def test_describe_lists_report_only_rules(policy: Policy) -> None:
    """policy check names every report-only rule by its key path, and what an entry enforces."""
    text = "\n".join(describe(policy))
    line = next(x for x in text.splitlines() if x.startswith("report only"))
    assert line == (
        "report only (checked and logged, never denied): "
        "profiles.office.destinations.allow_countries, profiles.office.destinations.deny_prefixes, "
        "profiles.office.destinations.max_rate, profiles.office.hours.international, "
        "profiles.office.hours.on_holidays, profiles.office.limits.calls_per_minute, "
        "profiles.office.limits.max_call_duration, profiles.office.limits.same_number, "
        "profiles.office.limits.short_calls, profiles.office.limits.spend.day, "
        "profiles.office.limits.spend.month, "
        "profiles.office.profile_limits.international_calls_per_hour, "
        "extensions[0].limits.calls_per_hour, site_limits.spend.day, lockdown.after_denied"
    )
    assert "enforces what the profile only reports: same_number, spend.day" in text
    assert "not +1900, list callgate:irsf-starter (12)" in text
    plain = "\n".join(describe(load_policy(POLICY.replace("mode: report", "mode: enforce"), "p")))
    assert "report only (checked and logged, never denied): none" in plain


def problems(text: str) -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "p.yaml")
    return caught.value.problems


# One row per mistake: (what, the old text, the new text, line, key path, part of the message).
CASES: list[tuple[str, str, str, int, str, str]] = [
    (
        "unknown mode",
        "{value: 4, mode: report}",
        "{value: 4, mode: reprot}",
        18,
        "profiles.office.limits.calls_per_minute.mode",
        "unknown value 'reprot'; did you mean 'report'?",
    ),
    (
        "mode of a mapping rule",
        "within: 10m, mode: report}",
        "within: 10m, mode: shadow}",
        21,
        "profiles.office.limits.same_number.mode",
        "expected one of: enforce, report",
    ),
    (
        "long form without a value",
        "{value: 4, mode: report}",
        "{mode: report}",
        18,
        "profiles.office.limits.calls_per_minute.value",
        "missing; expected the rule's value: 4",
    ),
    (
        "long form typo",
        "{value: 4, mode: report}",
        "{valeu: 4, mode: report}",
        18,
        "profiles.office.limits.calls_per_minute.valeu",
        "did you mean 'value'?",
    ),
    (
        "bad value in the long form",
        "{value: 4, mode: report}",
        "{value: four, mode: report}",
        18,
        "profiles.office.limits.calls_per_minute.value",
        "expected a whole number from 0",
    ),
    (
        "mode on a section",
        "    limits:\n      calls_per_minute",
        "    limits:\n      mode: report\n      calls_per_minute",
        18,
        "profiles.office.limits.mode",
        "a mode belongs to one rule",
    ),
    (
        "mode on allow_prefixes",
        'allow_prefixes: ["+18005551"]',
        'allow_prefixes: {value: ["+18005551"], mode: report}',
        11,
        "profiles.office.destinations.allow_prefixes",
        "allow_prefixes has no mode: it only lets calls through",
    ),
    (
        "mode on a lockdown's locks",
        "after_denied: {calls: 5, within: 10m, mode: report}",
        "after_denied: {calls: 5, within: 10m}\n  locks: {value: all, mode: report}",
        44,
        "lockdown.locks",
        "expected one of international, all, got a mapping",
    ),
    (
        "both country lists, one in long form",
        "      deny_number_types",
        "      deny_countries: [CU]\n      deny_number_types",
        9,
        "profiles.office.destinations.deny_countries",
        "cannot both be set",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_problem(old: str, new: str, line: int, path: str, message: str) -> None:
    """A mistake in a mode is named with its line and key path, like every other mistake."""
    assert POLICY.count(old) >= 1, old
    found = problems(POLICY.replace(old, new, 1))
    assert {p.line for p in found} == {line}, found
    (problem,) = [p for p in found if p.path == path]
    assert message in problem.message, problem.message
