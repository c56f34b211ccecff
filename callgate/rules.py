"""The rules that need no counter: plain data and small functions over a :class:`Context`.

``STATIC_RULES`` is the ordered table the engine runs; ``explain``, the audit log and the docs list it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from callgate.numbers import NumberInfo
from callgate.policy import ExtensionRule, HolidayMode, Policy
from callgate.reasons import Reason, number_type_reason

PASS, DENY, SKIP = "pass", "deny", "skip"


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """One outbound call as the gate sees it."""

    call_id: str  # the linkedid: the same for every trunk attempt of one call
    extension: str
    dialled: str
    account_code: str = ""


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


def _extension(c: Context) -> RuleResult:
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
    if d.allow_countries is not None and country not in d.allow_countries:
        return deny(
            rule,
            Reason.COUNTRY_NOT_ALLOWED,
            f"{country or 'non-geographic'} is not in allow_countries",
        )
    if country in d.deny_countries:
        return deny(rule, Reason.COUNTRY_NOT_ALLOWED, f"{country} is in deny_countries")
    return RuleResult(rule, PASS, country or "non-geographic")


def _number_types(c: Context) -> RuleResult:
    rule = "destinations.number_types"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    kinds = ", ".join(sorted(c.number.types)) or "unknown"
    if c.excepted:
        return RuleResult(rule, PASS, f"{kinds}; allow_prefixes +{c.excepted}")
    d = c.rule.profile.destinations
    for kind in sorted(c.number.types):
        if kind in d.deny_number_types:
            return deny(rule, number_type_reason(kind), f"{kind} is in deny_number_types")
    if d.allow_number_types is not None and not c.number.types & d.allow_number_types:
        first = min(c.number.types) if c.number.types else None
        reason = number_type_reason(first) if first else Reason.NUMBER_TYPE_UNKNOWN
        return deny(rule, reason, f"{kinds} not in allow_number_types")
    return RuleResult(rule, PASS, kinds)


def _prefixes(c: Context) -> RuleResult:
    rule = "destinations.prefixes"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.excepted:
        return RuleResult(rule, PASS, f"+{c.excepted} is in allow_prefixes")
    digits = (c.number.e164 or "").lstrip("+")
    for prefix in c.rule.profile.destinations.deny_prefixes:
        if digits.startswith(prefix):
            return deny(rule, Reason.PREFIX_DENIED, f"+{prefix} is in deny_prefixes")
    return RuleResult(rule, PASS, "no deny_prefixes entry matches")


def _rate(c: Context) -> RuleResult:
    rule = "rates"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.rate is None:
        return deny(rule, Reason.NO_RATE, "no rates prefix matches and rates.default is not set")
    source = f"+{c.rate_prefix}" if c.rate_prefix else "default"
    limit = c.rule.profile.destinations.max_rate
    if limit is not None and c.rate > limit:
        return deny(
            rule, Reason.RATE_ABOVE_MAX, f"{c.rate}/min ({source}) is above max_rate {limit}"
        )
    return RuleResult(rule, PASS, f"{c.rate}/min ({source})")


def _hours(c: Context) -> RuleResult:
    rule = "hours"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    hours, intl, when = (
        c.rule.profile.hours,
        c.number.international,
        f"{_DAYS[c.local.weekday()]} {c.local.hour:02d}:{c.local.minute:02d}",
    )
    if c.local.date() in c.policy.holidays:
        if hours.on_holidays is HolidayMode.CLOSED:
            return deny(rule, Reason.HOLIDAY, f"{c.local.date()} is a holiday: closed")
        if hours.on_holidays is HolidayMode.DOMESTIC_ONLY and intl:
            return deny(rule, Reason.HOLIDAY, f"{c.local.date()} is a holiday: domestic only")
    if hours.any is not None and not hours.any.contains(c.local):
        return deny(rule, Reason.OUTSIDE_HOURS, f"{when} is outside any: {hours.any.text}")
    if intl and hours.international is not None and not hours.international.contains(c.local):
        return deny(
            rule,
            Reason.OUTSIDE_HOURS,
            f"{when} is outside international: {hours.international.text}",
        )
    return RuleResult(rule, PASS, f"{when} {c.policy.site.timezone.key}")


# The rules that need no counter, in the order policy.md gives. "lock" and the counted rules follow
# them in the decision's rule list (see LIMIT_RULES).
STATIC_RULES: tuple[tuple[str, StaticRule], ...] = (
    ("extension", _extension),
    ("number", _number),
    ("destinations.countries", _countries),
    ("destinations.number_types", _number_types),
    ("destinations.prefixes", _prefixes),
    ("rates", _rate),
    ("hours", _hours),
)
