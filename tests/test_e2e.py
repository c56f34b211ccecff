"""callgate in the call path of a real Asterisk: what happens to calls, seen from Asterisk's side."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callgate.core.keys import reservation_key, slots_key
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    POLICY,
    Callgate,
    Watch,
    app_registered,
    caller_leg_hangup,
    callgate_env,
    cdr_of,
    gated_cdr_of,
    in_stasis,
    reached,
    shipped_configs,
    wait_until,
)
from tests.servers import eventually, free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

MICRO = 1_000_000


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str
    redis_dir: Path
    redis_port: int
    later: contextlib.ExitStack  # servers restarted by a test, stopped with the rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Redis, Asterisk with the shipped dialplan and configs, and `callgate serve`, for this module."""
    root = Path(tmp_path_factory.mktemp("e2e"))
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    port = free_port()
    with (
        redis_server(root / "redis", port) as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
    ):
        gate = Callgate(callgate_env(ast, redis_url, policy), root / "callgate.log")
        with gate.running(ast), contextlib.ExitStack() as later:
            yield Rig(ast, gate, redis_url, root / "redis", port, later)


@pytest.fixture
async def redis(rig: Rig) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def redis_link(rig: Rig, state: str) -> bool:
    """The gate reports its Redis link in that state (/health)."""
    return bool((await rig.gate.health()).get("links", {}).get("redis") == state)


def _ensure_callgate(rig: Rig) -> None:
    if rig.gate.proc is None or rig.gate.proc.poll() is not None:
        rig.gate.start()
    assert wait_until(lambda: app_registered(rig.ast), 20), rig.gate.tail()


async def test_allowed_call_reaches_the_trunk(rig: Rig, watch: Watch) -> None:
    """An allowed call leaves Stasis, is dialled to its E.164 number, and is marked in the CDR."""
    _ensure_callgate(rig)
    await watch.originate("1001", "2125550101")
    assert await watch.wait(reached("+12125550101")), rig.gate.tail()
    cdr = await watch.wait(gated_cdr_of("2125550101"), 15)
    assert cdr is not None
    assert cdr.get("UserField") == "callgate:allowed"


async def test_denied_call_never_reaches_the_trunk(rig: Rig, watch: Watch) -> None:
    """A denied call is hung up with cause 21 and never reaches the trunk context."""
    _ensure_callgate(rig)
    await watch.originate("1001", "011532345678")  # Cuba: not an allowed country
    hangup = await watch.wait(caller_leg_hangup("011532345678"))
    assert hangup is not None, rig.gate.tail()
    assert hangup.get("Cause") == "21"
    assert await watch.wait(cdr_of("011532345678"), 15)  # the call's record: all of it is over
    assert not watch.find(reached("+532345678"))
    assert not watch.find(reached("532345678"))


async def test_unknown_extension_is_refused(rig: Rig, watch: Watch) -> None:
    _ensure_callgate(rig)
    await watch.originate("7777", "2125550102")
    hangup = await watch.wait(caller_leg_hangup("2125550102"))
    assert hangup is not None
    assert hangup.get("Cause") == "21"
    assert not watch.find(reached("+12125550102"))


async def test_call_is_cut_at_its_allowed_seconds(rig: Rig, watch: Watch) -> None:
    """Extension 3000 may talk 3 s: a call the far end would hold for 30 s ends after about 3 s."""
    _ensure_callgate(rig)
    await watch.originate("3000", "2125550103", hold=30)
    assert await watch.wait(reached("+12125550103"))
    cdr = await watch.wait(
        lambda m: gated_cdr_of("2125550103")(m) and m.get("Disposition") == "ANSWERED", 20
    )
    assert cdr is not None
    assert 2 <= int(cdr.get("BillableSeconds")) <= 4


async def test_spend_settles_from_the_cdr(rig: Rig, watch: Watch, redis: aioredis.Redis) -> None:
    """After the call, its reservation is gone and the day's spend is what it really cost."""
    _ensure_callgate(rig)

    async def day_keys() -> list[str]:
        return [str(k) for k in await redis.keys("cg:{e2e}:s:ext:1002:*")]

    before = {k: int(await redis.get(k) or 0) for k in await day_keys()}
    await watch.originate("1002", "2125550104", hold=2)
    assert await watch.wait(reached("+12125550104"))
    cdr = await watch.wait(gated_cdr_of("2125550104"), 15)
    assert cdr is not None
    call_id = cdr.get("CallgateCall")  # the reservation id the gate set (CALLGATE_CALL)
    # the feed waits a quiet second before it settles
    await eventually(lambda: redis.exists(f"cg:{{e2e}}:done:{call_id}"), rig.gate.tail)
    assert not await redis.exists(f"cg:{{e2e}}:r:{call_id}")
    billsec = int(cdr.get("BillableSeconds"))
    expected = -(
        -(MICRO // 100) * billsec // 60
    )  # 0.01/min in micro-units, 1-s increment, rounded up
    after = {k: int(await redis.get(k) or 0) for k in await day_keys()}
    grown = {k: after[k] - before.get(k, 0) for k in after}
    assert grown
    assert set(grown.values()) == {expected}


async def test_a_quick_redial_after_a_hang_up_is_allowed(
    rig: Rig, watch: Watch, redis: aioredis.Redis
) -> None:
    """Issue 13: extension 5000 may have one call at a time. Its call ends, and it dials again at once:
    the first call's slot was held until its CDR went quiet (about a second), so the redial was refused
    as concurrent_calls. The gated channel's Hangup now frees the slot, while the call's money is still
    reserved (the CDR settles it a quiet second later)."""
    _ensure_callgate(rig)
    slots = "cg:{e2e}:" + slots_key("ext:5000")
    await watch.originate("5000", "2125550150", hold=1)
    assert await watch.wait(reached("+12125550150")), rig.gate.tail()
    (rid,) = await redis.zrange(slots, 0, -1)  # the call holds the extension's one slot
    held = "cg:{e2e}:" + reservation_key(str(rid))
    assert await watch.wait(caller_leg_hangup("2125550150"), 15)

    async def freed_while_held() -> tuple[int, int]:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zcard(slots)
            pipe.exists(held)
            count, exists = await pipe.execute()
        return int(count), int(exists)

    state = await freed_while_held()
    for _ in range(100):  # at most 2 s: the release follows the Hangup by a round trip
        if state[0] == 0:
            break
        await asyncio.sleep(0.02)
        state = await freed_while_held()
    assert state == (0, 1), rig.gate.tail()  # the slot is free, the money not settled yet
    await watch.originate("5000", "2125550151", hold=1)
    cdr = await watch.wait(gated_cdr_of("2125550151"), 15)
    assert cdr is not None, rig.gate.tail()
    assert cdr.get("UserField") == "callgate:allowed", rig.gate.tail()
    assert watch.find(reached("+12125550151"))


async def test_fifty_simultaneous_attack_calls_stay_under_the_cap(
    rig: Rig, watch: Watch, redis: aioredis.Redis
) -> None:
    """50 calls at once from one extension at 0.60/min, 60 s each, cap 3.00/day: 5 get through."""
    _ensure_callgate(rig)
    numbers = [f"01144207946{i:04d}" for i in range(50)]
    await asyncio.gather(*(watch.originate("4000", n, hold=2) for n in numbers))
    ends = [await watch.wait(cdr_of(n), 30) for n in numbers]
    assert all(ends), rig.gate.tail()
    through = [n for n in numbers if watch.find(reached("44" + n[5:]))]
    assert len(through) == 5
    for end in ends:  # the last settlements
        if end is not None and end.get("CallgateCall"):
            done = f"cg:{{e2e}}:done:{end.get('CallgateCall')}"
            await eventually(functools.partial(redis.exists, done), rig.gate.tail)
    spent = [int(await redis.get(k) or 0) for k in await redis.keys("cg:{e2e}:s:ext:4000:*")]
    assert spent
    assert max(spent) <= 3 * MICRO


async def test_emergency_and_fail_closed_with_callgate_stopped(rig: Rig, watch: Watch) -> None:
    """Callgate stopped: 911 still reaches the trunk; any other number is refused, never dialled."""
    rig.gate.stop()
    assert wait_until(lambda: not app_registered(rig.ast), 10)
    try:
        await watch.originate("1001", "911")
        assert await watch.wait(reached("911"))
        await watch.originate("1001", "2125550105")
        hangup = await watch.wait(caller_leg_hangup("2125550105"))
        assert hangup is not None
        assert hangup.get("Cause") == "21"
        assert not watch.find(reached("+12125550105"))
    finally:
        _ensure_callgate(rig)


async def test_restart_mid_traffic_strands_no_channel(rig: Rig, watch: Watch) -> None:
    """callgate killed (SIGKILL) in a burst of calls, then restarted: no channel is left in Stasis."""
    _ensure_callgate(rig)
    numbers = [f"21255502{i:02d}" for i in range(40)]
    burst = asyncio.gather(*(watch.originate("1003", n, hold=1) for n in numbers))
    assert await watch.wait(  # killed while calls are in its hands
        lambda m: m.event == "Newexten" and m.get("Application") == "Stasis", 15
    )
    rig.gate.stop(signal.SIGKILL)
    await burst
    _ensure_callgate(rig)
    ends = [await watch.wait(caller_leg_hangup(n), 30) for n in numbers]
    assert all(ends)
    assert wait_until(lambda: not in_stasis(rig.ast), 10)


async def test_dead_redis_applies_the_store_failure_mode_and_recovers(
    rig: Rig, watch: Watch
) -> None:
    """Redis killed: deny_international refuses a call to London and lets New York through; Redis back:
    London is counted and allowed again, with no restart of callgate."""
    _ensure_callgate(rig)
    admin = aioredis.Redis.from_url(rig.redis_url)
    with contextlib.suppress(Exception):
        await admin.shutdown(nosave=True)
    await admin.aclose()
    await watch.originate("1004", "011442079460001")
    hangup = await watch.wait(caller_leg_hangup("011442079460001"))
    assert hangup is not None
    assert hangup.get("Cause") == "21"
    await watch.originate("1004", "2125550106")
    assert await watch.wait(reached("+12125550106"))
    await eventually(lambda: redis_link(rig, "down"), rig.gate.tail)

    rig.later.enter_context(redis_server(rig.redis_dir, rig.redis_port))
    await eventually(lambda: redis_link(rig, "up"), rig.gate.tail)  # the gate saw it come back
    # Within a second of the link coming back a call may still meet a pooled connection the restart
    # closed (seen once in CI: refused store_unavailable in 2 ms); the next call is counted again.
    for attempt in range(3):
        number = f"01144207946001{attempt}"
        await watch.originate("1004", number)
        if await watch.wait(reached("+" + number[3:]), 10):
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError(rig.gate.tail())
