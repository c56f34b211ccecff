"""The burst rules that lock an extension, as plain data for a store: ``lockdown.after_denied`` and
``limits.short_calls``. Pure: ``serve`` and ``replay`` ask the same questions here, and a store counts."""

from __future__ import annotations

from callgate.core.admission import BurstRule
from callgate.core.keys import BURSTS
from callgate.core.memo import Memo
from callgate.core.numbers import CACHE_MAX_INPUT
from callgate.core.origins import Origin
from callgate.core.policy import Lockdown, LockScope, ShortCallAction
from callgate.core.reasons import Reason

# Denials that say nothing about the caller, so they never count toward a lockdown.
NOT_THE_CALLERS = frozenset(
    {Reason.UNKNOWN_EXTENSION, Reason.STORE_UNAVAILABLE, Reason.EXTENSION_LOCKED, Reason.SITE_PANIC}
)


def lockdown_rule(memo: Memo, reason: Reason, origin: Origin = Origin.DIALLED) -> BurstRule | None:
    """The rule of ``memo``'s policy that a denial with ``reason`` counts toward, if any.

    Only an extension's own calls count (``origin`` dialled): a leg that no phone dialled is set off by
    somebody else (an outside caller reaching a forward or DISA), who must not be able to lock the
    extension by calling it again and again."""
    lockdown = memo.policy.lockdown
    if lockdown is None or reason in NOT_THE_CALLERS or origin is not Origin.DIALLED:
        return None
    if memo.lockdown is None:
        memo.lockdown = _lockdown(lockdown)
    return memo.lockdown


def _lockdown(lockdown: Lockdown) -> BurstRule:
    return BurstRule(
        BURSTS.denied,
        lockdown.after_denied.within,
        lockdown.after_denied.count,
        lockdown.locks,
        report="after_denied" in lockdown.report,
    )


def short_call_rule(
    memo: Memo, extension: str, billsec: int, origin: Origin = Origin.DIALLED
) -> BurstRule | None:
    """The rule of ``memo``'s policy that an answered call of ``billsec`` seconds counts toward, if it
    is short enough. Only an extension's own calls count, as for :func:`lockdown_rule`."""
    if origin is not Origin.DIALLED:
        return None
    policy = memo.policy
    if extension in memo.short_calls:
        rule = memo.short_calls[extension]
    else:
        rule = policy.rule_for(extension)
        if len(extension) <= CACHE_MAX_INPUT:
            memo.short_calls[extension] = rule
    short = rule.limits.short_calls if rule is not None else None
    if rule is None or short is None or not 0 < billsec < short.shorter_than:
        return None
    scope = policy.lockdown.locks if policy.lockdown else LockScope.INTERNATIONAL
    report = short.then is ShortCallAction.ALERT or "short_calls" in rule.limits.report
    return BurstRule(BURSTS.short, short.within, short.calls, scope, report=report)
