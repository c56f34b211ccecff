"""Reading what a user dialled: the pure number reader.

:func:`read_number` turns the raw dialled string into a :class:`NumberInfo`: the E.164 form, the
country, the number types, whether the call is international, whether it is an emergency call, or
why the string could not be read. It never raises on a dialled string, never does IO and keeps no
state; the only memory is an ``lru_cache`` over the pure worker.

The dialled string is hostile (security issue 8): it is judged exactly as the trunk would receive it,
never trimmed into something else. Reading order (the policy is the authority, see ``spec/policy.md``
and ``docs/policy.md``, "How a dialled string is read"):

1. Emergency: the string equals an entry of the policy's ``emergency`` list, as it is or after one of
   the ``outside_line`` prefixes. Nothing is stripped first: ``" 911"`` is not ``911``.
2. The dial-string alphabet: ASCII ``0``-``9``, one leading ``+``, ``*`` and ``#``. Anything else
   (spaces, ``sip:``, dashes, ``,ext=``, ``%2C``, NUL, fullwidth or Arabic-Indic digits) makes the
   string unreadable. ``*`` and ``#`` make it unreadable too (a feature code is not a number), unless
   step 1 found it. At most :data:`MAX_DIGITS` digits.
3. A ``+`` string is read as the international number it is, and only so.
4. Otherwise the candidate readings are the whole string and, for each ``outside_line`` prefix it
   begins with, what follows the prefix. A candidate that begins with the site's international (IDD)
   prefix (any of them: the metadata's ``international_prefix`` is a pattern) must be valid read
   through that prefix. When the whole string begins with the IDD, a candidate that does not (the
   national number behind an outside-line digit) is not a reading at all: a string that begins with
   the IDD is never read as a national number (``001900...`` in Austria is the US, not Vienna).
5. No valid reading: unreadable. One valid number (however many candidates name it): that number.
   Two valid readings that name different numbers: unreadable, as ambiguous. The engine cannot know
   which one the trunk will dial, and neither "international" nor "domestic" is stricter under every
   policy (a domestic premium number against an allowed foreign landline), so it is never guessed.

An unreadable number is denied by the gate (``unparseable_number``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import (
    CountryCodeSource,
    NumberParseException,
    PhoneNumberType,
    ValidationResult,
)

MAX_DIGITS = 20  # E.164 is at most 15 digits; room for an IDD (0011) and an outside-line prefix
_CACHE_SIZE = 65536
CACHE_MAX_INPUT = 128  # longer strings skip the memo so hostile input cannot bloat it

_NUMBER = re.compile(r"\+?[0-9]+", re.ASCII)  # what may be read as a number
_DIAL_STRING = re.compile(r"\+?[0-9*#]+", re.ASCII)  # what a phone may dial (feature codes too)
_NON_GEOGRAPHIC = frozenset({"001", "ZZ"})


class NumberType(StrEnum):
    """What kind of number it is; the values are the policy's spelling (``deny_number_types``)."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    SATELLITE = "satellite"
    INTERNATIONAL_NETWORK = "international_network"
    UNKNOWN = "unknown"


_FROM_PHONENUMBERS: dict[int, NumberType] = {
    PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    PhoneNumberType.MOBILE: NumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    PhoneNumberType.VOIP: NumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER: NumberType.PAGER,
    PhoneNumberType.UAN: NumberType.UAN,
    PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
}

# Types phonenumbers cannot express: Inmarsat (+870) and Iridium (+881) read as plain MOBILE.
_EXTRA_TYPES: dict[int, NumberType] = {
    870: NumberType.SATELLITE,
    881: NumberType.SATELLITE,
    882: NumberType.INTERNATIONAL_NETWORK,
    883: NumberType.INTERNATIONAL_NETWORK,
}

_PARSE_ERRORS: dict[int, str] = {
    NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_POSSIBLE_ERRORS: dict[int, str] = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "invalid length",
}


@dataclass(frozen=True, slots=True)
class NumberInfo:
    """What a dialled string means, or why it means nothing."""

    dialled: str  # exactly what came in
    e164: str | None  # "+442079460000"; None when unreadable or emergency
    country: str | None  # ISO alpha-2; None for non-geographic (+881, +979 ...) and unreadable
    types: frozenset[NumberType]  # empty when unreadable or emergency
    international: bool  # country differs from the site region; non-geographic and unreadable: True
    emergency: bool
    error: str | None  # None when readable (or emergency); otherwise a short human reason

    @property
    def readable(self) -> bool:
        """True when the dialled string is a valid number with an E.164 form."""
        return self.e164 is not None


def read_number(
    dialled: str,
    *,
    region: str,
    outside_line: tuple[str, ...] = (),
    emergency: tuple[str, ...] = (),
) -> NumberInfo:
    """Read ``dialled`` as a site in ``region`` would; never raises on any dialled string."""
    key = (dialled, region.upper(), tuple(outside_line), tuple(emergency))
    if len(dialled) > CACHE_MAX_INPUT:
        return _read_uncached(*key)
    return _read(*key)


@functools.lru_cache(maxsize=64)
def known_emergency(entries: tuple[str, ...], region: str) -> tuple[str, ...]:
    """The entries libphonenumber knows as emergency numbers of ``region`` (``999`` for GB), in order:
    what a tenant's own ``emergency:`` list may open around its provider's gate (callgate.tenants)."""
    return tuple(e for e in entries if phonenumbers.is_emergency_number(e, region.upper()))


def emergency_forms(emergency: tuple[str, ...], outside_line: tuple[str, ...]) -> dict[str, str]:
    """Every string that is an emergency call, and the number each one dials: each entry of the
    policy's ``emergency`` list as it is, then behind each ``outside_line`` prefix (``9112`` dials
    ``112``). An entry dialled as it is wins over the same string read behind a prefix.

    The one home of this rule: the reader, the number the gate hands the dialplan
    (``decision.Decision.dial``) and the list callgate publishes to Asterisk (``stasis``) all use it.
    Do not mutate the result (it is cached)."""
    forms = {number: number for number in emergency}
    for prefix in outside_line:
        for number in emergency:
            if prefix:
                forms.setdefault(prefix + number, number)
    return forms


def _read_uncached(
    dialled: str, region: str, outside_line: tuple[str, ...], emergency: tuple[str, ...]
) -> NumberInfo:
    """The pure worker behind :func:`read_number` (arguments already normalised)."""
    if dialled in emergency_forms(emergency, outside_line):
        return _emergency(dialled, region)
    error = _alphabet_error(dialled)
    if error is not None:
        return _unreadable(dialled, error)
    if dialled.startswith("+"):
        whole = _parse_valid(dialled, region, through_idd=False)
        return (
            _unreadable(dialled, whole)
            if isinstance(whole, str)
            else _readable(dialled, whole, region)
        )

    # The candidates: the whole string, then what follows each outside-line prefix (longest first).
    candidates = [("", dialled)]
    candidates += [
        (prefix, dialled[len(prefix) :])
        for prefix in sorted(set(outside_line), key=len, reverse=True)
        if prefix and dialled.startswith(prefix) and len(dialled) > len(prefix)
    ]
    idd = _idd(dialled, region)
    readings: dict[str, tuple[str, tuple[phonenumbers.PhoneNumber, int]]] = {}
    whole_error, dropped = "", False
    for prefix, text in candidates:
        through_idd = (idd if not prefix else _idd(text, region)) is not None
        if idd is not None and not through_idd:
            dropped = True  # begins with the IDD: never read as the national number behind it
            continue
        parsed = _parse_valid(text, region, through_idd=through_idd)
        if isinstance(parsed, str):
            whole_error = whole_error or parsed
            continue
        e164 = phonenumbers.format_number(parsed[0], phonenumbers.PhoneNumberFormat.E164)
        readings.setdefault(e164, (prefix, parsed))

    if len(readings) > 1:
        return _unreadable(dialled, _ambiguous(readings))
    if readings:
        ((e164, (_, parsed)),) = readings.items()
        return _readable(dialled, parsed, region, e164)
    if dropped:
        whole_error += (
            f" (it begins with the international prefix {idd}, so it is never read as a national"
            " number behind the outside line)"
        )
    return _unreadable(dialled, whole_error)


# A pure memo, not state: the same arguments always give the same NumberInfo.
_read = functools.lru_cache(maxsize=_CACHE_SIZE)(_read_uncached)


def _alphabet_error(dialled: str) -> str | None:
    """Why ``dialled`` cannot be a number as written (alphabet and length), or None."""
    if not dialled:
        return "empty"
    if dialled == "+":
        return "no digits"
    if not _NUMBER.fullmatch(dialled):
        if _DIAL_STRING.fullmatch(dialled):
            return "contains * or #: a feature code, not a number"
        return "contains characters outside the dial-string alphabet (0-9, * and #, a leading +)"
    if len(dialled) - dialled.startswith("+") > MAX_DIGITS:
        return "too long"
    return None


def _idd(digits: str, region: str) -> str | None:
    """The international (IDD) prefix that ``digits`` begins with in ``region``, or None.

    The metadata's ``international_prefix`` is a pattern: several IDDs where carriers have their own
    (Australia's ``001[14-689]``, Korea's ``00700``, Brazil's ``00`` then a carrier code).
    """
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    pattern = metadata.international_prefix if metadata is not None else None
    if not pattern:
        return None
    found = re.match(pattern, digits, re.ASCII)
    return found[0] if found else None


def _ambiguous(readings: dict[str, tuple[str, tuple[phonenumbers.PhoneNumber, int]]]) -> str:
    """The error of a string that reads as several valid numbers."""
    ways = [
        f"{e164} after the outside line {prefix}" if prefix else f"{e164} as dialled"
        for e164, (prefix, _) in readings.items()
    ]
    return "ambiguous: " + " or ".join(ways)


def _parse_valid(
    text: str, region: str, *, through_idd: bool
) -> tuple[phonenumbers.PhoneNumber, int] | str:
    """Return (the number, its phonenumbers type) when ``text`` is valid, else the reason why not.

    ``through_idd``: ``text`` begins with the region's IDD, so it is valid only when read through it
    (phonenumbers reads ``00`` then ``0...`` as a national number, as no country code begins with 0).
    ``number_type`` is UNKNOWN exactly when ``is_valid_number`` is False (both match the national
    number against the metadata of ``region_code_for_number``), so one call answers both.
    """
    try:
        number = phonenumbers.parse(text, region, keep_raw_input=through_idd)
    except NumberParseException as exc:
        return _PARSE_ERRORS.get(exc.error_type, "not a phone number")
    if through_idd and number.country_code_source != CountryCodeSource.FROM_NUMBER_WITH_IDD:
        return "not a valid number after the international prefix"
    kind = phonenumbers.number_type(number)
    if kind != PhoneNumberType.UNKNOWN:
        return number, kind
    reason = _POSSIBLE_ERRORS.get(phonenumbers.is_possible_number_with_reason(number))
    if reason is not None:
        return reason
    where = phonenumbers.region_code_for_number(number)
    if where is None or where in _NON_GEOGRAPHIC:
        return "invalid number"
    return f"invalid number for region {where}"


def _readable(
    dialled: str, parsed: tuple[phonenumbers.PhoneNumber, int], region: str, e164: str = ""
) -> NumberInfo:
    """Build the NumberInfo of a valid number (``e164``: its E.164 form, when already known)."""
    number, kind = parsed
    where = phonenumbers.region_code_for_number(number)
    country = None if where is None or where in _NON_GEOGRAPHIC else where
    mapped = _FROM_PHONENUMBERS.get(kind, NumberType.UNKNOWN)
    extra = _EXTRA_TYPES.get(number.country_code or 0)
    types = frozenset({mapped} if extra is None else {mapped, extra})
    return NumberInfo(
        dialled=dialled,
        e164=e164 or phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=country,
        types=types,
        international=country is None or country != region,
        emergency=False,
        error=None,
    )


def _emergency(dialled: str, region: str) -> NumberInfo:
    """Build the NumberInfo of a number on the policy's emergency list."""
    return NumberInfo(
        dialled=dialled,
        e164=None,
        country=region,
        types=frozenset(),
        international=False,
        emergency=True,
        error=None,
    )


def _unreadable(dialled: str, error: str) -> NumberInfo:
    """Build the NumberInfo of a string that is not a readable number."""
    return NumberInfo(
        dialled=dialled,
        e164=None,
        country=None,
        types=frozenset(),
        international=True,  # fail closed: where it goes is unknown
        emergency=False,
        error=error,
    )
