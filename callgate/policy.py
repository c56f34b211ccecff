"""The policy model: frozen, typed values built once from the admin's YAML (see ``policyfile``).

Nothing here does IO. Money is :class:`~decimal.Decimal` in the site's currency; durations are whole
seconds; time windows are read in the site's time zone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from callgate.numbers import NumberType


class FailMode(enum.StrEnum):
    """What happens to a call when the counter store cannot be reached."""

    ALLOW = "allow"
    DENY = "deny"
    DENY_INTERNATIONAL = "deny_international"


class HolidayMode(enum.StrEnum):
    """How a holiday (a date in ``holidays``) changes the hours rule."""

    CLOSED = "closed"
    DOMESTIC_ONLY = "domestic_only"
    OPEN = "open"


class LockScope(enum.StrEnum):
    """What a lock on an extension refuses."""

    INTERNATIONAL = "international"
    ALL = "all"


class ShortCallAction(enum.StrEnum):
    """What a burst of short calls does."""

    LOCK = "lock"
    ALERT = "alert"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Span:
    """Some weekdays (0 = Monday) between two minutes of the day; ``end`` may be 1440 (24:00)."""

    days: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Window:
    """A weekly schedule such as ``mon-fri 08:00-18:00``; a time is inside when any span holds it."""

    text: str
    spans: tuple[Span, ...]

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        return any(day in s.days and s.start <= minute < s.end for s in self.spans)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    region: str
    timezone: ZoneInfo
    currency: str
    outside_line: tuple[str, ...] = ()
    on_store_error: FailMode = FailMode.DENY_INTERNATIONAL


@dataclass(frozen=True, slots=True)
class Rates:
    """Cost per minute by longest matching E.164 prefix (digits, no ``+``)."""

    default: Decimal | None
    increment: int = 1
    prefixes: Mapping[str, Decimal] = field(default_factory=dict)
    longest: int = 0  # length of the longest prefix, for the lookup

    def per_minute(self, e164: str) -> tuple[str | None, Decimal | None]:
        """The matching prefix (None for the default) and the rate, or (None, None) when unrated."""
        digits = e164.lstrip("+")
        for n in range(min(self.longest, len(digits)), 0, -1):
            rate = self.prefixes.get(digits[:n])
            if rate is not None:
                return digits[:n], rate
        return None, self.default


@dataclass(frozen=True, slots=True)
class Destinations:
    allow_countries: frozenset[str] | None = None
    deny_countries: frozenset[str] = frozenset()
    allow_number_types: frozenset[NumberType] | None = None
    deny_number_types: frozenset[NumberType] = frozenset()
    deny_prefixes: tuple[str, ...] = ()  # digits without "+"
    allow_prefixes: tuple[str, ...] = ()
    max_rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Hours:
    international: Window | None = None
    any: Window | None = None
    on_holidays: HolidayMode = HolidayMode.OPEN


@dataclass(frozen=True, slots=True)
class Burst:
    """``count`` events within ``within`` seconds (same_number uses ``calls``, distinct ``numbers``)."""

    count: int
    within: int


@dataclass(frozen=True, slots=True)
class ShortCalls:
    calls: int
    shorter_than: int
    within: int
    then: ShortCallAction = ShortCallAction.LOCK


@dataclass(frozen=True, slots=True)
class Spend:
    hour: Decimal | None = None
    day: Decimal | None = None
    month: Decimal | None = None

    def items(self) -> tuple[tuple[str, Decimal], ...]:
        """The caps that are set, as (period, amount), shortest period first."""
        return tuple(
            (period, cap)
            for period, cap in (("hour", self.hour), ("day", self.day), ("month", self.month))
            if cap is not None
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """Velocity, concurrency, duration and spend limits of one scope; ``None`` means no limit."""

    calls_per_minute: int | None = None
    calls_per_hour: int | None = None
    international_calls_per_hour: int | None = None
    concurrent_calls: int | None = None
    same_number: Burst | None = None
    distinct_numbers: Burst | None = None
    short_calls: ShortCalls | None = None
    max_call_duration: int | None = None
    spend: Spend = Spend()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    destinations: Destinations = Destinations()
    hours: Hours = Hours()
    limits: Limits = Limits()
    group_limits: Limits = (
        Limits()
    )  # over all extensions of this profile together ("profile_limits")


@dataclass(frozen=True, slots=True)
class ExtensionRule:
    """One entry of ``extensions``: which extensions it matches and the limits they get (merged)."""

    match: str
    profile: Profile
    limits: Limits  # the profile's limits with this entry's overrides merged over them
    line: int = 0

    def matches(self, extension: str) -> bool:
        pattern = self.match
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return extension.startswith(pattern[:-1])
        low, sep, high = pattern.partition("-")
        if not (sep and low.isdigit() and high.isdigit()):  # a name such as "alice-desk"
            return extension == pattern
        return (
            extension.isdigit()
            and len(low) <= len(extension) <= len(high)
            and int(low) <= int(extension) <= int(high)
        )


@dataclass(frozen=True, slots=True)
class Lockdown:
    after_denied: Burst
    locks: LockScope = LockScope.INTERNATIONAL


@dataclass(frozen=True, slots=True)
class Alerts:
    webhook: str | None = None
    syslog: bool = False


# When neither the profile nor the extension sets max_call_duration, a call still gets a hard limit.
DEFAULT_MAX_CALL_DURATION = 2 * 3600


@dataclass(frozen=True, slots=True)
class Policy:
    site: Site
    rates: Rates
    emergency: tuple[str, ...] = ()
    holidays: frozenset[date] = frozenset()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    extensions: tuple[ExtensionRule, ...] = ()
    site_limits: Limits = Limits()
    lockdown: Lockdown | None = None
    alerts: Alerts = Alerts()
    version: int = 1
    source: str = "<policy>"
    digest: str = ""  # sha256 of the source text, stamped on every decision

    def rule_for(self, extension: str) -> ExtensionRule | None:
        """The first ``extensions`` entry that matches, or None (the call is then refused)."""
        for rule in self.extensions:
            if rule.matches(extension):
                return rule
        return None
