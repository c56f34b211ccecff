"""The burst rules that lock an extension, as plain data for a store: ``lockdown.after_denied`` and
``limits.short_calls``. Pure: ``serve`` and ``replay`` ask the same questions here, and a store counts."""

from __future__ import annotations

from callgate.numbers import CACHE_MAX_INPUT
from callgate.policy import ExtensionRule, Lockdown, Policy, ShortCallAction
from callgate.reasons import Reason
from callgate.store import BurstRule

# Denials that say nothing about the caller, so they never count toward a lockdown.
NOT_THE_CALLERS = frozenset(
    {Reason.UNKNOWN_EXTENSION, Reason.STORE_UNAVAILABLE, Reason.EXTENSION_LOCKED, Reason.SITE_PANIC}
)


def lockdown_rule(policy: Policy, reason: Reason) -> BurstRule | None:
    """The rule a denial with ``reason`` counts toward, if any."""
    lockdown = policy.lockdown
    if lockdown is None or reason in NOT_THE_CALLERS:
        return None
    rule: BurstRule | None = policy.memo.get(_LOCKDOWN)
    if rule is None:
        rule = policy.memo[_LOCKDOWN] = _lockdown(policy, lockdown)
    return rule


_LOCKDOWN = ("bursts", "")  # its key in policy.memo (no extension is empty)


def _lockdown(policy: Policy, lockdown: Lockdown) -> BurstRule:
    return BurstRule(
        "denied",
        lockdown.after_denied.within,
        lockdown.after_denied.count,
        lockdown.locks.value,
        report="after_denied" in lockdown.report,
    )


def short_call_rule(policy: Policy, extension: str, billsec: int) -> BurstRule | None:
    """The rule an answered call of ``billsec`` seconds counts toward, if it is short enough."""
    key = ("bursts", extension)  # in policy.memo, beside the engine's keys (never two strings)
    if key in policy.memo:
        rule: ExtensionRule | None = policy.memo[key]
    else:
        rule = policy.rule_for(extension)
        if len(extension) <= CACHE_MAX_INPUT:
            policy.memo[key] = rule
    short = rule.limits.short_calls if rule is not None else None
    if rule is None or short is None or not 0 < billsec < short.shorter_than:
        return None
    scope = policy.lockdown.locks.value if policy.lockdown else "international"
    report = short.then is ShortCallAction.ALERT or "short_calls" in rule.limits.report
    return BurstRule("short", short.within, short.calls, scope, report=report)
