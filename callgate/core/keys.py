"""The Redis key layout of a site: the one place that spells a key.

Every key of site S starts with ``cg:{S}:`` (:func:`site_prefix`), every key of a tenant ``P/T`` of a
provider P with ``cg:{P}/T:``: the hash tag puts all of a site's keys, and those of a provider and all its
tenants, in one Redis Cluster slot, so the Lua scripts run there unchanged and every read of a site goes to
one master (docs/operations.md, "Redis Cluster"). The engine writes the counted keys
into an :class:`~callgate.core.admission.Admission` relative to that prefix (a provider's cap in its
tenant's admission: relative to the provider's, ``Check.site``); the stores add it and hand every
key a script touches in ``KEYS`` (``settle.lua`` reads the cap and slot keys back from the reservation
hash, where ``admit.lua`` wrote them from its own ``KEYS``). ``status`` parses the keys it scans with
:func:`parse`. ``LAYOUT`` is the table ``docs/design.md`` shows (a test keeps the two alike).

A scope is ``site``, ``prof:<profile>`` or ``ext:<extension>``. Spend is counted per local hour, day
and month (``PERIODS``), in buckets named by :func:`spend_periods`; calls are counted in the sliding
windows of ``WINDOWS``.

Pure: no clock, no I/O; time comes in as an argument.
"""

from __future__ import annotations

import calendar
import functools
from datetime import datetime
from typing import NamedTuple

# --- periods and windows -------------------------------------------------------------------------

PERIODS: tuple[str, ...] = ("hour", "day", "month")  # the spend periods, shortest first


class CounterWindow(NamedTuple):
    """One sliding-window counter of admitted calls (``w:<scope>:<name>``); not the policy's hours
    (``policy.Window``)."""

    name: str  # the key's last part
    limit: str  # the policy key it counts against
    seconds: int
    international: bool  # counts international calls only


WINDOWS: tuple[CounterWindow, ...] = (
    CounterWindow("cpm", "calls_per_minute", 60, False),
    CounterWindow("cph", "calls_per_hour", 3600, False),
    CounterWindow("iph", "international_calls_per_hour", 3600, True),
)
WINDOW_BY_NAME = {w.name: w for w in WINDOWS}


@functools.lru_cache(maxsize=256)
def _bucket_names(year: int, month: int, day: int, hour: int) -> tuple[str, str, str, int]:
    """The hour, day and month bucket names of a local hour, and the number of days in its month."""
    days = calendar.monthrange(year, month)[1]
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}",
        f"{year:04d}-{month:02d}-{day:02d}",
        f"{year:04d}-{month:02d}",
        days,
    )


def spend_periods(local: datetime) -> dict[str, tuple[str, int]]:
    """Bucket name and how long its key must live (seconds), for each of ``PERIODS``, at local time.

    Lifetimes count wall-clock seconds to the end of the period (a started second counts as gone), plus a
    margin: an hour's key lives a day longer, a day's two days, a month's a week.
    """
    hour_name, day_name, month_name, days = _bucket_names(
        local.year, local.month, local.day, local.hour
    )
    into_hour = local.minute * 60 + local.second + (1 if local.microsecond else 0)
    into_day = local.hour * 3600 + into_hour
    return {
        "hour": (hour_name, 3600 - into_hour + 86400),
        "day": (day_name, 86400 - into_day + 2 * 86400),
        "month": (month_name, (days - local.day + 1) * 86400 - into_day + 7 * 86400),
    }


# --- scopes --------------------------------------------------------------------------------------

SITE_SCOPE = "site"
EXT = "ext"
PROFILE = "prof"


def extension_scope(extension: str) -> str:
    return f"{EXT}:{extension}"


def profile_scope(profile: str) -> str:
    return f"{PROFILE}:{profile}"


def scope_kind(scope: str) -> tuple[str, str]:
    """(``site``, ``""``), (``ext``, the extension) or (``prof``, the profile); ("", "") otherwise."""
    if scope == SITE_SCOPE:
        return SITE_SCOPE, ""
    kind, sep, name = scope.partition(":")
    return (kind, name) if sep and kind in (EXT, PROFILE) else ("", "")


# --- keys, relative to the site's prefix ---------------------------------------------------------
# The kinds are each key's first part; parse() returns them.
SPEND = "s"
WINDOW = "w"
SAME_NUMBER = "w:n"  # a WINDOW key per number: w:<scope>:n:<e164>
DISTINCT = "d"
SLOTS = "c"
RESERVATION = "r"
SETTLED = "done"
BURST = "x"
LOCK = "lock"
PANIC = "panic"
AUDIT = "audit"
POLICY = "policy"
COUNTRIES = "countries"  # the countries the site has called (rules: new_country)

# Seconds the site's countries hash lives after the last answered call settled (each renews it): a
# site that makes no answered call for that long starts again from its own and known_countries.
COUNTRIES_TTL = 400 * 86400

POLICY_PARTS = ("seq", "versions", "active", "log")  # policy:<part> (callgate.ops.policystore)


class Bursts(NamedTuple):
    """The burst windows of an extension (``x:ext:<extension>:<burst>``), by the rule that counts them."""

    denied: str  # lockdown.after_denied: denied attempts
    short: str  # limits.short_calls: answered calls shorter than the limit


BURSTS = Bursts("denied", "short")


# A tenant of provider P is the site ``P/T``: the one separator a site name may hold.
TENANT_SEP = "/"


def site_prefix(site: str) -> str:
    """``cg:{S}:``; for a tenant ``P/T``, ``cg:{P}/T:``: the hash tag is the provider's, so every key
    of P and of all its tenants is in P's Redis Cluster slot (a tenant's admission counts P's caps)."""
    provider, sep, tenant = site.partition(TENANT_SEP)
    return f"cg:{{{provider}}}{sep}{tenant}:"


def provider_of(site: str) -> str | None:
    """The provider of a tenant (``P/T`` -> ``P``); None for a site that is no tenant."""
    provider, sep, _ = site.partition(TENANT_SEP)
    return provider if sep else None


def site_of(key: str) -> str | None:
    """The site a key belongs to (``cg:{S}:...`` -> ``S``, ``cg:{P}/T:...`` -> ``P/T``), or None for
    a key of no site."""
    if not key.startswith("cg:{"):
        return None
    end = key.find("}", 4)
    if end <= 4:
        return None
    if key.startswith(":", end + 1):
        return key[4:end]
    if not key.startswith(TENANT_SEP, end + 1):
        return None
    colon = key.find(":", end + 2)
    return f"{key[4:end]}{TENANT_SEP}{key[end + 2 : colon]}" if colon > end + 2 else None


def window_key(scope: str, window: str) -> str:
    return f"{WINDOW}:{scope}:{window}"


def same_number_key(scope: str, e164: str = "") -> str:
    """Without ``e164``: the part before the number (the engine appends it per call)."""
    return f"{WINDOW}:{scope}:n:{e164}"


def distinct_key(scope: str) -> str:
    return f"{DISTINCT}:{scope}"


def slots_key(scope: str) -> str:
    return f"{SLOTS}:{scope}"


def spend_key(scope: str, bucket: str = "") -> str:
    """Without ``bucket``: the part before the bucket name (the engine appends it per call)."""
    return f"{SPEND}:{scope}:{bucket}"


def reservation_key(reservation_id: str) -> str:
    return f"{RESERVATION}:{reservation_id}"


def settled_key(reservation_id: str) -> str:
    return f"{SETTLED}:{reservation_id}"


def burst_key(extension: str, burst: str) -> str:
    return f"{BURST}:{extension_scope(extension)}:{burst}"


def lock_key(extension: str) -> str:
    return f"{LOCK}:{extension}"


def policy_key(part: str) -> str:
    return f"{POLICY}:{part}"


# The fields of a reservation hash (r:<id>), written by lua/admit.lua and MemoryStore.admit_now: what
# the call was granted (read back by lua/settle.lua), and the live call it is (read by status).
RESERVATION_FIELDS = (
    "allowed",  # seconds
    "cost",  # micro-units reserved on every cap
    "rate",  # micro-units per minute
    "increment",
    "until",  # epoch ms when the reservation expires (allowed seconds + hold)
    "spend",  # the cap keys it is reserved on (full keys, one a line)
    "slots",  # the concurrency keys it holds a slot in (ditto)
    "extension",
    "number",  # E.164
    "international",  # 0 or 1
    "channel",  # the channel (leg) that asked
    "admitted_at",  # epoch ms
    "instance",  # the gate that admitted it
    "origin",  # who caused the leg (core.origins.Origin): dialled, forward, transfer, ...
    "country",  # the number's ISO country ("" for none): learned when the call settles answered
)


class Key(NamedTuple):
    """What a key of the site is: ``kind`` (SPEND, WINDOW, ...), its scope, and its last part."""

    kind: str
    scope: str = ""  # ext:1001, prof:office, site; "" for a key of no scope
    name: str = ""  # bucket, window, number, burst, reservation id, locked extension, policy part


def parse(site: str, key: str) -> Key | None:
    """The shape of a full key of ``site``; None for another site's key or a shape not listed here."""
    prefix = site_prefix(site)
    if not key.startswith(prefix):
        return None
    tail = key[len(prefix) :]
    if tail in (PANIC, AUDIT, COUNTRIES):
        return Key(tail)
    kind, _, rest = tail.partition(":")
    if kind in (RESERVATION, SETTLED) and rest:
        return Key(kind, "", rest)
    if kind == LOCK and rest:
        return Key(LOCK, extension_scope(rest), rest)
    if kind == POLICY and rest in POLICY_PARTS:
        return Key(POLICY, "", rest)
    if kind in (DISTINCT, SLOTS) and scope_kind(rest)[0]:
        return Key(kind, rest)
    scope, _, last = rest.rpartition(":")
    if kind == WINDOW and last in WINDOW_BY_NAME and scope_kind(scope)[0]:
        return Key(WINDOW, scope, last)
    if kind == WINDOW and scope.endswith(":n") and scope_kind(scope[:-2])[0]:
        return Key(SAME_NUMBER, scope[:-2], last)
    if kind == SPEND and last and scope_kind(scope)[0]:
        return Key(SPEND, scope, last)
    if kind == BURST and last in BURSTS and scope_kind(scope)[0] == EXT:
        return Key(BURST, scope, last)
    return None


# The layout as docs/design.md shows it: (key, type, what, TTL).
LAYOUT: tuple[tuple[str, str, str, str], ...] = (
    (f"`{WINDOW}:{{scope}}:cpm`, `:cph`, `:iph`", "sorted set",
     "admitted calls in the sliding window (score = time)", "the window"),
    (f"`{WINDOW}:{{scope}}:n:{{e164}}`", "sorted set", "calls to one number (same_number)",
     "the window"),
    (f"`{DISTINCT}:{{scope}}`", "sorted set", "distinct numbers called, scored by last call",
     "the window"),
    (f"`{SLOTS}:{{scope}}`", "sorted set",
     "calls in progress (their reservation ids), scored by their reservation's expiry",
     "longest reservation"),
    (f"`{SPEND}:{{scope}}:{{bucket}}`", "string",
     "micro-units committed (settled + reserved) in an hour/day/month", "the period plus a margin"),
    (f"`{RESERVATION}:{{reservation_id}}`", "hash",
     "a call's reservation: the keys it holds, amount, allowed seconds, `until`; and the live call "
     "(`extension`, `number`, `international`, `channel`, `admitted_at`, `instance`, `origin`) that "
     "`callgate status` lists, with its `country` (learned when it settles)",
     "allowed seconds + hold"),
    (f"`{SETTLED}:{{reservation_id}}`", "string",
     "a settled reservation (so a second settle is a no-op)", "2 days"),
    (f"`{BURST}:{EXT}:{{ext}}:{BURSTS.denied}`, `:{BURSTS.short}`", "sorted set",
     "denied attempts and short calls of an extension (lockdown, short_calls)", "the window"),
    (f"`{LOCK}:{{ext}}`, `{PANIC}`", "string", "an admin's lock and the site's panic switch",
     "none, on purpose: a lock lasts until an admin lifts it"),
    (f"`{COUNTRIES}`", "hash",
     "the countries the site's phones have called: ISO country -> unix time of the last answered "
     "dialled call to it that settled (a leg no phone dialled may reach them: `new_countries`; each "
     "counts 400 days from its own time)",
     f"{COUNTRIES_TTL // 86400} days after the last answered call settled"),
    (f"`{AUDIT}`", "stream", "every decision (trimmed to about 1,000,000 entries)",
     "90 days after the last write"),
    (f"`{POLICY}:seq`, `:versions`, `:active`, `:log`", "string, hash, string, stream",
     "the pushed policy versions and which is active (callgate.ops.policystore)",
     "none, on purpose: a policy outlives any idle period"),
)  # fmt: skip
