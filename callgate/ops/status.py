"""``callgate status``: a site's live state as Redis holds it, read without changing anything.

:func:`read_status` gathers, for every gate of the site together: spend per extension, profile and site
against the caps of a policy (the site's local hour, day and month), the reservations in flight and the
live calls they are, calls in the last minute and hour and concurrent calls per scope, locks and panic,
and the active policy version. It returns a frozen :class:`~callgate.ops.statustree.Status` tree
(whose lines :mod:`callgate.ops.statustree` works out against the caps) and prints nothing;
:mod:`callgate.ops.statustext` turns it into text. :func:`fetch_health` asks a running ``serve`` for
its links; :func:`persistence` whether Redis keeps its data across its own restart (``serve`` warns at
start-up when it does not: the caps would reset with it).

The keys are read as :mod:`callgate.core.keys` spells them. A live call is its reservation (``r:<id>``, which
the admission script writes with the call's extension, number, channel, time, gate and origin): the reservations
not yet settled nor expired are counted, and the first :data:`LIVE_SHOWN` by admission time are listed.

The cost is bounded: one ``SCAN`` pass over the site's keys (``MATCH`` on the site prefix, ``COUNT``
:data:`SCAN_COUNT` a step, at most :data:`MAX_KEYS` keys, never ``KEYS``), then two pipelined round trips.
On a Redis Cluster all of it goes to the one master that holds the site's slot (the scan through
:func:`callgate.store.redis.scan_site`; the pipelines read key by key, since a Cluster pipeline refuses
``MGET``). Redis errors become :class:`~callgate.errors.StoreUnavailable` here, once. Keys written by a
newer or older callgate in another shape (a reservation, ``policy:*``) are shown as absent rather than
failing the read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

import aiohttp
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ResponseError

from callgate.core.keys import (
    LOCK,
    PANIC,
    RESERVATION,
    RESERVATION_FIELDS,
    SITE_SCOPE,
    SLOTS,
    SPEND,
    WINDOW,
    WINDOW_BY_NAME,
    extension_scope,
    parse,
    policy_key,
    profile_scope,
    site_prefix,
    spend_key,
    spend_periods,
)
from callgate.core.policy import Policy
from callgate.errors import StoreUnavailable
from callgate.ops.policystore import ACTIVE, VERSIONS
from callgate.ops.statustree import (
    LiveCall,
    PolicyVersion,
    Status,
    counter_lines,
    scope_order,
    spend_lines,
)
from callgate.store.connect import Client
from callgate.store.redis import REDIS_ERRORS, decoded, scan_site

SCAN_COUNT = 1000  # keys Redis looks at per SCAN step
MAX_KEYS = 200_000  # a site with more matching keys is shown in part (``Status.truncated``)
LIVE_SHOWN = 50  # live calls listed one by one; all are counted
# The kinds of key the one SCAN pass looks for (by their first letter): the rest are read by name.
_SCANNED = (
    "[" + "".join(sorted({kind[0] for kind in (SPEND, WINDOW, SLOTS, RESERVATION, LOCK)})) + "]*"
)


def _reservation_fields(*names: str) -> tuple[str, ...]:
    """``names``, each a field of a reservation hash as :data:`keys.RESERVATION_FIELDS` has it: a field
    renamed or dropped there fails here, at import, rather than reading as absent."""
    unknown = [name for name in names if name not in RESERVATION_FIELDS]
    if unknown:
        raise ImportError(f"not in callgate.core.keys.RESERVATION_FIELDS: {', '.join(unknown)}")
    return names


# What status reads of a reservation hash: its money, and the live call it is.
_HELD = _reservation_fields("cost", "until")
_LIVE = _reservation_fields(
    "allowed",
    "extension",
    "number",
    "international",
    "channel",
    "admitted_at",
    "instance",
    "origin",
)


async def _scan(client: Client, site: str, limit: int) -> tuple[list[str], bool]:
    found: list[str] = []
    async for batch in scan_site(client, site, _SCANNED, SCAN_COUNT):
        found += batch
        if len(found) >= limit:
            return found[:limit], True
    return found, False


async def read_status(
    client: Client,
    policy: Policy,
    now: datetime,
    *,
    live_limit: int = LIVE_SHOWN,
    max_keys: int = MAX_KEYS,
    scanned: list[str] | None = None,
) -> Status:
    """The site's state at ``now`` against ``policy``'s caps. Raises StoreUnavailable.

    ``scanned``: the site's keys, when one pass over every site found them (``status --all``,
    :mod:`callgate.ops.statusall`); else the site's keys are scanned here."""
    try:
        return await _read(client, policy, now, live_limit, max_keys, scanned=scanned)
    except REDIS_ERRORS as exc:
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
    client: Client,
    policy: Policy,
    now: datetime,
    live_limit: int,
    max_keys: int,
    *,
    scanned: list[str] | None = None,
) -> Status:
    """``scanned``: the site's keys, when one pass over every site found them (``status --all``)."""
    site = policy.site.name
    prefix = site_prefix(site)
    local = now.astimezone(policy.site.timezone)
    buckets = {period: name for period, (name, _) in spend_periods(local).items()}
    now_ms = int(now.timestamp() * 1000)
    # one pass: spend, windows, concurrency, reservations (the live calls) and locks
    if scanned is None:
        found, truncated = await _scan(client, site, max_keys)
    else:
        found, truncated = scanned, False
    k = _Keys(site, found, buckets)
    scopes = [(SITE_SCOPE, policy.site_limits)]
    scopes += [(profile_scope(name), p.group_limits) for name, p in policy.profiles.items()]
    for scope, limits in scopes:  # read even when the scan was cut short
        for period, _cap in limits.spend.items():
            k.spend.setdefault(prefix + spend_key(scope, buckets[period]), (scope, period))
    fields = _HELD + _LIVE if live_limit > 0 else _HELD

    pipe = client.pipeline(transaction=False)
    for key in k.spend:
        pipe.get(key)
    for key, (_, window) in k.windows.items():
        pipe.zcount(key, f"({now_ms - WINDOW_BY_NAME[window].seconds * 1000}", "+inf")
    for key in k.slots:
        pipe.zcount(key, f"({now_ms}", "+inf")
    for key in k.held:
        pipe.hmget(key, *fields)
    for key in k.locks:
        pipe.get(key)
    pipe.exists(prefix + PANIC)
    pipe.get(prefix + policy_key(ACTIVE))
    core, optional = _replies(await pipe.execute(raise_on_error=False))

    values = [optional() for _ in k.spend]  # as MGET would: a key of another type is absent
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
    values = [optional() for _ in k.locks]
    locks = [(ext, decoded(v)) for ext, v in zip(k.locks.values(), values, strict=True) if v]
    panic = bool(core())
    active = optional()

    pipe = client.pipeline(transaction=False)
    if active is not None:
        pipe.hget(prefix + policy_key(VERSIONS), decoded(active))
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
        locks=tuple(sorted(locks, key=lambda pair: scope_order(extension_scope(pair[0])))),
        reservations=reservations,
        reserved=reserved,
        spend=spend_lines(policy, buckets, spent),
        counters=counter_lines(policy, counted, concurrent),
        live_calls=reservations,
        live=tuple(call for _, call in live[:live_limit]),
        truncated=truncated,
    )


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
        _int(f["allowed"]), f["instance"], until, f["origin"],
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


async def persistence(client: Client) -> bool | None:
    """Whether Redis keeps its data across its own restart (``appendonly yes`` or any ``save``
    point); None when it refuses ``CONFIG GET`` (a managed Redis, a renamed command, an ACL).
    :class:`~callgate.errors.StoreUnavailable` when it does not answer. On a Cluster every master is
    asked (``CONFIG GET`` goes to one node unless told which): False when any keeps nothing."""
    try:
        if not isinstance(client, RedisCluster):
            return _kept(await client.config_get("appendonly"), await client.config_get("save"))
        await client.initialize()  # the masters (a no-op once the client knows them)
        kept = [
            _kept(
                await client.config_get("appendonly", target_nodes=node),
                await client.config_get("save", target_nodes=node),
            )
            for node in client.get_primaries()
        ]
    except ClusterDownError as exc:  # a ResponseError, but the Cluster is down, not refusing
        raise StoreUnavailable(f"redis: {exc}") from exc
    except ResponseError:  # NOPERM, unknown command
        return None
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc
    return False if False in kept else None if None in kept else True


def _kept(aof: Any, save: Any) -> bool | None:
    """What one server's ``CONFIG GET appendonly`` and ``CONFIG GET save`` say about persistence."""
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
