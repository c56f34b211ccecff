"""Settling without CDRs: with `[ami] settle_from = "hangup"`, DialEnd and Hangup events of a real
Asterisk settle an admitted call with its answered seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    POLICY,
    Callgate,
    Watch,
    app_registered,
    callgate_env,
    reached,
    shipped_configs,
    wait_until,
)
from tests.servers import redis_server

pytestmark = pytest.mark.asterisk
MICRO = 1_000_000


def channel_events(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped configs, with the AMI user reading call events instead of CDRs (as the docs say)."""
    configs = shipped_configs(ast)
    manager = configs["manager.conf"].replace("read=cdr,system", "read=call,system")
    manager = manager.replace("eventfilter=Event: Cdr", "eventfilter=Event: (DialEnd|Hangup)")
    assert manager != configs["manager.conf"]
    return {**configs, "manager.conf": manager}


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AsteriskInstance, Callgate, str]]:
    root = Path(tmp_path_factory.mktemp("hangup"))
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=channel_events
        ) as ast,
    ):
        env = callgate_env(ast, redis_url, root / "policy.yaml", CALLGATE_AMI_SETTLE_FROM="hangup")
        gate = Callgate(env, root / "callgate.log")
        gate.start()
        try:
            assert wait_until(lambda: app_registered(ast), 20), gate.tail()
            yield ast, gate, redis_url
        finally:
            gate.stop()


@pytest.fixture
async def redis(rig: tuple[AsteriskInstance, Callgate, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(rig[2], decode_responses=True)
    yield client
    await client.aclose()


async def test_hangup_settles_the_answered_seconds(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """A call held 3 s by the carrier is settled from its DialEnd and Hangup at about 3 s."""
    ast, gate, _ = rig
    watch = await Watch.open(ast)
    try:
        await watch.originate("1003", "2125550161", hold=3)
        assert await watch.wait(reached("+12125550161")), gate.tail()
        done: list[str] = []
        for _ in range(200):
            done = [str(k) for k in await redis.keys("cg:{e2e}:done:*")]
            if done:
                break
            await asyncio.sleep(0.05)
        assert done, gate.tail()
        assert await redis.keys("cg:{e2e}:r:*") == []
        spent = {int(await redis.get(k) or 0) for k in await redis.keys("cg:{e2e}:s:ext:1003:*")}
        per_second = MICRO // 100 // 60  # 0.01/min
        assert spent
        assert all(2 * per_second <= s <= 4 * per_second + 1 for s in spent), spent
    finally:
        await watch.close()
