"""Security issue 8, finding 6: the outside-line digit versus the international (IDD) prefix.

With ``outside_line: ["0"]``, Austria's ``001900-212-3456`` (a US 1-900 premium number) was read as
the Vienna number ``+4319002123456``: the leading ``0`` was taken for the outside line and the rest read
as a national number. The trunk that receives the string unchanged (FreePBX passes ``OUTNUM`` as it
is) dials the US. This module measures it over every example number phonenumbers ships, dialled the
ways a phone dials, from sites whose IDD takes one or several forms, and asserts that no number of
another country is ever read as domestic.

``python -m tests.test_outside_line`` prints the figures.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from callgate.core.numbers import read_number

OUTSIDE_LINE = "0"

# The site regions, and the IDD strings a phone there dials: each must match the region's IDD pattern
# in phonenumbers' metadata (asserted below), and the regions with several IDDs list several.
SITE_IDDS: dict[str, tuple[str, ...]] = {
    "AT": ("00",),
    "DE": ("00",),
    "CH": ("00",),
    "FR": ("00",),
    "IT": ("00",),
    "ES": ("00",),
    "NL": ("00",),
    "GB": ("00",),
    "SE": ("00",),
    "PL": ("00",),
    "AU": ("0011", "0014", "14110011"),  # 001[14-689] or a 14xx carrier code then 0011
    "BR": ("0014", "0021", "0099"),  # 00 then a carrier code
    "KR": ("001", "002", "00700"),  # one IDD per carrier
    "CN": ("00", "1790100"),
    "JP": ("010",),
    "KE": ("000",),
    "US": ("011",),
    "RU": ("810",),  # 8, wait for the tone, 10
    "CU": ("119",),
    "CV": ("0",),  # the IDD is the outside-line digit itself
}

TYPES = (
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)


@dataclass(frozen=True, slots=True)
class Example:
    e164: str
    region: str | None  # None: a non-geographic number (+800, +881, ...)
    country_code: int
    national_significant: str
    national: str  # as dialled inside its own country, trunk prefix included


def examples() -> list[Example]:
    """Every example number phonenumbers ships: every region and type, and the non-geographic ones."""
    found: dict[str, Example] = {}
    numbers = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in TYPES
    ]
    numbers += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    for number in numbers:
        if number is None:
            continue
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        region = phonenumbers.region_code_for_number(number)
        national = re.sub(
            r"[^0-9]", "", phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        )
        found[e164] = Example(
            e164,
            None if region in (None, "001", "ZZ") else region,
            number.country_code or 0,
            phonenumbers.national_significant_number(number),
            national,
        )
    return list(found.values())


@dataclass(frozen=True, slots=True)
class Form:
    site: str
    dialled: str
    example: Example
    how: str  # national | outside+national | idd | outside+idd


def forms() -> Iterator[Form]:
    """Each example number dialled from each site: nationally (numbers of the site's own numbering
    plan), and through each of the site's IDDs, each with and without the outside-line digit."""
    every = examples()
    for site, idds in SITE_IDDS.items():
        code = phonenumbers.country_code_for_region(site)
        for example in every:
            if example.region is not None and example.country_code == code:
                yield Form(site, example.national, example, "national")
                yield Form(site, OUTSIDE_LINE + example.national, example, "outside+national")
            for idd in idds:
                written = f"{idd}{example.country_code}{example.national_significant}"
                yield Form(site, written, example, "idd")
                yield Form(site, OUTSIDE_LINE + written, example, "outside+idd")


def measure() -> Counter[str]:
    """Read every form; count what each became. ``foreign read as domestic`` is the bypass."""
    seen: Counter[str] = Counter()
    for form in forms():
        info = read_number(form.dialled, region=form.site, outside_line=(OUTSIDE_LINE,))
        foreign = form.example.region != form.site
        seen["forms"] += 1
        if not info.readable:
            seen[f"refused ({form.how})"] += 1
        elif info.e164 != form.example.e164:
            seen[f"read as another number ({form.how})"] += 1
        if foreign and info.readable and not info.international:
            seen["foreign read as domestic"] += 1
    return seen


def test_site_idds_are_the_metadata_idds() -> None:
    """Every IDD string dialled here is one the region's metadata pattern accepts, whole."""
    for site, idds in SITE_IDDS.items():
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(site)
        assert metadata is not None
        assert metadata.international_prefix is not None
        assert all(re.fullmatch(metadata.international_prefix, idd) for idd in idds), site


@pytest.mark.parametrize(
    ("site", "dialled", "e164"),
    [
        ("AT", "0019002123456", "+19002123456"),  # the 001900-212-3456, as dialled
        ("DE", "00376712345", "+376712345"),  # Andorra, not +49 376712345
        ("AU", "0014442079460000", "+442079460000"),  # AU's second IDD (001[14-689])
        ("KR", "00700442079460000", "+442079460000"),  # KR's carrier IDD 00700
    ],
)
def test_the_idd_reading_wins(site: str, dialled: str, e164: str) -> None:
    """A string that begins with the site's IDD is read through it, never as a national number."""
    info = read_number(dialled, region=site, outside_line=(OUTSIDE_LINE,))
    assert (info.e164, info.international) == (e164, True)


@pytest.mark.parametrize(
    ("site", "dialled"),
    [
        ("DE", "00301234567"),  # 0 + Berlin 030 1234567, or 00 + Greece 30 1234567 (not valid)
        ("AT", "0015157646011"),  # 0 + 01 5157646011 (Vienna) or 00 + 1 515 764 6011 (Iowa)
    ],
)
def test_a_national_reading_behind_the_idd_is_never_taken(site: str, dialled: str) -> None:
    """When the string begins with the IDD, the national reading behind the outside line is dropped:
    the string is read through the IDD, or refused."""
    info = read_number(dialled, region=site, outside_line=(OUTSIDE_LINE,))
    assert not info.readable or info.international
    assert info.country != site


def test_no_example_number_of_another_country_is_read_as_domestic() -> None:
    """Over every example number, dialled every way, from every site: no foreign number is domestic."""
    seen = measure()
    assert seen["forms"] > 50_000
    assert seen["foreign read as domestic"] == 0, seen


if __name__ == "__main__":  # pragma: no cover - the figures for the report
    for what, count in sorted(measure().items()):
        print(f"{count:>8}  {what}")
