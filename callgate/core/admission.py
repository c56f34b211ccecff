"""The counted part of a decision: which counters and caps a call must fit under, as plain data.

The engine turns a call into an :class:`Admission` (a list of :class:`Check`); a store reads the current
value of every check and, if the call fits under all of them, reserves it, in one atomic step. The
arithmetic of that judgement lives here, once, in :func:`judge`; the in-process store calls it and the Redis
store's Lua script (``lua/admit.lua``) mirrors it line by line. The shared store test suite keeps the two
in step.

Money here is integer micro-units of the site's currency (1 USD = 1,000,000); rates are micro-units per
minute. Time is integer milliseconds since the epoch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from callgate.core.origins import Origin
from callgate.core.policy import LockScope
from callgate.core.reasons import Reason

MICRO = 1_000_000
_MICRO_UNIT = Decimal("0.000001")  # from_micro's quantum, made once
# The limit a store sees for a rule in mode: report: counted and reserved as usual, never reached. Below
# 2**53 / 60, so the Lua arithmetic on it stays exact.
REPORT_LIMIT = 10**12


def to_micro(amount: Decimal) -> int:
    """Exact money to micro-units (policy amounts have at most six decimals; rounds up otherwise)."""
    scaled = amount * MICRO
    whole = int(scaled)
    return whole if whole == scaled else whole + 1


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO).quantize(_MICRO_UNIT)


def money_text(micro: int, *, short: bool = False) -> str:
    """Micro-units as exact text: six decimals, as ``str(from_micro(micro))`` gives without building a
    Decimal; with ``short``, at least two and no trailing zeros (12500000 -> 12.50, 1234 -> 0.001234)."""
    if micro < 0:
        return "-" + money_text(-micro, short=short)
    if short:
        whole, part = divmod(micro, MICRO)
        return f"{whole}.{f'{part:06d}'.rstrip('0').ljust(2, '0')}"
    return "%d.%06d" % divmod(micro, MICRO)  # noqa: UP031 (twice as fast as an f-string here)


def cost_micro(rate_per_minute: int, seconds: int) -> int:
    """What ``seconds`` cost at ``rate_per_minute`` (micro-units), rounded up to a micro-unit."""
    return -(-rate_per_minute * seconds // 60)


def billed_seconds(seconds: int, increment: int) -> int:
    """Seconds rounded up to the billing increment."""
    return -(-seconds // increment) * increment


class CheckKind(enum.StrEnum):
    WINDOW = "window"  # events in a sliding window: value = events in (now - window, now]
    DISTINCT = "distinct"  # other numbers called in a sliding window: value excludes this number
    CONCURRENT = "concurrent"  # calls admitted and not yet ended or expired
    SPEND = "spend"  # money committed (settled + reserved) in a calendar period, micro-units


class CountryCheck(enum.StrEnum):
    """Whether a store must look the call's country up in the countries the site has called
    (``keys.COUNTRIES``) in the same atomic step, for the ``new_country`` rule; ``lua/admit.lua``
    takes these values."""

    NONE = ""  # not asked: the policy alone settled the rule (a dialled call, a domestic leg...)
    DENY = "deny"  # refuse the call when the site has never called the country
    REPORT = "report"  # look it up, never refuse (new_countries in mode: report)


class Check(NamedTuple):
    """One counter a call must fit under (a NamedTuple: built a dozen times per call, see RuleResult).

    ``limit`` is a count, or micro-units for SPEND. ``window`` is the sliding window in seconds (WINDOW,
    DISTINCT) or how long the period's key must live (SPEND). ``member`` is the number for DISTINCT.
    ``key`` is relative to the prefix of ``site`` (``keys.site_prefix``): "" for the admission's own
    site; a provider's cap in its tenant's admission names the provider (``plan.prepare``'s ``above``).
    """

    rule: str
    reason: Reason
    kind: CheckKind
    key: str
    limit: int
    window: int = 0
    member: str = ""
    report: int = (
        0  # mode: report: the policy's limit; ``limit`` is then REPORT_LIMIT (never reached)
    )
    site: str = ""  # the site whose prefix ``key`` is under; "": the admission's own


class Admission(NamedTuple):
    """Everything a store needs to admit (or only look at) one call, with no policy in sight.

    The store keys the reservation by ``call_id`` and reads the lock of ``extension``
    (``callgate.core.keys``); the reservation also records the live call (``extension``, ``number``,
    ``international``, ``channel``, ``at_ms``, ``instance``, ``origin``) for ``callgate status``, and
    ``country``, which the site learns when the call settles answered. With ``country_check`` the
    store also says whether the site has called ``country`` before (``Outcome.learned``) and, for
    DENY, refuses the call when it has not (:func:`barred`).
    """

    site: str
    call_id: str  # the reservation id (plan.reservation_id)
    at_ms: int
    checks: tuple[Check, ...]
    rate: int  # micro-units per minute
    increment: int
    max_seconds: int
    hold: int  # seconds a reservation outlives its allowed seconds before it is charged in full
    extension: str
    international: bool
    reserve: bool  # False when a rule before the counters already refused: read, never write
    # Epoch ms after which the store must not reserve (its own clock); 0: no deadline (offline stores)
    deadline_ms: int = 0
    number: str = ""  # E.164; "" when the number could not be read
    channel: str = ""  # the channel (leg) that asked
    instance: str = ""  # the gate that admits it (the gate fills it in; "" offline)
    origin: Origin = Origin.DIALLED  # who caused the leg: recorded
    country: str = ""  # the number's ISO country; "" when it has none (or could not be read)
    country_check: CountryCheck = CountryCheck.NONE


class Outcome(NamedTuple):
    """What a store saw, judged and did. ``values`` follow ``Admission.checks``.

    ``refused`` and ``failed`` say why a call was not admitted, as the store judged it (:func:`barred`,
    then :func:`judge`); a call handed its earlier admission again (``replayed``) is not judged again.
    """

    values: tuple[int, ...]
    lock: LockScope | None = None  # the extension's lock (:func:`held_lock`)
    panic: bool = False
    admitted: bool = False
    allowed_seconds: int = 0  # admitted: reserved for; else what the counters would allow
    reserved: int = 0  # micro-units
    replayed: bool = False  # the call id was already admitted; this is that admission again
    refused: Refusal | None = None  # what refused the call before any counter
    failed: int | None = None  # index of the first check the call does not fit under
    learned: bool = False  # the site has called Admission.country (read only with a country_check)


class Refusal(enum.StrEnum):
    """What refuses a call before any counter (``lua/admit.lua`` returns these values)."""

    LOCKED = "lock"  # the extension's lock
    PANIC = "panic"  # the site's panic switch (international calls only)
    NEW_COUNTRY = "new_country"  # a country the site has never called (CountryCheck.DENY)


def held_lock(value: str) -> LockScope | None:
    """An extension's lock as a store holds it (its text; "" for none): its scope, or None. A value
    that is no scope refuses nothing, as ``lua/admit.lua`` reads it."""
    if not value:
        return None
    try:
        return LockScope(value)
    except ValueError:
        return None


def barred(
    lock: LockScope | None, panic: bool, international: bool, new_country: bool = False
) -> Refusal | None:
    """What refuses a call before any counter, if anything, in the order of ``rules.ORDER``: the lock,
    the panic switch, then ``new_country`` (True: the admission's CountryCheck is DENY and the site
    has not learned its country). Mirrored by ``lua/admit.lua``."""
    if lock is LockScope.ALL or (international and lock is LockScope.INTERNATIONAL):
        return Refusal.LOCKED
    if international and panic:
        return Refusal.PANIC
    if new_country:
        return Refusal.NEW_COUNTRY
    return None


def unknown_country(admission: Admission, learned: bool) -> bool:
    """Does the ``new_country`` rule refuse this admission, given whether the site has called its
    country (``barred``'s ``new_country``)?"""
    return admission.country_check is CountryCheck.DENY and not learned


class Judgement(NamedTuple):
    failed: int | None  # index of the first check the call does not fit under
    allowed_seconds: int
    cost: int  # micro-units to reserve on every SPEND check


def spend_seconds(remaining: int, rate: int, increment: int, ceiling: int) -> int:
    """Most seconds (a multiple of ``increment``, at most ``ceiling``) that ``remaining`` can pay for."""
    if rate <= 0:
        return ceiling
    fit = max(remaining, 0) * 60 // rate
    return min(fit, ceiling) // increment * increment


def judge(admission: Admission, values: tuple[int, ...]) -> Judgement:
    """Does the call fit under every check, and for how long? Pure; mirrored by ``lua/admit.lua``."""
    increment, rate = admission.increment, admission.rate
    ceiling = admission.max_seconds // increment * increment
    allowed = ceiling
    failed: int | None = None
    checks, spend = admission.checks, CheckKind.SPEND
    if len(checks) != len(values):
        raise ValueError("the values do not follow the admission's checks")
    for index, check in enumerate(checks):
        value = values[index]
        if check.kind is spend:
            fit = ceiling  # spend_seconds(check.limit - value, rate, increment, ceiling), inlined
            if rate > 0:
                remaining = check.limit - value
                fit = (remaining if remaining > 0 else 0) * 60 // rate
                fit = (fit if fit < ceiling else ceiling) // increment * increment
            if fit < increment and failed is None:
                failed = index
            if fit < allowed:  # min(), without the call  # noqa: PLR1730
                allowed = fit
        elif value >= check.limit and failed is None:
            failed = index
    if failed is not None or allowed < increment:
        return tuple.__new__(Judgement, (failed, 0, 0))  # without NamedTuple's Python __new__
    return tuple.__new__(Judgement, (None, allowed, cost_micro(rate, allowed)))


@dataclass(frozen=True, slots=True)
class BurstRule:
    """One burst rule (lockdown.after_denied, limits.short_calls) applied to one extension's event."""

    name: str  # one of keys.BURSTS: the window's key
    within: int  # seconds
    threshold: int
    scope: LockScope  # the lock it sets
    report: bool = False  # count, never lock
