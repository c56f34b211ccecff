"""One suite, two stores: the in-process store and the Lua scripts on a real redis-server agree, and on a
real Redis Cluster of three masters with the site on each master in turn."""

from __future__ import annotations

import pytest

from callgate.core import keys
from callgate.core.admission import Admission, BurstRule, Check, CheckKind, Refusal
from callgate.core.keys import BURSTS
from callgate.core.origins import Origin
from callgate.core.policy import LockScope
from callgate.core.reasons import Reason
from callgate.store.memory import MemoryStore
from callgate.store.protocol import SettleStatus, Store
from callgate.store.redis import RedisStore
from tests.conftest import DEPLOYMENTS, OpenStore

T0 = 1_795_000_000_000  # ms; a Tuesday in November 2026
SITE = "test-site"


@pytest.fixture(params=["memory", *DEPLOYMENTS])
async def store(
    request: pytest.FixtureRequest, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """Each test runs against both stores, the Redis one on a server and on each master of a cluster
    (``SITE`` is then a name whose hash tag lands on that master)."""
    if request.param == "memory":
        return MemoryStore()
    return await _on(request.param, open_store, monkeypatch)


@pytest.fixture(params=DEPLOYMENTS)
async def redis_store(
    request: pytest.FixtureRequest, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> RedisStore:
    """The Redis store alone, on a server and on each master of a cluster (as ``store``)."""
    return await _on(request.param, open_store, monkeypatch)


async def _on(
    deployment: str, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> RedisStore:
    s, site = await open_store(deployment, SITE)
    monkeypatch.setitem(globals(), "SITE", site)
    return s


def window(limit: int, seconds: int = 60, key: str = "w:ext:1001:cpm") -> Check:
    return Check(
        "limits.calls_per_minute", Reason.VELOCITY_MINUTE, CheckKind.WINDOW, key, limit, seconds
    )


def slots(limit: int, key: str = "c:ext:1001") -> Check:
    return Check(
        "limits.concurrent_calls", Reason.CONCURRENT_CALLS, CheckKind.CONCURRENT, key, limit
    )


def distinct(limit: int, number: str, seconds: int = 3600) -> Check:
    return Check(
        "limits.distinct_numbers",
        Reason.DISTINCT_NUMBERS,
        CheckKind.DISTINCT,
        "d:ext:1001",
        limit,
        seconds,
        number,
    )


def spend(cap: int, key: str = "s:ext:1001:2026-11-17") -> Check:
    return Check("limits.spend.day", Reason.SPEND_CAP_DAY, CheckKind.SPEND, key, cap, 86400)


def call(
    call_id: str, *checks: Check, at: int = T0, rate: int = 100_000, inc: int = 60, **kw: object
) -> Admission:
    base = Admission(
        site=SITE, call_id=call_id, at_ms=at, checks=checks, rate=rate, increment=inc, max_seconds=3600,
        hold=600, extension="1001", international=False, reserve=True,
    )  # fmt: skip
    return base._replace(**kw)  # type: ignore[arg-type]


async def test_window_limit_slides(store: Store) -> None:
    """Calls in a sliding window are counted exactly; the window frees up as it slides."""
    assert (await store.admit(call("a", window(2)))).admitted
    assert (await store.admit(call("b", window(2), at=T0 + 10_000))).admitted
    third = await store.admit(call("c", window(2), at=T0 + 59_999))
    assert (third.admitted, third.values) == (False, (2,))
    later = await store.admit(call("d", window(2), at=T0 + 60_000))
    assert (later.admitted, later.values) == (True, (1,))


async def test_concurrency_frees_on_settle(store: Store) -> None:
    """A concurrency slot is held until the call settles."""
    assert (await store.admit(call("a", slots(1)))).admitted
    assert not (await store.admit(call("b", slots(1), at=T0 + 1000))).admitted
    assert (await store.settle(SITE, "a", 30, T0 + 2000)).status is SettleStatus.SETTLED
    assert (await store.admit(call("b", slots(1), at=T0 + 3000))).admitted


async def test_a_hang_up_frees_the_slot_before_the_settlement(store: Store) -> None:
    """The gated channel hung up: its slot is free at once (a redial is not a second call in flight),
    its money stays reserved until the settlement, which then charges as usual."""
    a = call("a", slots(1), spend(10_000_000), channel="1763391600.17")
    assert (await store.admit(a)).admitted
    assert not await store.release(SITE, "a", "1763391600.99", T0 + 500)  # not its channel
    assert not await store.release(SITE, "a", "", T0 + 500)
    assert not await store.release(SITE, "nobody", "1763391600.17", T0 + 500)
    refused = await store.admit(call("b", slots(1), spend(10_000_000), at=T0 + 600))
    assert (refused.admitted, refused.values) == (False, (1, 6_000_000))
    assert await store.release(SITE, "a", "1763391600.17", T0 + 1000)
    assert not await store.release(SITE, "a", "1763391600.17", T0 + 1100)  # once
    b = await store.admit(call("b", slots(1), spend(10_000_000), at=T0 + 1200))
    assert (b.admitted, b.values) == (True, (0, 6_000_000))  # a's money still reserved
    settled = await store.settle(SITE, "a", 30, T0 + 2000)
    assert (settled.status, settled.charged, settled.released) == (
        SettleStatus.SETTLED, 100_000, 5_900_000,
    )  # fmt: skip
    assert not (await store.admit(call("c", slots(1), at=T0 + 3000))).admitted  # b holds it
    assert not await store.release(SITE, "a", "1763391600.17", T0 + 3000)  # settled: nothing


async def test_an_expired_reservation_frees_nothing(store: Store) -> None:
    assert (await store.admit(call("a", slots(1), channel="ch1"))).admitted
    later = T0 + (3600 + 600) * 1000 + 1
    assert not await store.release(SITE, "a", "ch1", later)


async def test_distinct_numbers(store: Store) -> None:
    """Distinct numbers count each number once; calling a known number again is fine."""
    for i, number in enumerate(["+1212", "+1213"]):
        assert (await store.admit(call(f"c{i}", distinct(2, number), at=T0 + i))).admitted
    assert not (await store.admit(call("c3", distinct(2, "+1214"), at=T0 + 5))).admitted
    assert (await store.admit(call("c4", distinct(2, "+1212"), at=T0 + 6))).admitted


async def test_spend_reserves_and_settles(store: Store) -> None:
    """A call reserves what its allowed seconds cost; settling gives back what it did not use."""
    first = await store.admit(call("a", spend(1_000_000)))
    assert (first.admitted, first.allowed_seconds, first.reserved) == (True, 600, 1_000_000)
    assert not (await store.admit(call("b", spend(1_000_000), at=T0 + 1000))).admitted
    settled = await store.settle(SITE, "a", 61, T0 + 2000)
    assert (settled.status, settled.billsec, settled.charged, settled.released) == (
        SettleStatus.SETTLED,
        120,
        200_000,
        800_000,
    )
    again = await store.admit(call("b", spend(1_000_000), at=T0 + 3000))
    assert (again.admitted, again.allowed_seconds, again.values) == (True, 480, (200_000,))


async def test_a_check_counts_under_the_site_it_names(store: Store) -> None:
    """A check naming a site (a provider's cap in its tenant's admission) is read, reserved and, on
    settle, released under that site's keys: shared by every tenant, apart from each one's own."""
    tenants = (f"{SITE}/a", f"{SITE}/b")
    above = (
        spend(1_500_000, "s:site:2026-11-17")._replace(site=SITE),
        slots(2, "c:site")._replace(site=SITE),
    )
    first = await store.admit(
        call("a", spend(1_000_000), *above, site=tenants[0], inc=60, max_seconds=600)
    )
    assert (first.admitted, first.reserved, first.values) == (True, 1_000_000, (0, 0, 0))
    second = await store.admit(
        call("b", spend(1_000_000), *above, site=tenants[1], max_seconds=600)
    )
    assert (second.admitted, second.allowed_seconds, second.values) == (
        True,
        300,
        (0, 1_000_000, 1),
    )
    third = await store.admit(call("c", spend(1_000_000), *above, site=tenants[1], at=T0 + 1))
    assert (third.admitted, third.failed, third.values) == (False, 1, (500_000, 1_500_000, 2))
    mine = await store.peek(
        call("peek", spend(9, "s:site:2026-11-17"), slots(9, "c:site"), site=SITE)
    )
    assert mine.values == (1_500_000, 2)  # the site's own keys: what its tenants hold
    for tenant, rid in zip(tenants, "ab", strict=True):
        assert (await store.settle(tenant, rid, 0, T0 + 2000)).status is SettleStatus.SETTLED
    after = await store.peek(
        call("peek", spend(9, "s:site:2026-11-17"), slots(9, "c:site"), site=SITE, at=T0 + 3000)
    )
    assert after.values == (0, 0)


async def test_settle_is_idempotent_and_cuts_at_allowed(store: Store) -> None:
    """A second settle changes nothing; billable seconds never exceed the allowed seconds."""
    await store.admit(call("a", spend(500_000)))
    first = await store.settle(SITE, "a", 10_000, T0 + 1000)
    assert (first.billsec, first.charged, first.released) == (300, 500_000, 0)
    second = await store.settle(SITE, "a", 5, T0 + 2000)
    assert (second.status, second.charged) == (SettleStatus.ALREADY_SETTLED, 500_000)
    assert (await store.settle(SITE, "nope", 5, T0)).status is SettleStatus.UNKNOWN


@pytest.mark.parametrize("billsec", [None, -1, -(10**30)])
async def test_a_call_that_cannot_be_settled_is_charged_in_full(
    store: Store, billsec: int | None
) -> None:
    """None (and a negative count, which no caller should send) charges the whole reservation and
    gives nothing back, but frees the call's concurrency slot; the call is then settled for good."""
    first = await store.admit(call("a", slots(1), spend(10_000_000)))
    assert not (await store.admit(call("b", slots(1), spend(10_000_000), at=T0 + 1))).admitted
    settled = await store.settle(SITE, "a", billsec, T0 + 2000)
    assert (settled.status, settled.charged, settled.released, settled.billsec) == (
        SettleStatus.SETTLED,
        first.reserved,
        0,
        first.allowed_seconds,
    )
    later = await store.admit(call("c", slots(1), spend(10_000_000), at=T0 + 3000))
    assert (later.admitted, later.values) == (True, (0, first.reserved))
    again = await store.settle(SITE, "a", 0, T0 + 4000)
    assert (again.status, again.charged, again.released) == (
        SettleStatus.ALREADY_SETTLED,
        first.reserved,
        0,
    )
    assert (await store.settle(SITE, "nope", None, T0)).status is SettleStatus.UNKNOWN


async def test_an_absurd_billsec_is_cut_to_the_reservation(store: Store) -> None:
    """Billable seconds far beyond anything (2^63 and more) charge the reservation, never more."""
    first = await store.admit(call("a", spend(10_000_000)))
    settled = await store.settle(SITE, "a", 10**30, T0 + 1000)
    assert (settled.charged, settled.released, settled.billsec) == (
        first.reserved,
        0,
        first.allowed_seconds,
    )


async def test_same_call_id_is_not_counted_twice(store: Store) -> None:
    """A second trunk attempt of the same call gets the same admission and counts nothing."""
    a = call("linked", window(5), spend(1_000_000))
    first = await store.admit(a)
    second = await store.admit(a._replace(at_ms=T0 + 5000))
    assert second.replayed
    assert (second.allowed_seconds, second.reserved) == (first.allowed_seconds, first.reserved)
    seen = await store.peek(call("other", window(5), spend(1_000_000), at=T0 + 6000))
    assert seen.values == (1, 1_000_000)


async def test_unsettled_reservation_expires_charged_in_full(store: Store) -> None:
    """A reservation never settled frees its slot after allowed+hold, and its money stays charged."""
    first = await store.admit(call("a", slots(1), spend(10_000_000)))
    end = T0 + (first.allowed_seconds + 600) * 1000
    assert not (await store.admit(call("b", slots(1), spend(10_000_000), at=end - 1))).admitted
    late = await store.admit(call("c", slots(1), spend(10_000_000), at=end + 1))
    assert late.admitted
    assert late.values == (0, first.reserved)
    assert (await store.settle(SITE, "a", 10, end + 2)).status is SettleStatus.UNKNOWN


@pytest.mark.parametrize(
    ("lock", "panic", "international", "refused"),
    [
        ("", False, True, None),
        ("international", False, False, None),
        ("international", False, True, Refusal.LOCKED),
        ("all", False, False, Refusal.LOCKED),
        ("", True, True, Refusal.PANIC),
        ("", True, False, None),
        ("international", True, True, Refusal.LOCKED),  # the lock is named before the panic
        ("all", True, False, Refusal.LOCKED),
    ],
)
async def test_locks_and_panic(
    store: Store, lock: str, panic: bool, international: bool, refused: Refusal | None
) -> None:
    """A lock or the panic switch keeps a call from being reserved, by its scope, and says which."""
    await store.set_lock(SITE, "1001", lock or None)
    await store.set_panic(SITE, panic)
    outcome = await store.admit(call("a", window(5), international=international))
    held = LockScope(lock) if lock else None
    assert (outcome.admitted, outcome.lock, outcome.panic) == (refused is None, held, panic)
    assert (outcome.refused, outcome.failed) == (refused, None)
    peeked = await store.peek(call("b", window(5), international=international))
    assert (peeked.refused, peeked.admitted) == (refused, False)


@pytest.mark.parametrize(
    ("checks", "failed", "allowed"),
    [
        ((window(1), slots(5), spend(100_000_000)), 0, 0),
        ((window(5), slots(1), spend(100_000_000)), 1, 0),
        ((window(1), slots(1)), 0, 0),  # the first check that fails is named
        ((window(5), spend(6_200_000)), None, 120),  # two minutes left under the cap
        ((window(5), spend(6_050_000)), 1, 0),  # less than one increment left
        ((window(5), slots(5), spend(100_000_000)), None, 3600),
    ],
)
async def test_the_store_names_the_check_that_failed(
    store: Store, checks: tuple[Check, ...], failed: int | None, allowed: int
) -> None:
    """After a first call (one in each window and slot, 6.00 reserved), the store names the check the
    next call fails, the one the engine then reports, and how long the counters allow it."""
    await store.admit(call("first", window(5), slots(5), spend(100_000_000)))
    seen = await store.peek(call("peeked", *checks, at=T0 + 1000))
    outcome = await store.admit(call("next", *checks, at=T0 + 1000))
    assert (outcome.failed, outcome.admitted, outcome.allowed_seconds) == (
        failed,
        failed is None,
        allowed,
    )
    assert (seen.failed, seen.allowed_seconds, seen.admitted) == (failed, allowed, False)


async def test_a_refused_admission_is_still_judged(store: Store) -> None:
    """A call a static rule refused (reserve=False) or a lock refuses gets its checks judged all the
    same, so explain and the audit can name what else it would have failed; nothing is written."""
    await store.admit(call("first", window(1)))
    refused = await store.admit(call("static", window(1), spend(10_000_000), reserve=False))
    assert (refused.admitted, refused.failed, refused.allowed_seconds) == (False, 0, 0)
    free = await store.admit(call("free", spend(10_000_000), reserve=False))
    assert (free.admitted, free.failed, free.allowed_seconds) == (False, None, 3600)
    await store.set_lock(SITE, "1001", "all")
    locked = await store.admit(call("locked", spend(10_000_000)))
    assert (locked.admitted, locked.refused, locked.failed, locked.allowed_seconds) == (
        False,
        Refusal.LOCKED,
        None,
        3600,
    )
    assert (await store.peek(call("after", window(1)))).values == (1,)


async def test_a_replayed_admission_is_not_judged_again(store: Store) -> None:
    """The same reservation id admitted again is handed its first admission, even though its own
    reservation now fills the limits it was admitted under."""
    a = call("linked", window(1), slots(1), spend(1_000_000))
    first = await store.admit(a)
    again = await store.admit(a._replace(at_ms=T0 + 5000))
    assert (again.admitted, again.replayed, again.failed, again.values) == (
        True,
        True,
        None,
        (1, 1, 1_000_000),
    )
    assert (again.allowed_seconds, again.reserved) == (first.allowed_seconds, first.reserved)


async def test_both_stores_record_the_same_reservation(redis_store: RedisStore) -> None:
    """The reservation hash is the record of a live call: admit.lua and MemoryStore write the same
    fields (keys.RESERVATION_FIELDS) with the same values; settling removes it."""
    a = call(
        "L1:ab12", window(5), slots(5), spend(10_000_000), international=True,
        number="+442079460123", channel="1763391600.17", instance="pbx1", origin=Origin.FORWARD,
        country="GB",
    )  # fmt: skip
    memory = MemoryStore()
    await memory.admit(a)
    await redis_store.admit(a)
    key = keys.site_prefix(SITE) + keys.reservation_key("L1:ab12")
    held = await redis_store.client.hgetall(key)
    assert held == memory.reservation(SITE, "L1:ab12", T0)
    assert set(held) == set(keys.RESERVATION_FIELDS)
    assert {f: held[f] for f in keys.RESERVATION_FIELDS[7:]} == {
        "extension": "1001",
        "number": "+442079460123",
        "international": "1",
        "channel": "1763391600.17",
        "admitted_at": str(T0),
        "instance": "pbx1",
        "origin": "forward",
        "country": "GB",
    }
    assert held["spend"] == keys.site_prefix(SITE) + "s:ext:1001:2026-11-17"
    assert 0 < await redis_store.client.pttl(key) <= (3600 + 600) * 1000
    for store in (memory, redis_store):
        await store.settle(SITE, "L1:ab12", 30, T0 + 1000)
    assert await redis_store.client.exists(key) == 0
    assert memory.reservation(SITE, "L1:ab12", T0 + 1000) == {}


async def test_peek_and_refused_never_write(store: Store) -> None:
    """peek and an admission a static rule already refused read the counters and never change them."""
    checks = (window(5), slots(5), distinct(5, "+1"), spend(1_000_000))
    await store.peek(call("a", *checks))
    await store.admit(call("b", *checks, reserve=False))
    seen = await store.peek(call("c", *checks))
    assert seen.values == (0, 0, 0, 0)
    assert not seen.admitted


async def test_free_destination_is_limited_by_duration_only(store: Store) -> None:
    """A zero rate costs nothing: the call gets its whole max duration even with a tiny cap."""
    outcome = await store.admit(call("a", spend(1), rate=0))
    assert (outcome.admitted, outcome.allowed_seconds, outcome.reserved) == (True, 3600, 0)


async def test_one_second_billing_rounds_cost_up(store: Store) -> None:
    """With 1-second billing the reservation is the exact cost rounded up to a micro-unit."""
    outcome = await store.admit(call("a", spend(1_000), rate=10_000, inc=1))
    assert (outcome.allowed_seconds, outcome.reserved) == (6, 1_000)
    settled = await store.settle(SITE, "a", 5, T0 + 1)
    assert (settled.charged, settled.released) == (834, 166)


async def test_redis_admission_is_one_round_trip(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each admission is one request from the client and one EVALSHA on the server."""
    from redis.asyncio.connection import AbstractConnection

    checks = (window(50), slots(50), distinct(50, "+1"), spend(100_000_000))
    await redis_store.admit(
        call("warm", *checks)
    )  # loads the script once (NOSCRIPT -> SCRIPT LOAD)
    await redis_store.client.config_resetstat()
    sent = 0
    original = AbstractConnection.send_packed_command

    async def counting(
        self: AbstractConnection, command: object, check_health: bool = True
    ) -> None:
        nonlocal sent
        sent += 1
        await original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    for i in range(20):
        await redis_store.admit(call(f"c{i}", *checks, at=T0 + i))
    monkeypatch.undo()
    stats = await redis_store.client.info("commandstats")
    assert (sent, int(stats["cmdstat_evalsha"]["calls"])) == (20, 20)


async def test_burst_locks_at_threshold_once(store: Store) -> None:
    """A burst rule counts events in its window and sets the lock at the threshold, once."""
    rule = BurstRule(BURSTS.denied, 600, 3, LockScope.INTERNATIONAL)
    seen = [await store.count_burst(SITE, "1001", f"c{i}", T0 + i * 1000, rule) for i in range(4)]
    assert [(b.count, b.locked, b.lock) for b in seen] == [
        (1, False, None),
        (2, False, None),
        (3, True, LockScope.INTERNATIONAL),
        (4, False, LockScope.INTERNATIONAL),
    ]
    assert await store.locks(SITE) == {"1001": "international"}
    outcome = await store.admit(call("intl", international=True))
    assert (outcome.admitted, outcome.lock) == (False, LockScope.INTERNATIONAL)


async def test_burst_window_slides_and_report_never_locks(store: Store) -> None:
    """Old events leave the window; a report-only rule counts but never locks; a lock can widen."""
    rule = BurstRule(BURSTS.short, 60, 2, LockScope.ALL)
    await store.count_burst(SITE, "1002", "a", T0, rule)
    late = await store.count_burst(SITE, "1002", "b", T0 + 60_000, rule)
    assert (late.count, late.locked) == (1, False)
    report = BurstRule(BURSTS.denied, 600, 1, LockScope.ALL, report=True)
    assert (await store.count_burst(SITE, "1003", "x", T0, report)).locked is False
    assert await store.locks(SITE) == {}
    await store.set_lock(SITE, "1004", "international")
    wide = BurstRule(BURSTS.denied, 600, 1, LockScope.ALL)
    widened = await store.count_burst(SITE, "1004", "y", T0, wide)
    assert (widened.locked, widened.lock) == (True, LockScope.ALL)


async def test_locks_and_panic_read_back(store: Store) -> None:
    """locks() lists every locked extension; panic() follows set_panic."""
    await store.set_lock(SITE, "1001", "all")
    await store.set_lock(SITE, "2000", "international")
    await store.set_lock(SITE, "2000", None)
    assert await store.locks(SITE) == {"1001": "all"}
    assert not await store.panic(SITE)
    await store.set_panic(SITE, True)
    assert await store.panic(SITE)
    await store.set_panic(SITE, False)
    assert not await store.panic(SITE)


async def test_unlock_forgets_the_burst_that_locked(store: Store) -> None:
    """After unlock, the next refusal starts a fresh count instead of relocking at once."""
    rule = BurstRule(BURSTS.denied, 600, 2, LockScope.INTERNATIONAL)
    await store.count_burst(SITE, "1001", "a", T0, rule)
    assert (await store.count_burst(SITE, "1001", "b", T0 + 1000, rule)).locked
    await store.set_lock(SITE, "1001", None)
    again = await store.count_burst(SITE, "1001", "c", T0 + 2000, rule)
    assert (again.count, again.locked) == (1, False)
