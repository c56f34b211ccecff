"""The readers of a policy's scalar values: money, counts, durations, windows, names, codes, dates.

Each is a :data:`~callgate.core.policyyaml.Parse` of one scalar node, read from its text exactly as
written: money from its digits (``0.05`` is ``Decimal("0.05")``, never a float), ``NO`` (Norway),
``011`` or ``+1900`` stay what the admin typed. A wrong value is a problem that quotes it and says what
was expected. ``policyfile``'s schema tables name these readers key by key.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
import yaml

from callgate.core.numbers import NumberType
from callgate.core.policy import (
    FailMode,
    HolidayMode,
    LockScope,
    NewCountries,
    RuleMode,
    ShortCallAction,
    Window,
)
from callgate.core.policyyaml import Node, Parse, Reader, scalar_text, shown
from callgate.core.windows import format_duration, parse_date, parse_duration, parse_window

E = TypeVar(
    "E", FailMode, HolidayMode, LockScope, ShortCallAction, NumberType, RuleMode, NewCountries
)

_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
_MONEY = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?", re.ASCII)  # micro-units stay exact in Lua
_WHOLE = re.compile(r"[0-9]{1,9}", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,15}", re.ASCII)
_PLUS_DIGITS = re.compile(r"\+[0-9]{1,15}", re.ASCII)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)  # sites, profiles, endpoints
# A site, or a provider's tenant ``P/T`` (callgate.core.keys.site_prefix): two names and one "/"
SITE_NAME = re.compile(rf"{NAME.pattern}(?:/{NAME.pattern})?", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_MATCH = re.compile(r"\*|[A-Za-z0-9_.@#+-]{1,80}\*?", re.ASCII)
_RANGE = re.compile(r"([0-9]+)-([0-9]+)", re.ASCII)


def _pattern(pattern: re.Pattern[str], what: str, strip: int = 0) -> Parse[str]:
    """Text that ``pattern`` matches whole, less its first ``strip`` characters."""

    def parse(r: Reader, node: Node, path: str) -> str | None:
        text = scalar_text(r, node, path, what)
        if text is None or pattern.fullmatch(text):
            return None if text is None else text[strip:]
        r.problem(node, path, f"expected {what}, got {shown(node)}")
        return None

    return parse


site_name = _pattern(
    SITE_NAME,
    "a name of letters, digits, '.', '_' or '-', or a provider's tenant PROVIDER/TENANT of two such "
    "names (it is part of Redis keys)",
)
currency = _pattern(_CURRENCY, "an ISO 4217 currency code such as USD")
dialled = _pattern(_DIGITS, 'digits as dialled, such as "9"')
emergency = _pattern(_DIGITS, 'an emergency number as digits, such as "911"')
rate_prefix = _pattern(_DIGITS, 'an E.164 prefix as digits without "+", such as "44"')
e164_prefix = _pattern(
    _PLUS_DIGITS, 'an E.164 prefix: "+" then digits, such as "+1900", or {file: NAME}', 1
)


def amount(r: Reader, node: Node, path: str) -> Decimal | None:
    """An amount of money as written (at most six decimals), a Decimal: never through a float."""
    text = scalar_text(r, node, path, "an amount such as 0.05")
    if text is None or _MONEY.fullmatch(text):
        return None if text is None else Decimal(text)
    why = "must not be negative" if text.startswith("-") else "expected an amount"
    r.problem(node, path, f"{why}: digits with at most 6 decimals such as 0.05; got {shown(node)}")
    return None


def whole(least: int, most: int = 10**9 - 1) -> Parse[int]:
    def parse(r: Reader, node: Node, path: str) -> int | None:
        text = scalar_text(r, node, path, f"a whole number from {least}")
        if text is not None and _WHOLE.fullmatch(text) and least <= int(text) <= most:
            return int(text)
        if text is not None:
            r.problem(
                node, path, f"expected a whole number from {least} to {most}, got {shown(node)}"
            )
        return None

    return parse


def version(r: Reader, node: Node, path: str) -> int | None:
    text = scalar_text(r, node, path, "1")
    if text == "1":
        return 1
    if text is not None:
        r.problem(node, path, f"unsupported version {shown(node)}; this callgate reads version 1")
    return None


def _duration(most: int) -> Parse[int]:
    def parse(r: Reader, node: Node, path: str) -> int | None:
        text = scalar_text(r, node, path, "a duration such as 10m")
        try:
            length = parse_duration(text) if text is not None else None
        except ValueError as exc:
            r.problem(node, path, str(exc))
            return None
        if length is not None and not 1 <= length <= most:
            r.problem(
                node, path, f"expected a duration from 1s to {format_duration(most)}, got {text!r}"
            )
            return None
        return length

    return parse


within = _duration(31 * 86400)  # sliding windows: counters live that long in Redis
seconds = _duration(86400)


def call_length(r: Reader, node: Node, path: str) -> int | None:
    """A call's longest duration: at least one billing increment (``rates`` is read first)."""
    length = seconds(r, node, path)
    if length is not None and length < r.increment:
        r.problem(
            node, path, f"shorter than the billing increment ({r.increment}s): no call would fit"
        )
        return None
    return length


def window(r: Reader, node: Node, path: str) -> Window | None:
    text = scalar_text(r, node, path, "a time window such as 'mon-fri 08:00-18:00'")
    try:
        return parse_window(text) if text is not None else None
    except ValueError as exc:
        r.problem(node, path, str(exc))
        return None


def flag(r: Reader, node: Node, path: str) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
        return str(node.value).lower() in {"true", "yes", "on"}
    r.problem(node, path, f"expected true or false, got {shown(node)}")
    return None


def choice(kind: type[E]) -> Parse[E]:
    """One of the values of the enum ``kind``."""
    names = [member.value for member in kind]

    def parse(r: Reader, node: Node, path: str) -> E | None:
        text = scalar_text(r, node, path, f"one of {', '.join(names)}")
        if text is None or text in names:
            return None if text is None else kind(text)
        r.problem(node, path, f"unknown value {shown(node)}{r.hint(text, names)}")
        return None

    return parse


def region(word: str) -> Parse[str]:
    """A region libphonenumber knows, named ``word`` in messages (a country, a region)."""

    def parse(r: Reader, node: Node, path: str) -> str | None:
        code = scalar_text(r, node, path, f"a {word} code such as US")
        if code is None or code in _REGIONS:
            return code
        upper = f"; write {code.upper()!r}" if code.upper() in _REGIONS else ""
        expected = "an ISO 3166 alpha-2 code that libphonenumber knows, such as US or GB"
        r.problem(node, path, f"unknown {word} {code!r}: expected {expected}{upper}")
        return None

    return parse


def zone(r: Reader, node: Node, path: str) -> ZoneInfo | None:
    key = scalar_text(r, node, path, "an IANA time zone such as America/New_York")
    if key is None:
        return None
    try:
        return ZoneInfo(key)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        hint = r.hint(key, available_timezones())
        r.problem(
            node, path, f"unknown time zone {key!r}: expected one such as America/New_York{hint}"
        )
        return None


def holiday(r: Reader, node: Node, path: str) -> date | None:
    text = scalar_text(r, node, path, 'an ISO date such as "2026-12-25"')
    if text is None:
        return None
    try:
        return parse_date(text)
    except ValueError:
        r.problem(node, path, f'expected an ISO date YYYY-MM-DD such as "2026-12-25", got {text!r}')
        return None


def webhook(r: Reader, node: Node, path: str) -> str | None:
    url = scalar_text(r, node, path, "an http(s) URL")
    try:
        if url is None or (urlsplit(url).scheme in {"http", "https"} and urlsplit(url).hostname):
            return url
    except ValueError:
        pass
    r.problem(node, path, f"expected an http:// or https:// URL, got {shown(node)}")
    return None


def extension_match(r: Reader, node: Node, path: str) -> str | None:
    """An extensions entry's ``match``: one extension, a range (low to high), a prefix, or ``*``."""
    what = (
        'an extension such as "2000", a range such as "1001-1020", a prefix such as "10*", or "*"'
    )
    text = _pattern(_MATCH, what)(r, node, path)
    bounds = _RANGE.fullmatch(text or "")
    if not bounds:
        return text
    low, high = bounds[1], bounds[2]
    if int(low) <= int(high) and len(low) <= len(high):
        return text
    swapped = f"{high}-{low}"
    fix = swapped if int(high) <= int(low) and len(high) <= len(low) else "1001-1020"
    r.problem(
        node, path, f'the range {text!r} is backwards: it matches no extension; write "{fix}"'
    )
    return None
