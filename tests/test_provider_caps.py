"""Many tenants behind one gate: a provider's site_limits are checked in each of its tenants'
admissions, counted under the provider's keys (all its tenants together), in the same atomic step, on the
in-process store, a redis-server and each master of a Redis Cluster."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio.cluster import RedisCluster

from callgate.core import keys
from callgate.core.decision import Decision
from callgate.core.engine import conclude
from callgate.core.memo import Memo
from callgate.core.plan import Prepared, prepare
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import REPORT, CallAttempt
from callgate.store.memory import MemoryStore
from callgate.store.protocol import SettleStatus, Store
from callgate.store.redis import decoded
from tests.conftest import DEPLOYMENTS, OpenStore
from tests.servers import Cluster

TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
DAY = "2026-11-17"
ONE = 1_000_000  # what every call reserves: 1.00/min, 60 s billing, at most a minute
PROVIDER = "hosted"
TENANTS = ("a", "b", "c")

POLICY = """
version: 1
site: {{name: {name}, region: US, timezone: America/New_York, currency: USD}}
emergency: ["911"]
rates: {{default: "1.00", increment: 60}}
profiles:
  p:
    limits: {{max_call_duration: 1m}}
extensions: [{{match: "1*", profile: p}}]
{site_limits}
"""


def memo(name: str, site_limits: str = "") -> Memo:
    return Memo(load_policy(POLICY.format(name=name, site_limits=site_limits), f"{name}.yaml"))


@pytest.fixture(params=["memory", *DEPLOYMENTS])
async def deployed(request: pytest.FixtureRequest, open_store: OpenStore) -> tuple[Store, str, str]:
    """(the store, the provider's name, the deployment): on the cluster, a provider whose hash tag
    lands on each master in turn."""
    if request.param == "memory":
        return MemoryStore(), PROVIDER, "memory"
    store, provider = await open_store(request.param, PROVIDER)
    return store, provider, request.param


async def place(
    store: Store, tenant: Memo, provider: Memo, call_id: str, ext: str = "1001"
) -> tuple[Prepared, Decision]:
    p = prepare(tenant, CallAttempt(call_id, ext, "2125550123", leg=call_id), TUE, above=provider)
    assert p.admission is not None
    return p, conclude(p, await store.admit(p.admission))


async def values(store: Store, p: Prepared) -> dict[str, int]:
    """What a peek reads now of each of ``p``'s checks, by rule."""
    assert p.admission is not None
    seen = await store.peek(p.admission)
    return dict(zip((c.rule for c in p.checks), seen.values, strict=True))


async def test_a_providers_day_cap_stops_the_next_tenant(deployed: tuple[Store, str, str]) -> None:
    """Tenant a uses up the provider's day cap; tenant b, with no cap of its own, is refused with
    provider_limit by the provider's rule, and nothing of b's is counted."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {spend: {day: "2.00"}}')
    a, b = memo(f"{name}/a"), memo(f"{name}/b")
    for i in range(2):
        _, decision = await place(store, a, provider, f"a{i}")
        assert decision.verdict is Verdict.ALLOW
    p, refused = await place(store, b, provider, "b0")
    assert (refused.verdict, refused.reason, refused.rule) == (
        Verdict.DENY,
        Reason.PROVIDER_LIMIT,
        "provider_limits.spend.day",
    )
    assert "2.000000 of 2.000000 committed (provider" in refused.rules[-2].detail
    check = p.checks[-1]
    assert (check.site, check.key) == (name, keys.spend_key(keys.SITE_SCOPE, DAY))
    assert await values(store, p) == {"provider_limits.spend.day": 2 * ONE}


async def test_a_providers_concurrent_calls_count_every_tenant(
    deployed: tuple[Store, str, str],
) -> None:
    """Two tenants' calls fill the provider's two slots; a third tenant's waits for one to settle."""
    store, name, _ = deployed
    provider = memo(name, "site_limits: {concurrent_calls: 2}")
    a, b, c = (memo(f"{name}/{t}") for t in TENANTS)
    first, allowed = await place(store, a, provider, "a0")
    assert allowed.allowed
    assert (await place(store, b, provider, "b0"))[1].allowed
    _, refused = await place(store, c, provider, "c0")
    assert (refused.reason, refused.rule) == (
        Reason.PROVIDER_LIMIT,
        "provider_limits.concurrent_calls",
    )
    at_ms = int(TUE.timestamp() * 1000)
    assert first.admission is not None
    settled = await store.settle(f"{name}/a", first.admission.call_id, 30, at_ms + 30_000)
    assert settled.status is SettleStatus.SETTLED
    assert (await place(store, c, provider, "c1"))[1].allowed


async def test_settle_releases_the_providers_share(deployed: tuple[Store, str, str]) -> None:
    """Settling a tenant's call gives back its unused reservation on the provider's cap and frees its
    slot there, as on the tenant's own."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {concurrent_calls: 5, spend: {day: "5.00"}}')
    tenant = memo(f"{name}/a", 'site_limits: {spend: {day: "5.00"}}')
    p, decision = await place(store, tenant, provider, "a0")
    assert decision.allowed
    assert p.admission is not None
    held = {
        "site_limits.spend.day": ONE,
        "provider_limits.concurrent_calls": 1,
        "provider_limits.spend.day": ONE,
    }
    assert await values(store, p) == held
    at_ms = int(TUE.timestamp() * 1000) + 5_000
    settled = await store.settle(f"{name}/a", p.admission.call_id, 0, at_ms)
    assert (settled.status, settled.charged, settled.released) == (SettleStatus.SETTLED, 0, ONE)
    assert await values(store, p) == dict.fromkeys(held, 0)


async def test_200_concurrent_admissions_over_three_tenants_never_pass_the_providers_cap(
    deployed: tuple[Store, str, str],
) -> None:
    """200 simultaneous admissions spread over three tenants: the provider's day cap (ten calls) is
    never passed, and what its key holds is what was reserved (the spend invariant)."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {spend: {day: "10.00"}}')
    tenants = [memo(f"{name}/{t}") for t in TENANTS]

    async def one(i: int) -> tuple[int, Decision]:
        _, decision = await place(store, tenants[i % 3], provider, f"c{i}")
        return int(decision.reserved * ONE), decision

    placed = await asyncio.gather(*(one(i) for i in range(200)))
    reserved = [r for r, _ in placed]
    p, _ = await place(store, tenants[0], provider, "peek")
    assert await values(store, p) == {"provider_limits.spend.day": sum(reserved)}
    assert sum(reserved) == 10 * ONE  # used in full, never passed
    assert sum(1 for r in reserved if r) == 10
    assert {d.reason for _, d in placed if not d.allowed} == {Reason.PROVIDER_LIMIT}


async def test_a_tenants_own_caps_and_locks_are_its_own(deployed: tuple[Store, str, str]) -> None:
    """A tenant's lock, panic and own caps stop none of its siblings' calls, and the locks each
    reads back are its own."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {spend: {day: "100.00"}}')
    mine = 'site_limits: {spend: {day: "1.00"}}'
    a, b = memo(f"{name}/a", mine), memo(f"{name}/b", mine)
    await store.set_lock(f"{name}/a", "1001", "all")
    await store.set_panic(f"{name}/a", True)
    assert (await place(store, a, provider, "a0"))[1].reason is Reason.EXTENSION_LOCKED
    assert (await place(store, b, provider, "b0"))[1].allowed  # b's 1001: not locked
    assert await store.locks(f"{name}/a") == {"1001": "all"}
    assert await store.locks(f"{name}/b") == {} == await store.locks(name)
    assert (await store.panic(f"{name}/a"), await store.panic(f"{name}/b")) == (True, False)
    assert (await store.panic(name)) is False
    assert (await place(store, a, provider, "a1", ext="1002"))[1].allowed  # a's own cap: used up
    _, spent = await place(store, a, provider, "a2", ext="1002")
    assert (spent.reason, spent.rule) == (Reason.SPEND_CAP_DAY, "site_limits.spend.day")
    assert (await place(store, b, provider, "b1", ext="1002"))[1].reason is Reason.SPEND_CAP_DAY
    c = memo(f"{name}/c", mine)
    assert (await place(store, c, provider, "c0"))[1].allowed  # c's cap is c's
    p, _ = await place(store, c, provider, "peek")
    assert (await values(store, p))["provider_limits.spend.day"] == 3 * ONE  # a1, b0, c0


async def test_report_mode_on_a_providers_cap(deployed: tuple[Store, str, str]) -> None:
    """A provider's cap in mode: report admits the call and reports the provider_limit it would have
    given; the cap is still counted."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {spend: {day: "1.00", mode: report}}')
    tenant = memo(f"{name}/a")
    assert not (await place(store, tenant, provider, "a0"))[1].reported
    p, decision = await place(store, tenant, provider, "a1")
    assert (decision.verdict, decision.reason) == (Verdict.ALLOW, Reason.ALLOWED)
    (reported,) = decision.reported
    assert (reported.rule, reported.reason) == ("provider_limits.spend.day", Reason.PROVIDER_LIMIT)
    assert reported.outcome == REPORT
    assert "(mode: report)" in reported.detail
    assert await values(store, p) == {"provider_limits.spend.day": 2 * ONE}


@pytest.mark.parametrize("master", range(len(DEPLOYMENTS) - 1))
async def test_a_providers_and_its_tenants_keys_are_on_its_master(
    master: int, open_store: OpenStore, redis_cluster: Cluster
) -> None:
    """On the cluster every key of the provider and of its tenants (counters, reservations, locks,
    settled markers) is on the master of the provider's hash tag, and on no other."""
    store, name = await open_store(f"cluster-{master}", PROVIDER)
    provider = memo(
        name, 'site_limits: {concurrent_calls: 9, calls_per_hour: 99, spend: {day: "9"}}'
    )
    tenants = [memo(f"{name}/{t}", "site_limits: {calls_per_minute: 9}") for t in TENANTS]
    placed = [await place(store, tenant, provider, f"c{i}") for i, tenant in enumerate(tenants)]
    assert all(decision.allowed for _, decision in placed)
    for tenant_name in TENANTS:
        await store.set_lock(f"{name}/{tenant_name}", "1009", "international")
    first = placed[0][0].admission
    assert first is not None
    at_ms = int(TUE.timestamp() * 1000) + 5_000
    settled = await store.settle(f"{name}/a", first.call_id, 5, at_ms)
    assert settled.status is SettleStatus.SETTLED
    client = store.client
    assert isinstance(client, RedisCluster)
    found: dict[int, list[str]] = {}
    for node in client.get_primaries():
        cursor: Any = 0
        while True:
            cursor, batch = await client.scan(cursor, match="cg:*", count=500, target_nodes=node)
            (cursor,) = cursor.values()  # a Cluster answers {node: cursor}
            found.setdefault(int(node.port), []).extend(decoded(k) for k in batch)
            if not int(cursor):
                break
    ours = {port: [k for k in ks if k.startswith(f"cg:{{{name}}}")] for port, ks in found.items()}
    home = redis_cluster.port_of(name)
    assert all(not ks for port, ks in ours.items() if port != home)
    sites = {keys.site_of(k) for k in ours[home]}
    assert sites == {name, *(f"{name}/{t}" for t in TENANTS)}
    assert keys.site_prefix(name) + keys.spend_key(keys.SITE_SCOPE, DAY) in ours[home]


async def test_a_tenant_pushing_free_rates_still_spends_the_providers_cap(
    deployed: tuple[Store, str, str],
) -> None:
    """The tenant attack review: a tenant whose own rates are 0 reserved nothing on the provider's
    spend cap (50 of 50 calls of an hour went through under a 2.00 day cap). The provider's checks
    are priced at the provider's rate when it is the higher one."""
    store, name, _ = deployed
    provider = memo(name, 'site_limits: {spend: {day: "2.00"}}')
    free = Memo(
        load_policy(
            POLICY.format(name=f"{name}/evil", site_limits="").replace('"1.00"', '"0"'),
            "evil.yaml",
        )
    )
    verdicts = [(await place(store, free, provider, f"e{i}"))[1].reason for i in range(4)]
    assert verdicts == [
        Reason.ALLOWED,
        Reason.ALLOWED,
        Reason.PROVIDER_LIMIT,
        Reason.PROVIDER_LIMIT,
    ]


async def test_a_tenant_cannot_make_abroad_domestic_for_the_provider() -> None:
    """The tenant attack review: with its own region CU, a call to Cuba was domestic for the provider's
    international_calls_per_hour. The provider judges abroad by its own country."""
    store = MemoryStore()
    provider = memo(PROVIDER, "site_limits: {international_calls_per_hour: 1}")
    cuban = Memo(
        load_policy(
            POLICY.format(name=f"{PROVIDER}/cu", site_limits="").replace(
                "region: US", "region: CU"
            ),
            "cu.yaml",
        )
    )
    reasons = []
    for i in range(2):
        attempt = CallAttempt(f"cu{i}", "1001", "+5372345678", leg=f"cu{i}")
        p = prepare(cuban, attempt, TUE, above=provider)
        assert p.admission is not None
        reasons.append(conclude(p, await store.admit(p.admission)).reason)
    assert reasons == [Reason.ALLOWED, Reason.PROVIDER_LIMIT]
