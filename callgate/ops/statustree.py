"""The :class:`Status` tree that ``callgate status`` shows, as frozen values, and how the counters read
from Redis become its lines against a policy's caps.

Pure: :mod:`callgate.ops.status` reads Redis and builds the tree, :mod:`callgate.ops.statustext` renders
it. Scopes are ordered site, profiles, extensions (:func:`scope_order`); spend lines put the fullest
extensions first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from callgate.core.admission import to_micro
from callgate.core.keys import EXT, PERIODS, PROFILE, SITE_SCOPE, WINDOWS, profile_scope, scope_kind
from callgate.core.policy import Limits, Policy


@dataclass(frozen=True, slots=True)
class SpendLine:
    """Money committed (settled + reserved) by one scope in the current bucket of one period."""

    scope: str  # ext:1001, prof:office, site
    period: str  # hour | day | month
    bucket: str  # 2026-11-17T10 | 2026-11-17 | 2026-11 (site's local time)
    spent: int  # micro-units
    cap: int | None  # micro-units; None: the policy sets no cap here
    report: bool = False  # the cap is in mode: report (counted, never enforced)

    @property
    def percent(self) -> Decimal | None:
        """Share of the cap used, to 0.1 (None without a cap)."""
        if not self.cap:
            return None
        return (Decimal(self.spent * 100) / self.cap).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Count:
    name: str  # the policy key: calls_per_minute, calls_per_hour, international_calls_per_hour, ...
    value: int
    limit: int | None  # None: the policy sets no such limit on this scope


@dataclass(frozen=True, slots=True)
class CounterLine:
    scope: str
    counts: tuple[Count, ...]  # the windows (keys.WINDOWS), then concurrent_calls

    def value(self, name: str) -> int:
        return next(c.value for c in self.counts if c.name == name)


@dataclass(frozen=True, slots=True)
class LiveCall:
    """An admitted call not yet settled: its reservation, as the gate that admitted it recorded it."""

    call_id: str  # the reservation id (CALLGATE_CALL): the call id, then what it is bound to
    extension: str
    number: str  # E.164
    international: bool
    channel: str  # the channel (leg) that asked
    admitted_at: str  # ISO 8601, the site's local time
    allowed_seconds: int
    instance: str  # which gate admitted it
    until_ms: int  # when its reservation expires (allowed seconds + hold)
    # who caused the leg (core.origins.Origin: dialled, forward, transfer...); "" when the gate
    # that admitted it wrote no origin (a callgate from before origins were recorded)
    origin: str = ""


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: int
    digest: str
    pushed_by: str
    pushed_at: str
    source: str


@dataclass(frozen=True, slots=True)
class Status:
    site: str
    at: datetime  # local time of the site
    currency: str
    caps_from: str  # the policy the caps come from: its source, version and digest
    caps_digest: str
    active: PolicyVersion | None  # the version active in Redis; None: none pushed (file mode)
    panic: bool
    locks: tuple[tuple[str, str], ...]  # (extension, international | all)
    reservations: int  # admitted calls not yet settled, of every gate of the site
    reserved: int  # micro-units they hold on the caps (already inside ``spend``)
    spend: tuple[SpendLine, ...]
    counters: tuple[CounterLine, ...]
    live_calls: int  # the reservations: every admitted call not yet settled is live
    live: tuple[LiveCall, ...]  # at most status.LIVE_SHOWN of them, the earliest admitted first
    truncated: bool = False  # the scan stopped at status.MAX_KEYS: extension lines may be missing
    health: dict[str, Any] | None = None  # a running gate's /health body, when asked and answered

    @property
    def policy_version(self) -> int | None:
        return self.active.version if self.active else None


def _limits(policy: Policy, scope: str) -> Limits | None:
    """The limits the policy sets on a scope (None: no such profile, or no entry matches)."""
    kind, name = scope_kind(scope)
    if kind == SITE_SCOPE:
        return policy.site_limits
    if kind == PROFILE:
        profile = policy.profiles.get(name)
        return profile.group_limits if profile else None
    rule = policy.rule_for(name) if kind == EXT else None
    return rule.limits if rule else None


def scope_order(scope: str) -> tuple[int, bool, int, str]:
    """site, then profiles, then extensions, numbers in numeric order."""
    kind, name = scope_kind(scope)
    rank = {SITE_SCOPE: 0, PROFILE: 1}.get(kind, 2)
    return rank, not name.isdigit(), int(name) if name.isdigit() else 0, name


def spend_lines(
    policy: Policy, buckets: dict[str, str], spent: dict[tuple[str, str], int]
) -> tuple[SpendLine, ...]:
    """Every capped (scope, period) and every one with a counter; the fullest extensions first."""
    scopes = {SITE_SCOPE, *(profile_scope(p) for p in policy.profiles), *(s for s, _ in spent)}
    by_scope: dict[str, list[SpendLine]] = {}
    for scope in scopes:
        limits = _limits(policy, scope)
        for period in PERIODS:
            cap = getattr(limits.spend, period) if limits else None
            used = spent.get((scope, period))
            if cap is None and used is None:
                continue
            by_scope.setdefault(scope, []).append(
                SpendLine(
                    scope, period, buckets[period], used or 0,
                    None if cap is None else to_micro(cap),
                    limits is not None and f"spend.{period}" in limits.report,
                )
            )  # fmt: skip

    def pressure(scope: str) -> tuple[int, Decimal, int, tuple[int, bool, int, str]]:
        lines = by_scope[scope]
        fullest = max((x.percent or Decimal(0) for x in lines), default=Decimal(0))
        rank = scope_order(scope)
        return rank[0], -fullest if rank[0] == 2 else Decimal(0), -max(x.spent for x in lines), rank

    return tuple(x for scope in sorted(by_scope, key=pressure) for x in by_scope[scope])


def counter_lines(
    policy: Policy, counted: dict[tuple[str, str], int], concurrent: dict[str, int]
) -> tuple[CounterLine, ...]:
    """Scopes with at least one call in a window or in progress."""
    out = []
    for scope in sorted({s for s, _ in counted} | set(concurrent), key=scope_order):
        limits = _limits(policy, scope)
        counts = tuple(
            Count(
                w.limit,
                counted.get((scope, w.name), 0),
                getattr(limits, w.limit) if limits else None,
            )
            for w in WINDOWS
        )
        slots = concurrent.get(scope, 0)
        counts += (Count("concurrent_calls", slots, limits.concurrent_calls if limits else None),)
        if any(c.value for c in counts):
            out.append(CounterLine(scope, counts))
    return tuple(out)
