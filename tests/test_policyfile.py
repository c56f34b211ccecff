"""Loading policy files: the examples load, every kind of mistake is named with file, line and key."""

from __future__ import annotations

import contextlib
import hashlib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.core.numbers import NumberType
from callgate.core.policy import Burst, FailMode, HolidayMode, Limits, LockScope, Policy, Spend
from callgate.core.policyfile import MAX_EMERGENCY, load_policy, load_policy_file, merge_limits
from callgate.core.policysummary import describe
from callgate.errors import PolicyError, Problem

DEFAULT = (
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8")
)
SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "policy.md"

# Line numbers below are counted in this text (line 1 is "version: 1").
BASE = """\
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05, increment: 60}
profiles:
  p:
    limits: {spend: {day: "10.00"}}
extensions:
  - {match: "100-199", profile: p}
"""


def problems(text: str, source: str = "p.yaml") -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, source)
    return caught.value.problems


def edited(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_default_policy_loads() -> None:
    """The embedded default (the spec's example) loads with every section filled in."""
    policy = load_policy(DEFAULT, "default")
    assert policy.site.name == "acme-nyc"
    assert policy.site.timezone.key == "America/New_York"
    assert policy.site.on_store_error is FailMode.DENY_INTERNATIONAL
    assert policy.emergency == ("911", "933")
    assert policy.rates.increment == 60
    assert policy.rates.longest == 4
    assert set(policy.profiles) == {"office", "lobby"}
    office = policy.profiles["office"]
    assert office.destinations.allow_countries == frozenset({"US", "CA", "GB", "DE", "FR", "MX"})
    assert NumberType.PREMIUM_RATE in office.destinations.deny_number_types
    assert office.destinations.deny_prefixes == ("1900", "1976")
    assert office.destinations.allow_prefixes == ("18005551",)
    assert office.hours.on_holidays is HolidayMode.DOMESTIC_ONLY
    assert office.limits.same_number == Burst(3, 600)
    assert office.limits.max_call_duration == 7200
    assert [rule.match for rule in policy.extensions] == ["1001-1020", "2000", "*"]
    assert policy.site_limits.concurrent_calls == 20
    assert policy.lockdown is not None
    assert policy.lockdown.locks is LockScope.INTERNATIONAL
    assert policy.alerts.syslog is True
    assert policy.source == "default"
    assert policy.digest == hashlib.sha256(DEFAULT.encode()).hexdigest()


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not beside this clone")
def test_default_policy_is_the_spec_example() -> None:
    """The embedded default is exactly the first example of spec/policy.md."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index("```yaml\n") + len("```yaml\n")
    assert text[start : text.index("```", start)] == DEFAULT


def test_base_loads() -> None:
    """The small policy the error cases edit is itself valid."""
    policy = load_policy(BASE, "base")
    assert policy.rule_for("150") is not None
    assert policy.rule_for("200") is None


def test_file_source_and_digest(tmp_path: Path) -> None:
    """load_policy_file names the path as the source; the digest is the file's sha256."""
    path = tmp_path / "policy.yaml"
    path.write_bytes(BASE.encode())
    policy = load_policy_file(path)
    assert policy.source == str(path)
    assert policy.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_problems_name_the_path(tmp_path: Path) -> None:
    """Problems of a file carry its path; bytes that are not UTF-8 are a problem, not a crash."""
    path = tmp_path / "bad.yaml"
    path.write_text(edited("version: 1", "version: 3"), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert caught.value.problems[0].source == str(path)
    path.write_bytes(b"version: 1\nsite: \xff\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert caught.value.problems == (Problem(str(path), 2, "", "not UTF-8 text"),)


def test_money_is_exact_decimal() -> None:
    """Money is read from the text as written: never through a binary float."""
    text = edited("default: 0.05", 'default: 0.1, prefixes: {"1": 0.30, 44: 1, "53": "1.10"}')
    text = text.replace('day: "10.00"', "day: 0.000001, month: 123456789.999999")
    policy = load_policy(text, "t")
    assert str(policy.rates.default) == "0.1"
    assert policy.rates.prefixes == {"1": Decimal("0.30"), "44": Decimal(1), "53": Decimal("1.10")}
    assert str(policy.rates.prefixes["1"]) == "0.30"
    spend = policy.profiles["p"].limits.spend
    assert spend == Spend(None, Decimal("0.000001"), Decimal("123456789.999999"))


def test_scalars_are_read_as_written() -> None:
    """Unquoted NO (Norway), 011, 2000 and +1900 keep their text; YAML would have changed them."""
    text = edited('["911"]', "[911, 011]").replace('"100-199"', "2000")
    text = text.replace(
        "    limits:",
        "    destinations: {allow_countries: [NO, SE], deny_prefixes: [+1900]}\n    limits:",
    )
    policy = load_policy(text, "t")
    assert policy.emergency == ("911", "011")
    assert policy.extensions[0].match == "2000"
    assert policy.profiles["p"].destinations.allow_countries == frozenset({"NO", "SE"})
    assert policy.profiles["p"].destinations.deny_prefixes == ("1900",)


def test_extension_limits_merge_over_the_profile() -> None:
    """An entry's limits override the profile's field by field; spend merges period by period."""
    policy = load_policy(DEFAULT, "default")
    office = policy.profiles["office"].limits
    ext_2000 = policy.extensions[1].limits
    assert ext_2000.spend == Spend(Decimal("15.00"), Decimal("150.00"), Decimal("400.00"))
    assert ext_2000.calls_per_minute == office.calls_per_minute == 4
    assert ext_2000.short_calls == office.short_calls
    assert policy.extensions[0].limits == office
    assert policy.rule_for("2000") is policy.extensions[1]


def test_merge_limits_replaces_whole_bursts_and_keeps_zero() -> None:
    """A burst override replaces the profile's burst whole; a zero cap is a value, not "unset"."""
    base = Limits(
        calls_per_minute=4, same_number=Burst(3, 600), spend=Spend(Decimal(1), Decimal(5))
    )
    over = Limits(same_number=Burst(1, 60), spend=Spend(day=Decimal(0)))
    merged = merge_limits(base, over)
    assert merged == Limits(
        calls_per_minute=4, same_number=Burst(1, 60), spend=Spend(Decimal(1), Decimal(0))
    )


# One row per kind of mistake: (the policy text, line, key path, part of the message).
CASES: list[tuple[str, str, int, str, str]] = [
    ("unknown key", BASE + "site_limit: {}\n", 10, "site_limit", "did you mean 'site_limits'?"),
    (
        "unknown nested key",
        edited('{day: "10.00"}', '{day: "10.00"}, calls_per_minit: 3'),
        7,
        "profiles.p.limits.calls_per_minit",
        "did you mean 'calls_per_minute'?",
    ),
    (
        "wrong type",
        edited('{spend: {day: "10.00"}}', "[4]"),
        7,
        "profiles.p.limits",
        "expected a mapping",
    ),
    ("not a list", edited('["911"]', '"911"'), 3, "emergency", "expected a list such as"),
    (
        "not a number",
        edited('{spend: {day: "10.00"}}', "{calls_per_hour: lots}"),
        7,
        "profiles.p.limits.calls_per_hour",
        "expected a whole number from 0",
    ),
    (
        "missing site key",
        edited(", currency: USD", ""),
        2,
        "site.currency",
        "missing; expected an ISO 4217",
    ),
    ("missing top key", edited('emergency: ["911"]\n', ""), 0, "emergency", "missing; expected"),
    ("version", edited("version: 1", "version: 2"), 1, "version", "this callgate reads version 1"),
    ("region", edited("region: US", "region: us"), 2, "site.region", "write 'US'"),
    (
        "time zone",
        edited("America/New_York", "Europe/Londn"),
        2,
        "site.timezone",
        "did you mean 'Europe/London'?",
    ),
    ("currency", edited("USD", "dollars"), 2, "site.currency", "ISO 4217"),
    (
        "window",
        edited("    limits:", "    hours: {international: mon-fri 18:00-08:00}\n    limits:"),
        7,
        "profiles.p.hours.international",
        "end must be after start",
    ),
    (
        "window day",
        edited("    limits:", "    hours: {any: 'mon-fry 08:00-18:00'}\n    limits:"),
        7,
        "profiles.p.hours.any",
        "unknown day 'fry'",
    ),
    (
        "both country lists",
        edited(
            "    limits:",
            "    destinations: {allow_countries: [US], deny_countries: [CU]}\n    limits:",
        ),
        7,
        "profiles.p.destinations.deny_countries",
        "allow_countries and deny_countries cannot both be set",
    ),
    (
        "both type lists",
        edited(
            "    limits:",
            "    destinations: {deny_number_types: [uan], allow_number_types: [mobile]}\n    limits:",
        ),
        7,
        "profiles.p.destinations.deny_number_types",
        "cannot both be set",
    ),
    (
        "country",
        edited("    limits:", "    destinations: {deny_countries: [CU, XK1]}\n    limits:"),
        7,
        "profiles.p.destinations.deny_countries[1]",
        "unknown country 'XK1'",
    ),
    (
        "number type",
        edited("    limits:", "    destinations: {deny_number_types: [premium]}\n    limits:"),
        7,
        "profiles.p.destinations.deny_number_types[0]",
        "did you mean 'premium_rate'?",
    ),
    (
        "deny prefix",
        edited("    limits:", '    destinations: {deny_prefixes: ["1900"]}\n    limits:'),
        7,
        "profiles.p.destinations.deny_prefixes[0]",
        '"+" then digits',
    ),
    (
        "allow prefix",
        edited("    limits:", '    destinations: {allow_prefixes: ["+1 800"]}\n    limits:'),
        7,
        "profiles.p.destinations.allow_prefixes[0]",
        '"+" then digits',
    ),
    (
        "unknown shipped list",
        edited(
            "    limits:", "    destinations: {deny_prefixes: [{file: callgate:x}]}\n    limits:"
        ),
        7,
        "profiles.p.destinations.deny_prefixes[0].file",
        "callgate ships no list 'callgate:x'; it ships: callgate:irsf-starter",
    ),
    (
        "report mode typo",
        edited('{spend: {day: "10.00"}}', "{calls_per_hour: {value: 4, mode: reprot}}"),
        7,
        "profiles.p.limits.calls_per_hour.mode",
        "did you mean 'report'?",
    ),
    (
        "mode on a section",
        edited('{spend: {day: "10.00"}}', '{mode: report, spend: {day: "10.00"}}'),
        7,
        "profiles.p.limits.mode",
        "a mode belongs to one rule",
    ),
    (
        "rate prefix",
        edited("increment: 60", 'increment: 60, prefixes: {"+44": 0.02}'),
        4,
        "rates.prefixes.+44",
        'digits without "+"',
    ),
    (
        "no rate at all",
        edited("default: 0.05, increment: 60", "increment: 60"),
        4,
        "rates",
        "expected a default and/or prefixes",
    ),
    (
        "unknown profile",
        edited("profile: p}", "profile: q}"),
        9,
        "extensions[0].profile",
        "unknown profile 'q'; expected one of: p",
    ),
    (
        "backwards range",
        edited('"100-199"', '"199-100"'),
        9,
        "extensions[0].match",
        'backwards: it matches no extension; write "100-199"',
    ),
    ("bad match", edited('"100-199"', '"1 00"'), 9, "extensions[0].match", "expected an extension"),
    (
        "never used",
        BASE + '  - {match: "150", profile: p}\n  - {match: "150", profile: p}\n',
        11,
        "extensions[2].match",
        "never used: the entry at line 10 ('150') matches first",
    ),
    (
        "after the catch-all",
        BASE.replace('"100-199"', '"*"') + '  - {match: "150", profile: p}\n',
        10,
        "extensions[1].match",
        "('*') matches first",
    ),
    (
        "no extensions",
        edited('  - {match: "100-199", profile: p}\n', "").replace("extensions:", "extensions: []"),
        8,
        "extensions",
        "expected at least one entry",
    ),
    (
        "duration",
        edited('{spend: {day: "10.00"}}', "{same_number: {calls: 3, within: 10 minutes}}"),
        7,
        "profiles.p.limits.same_number.within",
        "'10 minutes' is not a duration",
    ),
    (
        "zero duration",
        edited('{spend: {day: "10.00"}}', "{max_call_duration: 0}"),
        7,
        "profiles.p.limits.max_call_duration",
        "expected a duration from 1s to 1d",
    ),
    (
        "shorter than increment",
        edited('{spend: {day: "10.00"}}', "{max_call_duration: 30s}"),
        7,
        "profiles.p.limits.max_call_duration",
        "shorter than the billing increment (60s)",
    ),
    (
        "burst needs both keys",
        edited('{spend: {day: "10.00"}}', "{distinct_numbers: {numbers: 5}}"),
        7,
        "profiles.p.limits.distinct_numbers.within",
        "missing; expected a sliding window",
    ),
    (
        "misplaced",
        BASE + "site_limits: {max_call_duration: 1h}\n",
        10,
        "site_limits.max_call_duration",
        "not allowed here: it limits each call",
    ),
    (
        "holiday",
        BASE + 'holidays: ["2026-12-25", "25/12/2026"]\n',
        10,
        "holidays[1]",
        "expected an ISO date YYYY-MM-DD",
    ),
    (
        "impossible holiday",
        BASE + "holidays: [2026-02-30]\n",
        10,
        "holidays[0]",
        "expected an ISO date",
    ),
    ("duplicate key", BASE + "version: 1\n", 10, "version", "duplicate key (first at line 1)"),
    (
        "duplicate profile",
        edited("extensions:", "  p: {}\nextensions:"),
        8,
        "profiles.p",
        "duplicate key",
    ),
    (
        "emergency",
        edited('["911"]', '["911", "91-1"]'),
        3,
        "emergency[1]",
        "emergency number as digits",
    ),
    (
        "outside line",
        edited("currency: USD", "currency: USD, outside_line: ['9#']"),
        2,
        "site.outside_line[0]",
        "digits as dialled",
    ),
    (
        "on_store_error",
        edited("currency: USD", "currency: USD, on_store_error: deny-intl"),
        2,
        "site.on_store_error",
        "unknown value 'deny-intl'",
    ),
    (
        "on_holidays",
        edited("    limits:", "    hours: {on_holidays: shut}\n    limits:"),
        7,
        "profiles.p.hours.on_holidays",
        "expected one of: closed, domestic_only, open",
    ),
    (
        "locks",
        BASE + "lockdown: {after_denied: {calls: 5, within: 10m}, locks: both}\n",
        10,
        "lockdown.locks",
        "expected one of: all, international",
    ),
    (
        "then",
        edited(
            '{spend: {day: "10.00"}}',
            "{short_calls: {calls: 5, shorter_than: 15s, within: 10m, then: ban}}",
        ),
        7,
        "profiles.p.limits.short_calls.then",
        "expected one of: alert, lock",
    ),
    (
        "negative money",
        edited('day: "10.00"', "day: -10"),
        7,
        "profiles.p.limits.spend.day",
        "must not be negative",
    ),
    (
        "exponent money",
        edited("default: 0.05", "default: 1e3"),
        4,
        "rates.default",
        "expected an amount",
    ),
    ("text money", edited("default: 0.05", "default: abc"), 4, "rates.default", "got 'abc'"),
    (
        "money too precise",
        edited("default: 0.05", "default: 0.0000001"),
        4,
        "rates.default",
        "at most 6 decimals",
    ),
    (
        "webhook",
        BASE + "alerts: {webhook: hooks.example.com}\n",
        10,
        "alerts.webhook",
        "https:// URL",
    ),
    (
        "broken URL",
        BASE + "alerts: {webhook: 'http://[::1'}\n",
        10,
        "alerts.webhook",
        "https:// URL",
    ),
    ("key that is a list", BASE + "? [a, b]\n: 1\n", 10, "", "expected a key name, got a list"),
    ("flag", BASE + "alerts: {syslog: 'yes'}\n", 10, "alerts.syslog", "expected true or false"),
    (
        "merge key",
        BASE + "site_limits: {<<: {concurrent_calls: 2}}\n",
        10,
        "site_limits",
        "merge keys (<<)",
    ),
    ("null", edited("region: US", "region: "), 2, "site.region", "got nothing"),
    (
        "YAML syntax",
        edited("  p:\n", "  p: [\n"),
        8,
        "",
        "(while parsing a flow sequence at line 6)",
    ),
    ("YAML two documents", BASE + "---\nversion: 1\n", 10, "", "expected a single document"),
    ("YAML tab", BASE + "\tfoo: 1\n", 10, "", "not valid YAML"),
    ("YAML control character", BASE + "x: \x01\n", 10, "", "not valid YAML"),
    ("empty file", "", 0, "", "the file is empty"),
    ("only comments", "# a policy\n", 0, "", "the file is empty"),
    ("not a mapping", "- version: 1\n", 1, "", "expected a mapping with keys version, site"),
    ("nested too deep", BASE + "x: " + "[" * 40 + "]" * 40 + "\n", 10, "", "nested more than 32"),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_problem(text: str, line: int, path: str, message: str) -> None:
    """The mistake is reported once, naming the file, the line and the key path, saying what is expected."""
    found = problems(text)
    assert [(p.source, p.line, p.path) for p in found] == [("p.yaml", line, path)], found
    assert message in found[0].message, found[0].message


def test_every_problem_is_reported_together() -> None:
    """Reading goes on past the first mistake: one PolicyError lists them all, in file order."""
    text = (
        BASE.replace("region: US", "region: USA")
        .replace("default: 0.05", "default: -1")
        .replace('day: "10.00"', 'day: "ten"')
        .replace("profile: p}", "profile: q}")
        + "alerts: {syslog: maybe}\nlockdown: {after_denied: {calls: 0, within: 1y}}\n"
    )
    found = problems(text)
    assert [(p.line, p.path) for p in found] == [
        (2, "site.region"),
        (4, "rates.default"),
        (7, "profiles.p.limits.spend.day"),
        (9, "extensions[0].profile"),
        (10, "alerts.syslog"),
        (11, "lockdown.after_denied.calls"),
        (11, "lockdown.after_denied.within"),
    ]
    assert str(found[0]).startswith("p.yaml:2: site.region: unknown region 'USA'")


def test_invalid_unicode_is_a_problem() -> None:
    """Text that cannot be UTF-8 (a lone surrogate) is a PolicyError, not a UnicodeError."""
    assert problems("version: 1\nsite: \ud800\n")[0].line == 2


def test_describe() -> None:
    """The summary names the site, the profiles, which extensions are covered and the caps."""
    lines = describe(load_policy(DEFAULT, "default"))
    text = "\n".join(lines)
    assert lines[0].startswith("site acme-nyc: region US, time zone America/New_York, currency USD")
    assert "emergency (always allowed, never counted): 911, 933" in text
    assert "rates: 7 prefixes, default 0.05/min, billed per 60s" in text
    assert "  2000 -> office with its own limits: spend 150.00/day" in text
    assert "  * -> lobby" in text
    assert "spend 300.00/day 3000.00/month" in text
    assert "calls up to 20m" in text
    small = "\n".join(
        describe(
            load_policy(edited("profile: p}", "profile: p, limits: {max_call_duration: 5m}}"), "b")
        )
    )
    assert "  100-199 -> p with its own limits: calls up to 5m" in small
    small = "\n".join(describe(load_policy(BASE, "base")))
    assert "any other extension is refused (unknown_extension)" in small
    assert "calls up to 2h (default)" in small
    assert "report only (checked and logged, never denied): none" in small
    assert "range list" not in small
    assert "destinations: countries CA, DE, FR, GB, MX, US; not types" in text
    assert "not +1900, +1976; always +18005551" in text


def test_without_modes_or_lists_nothing_is_report_only() -> None:
    """A policy that writes no mode and no list has empty report sets and no lists."""
    policy = load_policy(DEFAULT, "default")
    office = policy.profiles["office"]
    assert office.destinations.report == office.hours.report == office.limits.report == frozenset()
    assert policy.site_limits.report == frozenset()
    assert policy.lockdown is not None
    assert policy.lockdown.report == frozenset()
    assert policy.lists == ()
    assert office.destinations.prefix_lists == {}


TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(":-[]{}#&*!|>'\"%@`,?\n\t "))


@settings(deadline=None)
@given(TEXT)
def test_arbitrary_text_raises_only_policy_error(text: str) -> None:
    """Whatever the text, the loader returns a Policy or raises PolicyError; nothing else escapes."""
    with contextlib.suppress(PolicyError):
        assert isinstance(load_policy(text, "fuzz"), Policy)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(deadline=None)
@given(st.data())
def test_one_changed_value_raises_only_policy_error(data: st.DataObject) -> None:
    """The default policy with any one value replaced by any YAML value loads or raises PolicyError."""
    document: Any = yaml.safe_load(DEFAULT)
    parent, key = document, data.draw(st.sampled_from(sorted(document)))
    while isinstance(parent[key], dict | list) and parent[key] and data.draw(st.booleans()):
        parent = parent[key]
        keys = sorted(parent) if isinstance(parent, dict) else range(len(parent))
        key = data.draw(st.sampled_from(list(keys)))
    parent[key] = data.draw(VALUES)
    with contextlib.suppress(PolicyError):
        load_policy(yaml.safe_dump(document), "fuzz")


def test_the_emergency_list_is_bounded() -> None:
    """Each emergency number goes around the gate and all of them sit in one Asterisk global the
    dialplan searches on every call: a list of thousands is a mistake or an attack, refused."""
    many = "[" + ", ".join(f'"{n}"' for n in range(100, 100 + MAX_EMERGENCY + 1)) + "]"
    (problem,) = problems(edited('emergency: ["911"]', f"emergency: {many}"))
    assert (problem.line, problem.path) == (3, "emergency")
    assert f"at most {MAX_EMERGENCY} entries, not {MAX_EMERGENCY + 1}" in problem.message
    fine = "[" + ", ".join(f'"{n}"' for n in range(100, 100 + MAX_EMERGENCY)) + "]"
    assert (
        len(load_policy(edited('emergency: ["911"]', f"emergency: {fine}"), "p.yaml").emergency)
        == 32
    )
