"""What only a real Redis Cluster of three masters shows: a site's keys all live on the master of its
slot and the sites of the store suite cover every master; the reads that are not of named keys (the
SCAN of locks and status) ask only that master; admissions on every master at once keep each cap; the
audit stream, the persistence check and a Cluster that does not answer. The store suite itself runs on
the cluster too (tests/test_store.py, test_policystore.py, test_status.py, test_spend_invariant.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from callgate.core.admission import Admission, Check, CheckKind
from callgate.core.engine import conclude
from callgate.core.keys import AUDIT, site_prefix
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason
from callgate.core.rules import CallAttempt
from callgate.errors import StoreUnavailable
from callgate.ops.audit import STREAM_TTL, Audit
from callgate.ops.metrics import Metrics, site_state
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import persistence, read_status
from callgate.store.memory import MemoryStore
from callgate.store.redis import RedisStore
from tests import test_policystore, test_spend_invariant, test_status, test_store
from tests.conftest import MASTERS, cluster_store
from tests.servers import Cluster, free_port

T0 = 1_795_000_000_000
CAP = 10_000_000  # 10.00 at 1.00/min with 60 s billing: at most 10 one-minute calls
TEXT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
POLICY = load_policy(TEXT, "p")


@pytest.fixture
async def store(redis_cluster: Cluster) -> AsyncIterator[RedisStore]:
    s = await cluster_store(redis_cluster, "any")
    yield s
    await s.aclose()


async def node_keys(port: int) -> set[str]:
    """Every key one master holds, asked of that master alone."""
    async with aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
        return {str(key) for key in await node.keys("*")}


async def scans(cluster: Cluster) -> dict[int, int]:
    """SCAN calls each master has served since its stats were reset."""
    counted = {}
    for port in cluster.ports:
        async with aioredis.Redis(host="127.0.0.1", port=port) as node:
            stats = await node.info("commandstats")
            counted[port] = int(stats.get("cmdstat_scan", {}).get("calls", 0))
    return counted


async def reset_stats(cluster: Cluster) -> None:
    for port in cluster.ports:
        async with aioredis.Redis(host="127.0.0.1", port=port) as node:
            await node.config_resetstat()


def spend(site: str, call_id: str, at: int) -> Admission:
    checks = (Check("spend", Reason.SPEND_CAP_DAY, CheckKind.SPEND, "s:ext:x:d", CAP, 86400),)
    return Admission(site, call_id, at, checks, 1_000_000, 60, 180, 600, "x", False, True)


def test_the_suites_sites_cover_every_master(redis_cluster: Cluster) -> None:
    """The sites the store suite runs on the cluster (cluster-0, -1, -2) are one per master."""
    assert len(redis_cluster.ports) == MASTERS
    for module in (test_store, test_policystore, test_status, test_spend_invariant):
        sites = redis_cluster.sites(module.SITE)
        assert [redis_cluster.port_of(site) for site in sites] == list(redis_cluster.ports)


async def test_a_sites_keys_live_on_the_master_of_its_slot(
    store: RedisStore, redis_cluster: Cluster
) -> None:
    """Admitted, settled, locked and audited: every key of a site is on its master, none elsewhere."""
    sites = redis_cluster.sites("spread")
    for i, site in enumerate(sites):
        assert (await store.admit(spend(site, f"c{i}", T0))).admitted
        await store.settle(site, "nope", 10, T0)
        await store.set_lock(site, "1001", "all")
        await store.set_panic(site, True)
        await PolicyStore(store.client, site).push(
            TEXT.replace(f"name: {POLICY.site.name}", f"name: {site}"), "p.yaml", {},
            by="t", at=datetime.now(UTC),
        )  # fmt: skip
    for site, port in zip(sites, redis_cluster.ports, strict=True):
        held = await node_keys(port)
        assert held
        assert {key for key in held if not key.startswith(site_prefix(site))} == set()
        assert f"{site_prefix(site)}policy:versions" in held


async def test_locks_and_status_scan_only_the_sites_master(
    store: RedisStore, redis_cluster: Cluster
) -> None:
    """store.locks and read_status find the site's keys with SCAN on its master alone (redis-py's
    scan_iter would walk every master)."""
    site = redis_cluster.sites(POLICY.site.name)[1]
    policy = load_policy(TEXT.replace(f"name: {POLICY.site.name}", f"name: {site}"), "p.yaml")
    for other in redis_cluster.sites("elsewhere"):
        await store.set_lock(other, "2000", "all")
    await store.set_lock(site, "1005", "international")
    await reset_stats(redis_cluster)
    assert await store.locks(site) == {"1005": "international"}
    status = await read_status(store.client, policy, datetime.now(UTC))
    assert status.locks == (("1005", "international"),)
    home = redis_cluster.port_of(site)
    counted = await scans(redis_cluster)
    assert counted == {port: counted[home] if port == home else 0 for port in redis_cluster.ports}
    assert counted[home] >= 2
    await site_state(Metrics(), store.client, lambda: policy)()  # /metrics reads the same way
    again = await scans(redis_cluster)
    assert again == {port: again[home] if port == home else 0 for port in redis_cluster.ports}
    assert again[home] > counted[home]


async def test_200_concurrent_admissions_on_every_master_at_once(
    store: RedisStore, redis_cluster: Cluster
) -> None:
    """200 simultaneous admissions for a site on each master, all in flight together: each site's
    committed spend is what its admitted calls reserved, never past its cap."""
    sites = redis_cluster.sites("inv")

    async def one(site: str, i: int) -> int:
        outcome = await store.admit(spend(site, f"c{i}", T0 + i))
        return outcome.reserved if outcome.admitted else 0

    reserved = await asyncio.gather(*(one(site, i) for site in sites for i in range(200)))
    for n, site in enumerate(sites):
        mine = reserved[n * 200 : (n + 1) * 200]
        committed = int(await store.client.get(f"{site_prefix(site)}s:ext:x:d") or 0)
        assert committed == sum(mine) <= CAP
        assert sum(1 for r in mine if r) >= 4


async def test_a_small_connection_pool_queues_instead_of_failing(redis_cluster: Cluster) -> None:
    """The Cluster client refuses a command when a node's connections are all busy; the store keeps
    its commands in flight under that limit, so a burst waits rather than fails."""
    client = RedisCluster(
        host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True, max_connections=6
    )
    store = RedisStore(client)
    try:
        site = redis_cluster.sites("burst")[2]
        outcomes = await asyncio.gather(
            *(store.admit(spend(site, f"c{i}", T0)) for i in range(200))
        )
        assert sum(o.reserved for o in outcomes if o.admitted) == CAP  # none failed: all judged
    finally:
        await store.aclose()


async def test_the_audit_stream_on_a_cluster(store: RedisStore, redis_cluster: Cluster) -> None:
    """The audit batches (XADD and EXPIRE pipelined on the site's stream) land on its master."""
    site = redis_cluster.sites("audited")[2]
    audit = Audit(store.client, site)
    p = prepare(Memo(POLICY), CallAttempt("a", "1001", "2125550123"), datetime.now(UTC))
    assert p.admission is not None
    made = conclude(p, MemoryStore().admit_now(p.admission))
    for n in range(3):
        audit.record(made, f"chan-{n}", 1.0)
    stop = asyncio.Event()
    stop.set()
    await audit.run(stop)
    key = site_prefix(site) + AUDIT
    assert await store.client.xlen(key) == 3
    assert 0 < await store.client.ttl(key) <= STREAM_TTL
    assert key in await node_keys(redis_cluster.ports[2])


async def test_persistence_asks_every_master(store: RedisStore, redis_cluster: Cluster) -> None:
    """serve's start-up check: a cluster keeps its data only when every master does."""
    assert await persistence(store.client) is False  # the test cluster: no AOF, no save points
    for port in redis_cluster.ports:
        async with aioredis.Redis(host="127.0.0.1", port=port) as node:
            await node.config_set("save", "3600 1")
        kept = await persistence(store.client)
        assert kept is (port == redis_cluster.ports[-1])
    for port in redis_cluster.ports:
        async with aioredis.Redis(host="127.0.0.1", port=port) as node:
            await node.config_set("save", "")


async def test_a_cluster_that_does_not_answer_is_store_unavailable() -> None:
    """The Cluster client's own errors (no node reachable) become StoreUnavailable, like Redis's."""
    client = RedisCluster(host="127.0.0.1", port=free_port(), decode_responses=True)
    store = RedisStore(client)
    try:
        with pytest.raises(StoreUnavailable):
            await store.admit(spend("x", "c", T0))
        with pytest.raises(StoreUnavailable):
            await store.locks("x")
        with pytest.raises(StoreUnavailable):
            await read_status(client, POLICY, datetime.now(UTC))
        with pytest.raises(StoreUnavailable):
            await PolicyStore(client, "x").active_version()
        with pytest.raises(StoreUnavailable):
            await persistence(client)
    finally:
        await store.aclose()
