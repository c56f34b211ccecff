"""The decision: a pure function of (policy, call attempt, counter values, time).

It never awaits, never reads the clock and never imports a backend. A decision is made in two halves so
that a store can do the counted half atomically:

* :func:`prepare` runs the rules that need no counter (emergency, extension, number, destinations, rate,
  hours) and builds the :class:`~callgate.core.admission.Admission` for the counted rules;
* a store admits (or, for ``explain``, only reads) it and returns an :class:`~callgate.core.admission.Outcome`;
* :func:`conclude` turns both into the :class:`Decision`.

:func:`decide` chains the three for callers that already hold the counter values. The order of the rules is
``RULES``; ``explain``, the audit log and the docs list that same tuple.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from callgate.core.admission import (
    LOCKED,
    PANIC,
    REPORT_LIMIT,
    Admission,
    BurstRule,
    Check,
    CheckKind,
    Outcome,
    barred,
    from_micro,
    judge,
    money_text,
    spend_seconds,
    to_micro,
)
from callgate.core.keys import (
    PERIODS,
    SITE_SCOPE,
    WINDOWS,
    distinct_key,
    extension_scope,
    profile_scope,
    same_number_key,
    slots_key,
    spend_key,
    spend_periods,
    window_key,
)
from callgate.core.numbers import CACHE_MAX_INPUT, NumberInfo, emergency_forms, read_number
from callgate.core.policy import (
    DEFAULT_MAX_CALL_DURATION,
    ExtensionRule,
    FailMode,
    Limits,
    Policy,
)
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import (
    CALLER_RULES,
    DENY,
    DESTINATION_RULES,
    PASS,
    REPORT,
    TIME_RULES,
    CallAttempt,
    Context,
    RuleResult,
    deny,
)

# Seconds a reservation outlives its call's allowed seconds (ringing before the answer, settling after).
RESERVATION_HOLD = 600


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason
    rule: str  # the rule that gave the reason
    call_id: str
    extension: str
    profile: str | None
    number: NumberInfo
    at: datetime
    allowed_seconds: int
    rate: Decimal | None  # per minute
    reserved: Decimal
    rules: tuple[RuleResult, ...]
    policy_digest: str
    replayed: bool = False
    policy_revision: int = 0  # the Redis version of the policy that decided; 0: a local file
    reservation: str = ""  # the id the store holds this call's reservation under (reservation_id)
    dial: str = ""  # what the dialplan dials: the E.164 number, or the emergency number as listed

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def reported(self) -> tuple[RuleResult, ...]:
        """The rules in mode: report that would have denied this call."""
        return tuple(r for r in self.rules if r.outcome == REPORT)

    def variables(self) -> dict[str, str]:
        """The channel variables the dialplan reads (product.md).

        An emergency call is dialled as the emergency number itself (``CALLGATE_NUMBER`` is then the
        policy's entry, e.g. ``112``, without the outside-line digit) and gets no length limit: for
        ``CALLGATE_REASON=emergency`` the shipped dialplan dials without ``L()`` and the gate sets no
        ``TIMEOUT(absolute)``.
        ``CALLGATE_CALL`` is the reservation id of an admitted call (the gate also writes it to
        ``CDR(callgate)``), so that the spend feed settles this leg and no other. Any other decision
        leaves the variable alone: a refused call holds no reservation, so its hang-up settles nothing
        and costs the store nothing; and a trunk channel that a transfer sends back into the gate keeps
        the id of the call it carries.
        """
        variables = {
            "CALLGATE_VERDICT": self.verdict.value,
            "CALLGATE_REASON": self.reason.value,
            "CALLGATE_NUMBER": self.dial,
            "CALLGATE_MAX_SECONDS": str(self.allowed_seconds),
        }
        if self.reason is Reason.ALLOWED:
            variables["CALLGATE_CALL"] = self.reservation
        return variables


# The reason each sliding window (keys.WINDOWS) and each spend period (keys.PERIODS) denies with.
_WINDOW_REASONS = {
    "calls_per_minute": Reason.VELOCITY_MINUTE,
    "calls_per_hour": Reason.VELOCITY_HOUR,
    "international_calls_per_hour": Reason.VELOCITY_INTERNATIONAL_HOUR,
}
_SPEND_REASONS = dict(
    zip(PERIODS, (Reason.SPEND_CAP_HOUR, Reason.SPEND_CAP_DAY, Reason.SPEND_CAP_MONTH), strict=True)
)
# The policy keys of the scopes a call is counted in (extension, profile group, site), in the order
# the engine plans them; each scope's counted limits but spend, in that order; then every scope's spend.
_SCOPE_LIMITS = ("limits", "profile_limits", "site_limits")
_COUNTED = (*(w.limit for w in WINDOWS), "concurrent_calls", "same_number", "distinct_numbers")

# The rules that run before the store's lock check: prepare's results up to there.
_BEFORE_LOCK = ("emergency", *(name for name, _ in CALLER_RULES))
_LOCK_AT = len(_BEFORE_LOCK)
# Every rule a decision can list, in the order it lists them (the stores judge the counted ones in
# this order too: the first that fails gives the reason).
RULES: tuple[str, ...] = (
    *_BEFORE_LOCK,
    "lock",
    *(name for name, _ in (*DESTINATION_RULES, *TIME_RULES)),
    *(f"{scope}.{name}" for scope in _SCOPE_LIMITS for name in _COUNTED),
    *(f"{scope}.spend.{period}" for scope in _SCOPE_LIMITS for period in PERIODS),
    "limits.max_call_duration",
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


class _Scope(NamedTuple):
    """One scope's counted checks (ext, profile group or site) for national or international calls,
    all but the number and the time filled in: built once per extension and kept in the Memo."""

    counts: tuple[Check, ...]  # velocity and concurrency: complete
    same_number: Check | None  # key ends in ":n:", the number goes after it
    distinct: Check | None  # member left empty: the number goes there
    spend: tuple[tuple[str, Check], ...]  # (period, check whose key ends in the scope; no TTL yet)


class _Caller(NamedTuple):
    """What an extension gets, whatever it dials (memoised per extension)."""

    rule: ExtensionRule | None
    entry: int  # the entry's position in policy.extensions; -1: no entry matches
    result: RuleResult  # what the caller rule said
    scopes: tuple[tuple[_Scope, ...], tuple[_Scope, ...]]  # for national, international calls
    max_seconds: int


class _Destination(NamedTuple):
    """What the destination rules say of one dialled string for one entry (memoised per both)."""

    number: NumberInfo
    results: tuple[RuleResult, ...]
    rate: Decimal | None
    rate_micro: int


# A Memo holds at most this many entries; past it, it is emptied (bounded memory whatever is dialled).
MEMO_MAX = 50_000


class Memo:
    """What the engine worked out once for one policy: results that depend on no counter and no clock,
    each table keyed by what its results do depend on (rules.py says what each group of rules looks
    at). Whoever holds a policy makes its Memo with it (the live holder, replay, explain), and the
    engine reads the policy from the Memo, so a new policy always starts with a new, empty one.

    Together the tables hold at most ``MEMO_MAX`` entries (then all are emptied, in :func:`prepare`);
    nothing is kept of a call whose extension and number together are longer than ``CACHE_MAX_INPUT``
    (nor, in ``short_calls``, of a longer extension)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.callers: dict[str, _Caller] = {}  # by extension
        self.destinations: dict[tuple[int, str], _Destination] = {}  # by (entry, dialled string)
        # the time rule, by (entry, number unread, international, UTC minute)
        self.hours: dict[tuple[int, bool, bool, int], RuleResult] = {}
        self.short_calls: dict[str, ExtensionRule | None] = {}  # bursts: the entry, by extension
        self.lockdown: BurstRule | None = None  # bursts: the lockdown rule, once worked out

    def __len__(self) -> int:
        return (
            len(self.callers)
            + len(self.destinations)
            + len(self.hours)
            + len(self.short_calls)
            + (self.lockdown is not None)
        )

    def clear(self) -> None:
        self.callers.clear()
        self.destinations.clear()
        self.hours.clear()
        self.short_calls.clear()
        self.lockdown = None


def _scope(prefix: str, scope: str, limits: Limits, international: bool) -> _Scope:
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
    return _Scope(tuple(counts), same, distinct, tuple(spend))


def _moded(check: Check, report: bool) -> Check:
    """A check in mode: report keeps its limit aside and shows the store one it never reaches."""
    return check._replace(limit=REPORT_LIMIT, report=check.limit) if report else check


def _caller(policy: Policy, attempt: CallAttempt, local: datetime) -> _Caller:
    rule = policy.rule_for(attempt.extension)
    c = Context(policy, attempt, _NO_NUMBER, rule, local, None, None, None)
    (result,) = (check(c) for _, check in CALLER_RULES)
    if rule is None:
        return _Caller(None, -1, result, ((), ()), DEFAULT_MAX_CALL_DURATION)
    scopes = tuple(
        zip(
            _SCOPE_LIMITS,
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
    return _Caller(
        rule, policy.extensions.index(rule), result, (national, international), max_seconds
    )


def _destination(
    policy: Policy, attempt: CallAttempt, rule: ExtensionRule | None, local: datetime
) -> _Destination:
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
    return _Destination(number, results, rate, to_micro(rate) if rate is not None else 0)


def _time(
    policy: Policy, attempt: CallAttempt, caller: _Caller, dest: _Destination, local: datetime
) -> RuleResult:
    c = Context(policy, attempt, dest.number, caller.rule, local, None, dest.rate, None)
    (result,) = (check(c) for _, check in TIME_RULES)
    return result


def prepare(memo: Memo, attempt: CallAttempt, at: datetime) -> Prepared:
    """Run the rules of ``memo``'s policy that need no counter and plan the counted ones.

    What depends on neither the counters nor the time is worked out once per policy and kept in its
    :class:`Memo`: the caller per extension, the destination per (entry, dialled string), the time rule
    per (entry, kind of number, minute).
    """
    policy = memo.policy
    if len(memo) > MEMO_MAX:
        memo.clear()
    if len(attempt.extension) + len(attempt.dialled) > CACHE_MAX_INPUT:
        memo = Memo(policy)  # hostile lengths are worked out and forgotten: they cannot bloat it
    local = at.astimezone(policy.site.timezone)
    caller = memo.callers.get(attempt.extension)
    if caller is None:
        caller = memo.callers[attempt.extension] = _caller(policy, attempt, local)
    dest = memo.destinations.get((caller.entry, attempt.dialled))
    if dest is None:
        dest = memo.destinations[caller.entry, attempt.dialled] = _destination(
            policy, attempt, caller.rule, local
        )
    number, rule = dest.number, caller.rule
    if number.emergency:
        result = RuleResult(
            "emergency",
            PASS,
            f"{attempt.dialled} is an emergency number: always allowed, never counted",
        )
        return Prepared(policy, attempt, at, number, rule, (result,), None, None, 0)
    at_ms = int(at.timestamp() * 1000)
    # tzdata's offsets are whole minutes (since 1972), so one UTC minute is one local minute
    minute = (caller.entry, number.e164 is None, number.international, at_ms // 60_000)
    hours = memo.hours.get(minute)
    if hours is None:
        hours = memo.hours[minute] = _time(policy, attempt, caller, dest, local)
    results = (_NOT_EMERGENCY, caller.result, *dest.results, hours)
    counted: list[Check] = []
    spent: list[Check] = []
    e164 = number.e164 or ""
    if rule is not None:
        periods = spend_periods(local)
        # tuple.__new__ builds a Check without NamedTuple's Python-level __new__ (or the slower
        # _replace): this runs a dozen times per call
        new = tuple.__new__
        for scope in caller.scopes[number.international]:
            counted += scope.counts
            if scope.same_number is not None:
                r, why, kind, key, limit, window, _, report = scope.same_number
                counted.append(new(Check, (r, why, kind, key + e164, limit, window, "", report)))
            if scope.distinct is not None:
                r, why, kind, key, limit, window, _, report = scope.distinct
                counted.append(new(Check, (r, why, kind, key, limit, window, e164, report)))
            for period, (r, why, kind, key, limit, _, _, report) in scope.spend:
                bucket, ttl = periods[period]
                spent.append(new(Check, (r, why, kind, key + bucket, limit, ttl, "", report)))
    checks = (*counted, *spent)
    admission = Admission(
        site=policy.site.name,
        call_id=reservation_id(attempt, e164, dest.rate_micro, number.international),
        at_ms=at_ms,
        checks=checks,
        rate=dest.rate_micro,
        increment=policy.rates.increment,
        max_seconds=caller.max_seconds,
        hold=RESERVATION_HOLD,
        extension=attempt.extension,
        international=number.international,
        reserve=not any(r.outcome == DENY for r in results),
        number=e164,
        channel=attempt.leg,
    )
    return Prepared(
        policy, attempt, at, number, rule, results, admission, dest.rate, caller.max_seconds,
        checks,
    )  # fmt: skip


def _lock_result(p: Prepared, outcome: Outcome) -> RuleResult:
    """The lock rule, as the store judged it (``Outcome.refused``)."""
    if outcome.refused == LOCKED:
        return deny(
            "lock",
            Reason.EXTENSION_LOCKED,
            f"extension {p.attempt.extension} is locked ({outcome.lock})",
        )
    if outcome.refused == PANIC:
        return deny("lock", Reason.SITE_PANIC, "site panic: international calls are refused")
    return RuleResult(
        "lock", PASS, f"locked ({outcome.lock}), call is domestic" if outcome.lock else "not locked"
    )


def _limit_detail(check: Check, value: int) -> str:
    limit = check.report or check.limit
    if check.kind is CheckKind.SPEND:
        return f"{money_text(value)} of {money_text(limit)} committed"
    return f"{value} of {limit}"


def _would_fail(a: Admission, check: Check, value: int) -> bool:
    """Would this report-only check have refused the call under its real limit?"""
    if check.kind is CheckKind.SPEND:
        ceiling = a.max_seconds // a.increment * a.increment
        return spend_seconds(check.report - value, a.rate, a.increment, ceiling) < a.increment
    return value >= check.report


def _limit_results(p: Prepared, outcome: Outcome, detail: bool) -> list[RuleResult]:
    """The counted rules as the store judged them (``Outcome.failed``): the check that denied, those
    in mode: report that would have, and with ``detail`` every other check and the call's length."""
    assert p.admission is not None
    out: list[RuleResult] = []
    for index, (check, value) in enumerate(zip(p.checks, outcome.values, strict=True)):
        if outcome.failed == index:
            out.append(deny(check.rule, check.reason, _limit_detail(check, value)))
        elif check.report and _would_fail(p.admission, check, value):
            text = f"{_limit_detail(check, value)} (mode: report)"
            out.append(RuleResult(check.rule, REPORT, text, check.reason))
        elif detail:
            out.append(RuleResult(check.rule, PASS, _limit_detail(check, value)))
    if detail:
        seconds = outcome.allowed_seconds
        out.append(
            RuleResult("limits.max_call_duration", PASS, f"{p.max_seconds}s; allowed {seconds}s")
        )
    return out


class Ruling(NamedTuple):
    """A decision's verdict before it is dressed as a :class:`Decision` (what ``replay`` keeps)."""

    verdict: Verdict
    reason: Reason
    rule: str  # the rule that gave the reason
    results: tuple[RuleResult, ...]
    seconds: int
    reserved: int  # micro-units
    replayed: bool = False


def conclude(p: Prepared, outcome: Outcome | None, *, detail: bool = True) -> Decision:
    """The decision from the static results and what the store saw (None only for emergency calls)."""
    return _decision(p, rule_on(p, outcome, detail=detail))


def rule_on(p: Prepared, outcome: Outcome | None, *, detail: bool = True) -> Ruling:
    """The verdict of :func:`conclude`, without building the :class:`Decision`.

    The rules come in ``RULES`` order: prepare's results, with the store's lock check after the caller
    rule, then the counted rules. With ``detail=False`` (replay: a million calls) the counted rules
    are not described: ``rules`` then holds the static rules, the lock, the rule that denied, if one
    did, and those in mode: report that would have. The verdict, reason and seconds are the same
    either way.
    """
    if p.admission is None or outcome is None:
        return Ruling(Verdict.ALLOW, Reason.EMERGENCY, "emergency", p.results, 0, 0)
    results = (
        *p.results[:_LOCK_AT],
        _lock_result(p, outcome),
        *p.results[_LOCK_AT:],
        *_limit_results(p, outcome, detail),
    )
    denial = next((r for r in results if r.outcome == DENY), None)
    if denial is not None:
        assert denial.reason is not None
        return Ruling(Verdict.DENY, denial.reason, denial.rule, results, 0, 0)
    if not outcome.admitted:
        # the counters fit when read, yet the store did not admit: nothing reserved
        return Ruling(Verdict.DENY, Reason.STORE_UNAVAILABLE, "store", results, 0, 0)
    return Ruling(
        Verdict.ALLOW,
        Reason.ALLOWED,
        "",
        results,
        outcome.allowed_seconds,
        outcome.reserved,
        outcome.replayed,
    )


def peeked(p: Prepared, outcome: Outcome | None) -> Decision:
    """The decision ``explain`` shows: what would happen if the call were placed with these counters
    (``outcome`` is what a store's ``peek`` read: the values, the lock and the panic switch)."""
    if p.admission is None or outcome is None:
        return conclude(p, outcome)
    verdict = judge(p.admission, outcome.values)
    refused = barred(outcome.lock, outcome.panic, p.admission.international)
    would = outcome._replace(
        admitted=not refused and verdict.failed is None and verdict.allowed_seconds > 0,
        allowed_seconds=verdict.allowed_seconds,
        reserved=verdict.cost,
        refused=refused,
        failed=verdict.failed,
    )
    return conclude(p, would)


def on_store_failure(p: Prepared, mode: FailMode) -> Decision:
    """The policy's ``on_store_error`` for a call whose counters could not be reached."""
    if p.admission is None:
        return conclude(p, None)
    static_denial = p.denial
    if static_denial is not None and static_denial.reason is not None:
        return _decision(
            p, Ruling(Verdict.DENY, static_denial.reason, static_denial.rule, p.results, 0, 0)
        )
    deny = mode is FailMode.DENY or (mode is FailMode.DENY_INTERNATIONAL and p.number.international)
    note = RuleResult(
        "store",
        DENY if deny else PASS,
        f"counter store unavailable; on_store_error: {mode}",
        Reason.STORE_UNAVAILABLE if deny else None,
    )
    results = (*p.results, note)
    if deny:
        return _decision(p, Ruling(Verdict.DENY, Reason.STORE_UNAVAILABLE, "store", results, 0, 0))
    seconds = p.max_seconds // p.policy.rates.increment * p.policy.rates.increment
    return _decision(
        p, Ruling(Verdict.ALLOW, Reason.STORE_UNAVAILABLE, "store", results, seconds, 0)
    )


def reservation_id(attempt: CallAttempt, e164: str, rate: int, international: bool) -> str:
    """The id a call's reservation is held under: bound to what it was granted for.

    A second admission under the same id is handed the first one's decision without being counted
    again: that is how a trunk failover (same channel, same number, same rate) stays one call. Anything
    else that reuses a call id (another number, another rate, another extension, another channel: a ring
    group's parallel legs, a transfer, a forged ``call=``) gets an id of its own and is judged and
    counted in full. The id starts with the call id, so the audit and the store read alike.
    """
    bound = "\x1f".join(
        (
            attempt.call_id,
            attempt.leg,
            attempt.extension,
            e164,
            str(rate),
            "1" if international else "0",
        )
    )
    digest = hashlib.blake2b(bound.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{attempt.call_id}:{digest}"


def _dial(policy: Policy, number: NumberInfo) -> str:
    """What the dialplan dials: the E.164 number, or for an emergency call the number as listed."""
    if not number.emergency:
        return number.e164 or ""
    forms = emergency_forms(policy.emergency, policy.site.outside_line)
    return forms.get(number.dialled, number.dialled)


def _decision(p: Prepared, r: Ruling) -> Decision:
    return Decision(
        verdict=r.verdict,
        reason=r.reason,
        rule=r.rule,
        call_id=p.attempt.call_id,
        extension=p.attempt.extension,
        profile=p.rule.profile.name if p.rule else None,
        number=p.number,
        at=p.at,
        allowed_seconds=r.seconds,
        rate=p.rate,
        reserved=from_micro(r.reserved),
        rules=r.results,
        policy_digest=p.policy.digest,
        replayed=r.replayed,
        policy_revision=p.policy.revision,
        reservation=p.admission.call_id if p.admission is not None else "",
        dial=_dial(p.policy, p.number),
    )


def decide(
    memo: Memo, attempt: CallAttempt, values: Callable[[Admission], Outcome], at: datetime
) -> Decision:
    """The whole decision for callers that hold the counters: ``values`` reads (or admits) the plan."""
    p = prepare(memo, attempt, at)
    return conclude(p, values(p.admission) if p.admission is not None else None)
