"""The first half of a decision: the rules that need no counter, and the plan of the counted ones.

:func:`prepare` runs the static rules (emergency, extension, number, destinations, rate, origin,
new_country, hours; the table is ``rules.py``'s) and builds the
:class:`~callgate.core.admission.Admission` a store admits: one
:class:`~callgate.core.admission.Check` per counter and cap that applies to the call, at the extension,
its profile group and the site (and, for a tenant ``P/T``, its provider P's site caps, under P's keys),
and the country check of a new_country rule that only the store's
countries can settle. What depends on neither the counters nor the time comes from the policy's
:class:`~callgate.core.memo.Memo`. The engine (:mod:`callgate.core.engine`) rules on the result.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from callgate.core.admission import (
    REPORT_LIMIT,
    Admission,
    Check,
    CheckKind,
    CountryCheck,
    to_micro,
)
from callgate.core.keys import (
    PERIODS,
    SITE_SCOPE,
    WINDOWS,
    distinct_key,
    extension_scope,
    profile_scope,
    provider_of,
    same_number_key,
    slots_key,
    spend_key,
    spend_periods,
    window_key,
)
from callgate.core.memo import Caller, Destination, Memo, ScopeChecks
from callgate.core.numbers import CACHE_MAX_INPUT, NumberInfo, read_number
from callgate.core.origins import Origin
from callgate.core.policy import DEFAULT_MAX_CALL_DURATION, ExtensionRule, Limits, Policy
from callgate.core.reasons import Reason
from callgate.core.rules import (
    ASK,
    CALLER_RULES,
    DENY,
    DESTINATION_RULES,
    DIALLED_NEW_COUNTRY,
    DIALLED_ORIGIN,
    ORIGIN_RULES,
    PASS,
    PROVIDER_LIMITS,
    SCOPE_LIMITS,
    TIME_RULES,
    CallAttempt,
    Context,
    RuleResult,
)

# Seconds a reservation outlives its call's allowed seconds (ringing before the answer, settling after).
RESERVATION_HOLD = 600

# The reason each sliding window (keys.WINDOWS) and each spend period (keys.PERIODS) denies with.
_WINDOW_REASONS = {
    "calls_per_minute": Reason.VELOCITY_MINUTE,
    "calls_per_hour": Reason.VELOCITY_HOUR,
    "international_calls_per_hour": Reason.VELOCITY_INTERNATIONAL_HOUR,
}
_SPEND_REASONS = dict(
    zip(PERIODS, (Reason.SPEND_CAP_HOUR, Reason.SPEND_CAP_DAY, Reason.SPEND_CAP_MONTH), strict=True)
)


class Prepared(NamedTuple):
    """The first half of a decision: the static rules' results and the counted rules' plan."""

    policy: Policy
    attempt: CallAttempt
    at: datetime
    number: NumberInfo
    rule: ExtensionRule | None
    results: tuple[RuleResult, ...]
    admission: Admission | None  # None for emergency calls: they are never counted
    rate: Decimal | None
    max_seconds: int
    checks: tuple[Check, ...] = ()

    @property
    def denial(self) -> RuleResult | None:
        return next((r for r in self.results if r.outcome == DENY), None)


# The caller rule looks at no number; what stands in for one when it runs.
_NO_NUMBER = NumberInfo("", None, None, frozenset(), True, False, "not read")
_NOT_EMERGENCY = RuleResult("emergency", PASS, "not an emergency number")


def _scope(prefix: str, scope: str, limits: Limits, international: bool) -> ScopeChecks:
    counts: list[Check] = []
    for w in WINDOWS:
        limit = getattr(limits, w.limit)
        if limit is not None and (international or not w.international):
            window = Check(
                f"{prefix}.{w.limit}", _WINDOW_REASONS[w.limit], CheckKind.WINDOW,
                window_key(scope, w.name), limit, w.seconds,
            )  # fmt: skip
            counts.append(_moded(window, w.limit in limits.report))
    if limits.concurrent_calls is not None:
        slots = Check(
            f"{prefix}.concurrent_calls", Reason.CONCURRENT_CALLS, CheckKind.CONCURRENT,
            slots_key(scope), limits.concurrent_calls,
        )  # fmt: skip
        counts.append(_moded(slots, "concurrent_calls" in limits.report))
    same = distinct = None
    if limits.same_number is not None:
        b = limits.same_number
        same = Check(
            f"{prefix}.same_number", Reason.SAME_NUMBER, CheckKind.WINDOW,
            same_number_key(scope), b.count, b.within,
        )  # fmt: skip
        same = _moded(same, "same_number" in limits.report)
    if limits.distinct_numbers is not None:
        b = limits.distinct_numbers
        distinct = Check(
            f"{prefix}.distinct_numbers", Reason.DISTINCT_NUMBERS, CheckKind.DISTINCT,
            distinct_key(scope), b.count, b.within,
        )  # fmt: skip
        distinct = _moded(distinct, "distinct_numbers" in limits.report)
    spend: list[tuple[str, Check]] = []
    for period, cap in limits.spend.items():
        check = Check(
            f"{prefix}.spend.{period}", _SPEND_REASONS[period], CheckKind.SPEND,
            spend_key(scope), to_micro(cap),
        )  # fmt: skip
        spend.append((period, _moded(check, f"spend.{period}" in limits.report)))
    return ScopeChecks(tuple(counts), same, distinct, tuple(spend))


def _moded(check: Check, report: bool) -> Check:
    """A check in mode: report keeps its limit aside and shows the store one it never reaches."""
    return check._replace(limit=REPORT_LIMIT, report=check.limit) if report else check


def _provider(above: Policy) -> tuple[ScopeChecks, ScopeChecks]:
    """The checks a provider's ``site_limits`` add to each of its tenants' admissions (national and
    international calls): named ``provider_limits.<key>``, denying with ``provider_limit``, and counted
    under the provider's own site keys (``Check.site``), so all its tenants count against them
    together. Their mode: report is the provider's."""
    name = above.site.name

    def mark(check: Check) -> Check:
        return check._replace(reason=Reason.PROVIDER_LIMIT, site=name)

    def marked(international: bool) -> ScopeChecks:
        s = _scope(PROVIDER_LIMITS, SITE_SCOPE, above.site_limits, international)
        return ScopeChecks(
            tuple(mark(c) for c in s.counts),
            None if s.same_number is None else mark(s.same_number),
            None if s.distinct is None else mark(s.distinct),
            tuple((period, mark(c)) for period, c in s.spend),
        )

    return marked(False), marked(True)


def abroad_for(number: NumberInfo, region: str) -> bool:
    """Whether ``number`` (read in its tenant's region) is abroad for a provider in ``region``: the
    provider judges its own checks, never by the tenant's region."""
    return number.international or (number.country is not None and number.country != region)


def above_problem(policy: Policy, above: Policy) -> str | None:
    """Why ``above`` cannot be the provider of ``policy``'s site (None: it can): a tenant ``P/T`` is
    counted under P's caps, whose keys share its hash tag, in the tenant's currency."""
    site, provider = policy.site.name, above.site.name
    if provider_of(site) != provider:
        return (
            f"site {site!r} is no tenant of provider {provider!r} (a tenant is named {provider}/T)"
        )
    if above.site.currency != policy.site.currency:
        return (
            f"provider {provider!r} counts in {above.site.currency}, "
            f"its tenant {site!r} in {policy.site.currency}"
        )
    return None


def _caller(policy: Policy, attempt: CallAttempt, local: datetime) -> Caller:
    rule = policy.rule_for(attempt.extension)
    c = Context(policy, attempt, _NO_NUMBER, rule, local, None, None, None)
    (result,) = (check(c) for _, check in CALLER_RULES)
    if rule is None:
        return Caller(None, -1, result, ((), ()), DEFAULT_MAX_CALL_DURATION)
    scopes = tuple(
        zip(
            SCOPE_LIMITS,
            (extension_scope(attempt.extension), profile_scope(rule.profile.name), SITE_SCOPE),
            (rule.limits, rule.profile.group_limits, policy.site_limits),
            strict=True,
        )
    )
    national, international = (
        tuple(_scope(prefix, scope, limits, intl) for prefix, scope, limits in scopes)
        for intl in (False, True)
    )
    max_seconds = rule.limits.max_call_duration or DEFAULT_MAX_CALL_DURATION
    return Caller(
        rule, policy.extensions.index(rule), result, (national, international), max_seconds
    )


def _destination(
    policy: Policy, attempt: CallAttempt, rule: ExtensionRule | None, local: datetime
) -> Destination:
    site = policy.site
    number = read_number(
        attempt.dialled,
        region=site.region,
        outside_line=site.outside_line,
        emergency=policy.emergency,
    )
    rate_prefix, rate = policy.rates.per_minute(number.e164) if number.e164 else (None, None)
    excepted = None
    if rule is not None and number.e164:
        excepted = rule.profile.destinations.allowed(number.e164[1:])  # at most 15 probes
    c = Context(policy, attempt, number, rule, local, rate_prefix, rate, excepted)
    results = tuple(check(c) for _, check in DESTINATION_RULES)
    return Destination(
        number,
        results,
        rate,
        to_micro(rate) if rate is not None else 0,
        any(r.outcome == DENY for r in results),
    )


def _origin(
    policy: Policy, attempt: CallAttempt, dest: Destination, local: datetime
) -> tuple[RuleResult, ...]:
    """The origin and new_country rules: they look at the origin, the number and its rate, never at
    the entry (None)."""
    c = Context(policy, attempt, dest.number, None, local, None, dest.rate, None)
    return tuple(check(c) for _, check in ORIGIN_RULES)


# What a phone's own call gets from the origin rules.
_DIALLED = (DIALLED_ORIGIN, DIALLED_NEW_COUNTRY)


def _country_check(policy: Policy, origin: Origin, new_country: RuleResult) -> CountryCheck:
    """What the store must do for the new_country rule: nothing, unless the rule was ASKed of it."""
    if new_country.outcome != ASK:
        return CountryCheck.NONE
    block, _ = policy.origin_block(origin)
    return CountryCheck.REPORT if "new_countries" in block.report else CountryCheck.DENY


def _time(
    policy: Policy, attempt: CallAttempt, caller: Caller, dest: Destination, local: datetime
) -> RuleResult:
    c = Context(policy, attempt, dest.number, caller.rule, local, None, dest.rate, None)
    (result,) = (check(c) for _, check in TIME_RULES)
    return result


def prepare(
    memo: Memo, attempt: CallAttempt, at: datetime, *, above: Memo | None = None
) -> Prepared:
    """Run the rules of ``memo``'s policy that need no counter and plan the counted ones.

    What depends on neither the counters nor the time is worked out once per policy and kept in its
    :class:`Memo`: the caller per extension, the destination per (entry, dialled string), the origin
    and new_country rules per (origin, dialled string), the time rule per (entry, kind of number,
    local weekday and minute, holiday).

    ``above``: the Memo of the provider's policy when ``memo``'s site is its tenant ``P/T``: the
    provider's ``site_limits`` are then checked too, after the tenant's own, under the provider's keys
    and spend periods (its time zone), for every call the tenant counts (:func:`_provider`). ValueError
    when ``above`` is no provider of the site (:func:`above_problem`; check it when loading).
    """
    policy = memo.policy
    if above is not None:
        problem = above_problem(policy, above.policy)
        if problem is not None:
            raise ValueError(problem)
    extension, dialled = attempt.extension, attempt.dialled
    if len(extension) + len(dialled) > CACHE_MAX_INPUT:
        memo = Memo(policy)  # hostile lengths are worked out and forgotten: they cannot bloat it
    local = at.astimezone(policy.site.timezone)
    caller = memo.callers.get(extension)
    dest = None if caller is None else memo.destinations.get((caller.entry, dialled))
    if caller is None or dest is None:
        caller, dest = _learn(memo, attempt, local)
    number, rule = dest.number, caller.rule
    if number.emergency:
        result = RuleResult(
            "emergency",
            PASS,
            f"{dialled} is an emergency number: always allowed, never counted",
        )
        return Prepared(policy, attempt, at, number, rule, (result,), None, None, 0)
    international = number.international
    day = local.date()
    when = (caller.entry, number.e164 is None, international, local.weekday(), local.hour,
            local.minute, day if day in policy.holidays else None)  # fmt: skip
    hours = memo.hours.get(when)
    if hours is None:
        memo.keep_bounded()
        hours = memo.hours[when] = _time(policy, attempt, caller, dest, local)
    judged: tuple[RuleResult, ...] = _DIALLED
    denied = caller.result.outcome == DENY or dest.denied or hours.outcome == DENY
    origin = attempt.origin
    if origin is not Origin.DIALLED:
        found = memo.origins.get((origin, dialled))
        if found is None:
            memo.keep_bounded()
            found = memo.origins[origin, dialled] = _origin(policy, attempt, dest, local)
        judged = found
        denied = denied or any(r.outcome == DENY for r in found)
    results = (_NOT_EMERGENCY, caller.result, *dest.results, *judged, hours)
    at_ms = int(at.timestamp() * 1000)
    e164 = number.e164 or ""
    rate_micro = dest.rate_micro
    checks: tuple[Check, ...] = ()
    if rule is not None:
        counted: list[Check] = []
        spent: list[Check] = []
        _count(caller.scopes[international], e164, spend_periods(local), counted, spent)
        if above is not None:
            rate_micro = _above(above, number, at, rate_micro, (counted, spent))
        checks = (*counted, *spent)
    # tuple.__new__: the NamedTuples without their Python-level __new__ (each call builds both)
    admission = tuple.__new__(
        Admission,
        (
            policy.site.name,
            reservation_id(attempt, e164, dest.rate_micro, international),
            at_ms,
            checks,
            rate_micro,
            policy.rates.increment,
            caller.max_seconds,
            RESERVATION_HOLD,
            extension,
            international,
            not denied,  # reserve: no rule before the counters denies
            0,  # deadline_ms: the gate sets its own
            e164,
            attempt.leg,
            "",  # instance: the gate fills it in
            origin,
            number.country or "",
            _country_check(policy, origin, judged[1]),  # (origin, new_country)
        ),
    )
    return tuple.__new__(
        Prepared,
        (policy, attempt, at, number, rule, results, admission, dest.rate, caller.max_seconds,
         checks),
    )  # fmt: skip


def _learn(memo: Memo, attempt: CallAttempt, local: datetime) -> tuple[Caller, Destination]:
    """The caller and the destination of a call one of them is not memoised for: worked out and
    kept (the memo emptied first when full)."""
    memo.keep_bounded()
    policy, extension, dialled = memo.policy, attempt.extension, attempt.dialled
    caller = memo.callers.get(extension)
    if caller is None:
        caller = memo.callers[extension] = _caller(policy, attempt, local)
    dest = memo.destinations.get((caller.entry, dialled))
    if dest is None:
        dest = memo.destinations[caller.entry, dialled] = _destination(
            policy, attempt, caller.rule, local
        )
    return caller, dest


def _above(
    above: Memo,
    number: NumberInfo,
    at: datetime,
    rate: int,
    checks: tuple[list[Check], list[Check]],
) -> int:
    """A tenant's call: its provider's site caps added to ``counted`` and ``spent``; the rate to
    reserve at (micro-units a minute)."""
    provider = above.provider
    if provider is None:
        provider = above.provider = _provider(above.policy)
    there = at.astimezone(above.policy.site.timezone)  # the provider's periods, for all
    # judged by the provider's own policy, never by what the tenant's says: abroad for the
    # provider's country, priced at the provider's rate when that is the higher one (a
    # tenant pushing rates of 0 or another region must not escape the provider's caps)
    abroad = abroad_for(number, above.policy.site.region)
    e164 = number.e164 or ""
    _count((provider[abroad],), e164, spend_periods(there), *checks)
    theirs = above.policy.rates.per_minute(e164)[1] if e164 else None
    return rate if theirs is None else max(rate, to_micro(theirs))


def _count(
    scopes: tuple[ScopeChecks, ...],
    e164: str,
    periods: dict[str, tuple[str, int]],
    counted: list[Check],
    spent: list[Check],
) -> None:
    """The checks of ``scopes`` for one call: the number and the spend buckets filled in."""
    # tuple.__new__ builds a Check without NamedTuple's Python-level __new__ (or the slower
    # _replace): this runs a dozen times per call
    new = tuple.__new__
    for counts, same, distinct, spend in scopes:
        counted += counts
        if same is not None:
            r, why, kind, key, limit, window, _, report, site = same
            counted.append(new(Check, (r, why, kind, key + e164, limit, window, "", report, site)))
        if distinct is not None:
            r, why, kind, key, limit, window, _, report, site = distinct
            counted.append(new(Check, (r, why, kind, key, limit, window, e164, report, site)))
        for period, (r, why, kind, key, limit, _, _, report, site) in spend:
            bucket, ttl = periods[period]
            spent.append(new(Check, (r, why, kind, key + bucket, limit, ttl, "", report, site)))


def reservation_id(attempt: CallAttempt, e164: str, rate: int, international: bool) -> str:
    """The id a call's reservation is held under: bound to what it was granted for.

    A second admission under the same id is handed the first one's decision without being counted
    again: that is how a trunk failover (same channel, same number, same rate) stays one call. Anything
    else that reuses a call id (another number, another rate, another extension, another channel, another
    origin: a ring group's parallel legs, a transfer, a forged ``call=``) gets an id of its own and is
    judged and counted in full. A channel admitted as its phone's own call and sent to the gate again as
    a forward is judged by the forward's block, never handed the looser decision. The id starts with the
    call id, so the audit and the store read alike.
    """
    parts = [attempt.call_id, attempt.leg, attempt.extension, e164, str(rate)]
    parts.append("1" if international else "0")
    if attempt.origin is not Origin.DIALLED:  # a dialled call's id is as it always was
        parts.append(attempt.origin.value)
    bound = "\x1f".join(parts)
    digest = hashlib.blake2b(bound.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{attempt.call_id}:{digest}"
