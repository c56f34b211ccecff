"""The decision: a pure function of (policy, call attempt, counter values, time).

It never awaits, never reads the clock and never imports a backend. A decision is made in two halves so
that a store can do the counted half atomically:

* :func:`~callgate.core.plan.prepare` runs the rules that need no counter (emergency, extension, number,
  destinations, rate, origin, new_country, hours) and builds the
  :class:`~callgate.core.admission.Admission` for the counted rules (and for new_country, when only
  the countries the site has called can settle it);
* a store admits (or, for ``explain``, only reads) it and returns an
  :class:`~callgate.core.admission.Outcome`;
* here, :func:`rule_on` gives the verdict on both, and :func:`conclude` dresses it as a
  :class:`~callgate.core.decision.Decision`.

:func:`decide` chains the three for callers that already hold the counter values. A decision lists its
rules in the order of ``rules.ORDER`` (``rules.RULES``, its names), the one table of that order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Final, NamedTuple

from callgate.core.admission import (
    Admission,
    Check,
    CheckKind,
    CountryCheck,
    Outcome,
    Refusal,
    barred,
    from_micro,
    judge,
    money_text,
    spend_seconds,
    unknown_country,
)
from callgate.core.decision import Decision
from callgate.core.memo import Memo
from callgate.core.numbers import NumberInfo, emergency_forms
from callgate.core.plan import Prepared, prepare
from callgate.core.policy import FailMode, Policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import (
    ASK,
    DENY,
    PASS,
    REPORT,
    RULES,
    SKIP,
    CallAttempt,
    RuleResult,
    deny,
)

# prepare's results are the rules of rules.ORDER that it judges, in order; those before "lock" are
# all prepare's, so the store's lock check goes in at "lock"'s place. "new_country" is prepare's
# too (ASKed of the store, or settled): "lock" is the one rule before it that prepare leaves out.
_LOCK_AT = RULES.index("lock")
_NEW_AT = RULES.index("new_country") - 1
# Enum members read for every call, as module constants: on Python 3.11 reading one off its class
# costs about 40 ns, a global about 5.
_SPEND: Final = CheckKind.SPEND
_ALLOWED: Final = Verdict.ALLOW
_DENIED: Final = Verdict.DENY


def _lock_result(p: Prepared, outcome: Outcome) -> RuleResult:
    """The lock rule, as the store judged it (``Outcome.refused``)."""
    if outcome.refused is Refusal.LOCKED:
        return deny(
            "lock",
            Reason.EXTENSION_LOCKED,
            f"extension {p.attempt.extension} is locked ({outcome.lock})",
        )
    if outcome.refused is Refusal.PANIC:
        return deny("lock", Reason.SITE_PANIC, "site panic: international calls are refused")
    return (
        RuleResult("lock", PASS, f"locked ({outcome.lock}), call is domestic")
        if outcome.lock
        else _NOT_LOCKED
    )


_NOT_LOCKED = RuleResult("lock", PASS, "not locked")


def _new_country_result(p: Prepared, outcome: Outcome) -> RuleResult:
    """The new_country rule as the store judged it (``Outcome.learned``), where prepare ASKed it."""
    asked = p.results[_NEW_AT]
    assert p.admission is not None
    if outcome.learned:
        return RuleResult(
            asked.rule, PASS, f"{p.admission.country}: called before (an answered call settled)"
        )
    if p.admission.country_check is CountryCheck.REPORT:
        return RuleResult(asked.rule, REPORT, f"{asked.detail} (mode: report)", asked.reason)
    return RuleResult(asked.rule, DENY, asked.detail, asked.reason)


def _static(p: Prepared, outcome: Outcome) -> tuple[RuleResult, ...]:
    """prepare's results, with the store's verdict in place of a rule it ASKed (new_country)."""
    if p.results[_NEW_AT].outcome != ASK:
        return p.results
    return (*p.results[:_NEW_AT], _new_country_result(p, outcome), *p.results[_NEW_AT + 1 :])


def _limit_detail(check: Check, value: int) -> str:
    limit = check.report or check.limit
    whose = f" (provider {check.site}, all its tenants)" if check.site else ""
    if check.kind is _SPEND:
        return f"{money_text(value)} of {_cap_text(limit)} committed{whose}"
    return f"{value} of {limit}{whose}"


@functools.lru_cache(maxsize=256)
def _cap_text(limit: int) -> str:
    """money_text of a spend cap: the policy's few caps, written once each (bounded)."""
    return money_text(limit)


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
    new = tuple.__new__  # RuleResult without NamedTuple's Python-level __new__: a dozen a call
    failed, values = outcome.failed, outcome.values
    if len(values) != len(p.checks):
        raise ValueError("the outcome's values do not follow the admission's checks")
    for index, check in enumerate(p.checks):
        if index == failed:
            out.append(deny(check.rule, check.reason, _limit_detail(check, values[index])))
        elif check.report and _would_fail(p.admission, check, values[index]):
            text = f"{_limit_detail(check, values[index])} (mode: report)"
            out.append(RuleResult(check.rule, REPORT, text, check.reason))
        elif detail:  # _limit_detail's text, inline for a check of the call's own site
            value, limit = values[index], check.report or check.limit
            if check.site:
                text = _limit_detail(check, value)
            elif check.kind is _SPEND:
                text = f"{money_text(value)} of {_cap_text(limit)} committed"
            else:
                text = f"{value} of {limit}"
            out.append(new(RuleResult, (check.rule, PASS, text, None)))
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

    The rules come in ``rules.RULES`` order: prepare's results, with the store's lock check after the
    caller rule, then the counted rules. With ``detail=False`` (replay: a million calls) the counted
    rules are not described: ``rules`` then holds the static rules, the lock, the rule that denied, if
    one did, and those in mode: report that would have. The verdict, reason and seconds are the same
    either way.
    """
    if p.admission is None or outcome is None:
        return Ruling(Verdict.ALLOW, Reason.EMERGENCY, "emergency", p.results, 0, 0)
    static = _static(p, outcome)
    results = (
        *static[:_LOCK_AT],
        _lock_result(p, outcome),
        *static[_LOCK_AT:],
        *_limit_results(p, outcome, detail),
    )
    new = tuple.__new__  # Ruling(...), every field, without NamedTuple's Python-level __new__
    for denial in results:
        if denial.outcome == DENY:
            assert denial.reason is not None
            return new(Ruling, (_DENIED, denial.reason, denial.rule, results, 0, 0, False))
    if not outcome.admitted:
        # the counters fit when read, yet the store did not admit: nothing reserved
        return new(Ruling, (_DENIED, Reason.STORE_UNAVAILABLE, "store", results, 0, 0, False))
    return new(
        Ruling,
        (_ALLOWED, Reason.ALLOWED, "", results, outcome.allowed_seconds, outcome.reserved,
         outcome.replayed),
    )  # fmt: skip


def peeked(p: Prepared, outcome: Outcome | None) -> Decision:
    """The decision ``explain`` shows: what would happen if the call were placed with these counters
    (``outcome`` is what a store's ``peek`` read: the values, the lock and the panic switch)."""
    if p.admission is None or outcome is None:
        return conclude(p, outcome)
    verdict = judge(p.admission, outcome.values)
    a = p.admission
    refused = barred(
        outcome.lock, outcome.panic, a.international, unknown_country(a, outcome.learned)
    )
    would = tuple.__new__(  # outcome._replace(...) without its cost
        Outcome,
        (
            outcome.values,
            outcome.lock,
            outcome.panic,
            refused is None and verdict.failed is None and verdict.allowed_seconds > 0,  # admitted
            verdict.allowed_seconds,
            verdict.cost,  # reserved
            outcome.replayed,
            refused,
            verdict.failed,
            outcome.learned,
        ),
    )
    return conclude(p, would)


def on_store_failure(p: Prepared, mode: FailMode) -> Decision:
    """The policy's ``on_store_error`` for a call whose counters could not be reached."""
    if p.admission is None:
        return conclude(p, None)
    static_denial = p.denial
    if static_denial is not None and static_denial.reason is not None:
        return _decision(
            p, Ruling(Verdict.DENY, static_denial.reason, static_denial.rule, _unasked(p), 0, 0)
        )
    deny = mode is FailMode.DENY or (mode is FailMode.DENY_INTERNATIONAL and p.number.international)
    note = RuleResult(
        "store",
        DENY if deny else PASS,
        f"counter store unavailable; on_store_error: {mode}",
        Reason.STORE_UNAVAILABLE if deny else None,
    )
    results = (*_unasked(p), note)
    if deny:
        return _decision(p, Ruling(Verdict.DENY, Reason.STORE_UNAVAILABLE, "store", results, 0, 0))
    seconds = p.max_seconds // p.policy.rates.increment * p.policy.rates.increment
    return _decision(
        p, Ruling(Verdict.ALLOW, Reason.STORE_UNAVAILABLE, "store", results, seconds, 0)
    )


def _unasked(p: Prepared) -> tuple[RuleResult, ...]:
    """prepare's results when the store cannot be asked: a rule ASKed of it is not judged (the store
    rule, on_store_error, decides in its place)."""
    asked = p.results[_NEW_AT]
    if asked.outcome != ASK or p.admission is None:
        return p.results
    country = p.admission.country or "non-geographic"
    skipped = RuleResult(
        asked.rule, SKIP, f"{country}: not judged, the store cannot be reached (on_store_error)"
    )
    return (*p.results[:_NEW_AT], skipped, *p.results[_NEW_AT + 1 :])


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
        origin=p.attempt.origin,
        via=p.attempt.via,
    )


def decide(
    memo: Memo,
    attempt: CallAttempt,
    values: Callable[[Admission], Outcome],
    at: datetime,
    *,
    above: Memo | None = None,
) -> Decision:
    """The whole decision for callers that hold the counters: ``values`` reads (or admits) the plan
    (``above``: the provider's, for a tenant; :func:`~callgate.core.plan.prepare`)."""
    p = prepare(memo, attempt, at, above=above)
    return conclude(p, values(p.admission) if p.admission is not None else None)
