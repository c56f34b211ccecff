"""``callgate status``: a site's live state as Redis holds it, read without changing anything.

Spend per extension, profile and site against the policy's caps (hour, day, month, in the site's local
periods), the reservations in flight (admitted calls not yet settled: the live calls of every gate of the
site), calls in the last minute and hour and concurrent calls per scope, locks and panic, the active policy
version, and, when a gate's ``/health`` answers, its links. Keys are found with SCAN, never KEYS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from callgate.admission import from_micro, money_text, to_micro
from callgate.engine import spend_periods
from callgate.policy import Limits, Policy
from callgate.redisstore import site_prefix


@dataclass(frozen=True, slots=True)
class SpendLine:
    scope: str  # ext:1001, prof:office, site
    period: str  # hour | day | month
    bucket: str
    spent: str  # settled + reserved, in the site's currency
    cap: str | None
    percent: float | None


@dataclass(frozen=True, slots=True)
class CounterLine:
    scope: str
    last_minute: int
    last_hour: int
    concurrent: int


@dataclass(frozen=True, slots=True)
class Status:
    site: str
    at: str
    currency: str
    policy_version: int | None
    panic: bool
    locks: dict[str, str]
    reservations: int
    reserved: str
    spend: list[SpendLine] = field(default_factory=list)
    counters: list[CounterLine] = field(default_factory=list)
    health: dict[str, Any] | None = None

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _caps(policy: Policy, scope: str) -> Limits | None:
    if scope == "site":
        return policy.site_limits
    kind, _, name = scope.partition(":")
    if kind == "prof":
        profile = policy.profiles.get(name)
        return profile.group_limits if profile else None
    rule = policy.rule_for(name)
    return rule.limits if rule else None


async def _scan(client: aioredis.Redis, pattern: str) -> list[str]:
    return [str(k) async for k in client.scan_iter(match=pattern, count=1000)]


async def read_status(client: aioredis.Redis, policy: Policy, now: datetime) -> Status:
    site = policy.site.name
    prefix = site_prefix(site)
    local = now.astimezone(policy.site.timezone)
    buckets = {period: name for period, (name, _) in spend_periods(local).items()}
    version = await client.get(prefix + "policy:active")
    panic = bool(await client.exists(prefix + "panic"))
    lock_keys = await _scan(client, prefix + "lock:*")
    lock_values = await client.mget(lock_keys) if lock_keys else []
    locks = {k[len(prefix) + 5 :]: str(v) for k, v in zip(lock_keys, lock_values, strict=True) if v}
    now_ms = int(now.timestamp() * 1000)
    reservations, reserved = 0, 0
    for key in await _scan(client, prefix + "r:*"):
        held = await client.hmget(key, "cost", "until")
        if held[1] is not None and int(held[1]) > now_ms:
            reservations += 1
            reserved += int(held[0] or 0)
    spend: list[SpendLine] = []
    for key in sorted(await _scan(client, prefix + "s:*")):
        scope, _, bucket = key[len(prefix) + 2 :].rpartition(":")
        period = next((p for p, b in buckets.items() if b == bucket), None)
        if period is None:
            continue  # an earlier period, kept until its key expires
        used = int(await client.get(key) or 0)
        limits = _caps(policy, scope)
        cap = getattr(limits.spend, period) if limits else None
        percent = round(used * 100 / to_micro(cap), 1) if cap else None
        spend.append(
            SpendLine(
                scope, period, bucket, money_text(used)[:-4], str(cap) if cap else None, percent
            )
        )
    scopes = sorted(
        {k[len(prefix) + 2 :].rsplit(":", 1)[0] for k in await _scan(client, prefix + "w:*:cp?")}
        | {k[len(prefix) + 2 :] for k in await _scan(client, prefix + "c:*")}
    )
    counters = []
    for scope in scopes:
        minute = await client.zcount(f"{prefix}w:{scope}:cpm", f"({now_ms - 60_000}", "+inf")
        hour = await client.zcount(f"{prefix}w:{scope}:cph", f"({now_ms - 3_600_000}", "+inf")
        concurrent = await client.zcount(f"{prefix}c:{scope}", f"({now_ms}", "+inf")
        counters.append(CounterLine(scope, int(minute), int(hour), int(concurrent)))
    return Status(
        site, now.isoformat(), policy.site.currency, int(version) if version else None, panic,
        locks, reservations, str(from_micro(reserved)), spend, counters,
    )  # fmt: skip


async def fetch_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """A running gate's /health body, or None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as reply,
        ):
            body = await reply.json(content_type=None)
            return dict(body) if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def render_text(s: Status) -> str:
    lines = [
        f"site {s.site} at {s.at}",
        f"policy   version {s.policy_version if s.policy_version is not None else '- (file mode)'}",
        f"panic    {'ON: international calls are refused' if s.panic else 'off'}",
        "locks    " + (", ".join(f"{e} ({v})" for e, v in sorted(s.locks.items())) or "none"),
        f"in flight {s.reservations} admitted calls not yet settled, {s.reserved} {s.currency} reserved",
    ]
    if s.health is not None:
        links = ", ".join(f"{k} {v}" for k, v in s.health.get("links", {}).items())
        lines.append(f"gate     {s.health.get('status')}: {links}")
    lines.append("spend (settled + reserved) against caps:")
    for x in s.spend:
        cap = f" of {x.cap} ({x.percent}%)" if x.cap else " (no cap)"
        lines.append(f"  {x.scope:<16} {x.period:<5} {x.bucket:<13} {x.spent:>10}{cap}")
    if not s.spend:
        lines.append("  nothing spent in the current hour, day or month")
    lines.append("counters: calls in the last minute / hour, concurrent now")
    lines += [
        f"  {c.scope:<16} {c.last_minute:>5} {c.last_hour:>6} {c.concurrent:>5}" for c in s.counters
    ]
    return "\n".join(lines)
