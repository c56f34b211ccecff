from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from redis.asyncio.cluster import RedisCluster

from callgate.store.redis import RedisStore
from tests import servers
from tests.asterisk_rig import AsteriskInstance
from tests.e2e import Watch
from tests.servers import Cluster, redis_server

# The fixtures that start the session's real redis-server or Redis Cluster (``redis_store`` asks for
# ``redis_url``, so its tests are caught too). A test that starts a server of its own carries
# ``@pytest.mark.redis`` itself, or its module does (``pytestmark``).
REDIS_FIXTURES = frozenset({"redis_url", "redis_store", "redis_cluster", "open_store"})

MASTERS = 3  # of the session's Redis Cluster
# Where a store test runs (the params of a module's store fixture, opened by ``open_store``): the
# session's redis-server, then the session's cluster once with the test's site on each master.
DEPLOYMENTS = ("redis", *(f"cluster-{i}" for i in range(MASTERS)))
OpenStore = Callable[[str, str], Awaitable[tuple[RedisStore, str]]]


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a Redis fixture ``redis``: ``pytest -m "not redis and not asterisk
    and not compiled"`` (``make fast``) then runs the pure unit tests without starting any server."""
    for item in items:
        if REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the whole session."""
    with redis_server(Path(tmp_path_factory.mktemp("redis"))) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real Redis Cluster of three masters for the whole session, created at its first use."""
    with servers.redis_cluster(Path(tmp_path_factory.mktemp("cluster")), MASTERS) as cluster:
        yield cluster


async def cluster_store(cluster: Cluster, site: str) -> RedisStore:
    """A RedisStore on the emptied ``cluster`` (redis-py's asyncio Cluster client, told one master) whose
    default node, where INFO and CONFIG go, is the master that holds ``site``."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    await client.initialize()
    node = client.get_node(host="127.0.0.1", port=cluster.port_of(site))
    assert node is not None
    client.set_default_node(node)
    await client.flushdb()  # every master
    return RedisStore(client)


@pytest.fixture
async def open_store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[OpenStore]:
    """``await open_store(deployment, site)``: a RedisStore on an emptied database of a deployment of
    :data:`DEPLOYMENTS`, and the site a test uses there: ``site`` on the redis-server; on the cluster
    (``cluster-N``), the first of ``site``, ``site-0``, ``site-1``, ... that lands on master N."""
    opened: list[RedisStore] = []

    async def open_one(deployment: str, site: str) -> tuple[RedisStore, str]:
        if deployment == "redis":
            store = RedisStore.from_url(redis_url, timeout=5)
            await store.client.flushdb()
        else:
            cluster: Cluster = request.getfixturevalue("redis_cluster")
            master = int(deployment.removeprefix("cluster-"))
            site = cluster.sites(site)[master]
            assert cluster.port_of(site) == cluster.ports[master]
            store = await cluster_store(cluster, site)
        opened.append(store)
        return store, site

    yield open_one
    for store in opened:
        await store.aclose()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A RedisStore on an emptied database."""
    store = RedisStore.from_url(redis_url, timeout=5)
    await store.client.flushdb()
    yield store
    await store.aclose()


class _Rig(Protocol):
    """What a module's ``rig`` fixture gives: at least the running test Asterisk."""

    @property
    def ast(self) -> AsteriskInstance: ...


@pytest.fixture
async def watch(rig: _Rig) -> AsyncIterator[Watch]:
    """Every AMI event of the module's rig, read by the test's own AMI user (tests/e2e.Watch)."""
    w = await Watch.open(rig.ast)
    yield w
    await w.close()
