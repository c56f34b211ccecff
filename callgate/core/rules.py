"""The rules of a decision, in one ordered table (``ORDER``), and those that need no counter: small
functions over a :class:`Context`.

``ORDER`` names every rule a decision can list, in the order it lists them, with who judges each; the
engine's groups (``CALLER_RULES``, ``DESTINATION_RULES``, ``ORIGIN_RULES``, ``TIME_RULES``) and
``RULES`` (the names) are read from it. A decision's ``rules`` come in that order, as ``explain`` shows
them, and docs/policy.md's "The order of the rules" lists it (tests/test_ruling.py keeps both).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from callgate.core.keys import PERIODS, WINDOWS
from callgate.core.numbers import NumberInfo
from callgate.core.origins import Origin
from callgate.core.policy import (
    Destinations,
    ExtensionRule,
    HolidayMode,
    NewCountries,
    Policy,
    is_extension,
    report_only,
)
from callgate.core.reasons import Reason, number_type_reason, origin_reason

PASS, DENY, SKIP, REPORT = (
    "pass",
    "deny",
    "skip",
    "report",
)  # report: would deny, is in mode: report
# The outcome of a static rule whose verdict the store gives in the admission (new_country): its
# detail and reason are the denial it would be. Never in a decision: the engine puts the store's
# verdict in its place (engine.rule_on), or says the store could not be asked (on_store_failure).
ASK = "ask"


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """One outbound call as the gate sees it."""

    call_id: str  # the linkedid: the same for every trunk attempt of one call
    extension: str
    dialled: str
    account_code: str = ""
    # The channel that asked (its Asterisk unique id): a trunk failover re-enters on the same channel,
    # a ring group's or a transfer's other legs do not. Part of what a reservation is bound to.
    leg: str = ""
    # Who caused the leg: its phone dialled it, or a forward, transfer, DISA... of ``extension``
    # (core.origins). Set by the dialplan, never by the caller; any other origin only narrows.
    origin: Origin = Origin.DIALLED
    via: str = ""  # the inbound DID or trunk that brought the call in (the dialplan's): recorded


class RuleResult(NamedTuple):
    """What one rule said about one call. A NamedTuple, not a dataclass: a decision makes about twenty
    of these, and a tuple is built several times faster (``make bench``)."""

    rule: str
    outcome: str  # pass | deny | skip
    detail: str
    reason: Reason | None = None  # set when outcome is deny


@dataclass(frozen=True, slots=True)
class Context:
    """What the static rules look at."""

    policy: Policy
    attempt: CallAttempt
    number: NumberInfo
    rule: ExtensionRule | None
    local: datetime
    rate_prefix: str | None
    rate: Decimal | None
    excepted: str | None  # the allow_prefixes entry that matched, if any


_DAYS = (
    "Mon",
    "Tue",
    "Wed",
    "Thu",
    "Fri",
    "Sat",
    "Sun",
)  # not strftime's %a: that follows the locale

StaticRule = Callable[[Context], RuleResult]


def deny(rule: str, reason: Reason, detail: str) -> RuleResult:
    return RuleResult(rule, DENY, detail, reason)


# An objection one key of a rule raises: (the key's name for report_only, or None: always enforced),
# the reason it would deny with, and why.
Objection = tuple[str | None, Reason, str]


def _verdict(c: Context, rule: str, objections: list[Objection], passed: str) -> RuleResult:
    """The first enforced objection denies; else the first report-only one is reported; else a pass."""
    reported = None
    for key, reason, detail in objections:
        if key is not None and report_only(c.policy, c.rule, key):
            reported = reported or RuleResult(rule, REPORT, f"{detail} (mode: report)", reason)
        else:
            return deny(rule, reason, detail)
    return reported or RuleResult(rule, PASS, passed)


def _extension(c: Context) -> RuleResult:
    if c.rule is None and c.attempt.extension and not is_extension(c.attempt.extension):
        return deny(
            "extension",
            Reason.UNKNOWN_EXTENSION,
            f"{c.attempt.extension!a} is not an extension: ASCII letters, digits and _ . @ # + - only",
        )
    if c.rule is None:
        return deny(
            "extension",
            Reason.UNKNOWN_EXTENSION,
            f"no extensions entry matches {c.attempt.extension!r}",
        )
    return RuleResult("extension", PASS, f"{c.rule.match!r} -> profile {c.rule.profile.name}")


def _number(c: Context) -> RuleResult:
    if not c.number.readable:
        return deny("number", Reason.UNPARSEABLE_NUMBER, c.number.error or "cannot be read")
    where = c.number.country or "non-geographic"
    scope = "international" if c.number.international else "domestic"
    return RuleResult("number", PASS, f"{c.number.e164} {where}, {scope}")


def _countries(c: Context) -> RuleResult:
    rule = "destinations.countries"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.excepted:
        return RuleResult(rule, PASS, f"allow_prefixes +{c.excepted}")
    d, country = c.rule.profile.destinations, c.number.country
    objections: list[Objection] = []
    if d.allow_countries is not None and country not in d.allow_countries:
        where = country or "non-geographic"
        objections.append((rule, Reason.COUNTRY_NOT_ALLOWED, f"{where} is not in allow_countries"))
    if country in d.deny_countries:
        objections.append((rule, Reason.COUNTRY_NOT_ALLOWED, f"{country} is in deny_countries"))
    return _verdict(c, rule, objections, country or "non-geographic")


def _number_types(c: Context) -> RuleResult:
    rule = "destinations.number_types"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    kinds = ", ".join(sorted(c.number.types)) or "unknown"
    if c.excepted:
        return RuleResult(rule, PASS, f"{kinds}; allow_prefixes +{c.excepted}")
    d = c.rule.profile.destinations
    objections: list[Objection] = []
    denied = [kind for kind in sorted(c.number.types) if kind in d.deny_number_types]
    if denied:
        objections.append(
            (rule, number_type_reason(denied[0]), f"{denied[0]} is in deny_number_types")
        )
    if d.allow_number_types is not None and not c.number.types & d.allow_number_types:
        first = min(c.number.types) if c.number.types else None
        reason = number_type_reason(first) if first else Reason.NUMBER_TYPE_UNKNOWN
        objections.append((rule, reason, f"{kinds} not in allow_number_types"))
    return _verdict(c, rule, objections, kinds)


def _prefixes(c: Context) -> RuleResult:
    rule = "destinations.prefixes"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.excepted:
        return RuleResult(rule, PASS, f"+{c.excepted} is in allow_prefixes")
    d = c.rule.profile.destinations
    prefix = d.denied((c.number.e164 or "").lstrip("+"))  # the longest entry that matches
    if prefix is None:
        return RuleResult(rule, PASS, "no deny_prefixes entry matches")
    listed = d.prefix_lists.get(prefix)
    where = f" (list {listed})" if listed else ""
    objection = (rule, Reason.PREFIX_DENIED, f"+{prefix} is in deny_prefixes{where}")
    return _verdict(c, rule, [objection], "")


def _rate(c: Context) -> RuleResult:
    rule = "rates"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.rate is None:
        return deny(rule, Reason.NO_RATE, "no rates prefix matches and rates.default is not set")
    source = f"+{c.rate_prefix}" if c.rate_prefix else "default"
    limit = c.rule.profile.destinations.max_rate
    objections: list[Objection] = []
    if limit is not None and c.rate > limit:
        objections.append(
            (
                "destinations.max_rate",
                Reason.RATE_ABOVE_MAX,
                f"{c.rate}/min ({source}) is above max_rate {limit}",
            )
        )
    return _verdict(c, rule, objections, f"{c.rate}/min ({source})")


def _hours(c: Context) -> RuleResult:
    rule = "hours"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    hours, intl, when = (
        c.rule.profile.hours,
        c.number.international,
        f"{_DAYS[c.local.weekday()]} {c.local.hour:02d}:{c.local.minute:02d}",
    )
    objections: list[Objection] = []
    if c.local.date() in c.policy.holidays:
        day = c.local.date()
        if hours.on_holidays is HolidayMode.CLOSED:
            objections.append(("hours.on_holidays", Reason.HOLIDAY, f"{day} is a holiday: closed"))
        if hours.on_holidays is HolidayMode.DOMESTIC_ONLY and intl:
            objections.append(
                ("hours.on_holidays", Reason.HOLIDAY, f"{day} is a holiday: domestic only")
            )
    if hours.any is not None and not hours.any.contains(c.local):
        objections.append(
            ("hours.any", Reason.OUTSIDE_HOURS, f"{when} is outside any: {hours.any.text}")
        )
    if intl and hours.international is not None and not hours.international.contains(c.local):
        objections.append(
            (
                "hours.international",
                Reason.OUTSIDE_HOURS,
                f"{when} is outside international: {hours.international.text}",
            )
        )
    if objections:
        return _verdict(c, rule, objections, "")
    return RuleResult(rule, PASS, f"{when} {c.policy.site.timezone.key}")


# The origin rule of a phone's own call: its extension's profile alone judges it.
DIALLED_ORIGIN = RuleResult("origin", SKIP, "dialled by the extension: its profile alone")


def _origin(c: Context) -> RuleResult:
    """A leg that no phone dialled must also fit its origin's block (``origins:``, or the safe default):
    the block only narrows, the extension's profile has been judged already. Looks at the origin, the
    number and its rate, nothing else (memoised per origin and dialled string)."""
    rule, origin = "origin", c.attempt.origin
    if origin is Origin.DIALLED:
        return DIALLED_ORIGIN
    if not c.number.readable:
        return RuleResult(rule, SKIP, "")
    block, written = c.policy.origin_block(origin)
    where = f"origins.{origin.value}"
    default = "" if written else f" (the default for {origin}: domestic only, no premium types)"
    # the block's allow_prefixes win over its countries, types and deny_prefixes, not its max_rate
    excepted = block.allowed((c.number.e164 or "").lstrip("+"))
    reason = origin_reason(origin)
    objections = [
        (key, reason, f"{origin.value}: {why} {where}.{key}{default}")
        for key, why in _outside(block, c)
        if not excepted or key == "max_rate"
    ]
    reported = None
    for key, why, detail in objections:
        if key not in block.report:
            return deny(rule, why, detail)
        reported = reported or RuleResult(rule, REPORT, f"{detail} (mode: report)", why)
    if reported is None and excepted:
        return RuleResult(rule, PASS, f"{origin.value}: +{excepted} is in {where}.allow_prefixes")
    return reported or RuleResult(rule, PASS, f"{origin.value}: within {where}{default}")


# The new_country rule of a phone's own call: it is never limited to the countries the site knows.
DIALLED_NEW_COUNTRY = RuleResult(
    "new_country", SKIP, "dialled by the extension: any country its profile allows"
)


def _new_country(c: Context) -> RuleResult:
    """A leg that no phone dialled may not reach a country the site has never called, unless its
    origin's block says ``new_countries: allow``. What the policy settles alone (a domestic number,
    the site's ``known_countries``, ``allow``, the block's ``allow_prefixes``) is settled here; else
    the rule is ASKed of the store, which looks the country up in those it learned from answered
    calls (``keys.COUNTRIES``) in the same atomic admission. Looks at what the origin rule looks at
    (memoised with it)."""
    rule, origin, number = "new_country", c.attempt.origin, c.number
    if origin is Origin.DIALLED:
        return DIALLED_NEW_COUNTRY
    if not number.readable:
        return RuleResult(rule, SKIP, "")
    country = number.country
    if not number.international:
        return RuleResult(rule, PASS, f"{country or 'domestic'}: the site's own country")
    if country is not None and country in c.policy.site.known_countries:
        return RuleResult(rule, PASS, f"{country} is in site.known_countries")
    block, written = c.policy.origin_block(origin)
    where = f"origins.{origin.value}"
    if block.new_countries is NewCountries.ALLOW:
        return RuleResult(
            rule, PASS, f"{country or 'non-geographic'}: {where}.new_countries: allow"
        )
    excepted = block.allowed((number.e164 or "").lstrip("+"))
    if excepted:
        return RuleResult(rule, PASS, f"+{excepted} is in {where}.allow_prefixes")
    what = (
        f"{country} is a new country: no answered call from this site has reached it"
        if country is not None
        else f"{number.e164} is non-geographic: no country the site can have called"
    )
    default = "" if written else " (the default)"
    detail = f"{origin.value}: {what}; {where}.new_countries: deny{default}"
    return RuleResult(rule, ASK, detail, origin_reason(origin))


def _outside(block: Destinations, c: Context) -> list[tuple[str, str]]:
    """(the key, what of the number it objects to) for each key of ``block`` that the number is
    outside of, in the order of the destination rules: countries, number types, prefixes, rate."""
    number, country = c.number, c.number.country
    where = country or "non-geographic"
    out: list[tuple[str, str]] = []
    if block.allow_countries is not None and country not in block.allow_countries:
        out.append(("allow_countries", f"{where} is not in"))
    if country in block.deny_countries:
        out.append(("deny_countries", f"{where} is in"))
    denied = [kind for kind in sorted(number.types) if kind in block.deny_number_types]
    if denied:
        out.append(("deny_number_types", f"{denied[0]} is in"))
    if block.allow_number_types is not None and not number.types & block.allow_number_types:
        kinds = ", ".join(sorted(number.types)) or "unknown"
        out.append(("allow_number_types", f"{kinds} is not in"))
    prefix = block.denied((number.e164 or "").lstrip("+"))
    if prefix is not None:
        listed = block.prefix_lists.get(prefix)
        out.append(("deny_prefixes", f"+{prefix}{f' (list {listed})' if listed else ''} is in"))
    if block.max_rate is not None and c.rate is not None and c.rate > block.max_rate:
        out.append(("max_rate", f"{c.rate}/min is above"))
    return out


class RuleGroup(enum.StrEnum):
    """Who judges a rule. The static rules come in four groups by what they look at, and the engine
    memoises each group's results on exactly that (plan.prepare, memo.Memo): a rule that looks at more
    must go in a group that is keyed on it."""

    PREPARE = "prepare"  # plan.prepare itself: is the number an emergency one
    CALLER = "caller"  # the extension and its entry
    DESTINATION = (
        "destination"  # the entry, the number (a function of the dialled string), the policy
    )
    # the origin and the number with its rate (functions of the dialled string): never the entry;
    # new_country's verdict may be ASKed of the store (its countries), in the admission
    ORIGIN = "origin"
    TIME = "time"  # the entry, whether the number is readable and international, the local minute
    STORE = "store"  # the store: the lock and the panic switch; or on_store_error when it is down
    COUNTERS = "counters"  # the store's reading of the admission's checks (engine._limit_results)


# The scopes a call is counted in (extension, profile group, site) by the policy key of their limits,
# in the order plan.prepare plans them; each scope's counted limits but spend, in that order; then
# every scope's spend.
SCOPE_LIMITS = ("limits", "profile_limits", "site_limits")
# A tenant ``P/T``'s admission also counts its provider P's ``site_limits`` (plan.prepare's ``above``),
# under P's keys, after its own scopes: those rules are named ``provider_limits.<key>`` and deny with
# Reason.PROVIDER_LIMIT, whatever the key.
PROVIDER_LIMITS = "provider_limits"
COUNTED_SCOPES = (*SCOPE_LIMITS, PROVIDER_LIMITS)
COUNTED = (*(w.limit for w in WINDOWS), "concurrent_calls", "same_number", "distinct_numbers")

# Every rule a decision can list, in the order it lists them (the order of docs/policy.md), with who
# judges it and, for a static rule, its check. A store judges the counted ones in this order too: the
# first that fails gives the reason. "store" stands where the lock, new_country's lookup and the
# counted rules would be when the store cannot be reached (engine.on_store_failure).
ORDER: tuple[tuple[str, RuleGroup, StaticRule | None], ...] = (
    ("emergency", RuleGroup.PREPARE, None),
    ("extension", RuleGroup.CALLER, _extension),
    ("lock", RuleGroup.STORE, None),
    ("number", RuleGroup.DESTINATION, _number),
    ("destinations.countries", RuleGroup.DESTINATION, _countries),
    ("destinations.number_types", RuleGroup.DESTINATION, _number_types),
    ("destinations.prefixes", RuleGroup.DESTINATION, _prefixes),
    ("rates", RuleGroup.DESTINATION, _rate),
    ("origin", RuleGroup.ORIGIN, _origin),
    ("new_country", RuleGroup.ORIGIN, _new_country),
    ("hours", RuleGroup.TIME, _hours),
    ("store", RuleGroup.STORE, None),
    *(
        (f"{scope}.{name}", RuleGroup.COUNTERS, None)
        for scope in COUNTED_SCOPES
        for name in COUNTED
    ),
    *(
        (f"{scope}.spend.{period}", RuleGroup.COUNTERS, None)
        for scope in COUNTED_SCOPES
        for period in PERIODS
    ),
    ("limits.max_call_duration", RuleGroup.COUNTERS, None),
)
RULES: tuple[str, ...] = tuple(name for name, _, _ in ORDER)


def _group(group: RuleGroup) -> tuple[tuple[str, StaticRule], ...]:
    return tuple((name, check) for name, by, check in ORDER if by is group and check is not None)


CALLER_RULES = _group(RuleGroup.CALLER)
DESTINATION_RULES = _group(RuleGroup.DESTINATION)
ORIGIN_RULES = _group(RuleGroup.ORIGIN)
TIME_RULES = _group(RuleGroup.TIME)
