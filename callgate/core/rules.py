"""The rules that need no counter: plain data and small functions over a :class:`Context`.

``STATIC_RULES`` is the ordered table the engine runs; ``explain``, the audit log and the docs list it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from callgate.core.numbers import NumberInfo
from callgate.core.policy import ExtensionRule, HolidayMode, Policy, is_extension, report_only
from callgate.core.reasons import Reason, number_type_reason

PASS, DENY, SKIP, REPORT = (
    "pass",
    "deny",
    "skip",
    "report",
)  # report: would deny, is in mode: report


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


# A refusal one key of a rule would give: (the key's name for report_only, or None: always enforced).
Refusal = tuple[str | None, Reason, str]


def _verdict(c: Context, rule: str, refusals: list[Refusal], passed: str) -> RuleResult:
    """The first enforced refusal denies; else the first report-only one is reported; else a pass."""
    reported = None
    for key, reason, detail in refusals:
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
    refusals: list[Refusal] = []
    if d.allow_countries is not None and country not in d.allow_countries:
        where = country or "non-geographic"
        refusals.append((rule, Reason.COUNTRY_NOT_ALLOWED, f"{where} is not in allow_countries"))
    if country in d.deny_countries:
        refusals.append((rule, Reason.COUNTRY_NOT_ALLOWED, f"{country} is in deny_countries"))
    return _verdict(c, rule, refusals, country or "non-geographic")


def _number_types(c: Context) -> RuleResult:
    rule = "destinations.number_types"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    kinds = ", ".join(sorted(c.number.types)) or "unknown"
    if c.excepted:
        return RuleResult(rule, PASS, f"{kinds}; allow_prefixes +{c.excepted}")
    d = c.rule.profile.destinations
    refusals: list[Refusal] = []
    denied = [kind for kind in sorted(c.number.types) if kind in d.deny_number_types]
    if denied:
        refusals.append(
            (rule, number_type_reason(denied[0]), f"{denied[0]} is in deny_number_types")
        )
    if d.allow_number_types is not None and not c.number.types & d.allow_number_types:
        first = min(c.number.types) if c.number.types else None
        reason = number_type_reason(first) if first else Reason.NUMBER_TYPE_UNKNOWN
        refusals.append((rule, reason, f"{kinds} not in allow_number_types"))
    return _verdict(c, rule, refusals, kinds)


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
    refusal = (rule, Reason.PREFIX_DENIED, f"+{prefix} is in deny_prefixes{where}")
    return _verdict(c, rule, [refusal], "")


def _rate(c: Context) -> RuleResult:
    rule = "rates"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    if c.rate is None:
        return deny(rule, Reason.NO_RATE, "no rates prefix matches and rates.default is not set")
    source = f"+{c.rate_prefix}" if c.rate_prefix else "default"
    limit = c.rule.profile.destinations.max_rate
    refusals: list[Refusal] = []
    if limit is not None and c.rate > limit:
        refusals.append(
            (
                "destinations.max_rate",
                Reason.RATE_ABOVE_MAX,
                f"{c.rate}/min ({source}) is above max_rate {limit}",
            )
        )
    return _verdict(c, rule, refusals, f"{c.rate}/min ({source})")


def _hours(c: Context) -> RuleResult:
    rule = "hours"
    if c.rule is None or not c.number.readable:
        return RuleResult(rule, SKIP, "")
    hours, intl, when = (
        c.rule.profile.hours,
        c.number.international,
        f"{_DAYS[c.local.weekday()]} {c.local.hour:02d}:{c.local.minute:02d}",
    )
    refusals: list[Refusal] = []
    if c.local.date() in c.policy.holidays:
        day = c.local.date()
        if hours.on_holidays is HolidayMode.CLOSED:
            refusals.append(("hours.on_holidays", Reason.HOLIDAY, f"{day} is a holiday: closed"))
        if hours.on_holidays is HolidayMode.DOMESTIC_ONLY and intl:
            refusals.append(
                ("hours.on_holidays", Reason.HOLIDAY, f"{day} is a holiday: domestic only")
            )
    if hours.any is not None and not hours.any.contains(c.local):
        refusals.append(
            ("hours.any", Reason.OUTSIDE_HOURS, f"{when} is outside any: {hours.any.text}")
        )
    if intl and hours.international is not None and not hours.international.contains(c.local):
        refusals.append(
            (
                "hours.international",
                Reason.OUTSIDE_HOURS,
                f"{when} is outside international: {hours.international.text}",
            )
        )
    if refusals:
        return _verdict(c, rule, refusals, "")
    return RuleResult(rule, PASS, f"{when} {c.policy.site.timezone.key}")


# The rules that need no counter, in the order policy.md gives. "lock" and the counted rules follow
# them in the decision's rule list (see engine.RULES). They come in three groups by what they look at,
# and the engine memoises each group's results on exactly that (plan.prepare, memo.Memo):
# - the caller rule: the extension and its entry;
# - the destination rules: the entry, the number (a function of the dialled string) and the policy;
# - the time rule: the entry, whether the number is readable and international, the local minute.
# A rule that looks at more must go in a group that is keyed on it.
CALLER_RULES: tuple[tuple[str, StaticRule], ...] = (("extension", _extension),)
DESTINATION_RULES: tuple[tuple[str, StaticRule], ...] = (
    ("number", _number),
    ("destinations.countries", _countries),
    ("destinations.number_types", _number_types),
    ("destinations.prefixes", _prefixes),
    ("rates", _rate),
)
TIME_RULES: tuple[tuple[str, StaticRule], ...] = (("hours", _hours),)
STATIC_RULES: tuple[tuple[str, StaticRule], ...] = (*CALLER_RULES, *DESTINATION_RULES, *TIME_RULES)
