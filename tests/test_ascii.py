"""Security issue 8, finding 7: extensions and digits are ASCII everywhere.

``lock 1005 --all`` locked ``1005``, but 1005 written in Arabic-Indic, fullwidth, Persian (in part) or
NKo digits was allowed 7,200 s, each with counters of its own: str.isdigit() and int() accept the digits of every script, so the
range ``1001-1020`` took them, and ``"*"`` gave any other string a profile and a counter key.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate import cli
from callgate.core.engine import conclude
from callgate.core.memo import Memo
from callgate.core.numbers import read_number
from callgate.core.plan import prepare
from callgate.core.policy import EXTENSION_MAX, ExtensionRule, Policy, Profile, is_extension
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import CallAttempt
from callgate.store.memory import MemoryStore

AT = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))

POLICY = """
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: "0.01"}
profiles:
  staff: {limits: {calls_per_hour: 100, max_call_duration: 2h, spend: {day: "100.00"}}}
extensions:
  - {match: "1001-1020", profile: staff}
  - {match: "alice-desk", profile: staff}
  - {match: "20*", profile: staff}
  - {match: "*", profile: staff}
lockdown: {after_denied: {calls: 5, within: 10m}, locks: all}
"""

# 1005 written in other scripts (the four), and other strings that are not an extension.
NOT_1005 = [
    "١٠٠٥",  # Arabic-Indic
    "１００５",  # fullwidth
    "1۰۰5",  # extended Arabic-Indic in the middle
    "߁߀߀߅",  # NKo
    "१००५",  # Devanagari
    "𝟏𝟎𝟎𝟓",  # mathematical bold
]
NOT_AN_EXTENSION = [
    *NOT_1005,
    "",
    " 1005",
    "1005 ",
    "1005\x00",
    "1005\n",
    "10 05",
    "alice desk",
    "ａｌｉｃｅ-desk",
    "20٠٠",  # "20*" must not take it
    "1005,call=x",
    "1005;user=phone",
    "x" * (EXTENSION_MAX + 1),
]


@pytest.fixture
def policy() -> Policy:
    return load_policy(POLICY, "ascii")


@pytest.mark.parametrize("extension", NOT_AN_EXTENSION, ids=ascii)
def test_no_entry_matches_what_is_not_an_extension(policy: Policy, extension: str) -> None:
    """Not a range, not a prefix, not even "*": the caller is an unknown extension."""
    assert not is_extension(extension)
    assert policy.rule_for(extension) is None
    assert not any(rule.matches(extension) for rule in policy.extensions)


@pytest.mark.parametrize(
    ("extension", "match"),
    [("1005", "1001-1020"), ("alice-desk", "alice-desk"), ("2001", "20*"), ("Bob.Smith@x+1#", "*")],
)
def test_ascii_extensions_still_match(policy: Policy, extension: str, match: str) -> None:
    """The ASCII names a policy can write keep matching as before."""
    rule = policy.rule_for(extension)
    assert rule is not None
    assert rule.match == match


@pytest.mark.parametrize("extension", NOT_1005, ids=ascii)
async def test_a_lock_cannot_be_walked_around_in_another_script(extension: str) -> None:
    """The issue's case: with 1005 locked (all), 1005 in other digits is refused, not a fresh caller
    with 7,200 s, and the plan for it counts nothing and reserves nothing."""
    memo, store = Memo(load_policy(POLICY, "ascii")), MemoryStore()
    await store.set_lock("t", "1005", "all")
    for caller, reason in (
        ("1005", Reason.EXTENSION_LOCKED),
        (extension, Reason.UNKNOWN_EXTENSION),
    ):
        p = prepare(memo, CallAttempt(f"call-{caller!a}", caller, "2125550123"), AT)
        assert p.admission is not None
        d = conclude(p, store.admit_now(p.admission))
        assert (d.verdict, d.reason, d.allowed_seconds) == (Verdict.DENY, reason, 0)
    assert p.checks == ()
    assert p.admission is not None
    assert not p.admission.reserve
    assert store.reservations("t") == 0
    assert ascii(extension) in next(r.detail for r in d.rules if r.rule == "extension")


async def test_emergency_calls_pass_from_any_caller(policy: Policy) -> None:
    """An unknown or non-ASCII caller may still reach the emergency services."""
    p = prepare(Memo(policy), CallAttempt("e", "١٠٠٥", "911"), AT)
    d = conclude(p, None)
    assert (d.verdict, d.reason) == (Verdict.ALLOW, Reason.EMERGENCY)


def _profile() -> Profile:
    return Profile("p")


@pytest.mark.parametrize(
    ("match", "extension", "matched"),
    [
        ("1001-1020", "1005", True),
        ("1001-1020", "１００５", False),
        ("1001-1020", "1²05", False),  # superscript two: isdigit() is True, int() refuses it
        ("1001-1020", "10٠5", False),
        ("١-٩", "٥", False),  # a range in other digits is a name, and no extension anyway
        ("١-٩", "١-٩", False),
        ("10*", "10١", False),
        ("*", "١٠٠٥", False),
    ],
)
def test_range_and_prefix_matching_is_ascii(match: str, extension: str, matched: bool) -> None:
    """ExtensionRule.matches on its own: digits are [0-9], and no entry matches a non-extension."""
    rule = ExtensionRule(match, _profile(), _profile().limits)
    assert rule.matches(extension) is matched


UNICODE_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())


@settings(max_examples=200, deadline=None)
@given(
    ascii_digits=st.text(alphabet="0123456789", max_size=12),
    foreign=st.lists(UNICODE_DIGITS, min_size=1, max_size=4),
    where=st.integers(min_value=0, max_value=12),
)
def test_a_digit_of_another_script_is_never_a_digit(
    ascii_digits: str, foreign: list[str], where: int
) -> None:
    """Mixed into a number or an extension, any Unicode decimal digit that is not ASCII makes it
    unreadable as a number and no extension: never a number or an extension of its own."""
    text = ascii_digits[:where] + "".join(foreign) + ascii_digits[where:]
    assert all(unicodedata.category(c) == "Nd" for c in text)
    assert not is_extension(text)
    assert not ExtensionRule("0-99999999999999999999", _profile(), _profile().limits).matches(text)
    info = read_number(text, region="US", outside_line=("9",), emergency=("911",))
    assert (info.readable, info.emergency) == (False, False)


@pytest.mark.parametrize("command", ["lock", "unlock"])
@pytest.mark.parametrize(
    "extension", [*NOT_1005, "1005 ", "", "x" * (EXTENSION_MAX + 1)], ids=ascii
)
def test_admin_refuses_a_non_ascii_extension(
    command: str, extension: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`callgate lock/unlock` refuse what is not an extension, with a clear error, before Redis."""
    argv = [command, extension, "--site", "t", "--redis", "redis://127.0.0.1:1/0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{extension!a} is not an extension" in err
    assert "ASCII letters, digits" in err
