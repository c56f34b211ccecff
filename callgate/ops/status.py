"""``callgate status``: a site's live state as Redis holds it, read without changing anything.

:func:`read_status` gathers, for every gate of the site together: spend per extension, profile and site
against the caps of a policy (the site's local hour, day and month), the reservations in flight and the
live calls they are, calls in the last minute and hour and concurrent calls per scope, locks and panic,
and the active policy version. It returns a frozen :class:`Status` tree and prints nothing;
:func:`render_text` and :func:`as_json` turn it into text. :func:`fetch_health` asks a running
``serve`` for its links; :func:`persistence` whether Redis keeps its data across its own restart
(``serve`` warns at start-up when it does not: the caps would reset with it).

The keys are read as :mod:`callgate.core.keys` spells them. A live call is its reservation (``r:<id>``, which
the admission script writes with the call's extension, number, channel, time and gate): the reservations
not yet settled nor expired are counted, and the first :data:`LIVE_SHOWN` by admission time are listed.

The cost is bounded: one ``SCAN`` pass over the site's keys (``MATCH`` on the site prefix, ``COUNT``
:data:`SCAN_COUNT` a step, at most :data:`MAX_KEYS` keys, never ``KEYS``), then two pipelined round trips.
Redis errors become :class:`~callgate.errors.StoreUnavailable` here, once. Keys written by a newer or older
callgate in another shape (a reservation, ``policy:*``) are shown as absent rather than failing the read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from callgate.core.admission import MICRO, to_micro
from callgate.core.keys import (
    EXT,
    LOCK,
    PANIC,
    PERIODS,
    PROFILE,
    RESERVATION,
    SITE_SCOPE,
    SLOTS,
    SPEND,
    WINDOW,
    WINDOW_BY_NAME,
    WINDOWS,
    extension_scope,
    parse,
    policy_key,
    profile_scope,
    scope_kind,
    site_prefix,
    spend_key,
    spend_periods,
)
from callgate.core.policy import Limits, Policy
from callgate.errors import StoreUnavailable
from callgate.store.redis import decoded

SCAN_COUNT = 1000  # keys Redis looks at per SCAN step
MAX_KEYS = 200_000  # a site with more matching keys is shown in part (``Status.truncated``)
LIVE_SHOWN = 50  # live calls listed one by one; all are counted
# The kinds of key the one SCAN pass looks for (by their first letter): the rest are read by name.
_SCANNED = (
    "[" + "".join(sorted({kind[0] for kind in (SPEND, WINDOW, SLOTS, RESERVATION, LOCK)})) + "]*"
)
# What status reads of a reservation hash (keys.RESERVATION_FIELDS): its money, and the live call it is.
_HELD = ("cost", "until")
_LIVE = ("allowed", "extension", "number", "international", "channel", "admitted_at", "instance")


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
    counts: tuple[Count, ...]  # in COUNTERS order

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
    live: tuple[LiveCall, ...]  # at most LIVE_SHOWN of them, the earliest admitted first
    truncated: bool = False  # the key scan stopped at MAX_KEYS: extension lines may be missing
    health: dict[str, Any] | None = None  # a running gate's /health body, when asked and answered

    @property
    def policy_version(self) -> int | None:
        return self.active.version if self.active else None

    def as_json(self) -> str:
        return as_json(self)


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


def _order(scope: str) -> tuple[int, bool, int, str]:
    """site, then profiles, then extensions, numbers in numeric order."""
    kind, name = scope_kind(scope)
    rank = {SITE_SCOPE: 0, PROFILE: 1}.get(kind, 2)
    return rank, not name.isdigit(), int(name) if name.isdigit() else 0, name


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _scan(client: aioredis.Redis, match: str, limit: int) -> tuple[list[str], bool]:
    found: list[str] = []
    cursor: Any = 0
    while True:
        cursor, batch = await client.scan(cursor, match=match, count=SCAN_COUNT)
        found += map(decoded, batch)
        if len(found) >= limit:
            return found[:limit], True
        if not int(cursor):
            return found, False


async def read_status(
    client: aioredis.Redis,
    policy: Policy,
    now: datetime,
    *,
    live_limit: int = LIVE_SHOWN,
    max_keys: int = MAX_KEYS,
) -> Status:
    """The site's state at ``now`` against ``policy``'s caps. Raises StoreUnavailable."""
    try:
        return await _read(client, policy, now, live_limit, max_keys)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


class _Keys:
    """The site's keys the scan found, by what they count (``keys.parse``)."""

    def __init__(self, site: str, found: list[str], buckets: dict[str, str]) -> None:
        period_of = {name: period for period, name in buckets.items()}
        self.spend: dict[str, tuple[str, str]] = {}  # key -> (scope, period)
        self.windows: dict[str, tuple[str, str]] = {}  # key -> (scope, window name)
        self.slots: dict[str, str] = {}  # key -> scope
        self.held: dict[str, str] = {}  # key -> reservation id
        self.locks: dict[str, str] = {}  # key -> extension
        for key in found:
            shape = parse(site, key)
            if shape is None:
                continue
            if shape.kind == SPEND and shape.name in period_of:
                self.spend[key] = (shape.scope, period_of[shape.name])
            elif shape.kind == WINDOW:
                self.windows[key] = (shape.scope, shape.name)
            elif shape.kind == SLOTS:
                self.slots[key] = shape.scope
            elif shape.kind == RESERVATION:
                self.held[key] = shape.name
            elif shape.kind == LOCK:
                self.locks[key] = shape.name


def _replies(replies: list[Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(core, optional): the next reply; an error fails the read (core) or reads as absent
    (optional: a key of a shape this callgate does not know, written by another version)."""
    it = iter(replies)

    def core() -> Any:
        reply = next(it)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def optional() -> Any:
        reply = next(it)
        return None if isinstance(reply, Exception) else reply

    return core, optional


async def _read(
    client: aioredis.Redis, policy: Policy, now: datetime, live_limit: int, max_keys: int
) -> Status:
    site = policy.site.name
    prefix = site_prefix(site)
    local = now.astimezone(policy.site.timezone)
    buckets = {period: name for period, (name, _) in spend_periods(local).items()}
    now_ms = int(now.timestamp() * 1000)
    # one pass: spend, windows, concurrency, reservations (the live calls) and locks
    found, truncated = await _scan(client, _glob(prefix) + _SCANNED, max_keys)
    k = _Keys(site, found, buckets)
    scopes = [(SITE_SCOPE, policy.site_limits)]
    scopes += [(profile_scope(name), p.group_limits) for name, p in policy.profiles.items()]
    for scope, limits in scopes:  # read even when the scan was cut short
        for period, _cap in limits.spend.items():
            k.spend.setdefault(prefix + spend_key(scope, buckets[period]), (scope, period))
    fields = _HELD + _LIVE if live_limit > 0 else _HELD

    pipe = client.pipeline(transaction=False)
    if k.spend:
        pipe.mget(list(k.spend))
    for key, (_, window) in k.windows.items():
        pipe.zcount(key, f"({now_ms - WINDOW_BY_NAME[window].seconds * 1000}", "+inf")
    for key in k.slots:
        pipe.zcount(key, f"({now_ms}", "+inf")
    for key in k.held:
        pipe.hmget(key, *fields)
    if k.locks:
        pipe.mget(list(k.locks))
    pipe.exists(prefix + PANIC)
    pipe.get(prefix + policy_key("active"))
    core, optional = _replies(await pipe.execute(raise_on_error=False))

    values = core() if k.spend else []
    spent = {w: int(v) for w, v in zip(k.spend.values(), values, strict=True) if v is not None}
    counted = {where: int(core()) for where in k.windows.values()}
    concurrent = {scope: int(core()) for scope in k.slots.values()}
    reservations = reserved = 0
    live: list[tuple[int, LiveCall]] = []
    for reservation in k.held.values():
        held = dict(zip(fields, optional() or [None] * len(fields), strict=True))
        until = _int(held["until"])
        if until > now_ms:
            reservations, reserved = reservations + 1, reserved + _int(held["cost"])
            if live_limit > 0:
                live.append(_live_call(reservation, held, until, policy.site.timezone))
    values = core() if k.locks else []
    locks = [(ext, decoded(v)) for ext, v in zip(k.locks.values(), values, strict=True) if v]
    panic = bool(core())
    active = optional()

    pipe = client.pipeline(transaction=False)
    if active is not None:
        pipe.hget(prefix + policy_key("versions"), decoded(active))
    later = await pipe.execute(raise_on_error=False) if active is not None else []
    live.sort(key=lambda pair: (pair[0], pair[1].call_id))
    return Status(
        site=site,
        at=local,
        currency=policy.site.currency,
        caps_from=policy.source + (f" (v{policy.revision})" if policy.revision else ""),
        caps_digest=policy.digest,
        active=_version(active, later[-1]) if active is not None else None,
        panic=panic,
        locks=tuple(sorted(locks, key=lambda pair: _order(extension_scope(pair[0])))),
        reservations=reservations,
        reserved=reserved,
        spend=_spend_lines(policy, buckets, spent),
        counters=_counter_lines(policy, counted, concurrent),
        live_calls=reservations,
        live=tuple(call for _, call in live[:live_limit]),
        truncated=truncated,
    )


def _spend_lines(
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
        rank = _order(scope)
        return rank[0], -fullest if rank[0] == 2 else Decimal(0), -max(x.spent for x in lines), rank

    return tuple(x for scope in sorted(by_scope, key=pressure) for x in by_scope[scope])


def _counter_lines(
    policy: Policy, counted: dict[tuple[str, str], int], concurrent: dict[str, int]
) -> tuple[CounterLine, ...]:
    """Scopes with at least one call in a window or in progress."""
    out = []
    for scope in sorted({s for s, _ in counted} | set(concurrent), key=_order):
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


def _int(value: Any) -> int:
    """A number Redis holds as text; 0 when absent or not a whole number."""
    text = decoded(value) if value is not None else ""
    return int(text) if text.isdigit() else 0


def _live_call(
    reservation: str, held: dict[str, Any], until: int, zone: tzinfo
) -> tuple[int, LiveCall]:
    """(admitted at, epoch ms; the call) of a reservation hash's fields (absent ones read as empty)."""
    f = {name: decoded(v) if v is not None else "" for name, v in held.items()}
    at = _int(f["admitted_at"])
    when = datetime.fromtimestamp(at / 1000, zone).isoformat(timespec="seconds") if at else ""
    return at, LiveCall(
        reservation, f["extension"], f["number"], f["international"] == "1", f["channel"], when,
        _int(f["allowed"]), f["instance"], until,
    )  # fmt: skip


def _version(active: Any, raw: Any) -> PolicyVersion | None:
    try:
        version = int(decoded(active))
        data = json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return None
    get = data.get if isinstance(data, dict) else {}.get
    return PolicyVersion(
        version, str(get("digest") or get("hash") or ""), str(get("pushed_by") or ""),
        str(get("pushed_at") or ""), str(get("source") or ""),
    )  # fmt: skip


async def persistence(client: aioredis.Redis) -> bool | None:
    """Whether Redis keeps its data across its own restart (``appendonly yes`` or any ``save``
    point); None when it refuses ``CONFIG GET`` (a managed Redis, a renamed command, an ACL).
    :class:`~callgate.errors.StoreUnavailable` when it does not answer."""
    try:
        aof = await client.config_get("appendonly")
        save = await client.config_get("save")
    except ResponseError:  # NOPERM, unknown command
        return None
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc
    if not aof and not save:  # an empty answer: the command is filtered by a proxy
        return None
    return str(aof.get("appendonly", "")).lower() == "yes" or bool(
        str(save.get("save", "")).strip()
    )


async def fetch_health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A running gate's /health body (it comes with 200 and with 503), or None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as reply,
        ):
            body = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return dict(body) if isinstance(body, dict) else None


# --- text for people and for scripts -------------------------------------------------------------


def money(micro: int) -> str:
    """Exact amount with at least two decimals: 12500000 -> 12.50, 1234 -> 0.001234."""
    text = str((Decimal(micro) / MICRO).quantize(Decimal("0.000001")))
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def _links_text(health: dict[str, Any]) -> str:
    links = health.get("links")
    parts = [f"{k} {v}" for k, v in links.items()] if isinstance(links, dict) else []
    more = [f"policy version {health['policy_version']}"] if "policy_version" in health else []
    if isinstance(health.get("uptime_s"), int | float):
        more.append(
            f"up {int(health['uptime_s']) // 3600}h{int(health['uptime_s']) % 3600 // 60:02d}m"
        )
    return f"{health.get('status', '?')}: {', '.join(parts) or 'no links'}" + (
        f" ({', '.join(more)})" if more else ""
    )


_PANIC = "ON: every international call is refused (`callgate calm` ends it)"
_SPEND_HEAD, _SPEND_W = ("scope", "period", "bucket", "spent", "cap", "used"), (
    "<6", "<13", ">12", ">12", ">7",
)  # fmt: skip
_COUNT_HEAD, _COUNT_W = ("scope", "/minute", "/hour", "intl/hour", "concurrent"), (
    ">8", ">8", ">10", ">11",
)  # fmt: skip


def _row(cells: tuple[str, ...], widths: tuple[str, ...]) -> str:
    first, *rest = cells
    return f"  {first:<16} " + " ".join(f"{c:{w}}" for c, w in zip(rest, widths, strict=True))


def render_text(s: Status) -> str:
    a = s.active
    lines = [f"site       {s.site} at {s.at.isoformat(timespec='seconds')}"]
    if a is None:
        lines.append("policy     no version active in Redis (file mode)")
    else:
        lines.append(f"policy     version {a.version} sha256:{a.digest[:12]}, pushed by "
                     f"{a.pushed_by} at {a.pushed_at}")  # fmt: skip
    if a is None or a.digest != s.caps_digest:
        lines.append(f"caps from  {s.caps_from} sha256:{s.caps_digest[:12]}")
    lines.append(f"panic      {_PANIC if s.panic else 'off'}")
    lines.append("locks      " + (", ".join(f"{e} ({scope})" for e, scope in s.locks) or "none"))
    if s.health is not None:
        lines.append(f"gate       {_links_text(s.health)}")
    lines.append(f"in flight  {s.reservations} admitted calls not yet settled, "
                 f"{money(s.reserved)} {s.currency} reserved")  # fmt: skip
    if s.live_calls:
        lines.append(f"live calls {s.live_calls}")
    for c in s.live:
        where = "international" if c.international else "domestic"
        on = f" on {c.instance}" if c.instance else ""
        lines.append(f"  {c.extension} -> {c.number} ({where}) since {c.admitted_at}, at most "
                     f"{c.allowed_seconds}s, channel {c.channel}{on}")  # fmt: skip
    if s.live_calls > len(s.live):
        lines.append(f"  ... and {s.live_calls - len(s.live)} more")
    lines.append(f"spend      settled + reserved, {s.currency}, against the caps")
    lines += (
        [_row(_SPEND_HEAD, _SPEND_W)]
        if s.spend
        else ["  no cap, nothing spent this hour, day or month"]
    )
    for x in s.spend:
        cap = money(x.cap) if x.cap is not None else "-"
        used = f"{x.percent}%" if x.percent is not None else ""
        row = _row((x.scope, x.period, x.bucket, money(x.spent), cap, used), _SPEND_W)
        lines.append(row + (" (mode: report)" if x.report else ""))
    lines.append("counters   calls in the last minute and hour, international in the hour, now")
    lines += (
        [_row(_COUNT_HEAD, _COUNT_W)] if s.counters else ["  no call in the last hour, none up now"]
    )
    for line in s.counters:
        cells = (
            f"{c.value}/{c.limit}" if c.limit is not None else str(c.value) for c in line.counts
        )
        lines.append(_row((line.scope, *cells), _COUNT_W))
    if s.truncated:
        lines.append(f"(more than {MAX_KEYS} keys: some extensions are not shown)")
    return "\n".join(lines)


def as_json(s: Status) -> str:
    """The status as one JSON object: money both exact (text) and in micro-units."""
    spend = [
        {"scope": x.scope, "period": x.period, "bucket": x.bucket, "spent": money(x.spent),
         "spent_micro": x.spent, "cap": None if x.cap is None else money(x.cap), "cap_micro": x.cap,
         "percent": None if x.percent is None else float(x.percent), "report": x.report}
        for x in s.spend
    ]  # fmt: skip
    counters = [
        {"scope": c.scope, **{n.name: {"value": n.value, "limit": n.limit} for n in c.counts}}
        for c in s.counters
    ]
    active = None if s.active is None else asdict(s.active)
    data = {
        "site": s.site, "at": s.at.isoformat(), "currency": s.currency,
        "policy": {"active": active, "caps_from": s.caps_from, "caps_digest": s.caps_digest},
        "panic": s.panic, "locks": dict(s.locks),
        "reservations": {"count": s.reservations, "reserved": money(s.reserved),
                         "reserved_micro": s.reserved},
        "live_calls": {"count": s.live_calls, "calls": [asdict(c) for c in s.live]},
        "spend": spend, "counters": counters, "truncated": s.truncated, "health": s.health,
    }  # fmt: skip
    return json.dumps(data, indent=2)
