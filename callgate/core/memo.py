"""What the engine works out once per policy: the :class:`Memo` and the rows of its typed tables.

Each table is keyed by exactly what its results depend on (``rules.py`` groups the static rules by what
they look at); none depends on a counter or on the clock. :func:`~callgate.core.plan.prepare` fills the
caller, destination, origin and hours tables, :mod:`callgate.core.bursts` the burst rules'.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import NamedTuple

from callgate.core.admission import BurstRule, Check
from callgate.core.numbers import NumberInfo
from callgate.core.origins import Origin
from callgate.core.policy import ExtensionRule, Policy
from callgate.core.rules import RuleResult

# The hours table's key: (entry, number unread, international, weekday, hour, minute, holiday date).
Hours = tuple[int, bool, bool, int, int, int, date | None]

# A Memo holds at most this many entries; past it, it is emptied (bounded memory whatever is dialled).
MEMO_MAX = 50_000


class ScopeChecks(NamedTuple):
    """One scope's counted checks (ext, profile group or site) for national or international calls,
    all but the number and the time filled in: built once per extension and kept in the Memo."""

    counts: tuple[Check, ...]  # velocity and concurrency: complete
    same_number: Check | None  # key ends in ":n:", the number goes after it
    distinct: Check | None  # member left empty: the number goes there
    spend: tuple[tuple[str, Check], ...]  # (period, check whose key ends in the scope; no TTL yet)


class Caller(NamedTuple):
    """What an extension gets, whatever it dials (memoised per extension)."""

    rule: ExtensionRule | None
    entry: int  # the entry's position in policy.extensions; -1: no entry matches
    result: RuleResult  # what the caller rule said
    scopes: tuple[tuple[ScopeChecks, ...], tuple[ScopeChecks, ...]]  # national, international calls
    max_seconds: int


class Destination(NamedTuple):
    """What the destination rules say of one dialled string for one entry (memoised per both)."""

    number: NumberInfo
    results: tuple[RuleResult, ...]
    rate: Decimal | None
    rate_micro: int
    denied: bool  # one of the destination rules denies


class Memo:
    """What the engine worked out once for one policy: results that depend on no counter and no clock,
    each table keyed by what its results do depend on (rules.py says what each group of rules looks
    at). Whoever holds a policy makes its Memo with it (the live holder, replay, explain), and the
    engine reads the policy from the Memo, so a new policy always starts with a new, empty one.

    Together the tables hold at most ``MEMO_MAX`` entries (:meth:`keep_bounded`, which
    :func:`~callgate.core.plan.prepare` calls before it adds to a table); nothing is kept of a call
    whose extension and number together are longer than ``CACHE_MAX_INPUT`` (nor, in
    ``short_calls``, of a longer extension)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.callers: dict[str, Caller] = {}  # by extension
        self.destinations: dict[tuple[int, str], Destination] = {}  # by (entry, dialled string)
        # the origin and new_country rules of a leg that no phone dialled, by (origin, dialled
        # string): their own table, as they look at the origin and never at the entry
        self.origins: dict[tuple[Origin, str], tuple[RuleResult, ...]] = {}
        # the time rule, by (entry, number unread, international, local weekday, hour, minute, and
        # the date when it is a holiday, else None): what rules._hours looks at
        self.hours: dict[Hours, RuleResult] = {}
        self.short_calls: dict[str, ExtensionRule | None] = {}  # bursts: the entry, by extension
        self.lockdown: BurstRule | None = None  # bursts: the lockdown rule, once worked out
        # a provider's policy: the checks its site_limits add to its tenants' admissions, for
        # national and international calls (plan.prepare's ``above``), once worked out
        self.provider: tuple[ScopeChecks, ScopeChecks] | None = None

    def __len__(self) -> int:
        return (
            len(self.callers)
            + len(self.destinations)
            + len(self.origins)
            + len(self.hours)
            + len(self.short_calls)
            + (self.lockdown is not None)
        )

    def keep_bounded(self) -> None:
        """Empty every table once together they hold more than ``MEMO_MAX`` entries."""
        if len(self) > MEMO_MAX:
            self.clear()

    def clear(self) -> None:
        self.callers.clear()
        self.destinations.clear()
        self.origins.clear()
        self.hours.clear()
        self.short_calls.clear()
        self.lockdown = None
        self.provider = None
