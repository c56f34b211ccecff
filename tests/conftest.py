from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from callgate.store.redis import RedisStore
from tests.asterisk_rig import AsteriskInstance
from tests.e2e import Watch
from tests.servers import redis_server

# The fixtures that start the session's real redis-server (``redis_store`` asks for ``redis_url``, so
# its tests are caught too). A test that starts a server of its own carries ``@pytest.mark.redis``
# itself, or its module does (``pytestmark``).
REDIS_FIXTURES = frozenset({"redis_url", "redis_store"})


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
