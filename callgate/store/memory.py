"""The in-process counter store: the same semantics as the Redis store, with time passed in.

Used by ``explain`` and ``replay`` (no Redis needed) and by fast unit tests. Every key has an expiry, as in
Redis, and expired keys are swept as time moves on, so a year of replay runs in bounded memory. The sync
``*_now`` methods are what replay calls; the async methods satisfy :class:`callgate.store.protocol.Store`.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from typing import Final, NamedTuple

from callgate.core import keys
from callgate.core.admission import (
    Admission,
    BurstRule,
    CheckKind,
    CountryCheck,
    Outcome,
    Refusal,
    barred,
    billed_seconds,
    cost_micro,
    held_lock,
    judge,
    unknown_country,
)
from callgate.core.origins import Origin
from callgate.core.policy import LockScope
from callgate.store.protocol import SETTLED_MEMORY, BurstCount, Settlement, SettleStatus

# Enum members read for every call, as module constants: on Python 3.11 reading one off its class
# costs about 40 ns, a global about 5.
_SPEND: Final = CheckKind.SPEND
_WINDOW: Final = CheckKind.WINDOW
_DISTINCT: Final = CheckKind.DISTINCT
_DIALLED: Final = Origin.DIALLED
_SETTLED: Final = SettleStatus.SETTLED
_SWEEP_EVERY = 4096
_PREFIXES_MAX = 256  # sites whose key prefix is kept


class _Reservation(NamedTuple):
    """A reservation hash (``r:<id>``): its fields are ``keys.RESERVATION_FIELDS``, in that order."""

    allowed: int
    cost: int
    rate: int
    increment: int
    until: int
    spend: tuple[str, ...]
    slots: tuple[str, ...]
    extension: str
    number: str
    international: bool
    channel: str
    admitted_at: int
    instance: str
    origin: Origin
    country: str


class MemoryStore:
    def __init__(self) -> None:
        self._windows: dict[str, list[tuple[int, str]]] = {}  # sorted (ms, member)
        self._members: dict[str, dict[str, int]] = {}  # DISTINCT and CONCURRENT: member -> ms
        self._money: dict[str, int] = {}
        self._reservations: dict[str, _Reservation] = {}  # by r:<id>
        self._settled: dict[str, Settlement] = {}  # by done:<id>
        self._strings: dict[str, str] = {}  # locks and panic
        self._countries: dict[str, dict[str, int]] = {}  # by countries key: country -> unix time
        self._expiry: dict[str, int] = {}  # key -> ms
        self._ops = 0
        self._prefixes: dict[str, str] = {}  # site -> keys.site_prefix(site), a few sites

    # -- the Store protocol ------------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Outcome:
        return self.admit_now(admission)

    async def peek(self, admission: Admission) -> Outcome:
        return self.read_now(admission)

    async def settle(
        self, site: str, reservation_id: str, billsec: int | None, at_ms: int
    ) -> Settlement:
        return self.settle_now(site, reservation_id, billsec, at_ms)

    async def release(self, site: str, reservation_id: str, channel: str, at_ms: int) -> bool:
        return self.release_now(site, reservation_id, channel, at_ms)

    async def set_lock(self, site: str, extension: str, scope: str | None) -> None:
        prefix = keys.site_prefix(site)
        key = prefix + keys.lock_key(extension)
        if scope:
            self._strings[key] = scope
        else:
            self._strings.pop(key, None)
            for burst in keys.BURSTS:  # as the Redis store: forget what led to the lock
                self._windows.pop(prefix + keys.burst_key(extension, burst), None)

    async def set_panic(self, site: str, on: bool) -> None:
        key = keys.site_prefix(site) + keys.PANIC
        if on:
            self._strings[key] = "1"
        else:
            self._strings.pop(key, None)

    async def count_burst(
        self, site: str, extension: str, call_id: str, at_ms: int, rule: BurstRule
    ) -> BurstCount:
        return self.count_burst_now(site, extension, call_id, at_ms, rule)

    async def locks(self, site: str) -> dict[str, str]:
        prefix = keys.site_prefix(site) + keys.lock_key("")
        return {k[len(prefix) :]: v for k, v in self._strings.items() if k.startswith(prefix)}

    async def panic(self, site: str) -> bool:
        return keys.site_prefix(site) + keys.PANIC in self._strings

    async def aclose(self) -> None:
        return None

    def count_burst_now(
        self, site: str, extension: str, call_id: str, at_ms: int, rule: BurstRule
    ) -> BurstCount:
        """Mirrors ``lua/burst.lua``."""
        prefix = self._prefix(site)
        key = prefix + keys.burst_key(extension, rule.name)
        lock_key = prefix + keys.lock_key(extension)
        self._tick(at_ms)
        self._window_count(key, at_ms - rule.within * 1000)
        events = self._windows.setdefault(key, [])
        events[:] = [e for e in events if e[1] != call_id]
        insort(events, (at_ms, call_id))
        self._expire(key, at_ms + rule.within * 1000)
        held = held_lock(self._strings.get(lock_key, ""))
        if (
            len(events) >= rule.threshold
            and not rule.report
            and held not in (LockScope.ALL, rule.scope)
        ):
            self._strings[lock_key] = rule.scope.value
            return BurstCount(len(events), True, rule.scope)
        return BurstCount(len(events), False, held)

    # -- the work ---------------------------------------------------------------------------------
    def _prefix(self, site: str) -> str:
        """``keys.site_prefix(site)``, worked out once per site (bounded: emptied past 256 sites)."""
        prefix = self._prefixes.get(site)
        if prefix is None:
            if len(self._prefixes) >= _PREFIXES_MAX:
                self._prefixes.clear()
            prefix = self._prefixes[site] = keys.site_prefix(site)
        return prefix

    def _keys(self, a: Admission, prefix: str) -> list[str]:
        """The full key of each of the admission's checks (``prefix``: its site's)."""
        return [(self._prefix(c.site) if c.site else prefix) + c.key for c in a.checks]

    def _values(self, a: Admission, full: list[str]) -> tuple[int, ...]:
        """Each check's value (``full``: their keys), dropping what has left its window, as
        ``lua/admit.lua``'s ZREMRANGEBYSCORE does."""
        now = a.at_ms
        money, windows, sets = self._money, self._windows, self._members
        values: list[int] = []
        for check, key in zip(a.checks, full, strict=True):
            kind = check.kind
            if kind is _SPEND:
                values.append(money.get(key, 0))
            elif kind is _WINDOW:
                events = windows.get(key)
                if events:
                    drop = bisect_right(events, (now - check.window * 1000, "\U0010ffff"))
                    if drop:
                        del events[:drop]
                    values.append(len(events))
                else:
                    values.append(0)
            else:
                members = sets.get(key)
                if members:
                    cutoff = now - check.window * 1000 if kind is _DISTINCT else now
                    for stale in [m for m, ms in members.items() if ms <= cutoff]:
                        del members[stale]
                    values.append(len(members) - (check.member in members))
                else:
                    values.append(0)
        return tuple(values)

    def _bars(
        self, a: Admission, prefix: str
    ) -> tuple[LockScope | None, bool, Refusal | None, bool]:
        """The lock, the panic switch, what of them refuses the call, and whether the site has called
        the call's country within the TTL (looked up only with a country_check: ``lua/admit.lua``'s
        HGET)."""
        strings = self._strings  # locks and panic: empty for most replays
        lock = held_lock(strings.get(prefix + keys.lock_key(a.extension), "")) if strings else None
        panic = bool(strings) and prefix + keys.PANIC in strings
        learned = False
        if a.country_check is not CountryCheck.NONE:
            ckey = prefix + keys.COUNTRIES
            seen = (
                self._countries.get(ckey, {}).get(a.country) if self._alive(ckey, a.at_ms) else None
            )
            learned = seen is not None and seen * 1000 > a.at_ms - keys.COUNTRIES_TTL * 1000
        return (
            lock,
            panic,
            barred(lock, panic, a.international, unknown_country(a, learned)),
            learned,
        )

    def read_now(self, a: Admission) -> Outcome:
        """What ``peek`` sees: the values, the lock and panic, the country, and how the store judges
        them."""
        prefix = self._prefix(a.site)
        self._tick(a.at_ms)
        return self._read(a, prefix, self._keys(a, prefix))

    def _read(self, a: Admission, prefix: str, full: list[str]) -> Outcome:
        values = self._values(a, full)
        verdict = judge(a, values)
        lock, panic, refused, learned = self._bars(a, prefix)
        return tuple.__new__(  # Outcome(...) without NamedTuple's Python-level __new__
            Outcome,
            (values, lock, panic, False, verdict.allowed_seconds, 0, False, refused,
             verdict.failed, learned),
        )  # fmt: skip

    def admit_now(self, a: Admission) -> Outcome:
        """Mirrors ``lua/admit.lua``."""
        prefix = self._prefix(a.site)
        rkey = prefix + keys.reservation_key(a.call_id)
        held = self._reservations.get(rkey) if a.reserve else None
        if held is not None and self._alive(rkey, a.at_ms):
            self._tick(a.at_ms)
            values = self._values(a, self._keys(a, prefix))
            lock, panic, refused, learned = self._bars(a, prefix)
            # handed back as it was admitted: not judged again
            return Outcome(
                values, lock, panic, True, held.allowed, held.cost, True, refused, None, learned
            )
        self._tick(a.at_ms)
        full = self._keys(a, prefix)
        seen = self._read(a, prefix, full)
        if not a.reserve or seen.refused is not None or seen.allowed_seconds <= 0:
            return seen
        allowed = seen.allowed_seconds
        cost = cost_micro(a.rate, allowed)
        now, until, call_id = a.at_ms, a.at_ms + (allowed + a.hold) * 1000, a.call_id
        money, windows, sets, expiry = self._money, self._windows, self._members, self._expiry
        spend_keys, slot_keys = [], []
        for check, key in zip(a.checks, full, strict=True):
            kind = check.kind
            if kind is _SPEND:
                money[key] = money.get(key, 0) + cost
                expiry[key] = now + check.window * 1000
                spend_keys.append(key)
            elif kind is _WINDOW:  # get, not setdefault: no new empty list for a key held
                events = windows.get(key)
                if events is None:
                    events = windows[key] = []
                insort(events, (now, call_id))
                expiry[key] = now + check.window * 1000
            else:
                members = sets.get(key)
                if members is None:
                    members = sets[key] = {}
                if kind is _DISTINCT:
                    members[check.member] = now
                    expiry[key] = now + check.window * 1000
                else:
                    members[call_id] = until
                    expiry[key] = max(until, expiry.get(key, 0))
                    slot_keys.append(key)
        self._reservations[rkey] = tuple.__new__(
            _Reservation,
            (allowed, cost, a.rate, a.increment, until, tuple(spend_keys), tuple(slot_keys),
             a.extension, a.number, a.international, a.channel, now, a.instance, a.origin,
             a.country),
        )  # fmt: skip
        expiry[rkey] = until
        return tuple.__new__(  # seen._replace(admitted=True, reserved=cost), without its cost
            Outcome,
            (seen.values, seen.lock, seen.panic, True, allowed, cost, False, seen.refused,
             seen.failed, seen.learned),
        )  # fmt: skip

    def settle_now(
        self, site: str, reservation_id: str, billsec: int | None, at_ms: int
    ) -> Settlement:
        """Mirrors ``lua/settle.lua``. ``billsec`` None (or negative): cannot be settled, charged in
        full: the whole reservation stays on the caps, only the concurrency slots are freed."""
        prefix, rid = self._prefix(site), reservation_id
        rkey, dkey = prefix + keys.reservation_key(rid), prefix + keys.settled_key(rid)
        self._tick(at_ms)
        done = self._settled.get(dkey)
        if done is not None and self._alive(dkey, at_ms):
            return Settlement(
                SettleStatus.ALREADY_SETTLED, done.charged, done.released, done.billsec
            )
        held = self._reservations.get(rkey)
        if held is None or not self._alive(rkey, at_ms):
            return Settlement(SettleStatus.UNKNOWN)
        if billsec is None or billsec < 0:
            seconds, charged = held.allowed, held.cost
        else:
            seconds = billed_seconds(min(billsec, held.allowed), held.increment)
            charged = min(cost_micro(held.rate, seconds), held.cost)
        released = held.cost - charged
        if billsec is not None and billsec > 0 and held.country and held.origin is _DIALLED:
            # a phone's own call, answered: the site knows the country now (never a leg no phone
            # dialled: a forward or transfer let through once must not open its country to all)
            ckey = prefix + keys.COUNTRIES
            if not self._alive(ckey, at_ms):
                self._countries.pop(ckey, None)
            self._countries.setdefault(ckey, {})[held.country] = at_ms // 1000
            self._expire(ckey, at_ms + keys.COUNTRIES_TTL * 1000)
        money = self._money
        for key in held.spend:
            if key in money:
                money[key] -= released
        for key in held.slots:
            members = self._members.get(key)
            if members is not None:
                members.pop(rid, None)
        del self._reservations[rkey]
        self._expiry.pop(rkey, None)
        result = tuple.__new__(Settlement, (_SETTLED, charged, released, seconds))
        self._settled[dkey] = result
        self._expire(dkey, at_ms + SETTLED_MEMORY * 1000)
        return result

    def release_now(self, site: str, reservation_id: str, channel: str, at_ms: int) -> bool:
        """Mirrors ``lua/release.lua``: the slots only, and only for the reservation's own channel."""
        rkey = self._prefix(site) + keys.reservation_key(reservation_id)
        self._tick(at_ms)
        held = self._reservations.get(rkey)
        if held is None or not self._alive(rkey, at_ms) or not channel or held.channel != channel:
            return False
        if not held.slots:
            return False
        for key in held.slots:
            members = self._members.get(key)
            if members is not None:
                members.pop(reservation_id, None)
        self._reservations[rkey] = held._replace(slots=())
        return True

    def reservations(self, site: str) -> int:
        """How many reservations of ``site`` are held (for tests)."""
        return sum(1 for key in self._reservations if key.startswith(keys.site_prefix(site)))

    def reservation(self, site: str, reservation_id: str, at_ms: int) -> dict[str, str]:
        """A reservation's fields as Redis' ``HGETALL`` of its hash shows them ({}: none held)."""
        key = keys.site_prefix(site) + keys.reservation_key(reservation_id)
        held = self._reservations.get(key)
        if held is None or not self._alive(key, at_ms):
            return {}
        shown = (
            "\n".join(v) if isinstance(v, tuple) else str(int(v) if isinstance(v, bool) else v)
            for v in held
        )
        return dict(zip(keys.RESERVATION_FIELDS, shown, strict=True))

    def money(self, site: str, key: str) -> int:
        return self._money.get(keys.site_prefix(site) + key, 0)

    def countries(self, site: str, at_ms: int) -> dict[str, int]:
        """The countries ``site`` has called, as Redis' ``HGETALL`` of its hash holds them: country ->
        unix time of the last answered call to it that settled ({}: none)."""
        key = keys.site_prefix(site) + keys.COUNTRIES
        return dict(self._countries.get(key, {})) if self._alive(key, at_ms) else {}

    # -- time and expiry ---------------------------------------------------------------------------
    def _window_count(self, key: str, cutoff: int) -> int:
        events = self._windows.get(key)
        if not events:
            return 0
        drop = bisect_right(events, (cutoff, "\U0010ffff"))
        if drop:
            del events[:drop]
        return len(events)

    def _expire(self, key: str, at_ms: int) -> None:
        self._expiry[key] = at_ms

    def _alive(self, key: str, now: int) -> bool:
        return self._expiry.get(key, 0) > now

    def _tick(self, now: int) -> None:
        self._ops += 1
        if self._ops % _SWEEP_EVERY:
            return
        for key in [k for k, ms in self._expiry.items() if ms <= now]:
            del self._expiry[key]
            for table in (self._windows, self._members, self._money, self._strings):
                table.pop(key, None)
            self._countries.pop(key, None)
            self._reservations.pop(key, None)
            self._settled.pop(key, None)
