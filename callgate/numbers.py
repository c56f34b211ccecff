"""Reading what a user dialled: the pure number reader.

:func:`read_number` turns the raw dialled string into a :class:`NumberInfo`: the E.164 form, the
country, the number types, whether the call is international, whether it is an emergency call, or
why the string could not be read. It never raises on a dialled string, never does IO and keeps no
state; the only memory is an ``lru_cache`` over the pure worker.

Reading order (the policy is the authority, see ``spec/policy.md``):

1. Clean up: strip, unwrap ``tel:``/``sip:``/``sips:`` URIs, drop spaces, dashes, dots and
   parentheses. What is left must be ASCII digits with an optional leading ``+``, at most
   :data:`MAX_DIGITS` digits, or the number is unreadable.
2. Emergency: the cleaned digits equal an entry of the policy's ``emergency`` list.
3. The whole string, if phonenumbers says it is a valid number (IDD, ``+`` and national forms).
4. Each ``outside_line`` prefix (longest first), where what follows it is an emergency number or a
   valid number. So ``9175550123`` (New York 917) is read whole, ``912125550123`` is stripped.

A number phonenumbers cannot validate is unreadable: the gate denies it (``unparseable_number``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

MAX_DIGITS = 20  # E.164 is at most 15 digits; room for an IDD (0011) and an outside-line prefix
_CACHE_SIZE = 65536
CACHE_MAX_INPUT = 128  # longer strings skip the memo so hostile input cannot bloat it

_URI_SCHEMES = ("tel:", "sip:", "sips:")
_SEPARATORS = str.maketrans("", "", " -.()")
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


def _read_uncached(
    dialled: str, region: str, outside_line: tuple[str, ...], emergency: tuple[str, ...]
) -> NumberInfo:
    """The pure worker behind :func:`read_number` (arguments already normalised)."""
    digits, plus, error = _clean(dialled)
    if error is not None:
        return _unreadable(dialled, error)
    if not plus and digits in emergency:
        return _emergency(dialled, region)

    # policy.md: a prefix is stripped where what follows it is a valid number (the dial plan strips it,
    # so that is what the trunk dials: Italy's 0 + 899... is premium, not +39 0899...). Only when no
    # stripped reading is valid is the string read whole (New York's 917... behind outside line 9).
    if not plus:
        for prefix in sorted(outside_line, key=len, reverse=True):
            if not prefix or not digits.startswith(prefix) or len(digits) == len(prefix):
                continue
            rest = digits[len(prefix) :]
            if rest in emergency:
                return _emergency(dialled, region)
            stripped = _parse_valid(rest, region)
            if not isinstance(stripped, str):
                return _readable(dialled, stripped, region)

    whole = _parse_valid(("+" if plus else "") + digits, region)
    if not isinstance(whole, str):
        return _readable(dialled, whole, region)

    return _unreadable(dialled, whole)


# A pure memo, not state: the same arguments always give the same NumberInfo.
_read = functools.lru_cache(maxsize=_CACHE_SIZE)(_read_uncached)


def _clean(dialled: str) -> tuple[str, bool, str | None]:
    """Return (ASCII digits, had a leading plus, error) for the raw dialled string."""
    text = dialled.strip()
    lowered = text[:5].lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :].split("@", 1)[0].split(";", 1)[0].strip()
            break
    if not text:
        return "", False, "empty"
    text = text.translate(_SEPARATORS)
    plus = text.startswith("+")
    digits = text[1:] if plus else text
    if not digits:
        return "", plus, "no digits"
    if not (digits.isascii() and digits.isdigit()):
        return "", plus, "contains characters that are not digits"
    if len(digits) > MAX_DIGITS:
        return "", plus, "too long"
    return digits, plus, None


def _parse_valid(text: str, region: str) -> tuple[phonenumbers.PhoneNumber, int] | str:
    """Return (the number, its phonenumbers type) when ``text`` is valid, else the reason why not.

    ``number_type`` is UNKNOWN exactly when ``is_valid_number`` is False (both match the national
    number against the metadata of ``region_code_for_number``), so one call answers both.
    """
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return _PARSE_ERRORS.get(exc.error_type, "not a phone number")
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
    dialled: str, parsed: tuple[phonenumbers.PhoneNumber, int], region: str
) -> NumberInfo:
    """Build the NumberInfo of a valid number."""
    number, kind = parsed
    where = phonenumbers.region_code_for_number(number)
    country = None if where is None or where in _NON_GEOGRAPHIC else where
    mapped = _FROM_PHONENUMBERS.get(kind, NumberType.UNKNOWN)
    extra = _EXTRA_TYPES.get(number.country_code or 0)
    types = frozenset({mapped} if extra is None else {mapped, extra})
    return NumberInfo(
        dialled=dialled,
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
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
