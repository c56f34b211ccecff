"""Tests for callgate.core.numbers: reading what a user dialled."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from callgate.core import numbers
from callgate.core.numbers import MAX_DIGITS, NumberInfo, NumberType, read_number

T = NumberType
REGIONS = ["US", "GB", "DE", "FR", "AU"]
OUTSIDE = ("9",)
EMERGENCY = ("911", "933", "112", "999")

# dialled, region, outside_line, then what it reads to: e164, country, types, international
READABLE = [
    ("2125550123", "US", (), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("12125550123", "US", (), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("+12125550123", "US", (), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("2125550123", "us", (), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("011442079460000", "US", (), "+442079460000", "GB", {T.FIXED_LINE}, True),
    ("18765550123", "US", (), "+18765550123", "JM", {T.MOBILE}, True),
    ("+18765550123", "US", (), "+18765550123", "JM", {T.MOBILE}, True),
    ("18095550123", "US", (), "+18095550123", "DO", {T.FIXED_LINE_OR_MOBILE}, True),
    ("12423570000", "US", (), "+12423570000", "BS", {T.MOBILE}, True),
    ("19005550199", "US", (), "+19005550199", "US", {T.PREMIUM_RATE}, False),
    ("18005550199", "US", (), "+18005550199", "US", {T.TOLL_FREE}, False),
    ("912125550123", "US", OUTSIDE, "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("9011442079460000", "US", OUTSIDE, "+442079460000", "GB", {T.FIXED_LINE}, True),
    ("9175550123", "US", OUTSIDE, "+19175550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("912125550123", "US", ("8", "9"), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("900442079460000", "DE", ("9",), "+442079460000", "GB", {T.FIXED_LINE}, True),
    ("00049301234567", "DE", ("0",), "+49301234567", "DE", {T.FIXED_LINE}, False),
    ("8112125550123", "US", ("8", "81"), "+12125550123", "US", {T.FIXED_LINE_OR_MOBILE}, False),
    ("02079460000", "GB", (), "+442079460000", "GB", {T.FIXED_LINE}, False),
    ("902079460000", "GB", OUTSIDE, "+442079460000", "GB", {T.FIXED_LINE}, False),
    ("09065551234", "GB", (), "+449065551234", "GB", {T.PREMIUM_RATE}, False),
    ("08451234567", "GB", (), "+448451234567", "GB", {T.PREMIUM_RATE}, False),
    ("03001234567", "GB", (), "+443001234567", "GB", {T.UAN}, False),
    ("0033899123456", "GB", (), "+33899123456", "FR", {T.PREMIUM_RATE}, True),
    ("0011442079460000", "AU", (), "+442079460000", "GB", {T.FIXED_LINE}, True),
    ("+881612345678", "US", (), "+881612345678", None, {T.MOBILE, T.SATELLITE}, True),
    ("+870301234567", "US", (), "+870301234567", None, {T.MOBILE, T.SATELLITE}, True),
    ("+8823421234", "US", (), "+8823421234", None, {T.MOBILE, T.INTERNATIONAL_NETWORK}, True),
    ("+883510012345", "US", (), "+883510012345", None, {T.VOIP, T.INTERNATIONAL_NETWORK}, True),
    ("+979123456789", "US", (), "+979123456789", None, {T.PREMIUM_RATE}, True),
    ("+80012345678", "US", (), "+80012345678", None, {T.TOLL_FREE}, True),
]

OUTSIDE_ALPHABET = (
    "contains characters outside the dial-string alphabet (0-9, * and #, a leading +)"
)
FEATURE_CODE = "contains * or #: a feature code, not a number"

# dialled, region, outside_line, error
UNREADABLE = [
    ("", "US", (), "empty"),
    ("+", "US", (), "no digits"),
    ("   ", "US", (), OUTSIDE_ALPHABET),
    ("tel:", "US", (), OUTSIDE_ALPHABET),
    ("sip:@pbx", "US", (), OUTSIDE_ALPHABET),
    ("--", "US", (), OUTSIDE_ALPHABET),
    ("abc", "US", (), OUTSIDE_ALPHABET),
    ("1001'; DROP TABLE", "US", (), OUTSIDE_ALPHABET),
    ("\x00", "US", (), OUTSIDE_ALPHABET),
    ("91\x071", "US", (), OUTSIDE_ALPHABET),
    ("١٢٣٤٥٦٧٨٩٠", "US", (), OUTSIDE_ALPHABET),
    ("²¹²5550123", "US", (), OUTSIDE_ALPHABET),
    ("2+125550123", "US", (), OUTSIDE_ALPHABET),
    ("++442079460000", "US", (), OUTSIDE_ALPHABET),
    ("1-800-FLOWERS", "US", (), OUTSIDE_ALPHABET),
    ("*97", "US", (), FEATURE_CODE),
    ("*672125550123", "US", (), FEATURE_CODE),
    ("#31#2125550123", "US", (), FEATURE_CODE),
    ("+*", "US", (), FEATURE_CODE),
    ("9" * 200, "US", (), "too long"),
    ("1" * (MAX_DIGITS + 1), "US", (), "too long"),
    ("+" + "1" * (MAX_DIGITS + 1), "US", (), "too long"),
    ("12", "US", (), "too short"),
    ("1", "US", (), "not a phone number"),
    ("011", "US", (), "too short after the international prefix"),
    ("+999123456", "US", (), "invalid country code"),
    ("12425550123", "US", (), "invalid number for region BS"),
    ("+882123456789", "US", (), "invalid number"),
    ("9912125550123", "US", OUTSIDE, "too long"),
    ("0001234", "DE", (), "not a valid number after the international prefix"),
    (
        "0899316536",
        "IT",
        ("0",),
        "ambiguous: +390899316536 as dialled or +39899316536 after the outside line 0",
    ),
    (
        "00301234567",
        "DE",
        ("0",),
        "too short (it begins with the international prefix 00, so it is never"
        " read as a national number behind the outside line)",
    ),
]

# Security issue 8, finding 1: what a hostile phone put in the dialled string. Each was read as a
# valid number before (trimmed, unwrapped or converted); each is now refused as it stands.
HOSTILE_DIALLED = [
    " 011532345678",  # a leading space was stripped
    "011532345678 ",
    "011532345678\n",
    "sip:011532345678@pbx",  # URIs were unwrapped
    "tel:+5332345678",
    "011-53-2345678",  # separators were dropped
    "(011) 532345678",
    "011.53.2345678",
    "0115323,ext=1005",  # Stasis argument injection: the comma splits the arguments
    "011532345678,ext=1005,call=ATTACK",
    "011%2C532345678",  # a percent-encoded comma
    "０１１５３２３４５６７８",  # fullwidth digits
    "٠١١٥٣٢٣٤٥٦٧٨",  # Arabic-Indic digits
    "۰۱۱۵۳۲۳۴۵۶۷۸",  # extended Arabic-Indic digits
    "011532345678\x00",  # NUL
    "\x00011532345678",
    "011\u200b532345678",  # a zero-width space
    "*011532345678",  # a feature code prefix
    "011532345678#",
]


@pytest.mark.parametrize(
    "row",
    READABLE,
    ids=[f"{row[1]}:{row[0]}" for row in READABLE],
)
def test_readable(
    row: tuple[str, str, tuple[str, ...], str, str | None, set[NumberType], bool],
) -> None:
    """A valid number reads to its E.164 form, country, types and international flag."""
    dialled, region, outside_line, e164, country, types, international = row
    info = read_number(dialled, region=region, outside_line=outside_line, emergency=EMERGENCY)
    assert info == NumberInfo(
        dialled=dialled,
        e164=e164,
        country=country,
        types=frozenset(types),
        international=international,
        emergency=False,
        error=None,
    )
    assert info.readable


@pytest.mark.parametrize(
    ("dialled", "region", "outside_line", "error"),
    UNREADABLE,
    ids=[repr(row[0])[:24] for row in UNREADABLE],
)
def test_unreadable(dialled: str, region: str, outside_line: tuple[str, ...], error: str) -> None:
    """A string that is not a valid number gives a reason, no E.164, and counts as international."""
    info = read_number(dialled, region=region, outside_line=outside_line, emergency=EMERGENCY)
    assert info == NumberInfo(
        dialled=dialled,
        e164=None,
        country=None,
        types=frozenset(),
        international=True,
        emergency=False,
        error=error,
    )
    assert not info.readable


@pytest.mark.parametrize("dialled", HOSTILE_DIALLED, ids=[ascii(d)[:30] for d in HOSTILE_DIALLED])
@pytest.mark.parametrize(("region", "outside_line"), [("US", ()), ("US", ("9",)), ("DE", ("0",))])
def test_hostile_dialled_strings_are_refused_as_they_stand(
    dialled: str, region: str, outside_line: tuple[str, ...]
) -> None:
    """Anything outside 0-9 and a leading + makes the string unreadable; it is never trimmed."""
    info = read_number(dialled, region=region, outside_line=outside_line, emergency=EMERGENCY)
    assert (info.readable, info.emergency, info.e164) == (False, False, None)
    assert info.error in (OUTSIDE_ALPHABET, FEATURE_CODE)


@settings(max_examples=300, deadline=None)
@given(
    number=st.sampled_from(
        ["+442079460000", "011442079460000", "912125550123", "2125550123", "911"]
    ),
    where=st.integers(min_value=0, max_value=16),
    foreign=st.characters(exclude_characters="0123456789+*#"),
    region=st.sampled_from(REGIONS),
)
def test_one_foreign_character_makes_any_string_unreadable(
    number: str, where: int, foreign: str, region: str
) -> None:
    """One character outside the dial-string alphabet, anywhere, and nothing is read: not the
    number around it, not an emergency number."""
    dialled = number[:where] + foreign + number[where:]
    info = read_number(dialled, region=region, outside_line=OUTSIDE, emergency=EMERGENCY)
    assert (info.readable, info.emergency, info.error) == (False, False, OUTSIDE_ALPHABET)


@pytest.mark.parametrize(
    ("dialled", "region", "outside_line", "emergency"),
    [
        ("911", "US", (), ("911", "933")),
        ("933", "US", OUTSIDE, ("911", "933")),
        ("9911", "US", OUTSIDE, ("911",)),
        ("112", "DE", (), ("112", "110")),
        ("0112", "DE", ("0",), ("112", "110")),
        ("999", "GB", OUTSIDE, ("999", "112")),
        ("*911", "US", (), ("*911",)),  # * and # only where the list itself has them
    ],
    ids=["911", "933", "9911-outside-line", "DE-112", "DE-0112-outside-line", "GB-999", "star"],
)
def test_emergency(
    dialled: str, region: str, outside_line: tuple[str, ...], emergency: tuple[str, ...]
) -> None:
    """A number on the policy's emergency list, bare or after an outside line, is emergency."""
    info = read_number(dialled, region=region, outside_line=outside_line, emergency=emergency)
    assert info == NumberInfo(
        dialled=dialled,
        e164=None,
        country=region,
        types=frozenset(),
        international=False,
        emergency=True,
        error=None,
    )


@pytest.mark.parametrize(
    ("dialled", "outside_line", "emergency"),
    [
        ("911", (), ()),  # the policy is the authority, not phonenumbers' short-number data
        ("9911", (), ("911",)),  # no outside line configured
        ("+911", (), ("911",)),  # a "+" form is never an emergency code
        ("8911", OUTSIDE, ("911",)),  # not the configured prefix
        ("911\n", (), ("911",)),  # the trunk would receive the newline too
        (" 911", (), ("911",)),
        ("tel:911", (), ("911",)),
        ("９１１", (), ("911",)),  # fullwidth
        ("*911", (), ("911",)),
    ],
    ids=[
        "not-in-policy",
        "no-outside-line",
        "plus-form",
        "other-prefix",
        "newline",
        "space",
        "tel-uri",
        "fullwidth",
        "star",
    ],
)
def test_not_emergency(
    dialled: str, outside_line: tuple[str, ...], emergency: tuple[str, ...]
) -> None:
    """Only the policy's list, bare or after a configured outside line, makes a call emergency."""
    info = read_number(dialled, region="US", outside_line=outside_line, emergency=emergency)
    assert not info.emergency
    assert not info.readable


def test_long_input_skips_the_memo_but_reads_the_same() -> None:
    """An over-long dialled string is read uncached, with the same result as the worker's."""
    dialled = "+442079460000" + "0" * 200
    info = read_number(dialled, region="US")
    assert info == numbers._read_uncached(dialled, "US", (), ())
    assert (info.dialled, info.error) == (dialled, "too long")


def test_number_info_is_frozen() -> None:
    """NumberInfo is an immutable value."""
    info = read_number("2125550123", region="US")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.e164 = "+1"  # type: ignore[misc]


def test_number_type_values_are_the_policy_spelling() -> None:
    """The enum values are the strings the policy's deny_number_types uses."""
    assert {"premium_rate", "shared_cost", "uan", "personal_number"} <= {t.value for t in T}
    assert T("satellite") is T.SATELLITE


HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789", max_size=25),
    st.text(alphabet="0123456789", min_size=6, max_size=18).map(lambda s: "+" + s),
    st.text(alphabet="0123456789+-.() ;@:tesip", max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(
    dialled=HOSTILE,
    region=st.sampled_from(REGIONS),
    outside_line=st.sampled_from([(), ("9",), ("0",), ("9", "81")]),
    emergency=st.sampled_from([(), ("911",), ("112", "999")]),
)
def test_never_raises_and_e164_round_trips(
    dialled: str, region: str, outside_line: tuple[str, ...], emergency: tuple[str, ...]
) -> None:
    """Any text reads without raising; a readable E.164 is canonical and re-reads to itself."""
    info = read_number(dialled, region=region, outside_line=outside_line, emergency=emergency)
    assert info.dialled == dialled
    if info.readable:
        assert info.e164 is not None
        assert info.e164.startswith("+")
        assert info.e164[1:].isascii()
        assert info.e164[1:].isdigit()
        assert info.error is None
        assert info.types
        again = read_number(
            info.e164, region=region, outside_line=outside_line, emergency=emergency
        )
        assert again.e164 == info.e164
        assert again.country == info.country
        assert again.types == info.types
    elif info.emergency:
        assert info.error is None
    else:
        assert info.error
        assert not info.types


EXAMPLE_TYPES = [
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
]


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """A valid E.164 example number with its tail replaced by random digits, maybe without "+"."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(EXAMPLE_TYPES)))
    assert example is not None  # every type in EXAMPLE_TYPES has an example in every REGIONS
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    keep = draw(st.integers(min_value=3, max_value=len(e164)))
    tail = draw(st.text(alphabet="0123456789", max_size=len(e164) - keep + 2))
    text = e164[:keep] + tail
    return text if draw(st.booleans()) else text[1:]


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(alphabet="0123456789", min_size=3, max_size=MAX_DIGITS), near_valid()),
    region=st.sampled_from(REGIONS),
)
def test_readable_exactly_when_phonenumbers_says_valid(text: str, region: str) -> None:
    """Without outside lines, a number is readable exactly when phonenumbers calls it valid."""
    try:
        valid = phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        valid = False
    event(f"valid={valid}")
    assert read_number(text, region=region).readable == valid


@settings(max_examples=300, deadline=None)
@given(
    number_region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    kind=st.sampled_from(EXAMPLE_TYPES),
    site=st.sampled_from(REGIONS),
    style=st.sampled_from(["e164", "international", "rfc3966"]),
)
def test_example_numbers_read_back(number_region: str, kind: int, site: str, style: str) -> None:
    """Every example number phonenumbers ships reads to itself in E.164; written with spaces, dashes
    or as a ``tel:`` URI, it is refused: the gate judges what the trunk receives, never a cleaned copy."""
    example = phonenumbers.example_number_for_type(number_region, kind)
    if example is None:
        return
    formats = {
        "e164": phonenumbers.PhoneNumberFormat.E164,
        "international": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        "rfc3966": phonenumbers.PhoneNumberFormat.RFC3966,
    }
    written = phonenumbers.format_number(example, formats[style])
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    info = read_number(written, region=site, outside_line=OUTSIDE)
    if style == "e164":
        assert info.e164 == e164, written
        assert info.international == (info.country != site)
    else:
        assert (info.readable, info.error) == (False, OUTSIDE_ALPHABET), written


# dialled, region, what it reads to (None: refused) and why. Outside lines "0" and "9" on every row.
OUTSIDE_LINE_CASES = [
    ("912125550123", "US", "+12125550123", "stripped: the whole string is too long"),
    ("9175550123", "US", "+19175550123", "read whole: New York 917, nothing valid after the 9"),
    ("0015157646011", "DE", "+15157646011", "begins with the IDD 00: the US, not 0151 mobile"),
    ("00376712345", "DE", "+376712345", "begins with the IDD 00: Andorra, not +49 376712345"),
    ("001900212345", "AT", None, "begins with the IDD 00: never read as Vienna 01 900212345"),
    ("0899316536", "IT", None, "ambiguous: premium +39 899 or fixed line +39 0899"),
    ("000442079460000", "DE", "+442079460000", "outside line then the IDD: London"),
]


@pytest.mark.parametrize(
    ("dialled", "region", "e164", "why"),
    OUTSIDE_LINE_CASES,
    ids=[f"{row[1]}:{row[0]}" for row in OUTSIDE_LINE_CASES],
)
def test_outside_line_readings(dialled: str, region: str, e164: str | None, why: str) -> None:
    """The readings with and without the outside line: one valid number, or refused."""
    info = read_number(dialled, region=region, outside_line=("0", "9"))
    assert info.e164 == e164, (why, info.error)


def _docs_reading_table() -> list[tuple[str, tuple[str, ...], str, str | None]]:
    """The rows of docs/policy.md's table in "How a dialled string is read"."""
    text = (Path(__file__).parent.parent / "docs" / "policy.md").read_text(encoding="utf-8")
    section = text.split("## How a dialled string is read", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[2].startswith("`"):
            continue
        site, outside, dialled, read_as = cells
        e164 = None if read_as.startswith("refused") else read_as.split("`")[1].replace(" ", "")
        rows.append((site, tuple(json.loads(outside.strip("`"))), dialled.strip("`"), e164))
    return rows


def test_the_docs_table_is_what_the_reader_does() -> None:
    """Each example in docs/policy.md's table of readings is what read_number says."""
    rows = _docs_reading_table()
    assert len(rows) >= 8
    for site, outside_line, dialled, e164 in rows:
        info = read_number(dialled, region=site, outside_line=outside_line)
        assert info.e164 == e164, (site, dialled, info.error)
