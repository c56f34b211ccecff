"""``callgate serve`` on Redis through Sentinel, in the call path of a real Asterisk: the primary is
killed while the gate runs, and the gate follows the promoted replica by itself, with no restart.
(The failover under 200 concurrent admissions, measured, is tests/test_sentinel.py; this is the
same client built by the composition root and driven by real calls.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bench.sentinel import Rig as SentinelRig
from bench.sentinel import sentinel_rig
from callgate.core import keys
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    POLICY,
    Callgate,
    Watch,
    callgate_env,
    reached,
    shipped_configs,
)
from tests.servers import eventually

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

SITE = "e2e"  # tests/e2e.POLICY's site.name


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis: SentinelRig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("sentinel-e2e"))
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    with (
        sentinel_rig(root / "redis") as redis,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
    ):
        gate = Callgate(callgate_env(ast, redis.url, policy), root / "callgate.log")
        with gate.running(ast):
            yield Rig(ast, gate, redis)


async def reservations(port: int) -> list[str]:
    """The reservation keys of the site on the Redis server at ``port``."""
    async with aioredis.Redis(port=port, decode_responses=True) as r:
        return [str(k) async for k in r.scan_iter(f"{keys.site_prefix(SITE)}r:*")]


async def test_the_gate_follows_a_failover_without_a_restart(rig: Rig, watch: Watch) -> None:
    """London (counted: deny_international when the store fails) is allowed through the primary;
    the primary is SIGKILLed; calls go on being decided (by on_store_error while the sentinels
    promote the replica); then London is counted and allowed again, its reservation written on the
    new primary, by the same callgate process."""
    pid = rig.gate.proc.pid if rig.gate.proc else None
    await watch.originate("1004", "011442079460001", hold=3)
    assert await watch.wait(reached("+442079460001")), rig.gate.tail()
    assert await reservations(rig.redis.primary)  # held there while the call is up

    rig.redis.kill(rig.redis.primary)
    for attempt in range(60):  # the sentinels' down-after and election: a few seconds
        number = f"0114420794601{attempt:02d}"
        await watch.originate("1004", number)
        if await watch.wait(reached("+" + number[3:]), 3):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"no counted call after the failover\n{rig.gate.tail()}")

    assert rig.gate.proc is not None
    assert rig.gate.proc.pid == pid  # no restart
    assert rig.gate.proc.poll() is None
    # the counted call's reservation was written on the promoted replica (held, or settled)
    (decided,) = [d for d in decisions(rig) if d["dialled"] == number]
    assert decided["reason"] == "allowed", decided
    reservation = keys.site_prefix(SITE) + keys.reservation_key(decided["reservation"])
    done = keys.site_prefix(SITE) + f"{keys.SETTLED}:{decided['reservation']}"
    async with aioredis.Redis(port=rig.redis.replica, decode_responses=True) as promoted:
        assert (await promoted.info("replication"))["role"] == "master"
        assert await promoted.exists(reservation, done)

    async def redis_up() -> bool:
        return bool((await rig.gate.health()).get("links", {}).get("redis") == "up")

    await eventually(redis_up, rig.gate.tail)


def decisions(rig: Rig) -> list[dict[str, str]]:
    text = rig.gate.log.read_text(encoding="utf-8", errors="replace")
    return [json.loads(line) for line in text.splitlines() if '"event": "decision"' in line]
