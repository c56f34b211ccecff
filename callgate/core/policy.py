"""The policy model: frozen, typed values built once from the admin's YAML (see ``policyfile``).

Nothing here does IO. Money is :class:`~decimal.Decimal` in the site's currency; durations are whole
seconds; time windows are read in the site's time zone.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from callgate.core.keys import PERIODS
from callgate.core.numbers import NumberType
from callgate.core.origins import SAFE_DENIED_TYPES, Origin


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


class NewCountries(enum.StrEnum):
    """``new_countries:`` of an ``origins:`` block: may a leg of that origin reach a country the site
    has never called (no answered call to it settled, not the site's own, not in ``known_countries``)?"""

    DENY = "deny"  # the default, for every origin but dialled: never a first-seen country
    ALLOW = "allow"


class RuleMode(enum.StrEnum):
    """``mode:`` of one rule: ``report`` logs what the rule would deny and lets the call through."""

    ENFORCE = "enforce"
    REPORT = "report"


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
    # countries the site knows besides its own (``region``) and those it learns from answered calls:
    # a leg that no phone dialled may reach them whatever its origin's ``new_countries`` says
    known_countries: frozenset[str] = frozenset()


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
class PrefixTable:
    """A set of E.164 prefixes (digits, no ``+``) looked up as :class:`Rates` is: one probe per prefix
    length present, longest first, so at most 15 whatever the number of prefixes (a carrier's list of a
    million ranges costs what a list of ten does)."""

    prefixes: frozenset[str] = frozenset()
    lengths: tuple[int, ...] = ()  # the distinct lengths of the prefixes, longest first

    @classmethod
    def of(cls, prefixes: tuple[str, ...]) -> PrefixTable:
        lengths = set(map(len, prefixes))  # from the tuple: in order in memory, unlike the set
        return cls(frozenset(prefixes), tuple(sorted(lengths, reverse=True)))

    def longest(self, digits: str) -> str | None:
        """The longest prefix of ``digits`` in the table, or None."""
        prefixes, size = self.prefixes, len(digits)
        for n in self.lengths:
            if n <= size and digits[:n] in prefixes:
                return digits[:n]
        return None


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where a profile's extensions may call. ``report`` names the keys in ``mode: report``.

    ``deny_prefixes`` and ``allow_prefixes`` hold every prefix, those written inline and those read
    from list files, in the policy's order; ``prefix_lists`` says which list each file-read prefix came
    from. The rules look them up with :meth:`denied` and :meth:`allowed` (tables built from them).
    """

    allow_countries: frozenset[str] | None = None
    deny_countries: frozenset[str] = frozenset()
    allow_number_types: frozenset[NumberType] | None = None
    deny_number_types: frozenset[NumberType] = frozenset()
    deny_prefixes: tuple[str, ...] = ()  # digits without "+"
    allow_prefixes: tuple[str, ...] = ()
    max_rate: Decimal | None = None
    # an ``origins:`` block's only (a profile's destinations do not take it): may the origin's legs
    # reach a country the site has never called (rules: new_country)
    new_countries: NewCountries = NewCountries.DENY
    report: frozenset[str] = frozenset()  # e.g. {"deny_prefixes", "max_rate"}
    prefix_lists: Mapping[str, str] = field(default_factory=dict)  # digits -> list name
    _deny: PrefixTable = field(init=False, repr=False, compare=False)
    _allow: PrefixTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_deny", PrefixTable.of(self.deny_prefixes))
        object.__setattr__(self, "_allow", PrefixTable.of(self.allow_prefixes))

    def denied(self, digits: str) -> str | None:
        """The longest ``deny_prefixes`` entry that ``digits`` (an E.164 number without ``+``) begins
        with, or None."""
        return self._deny.longest(digits)

    def allowed(self, digits: str) -> str | None:
        """The longest ``allow_prefixes`` entry that ``digits`` begins with, or None."""
        return self._allow.longest(digits)


@dataclass(frozen=True, slots=True)
class Hours:
    """When a profile's extensions may call. ``report`` names the keys in ``mode: report``."""

    international: Window | None = None
    any: Window | None = None
    on_holidays: HolidayMode = HolidayMode.OPEN
    report: frozenset[str] = frozenset()  # e.g. {"international"}


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
        """The caps that are set, as (period, amount), shortest period first (``keys.PERIODS``)."""
        caps = ((period, getattr(self, period)) for period in PERIODS)
        return tuple((period, cap) for period, cap in caps if cap is not None)


@dataclass(frozen=True, slots=True)
class Limits:
    """Velocity, concurrency, duration and spend limits of one scope; ``None`` means no limit.

    ``report`` names the limits in ``mode: report``: the keys (``"same_number"``), and for spend each
    period that is set (``"spend.day"``), so that an extension's override merges period by period.
    """

    calls_per_minute: int | None = None
    calls_per_hour: int | None = None
    international_calls_per_hour: int | None = None
    concurrent_calls: int | None = None
    same_number: Burst | None = None
    distinct_numbers: Burst | None = None
    short_calls: ShortCalls | None = None
    max_call_duration: int | None = None
    spend: Spend = Spend()
    report: frozenset[str] = frozenset()  # e.g. {"calls_per_minute", "spend.day"}


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
        """Whether this entry covers ``extension``. ASCII only: nothing, not even ``"*"``, matches a
        string that is not an extension (:func:`is_extension`), so 1005 written in fullwidth or
        Arabic-Indic digits never gets a profile, or counters of its own beside ``1005``."""
        if not is_extension(extension):
            return False
        pattern = self.match
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return extension.startswith(pattern[:-1])
        low, sep, high = pattern.partition("-")
        if not (sep and _ascii_digits(low) and _ascii_digits(high)):  # a name: "alice-desk"
            return extension == pattern
        return (
            _ascii_digits(extension)
            and len(low) <= len(extension) <= len(high)
            and int(low) <= int(extension) <= int(high)
        )


# What an extension may be: what an ``extensions[].match`` entry can name (docs/policy.md).
EXTENSION_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@#+-"
)
EXTENSION_MAX = 80


def is_extension(text: str) -> bool:
    """ASCII letters, digits and ``_ . @ # + -``, 1 to :data:`EXTENSION_MAX` characters.

    Anything else (1005 in fullwidth, Arabic-Indic, Persian or NKo digits, a space, NUL) is no
    extension: str.isdigit() and int() accept the decimal digits of every script, this does not.
    """
    return 0 < len(text) <= EXTENSION_MAX and EXTENSION_CHARACTERS.issuperset(text)


def _ascii_digits(text: str) -> bool:
    """``[0-9]+``: str.isdigit() alone also takes Arabic-Indic, fullwidth and superscript digits."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Lockdown:
    after_denied: Burst
    locks: LockScope = LockScope.INTERNATIONAL
    report: frozenset[str] = frozenset()  # {"after_denied"}: log the lock it would set, set none


@dataclass(frozen=True, slots=True)
class PrefixList:
    """A destination range list that ``deny_prefixes`` or ``allow_prefixes`` names (``{file: ...}``).

    ``name`` is the name as the policy writes it (``callgate:irsf-starter``, ``lists/provider.txt``);
    ``prefixes`` are digits without ``+``; ``digest`` is the sha256 of the list's text.
    """

    name: str
    source: str  # where the list comes from: its "# source:" header
    prefixes: tuple[str, ...]
    expires: date | None = None  # the last day the list's author vouches for it
    digest: str = ""

    def expired(self, today: date) -> bool:
        """Past its ``# expires:`` date. An expired list is still enforced; it is reported."""
        return self.expires is not None and today > self.expires


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
    # PJSIP endpoint name -> the extension it is charged as, where the two differ (callgate.asterisk.identity)
    endpoints: Mapping[str, str] = field(default_factory=dict)
    site_limits: Limits = Limits()
    lockdown: Lockdown | None = None
    alerts: Alerts = Alerts()
    version: int = 1
    source: str = "<policy>"
    digest: str = ""  # sha256 of the source text and its lists, stamped on every decision
    revision: int = (
        0  # the version it was pushed as in Redis (callgate.ops.policystore); 0: a local file
    )
    lists: tuple[PrefixList, ...] = ()  # the range lists the policy reads, by name
    # what a leg of each origin the policy names may reach (``origins:``), over its extension's profile
    origins: Mapping[Origin, Destinations] = field(default_factory=dict)

    def origin_block(self, origin: Origin) -> tuple[Destinations, bool]:
        """What a leg of ``origin`` may reach besides its extension's profile, and whether the policy
        says so (False: the safe default, :func:`safe_origin_block`). Not for ``dialled``."""
        written = self.origins.get(origin)
        if written is not None:
            return written, True
        return safe_origin_block(self.site.region), False

    def rule_for(self, extension: str) -> ExtensionRule | None:
        """The first ``extensions`` entry that matches, or None (the call is then refused).

        No entry, not even ``*``, matches the empty extension: a caller that could not be identified
        (callgate.asterisk.identity) is refused."""
        if not extension:
            return None
        for rule in self.extensions:
            if rule.matches(extension):
                return rule
        return None

    def expired_lists(self, today: date) -> tuple[PrefixList, ...]:
        """The range lists past their ``# expires:`` date: still enforced, to be reported."""
        return tuple(found for found in self.lists if found.expired(today))


@functools.lru_cache(maxsize=16)
def safe_origin_block(region: str) -> Destinations:
    """What a leg that no phone dialled may reach when the policy's ``origins:`` does not name its
    origin: the site's own country only, no number type that pays the called party
    (:data:`~callgate.core.origins.SAFE_DENIED_TYPES`), and no first-seen country
    (``new_countries: deny``). Cached: the same region, the same block."""
    return Destinations(
        allow_countries=frozenset({region}), deny_number_types=frozenset(SAFE_DENIED_TYPES)
    )


# Engine result names that are not a policy key themselves, and the keys whose mode they take.
_RESULT_KEYS: Mapping[str, tuple[str, ...]] = {
    "destinations.countries": ("allow_countries", "deny_countries"),
    "destinations.number_types": ("allow_number_types", "deny_number_types"),
    "destinations.prefixes": ("deny_prefixes",),
}


def report_only(policy: Policy, rule: ExtensionRule | None, name: str) -> bool:
    """Whether rule ``name`` is in ``mode: report`` for the calls of ``rule`` (None: no entry matched).

    A report-only rule is still checked; when it would deny, the call goes on to the next rule and the
    decision records what it would have denied. ``name`` is a rule name (``rules.RULES``)
    or the key path of a rule, as the policy file writes it below an extension's scope:

    ================================  ===================================================================
    name                              the mode of
    ================================  ===================================================================
    ``destinations.countries``        ``allow_countries`` or ``deny_countries`` (only one can be set)
    ``destinations.number_types``     ``allow_number_types`` or ``deny_number_types``
    ``destinations.prefixes``         ``deny_prefixes`` (``allow_prefixes`` has no mode)
    ``destinations.KEY``              that key of the profile's destinations, e.g. ``max_rate``
    ``hours.KEY``                     ``any``, ``international`` or ``on_holidays`` of the profile's hours
    ``limits.KEY``                    the extension's limits: the profile's with the entry's merged over
    ``limits.spend.PERIOD``           one spend cap: ``hour``, ``day`` or ``month``
    ``profile_limits.KEY``            the profile's ``profile_limits`` (``...spend.PERIOD`` likewise)
    ``site_limits.KEY``               ``site_limits`` (``...spend.PERIOD`` likewise)
    ``lockdown.after_denied``         the lockdown rule: report-only logs the lock it would set
    ================================  ===================================================================

    Every other name is enforced (False): ``emergency``, ``extension``, ``lock``, ``number``, ``store``,
    unknown names (a typo never switches a rule off), and the names that cover more than one key, which
    the engine must ask about by the key that denied: ``rates`` (``no_rate`` is always enforced; ask
    ``destinations.max_rate`` for ``rate_above_max``), ``hours`` (ask ``hours.on_holidays``,
    ``hours.any`` or ``hours.international``) and ``limits.spend`` without a period.
    """
    section, _, key = name.partition(".")
    if section == "lockdown":
        return policy.lockdown is not None and key in policy.lockdown.report
    if section == "site_limits":
        return key in policy.site_limits.report
    if rule is None:
        return False
    if section == "limits":
        return key in rule.limits.report
    if section == "profile_limits":
        return key in rule.profile.group_limits.report
    if section == "destinations":
        report = rule.profile.destinations.report
        return any(k in report for k in _RESULT_KEYS.get(name, (key,)))
    if section == "hours":
        return key in rule.profile.hours.report
    return False
