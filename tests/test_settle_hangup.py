"""Settling without CDRs: with `[ami] settle_from = "hangup"`, DialEnd and Hangup events of a real
Asterisk settle each gated leg under the reservation id the gate set on it (`CALLGATE_CALL`, in the events
through the shipped manager.conf `channelvars`): the answered seconds of an answered call, nothing for a
call that was never answered, and the whole reservation for a call whose answer callgate did not see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callgate.asterisk.ami import AmiConnection, Message
from callgate.asterisk.spend import TRUNK_EVENT
from callgate.core.decision import RESERVATION_VARIABLE
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    CALLGATE_AMI_SECRET,
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

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too
MICRO = 1_000_000
RATE = MICRO // 100  # the e2e policy's 0.01/min to the US (micro-units a minute), 1-second billing
PER_SECOND = RATE // 60
BUSY = "2125550199"  # the carrier answers every number but this one

DIALPLAN = f"""{EXTENSIONS}
[pstn]
exten => 1{BUSY},1,Wait(2)
 same => n,Busy(1)
"""


def channel_events(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped configs, with the AMI user reading no CDRs at all: a box without cdr_manager. The
    shipped event filter already lets the channel events through (DialEnd, Hangup, CallgateTrunk)."""
    configs = shipped_configs(ast)
    manager = configs["manager.conf"].replace("read=cdr,call,user,system", "read=call,user,system")
    assert manager != configs["manager.conf"]
    assert "\nchannelvars=CALLGATE_CALL\n" in manager  # shipped as is, not added by the test
    return {**configs, "manager.conf": manager}


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AsteriskInstance, Callgate, str]]:
    root = Path(tmp_path_factory.mktemp("hangup"))
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(asterisk_prefix(), root / "ast", dialplan=DIALPLAN, configs=channel_events) as ast,
    ):
        env = callgate_env(ast, redis_url, root / "policy.yaml", CALLGATE_AMI_SETTLE_FROM="hangup")
        gate = Callgate(env, root / "callgate.log")
        gate.start()
        try:
            assert wait_until(lambda: app_registered(ast) and ami_connected(gate, 1), 20), (
                gate.tail()
            )
            yield ast, gate, redis_url
        finally:
            gate.stop()


def ami_connected(gate: Callgate, times: int) -> bool:
    return gate.tail(10_000).count("AMI connected") >= times


@pytest.fixture
async def redis(rig: tuple[AsteriskInstance, Callgate, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(rig[2], decode_responses=True)
    yield client
    await client.aclose()


def dial_begin(number: str) -> Callable[[Message], bool]:
    """The DialBegin of the gated channel: the Local ;2 half that ran [phones] for `number`."""
    return lambda m: (
        m.event == "DialBegin" and m.get("Channel").startswith(f"Local/{number}@phones-")
    )


async def gated_leg(watch: Watch, number: str) -> tuple[str, str]:
    """(channel name, reservation id) of the gated leg dialling `number`: CALLGATE_CALL as Asterisk
    holds it (Getvar) and as its events carry it (ChanVariable), which must agree."""
    begin = await watch.wait(dial_begin(number))
    assert begin is not None
    channel = begin.get("Channel")
    reply = await watch.conn.send("Getvar", Channel=channel, Variable=RESERVATION_VARIABLE)
    rid = reply.get("Value")
    assert rid
    assert begin.variable(RESERVATION_VARIABLE) == rid
    return channel, rid


async def settled(redis: aioredis.Redis, rid: str, seconds: float = 10) -> tuple[int, int, int]:
    """(charged, released, billsec) of the reservation once settled."""
    for _ in range(int(seconds / 0.05)):
        done = await redis.get(f"cg:{{e2e}}:done:{rid}")
        if done:
            charged, released, billsec = (int(v) for v in str(done).split(":"))
            return charged, released, billsec
        await asyncio.sleep(0.05)
    raise AssertionError(f"{rid} not settled; keys: {await redis.keys('cg:{e2e}:*')}")


async def spent(redis: aioredis.Redis, extension: str) -> int:
    keys = await redis.keys(f"cg:{{e2e}}:s:ext:{extension}:*")
    assert keys
    return max([int(await redis.get(k) or 0) for k in keys])


async def test_hangup_settles_the_answered_seconds_under_callgate_call(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """A call held 3 s by the carrier is settled at about 3 s, under the CALLGATE_CALL the gate set on
    the channel (whatever its shape), and its reservation and concurrency slot are gone."""
    ast, gate, _ = rig
    watch = await Watch.open(ast)
    try:
        await watch.originate("1003", "2125550161", hold=3)
        _, rid = await gated_leg(watch, "2125550161")
        assert await redis.exists(f"cg:{{e2e}}:r:{rid}"), gate.tail()
        assert await watch.wait(reached("+12125550161")), gate.tail()
        charged, _, billsec = await settled(redis, rid)
        assert 2 <= billsec <= 4, gate.tail()
        assert charged == -(-RATE * billsec // 60)  # whole seconds at 0.01/min, rounded up
        assert await redis.keys("cg:{e2e}:r:*") == []
        assert not await redis.zscore("cg:{e2e}:c:ext:1003", rid)
        assert 2 * PER_SECOND <= await spent(redis, "1003") <= 4 * PER_SECOND + 1
    finally:
        await watch.close()


async def test_a_call_never_answered_costs_nothing(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """The carrier says busy: the gated channel never comes up, so its hangup settles it at 0 s and
    gives its whole reservation back."""
    ast, gate, _ = rig
    watch = await Watch.open(ast)
    try:
        await watch.originate("1004", BUSY)
        _, rid = await gated_leg(watch, BUSY)
        charged, released, billsec = await settled(redis, rid)
        assert (charged, billsec) == (0, 0), gate.tail()
        assert released > 0
        assert await spent(redis, "1004") == 0
    finally:
        await watch.close()


async def test_an_answer_not_seen_is_charged_in_full(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """callgate restarts during an answered call: the new process never saw the answer, so the hangup
    charges the whole reservation (not 0 s) and frees the concurrency slot."""
    ast, gate, _ = rig
    watch = await Watch.open(ast)
    try:
        await watch.originate("1005", "2125550162", hold=60)
        channel, rid = await gated_leg(watch, "2125550162")
        assert await watch.wait(reached("+12125550162")), gate.tail()
        reservation = await redis.hgetall(f"cg:{{e2e}}:r:{rid}")
        cost, allowed = int(reservation["cost"]), int(reservation["allowed"])
        assert cost > 0
        gate.stop()
        gate.start()
        assert wait_until(lambda: app_registered(ast) and ami_connected(gate, 2), 30), gate.tail()
        assert not await redis.exists(f"cg:{{e2e}}:done:{rid}")  # still up
        assert await redis.zscore("cg:{e2e}:c:ext:1005", rid)
        assert (await watch.conn.send("Hangup", Channel=channel)).get("Response") == "Success"
        charged, released, billsec = await settled(redis, rid)
        assert (charged, released, billsec) == (cost, 0, allowed), gate.tail()
        assert not await redis.exists(f"cg:{{e2e}}:r:{rid}")
        assert not await redis.zscore("cg:{e2e}:c:ext:1005", rid)
        assert await spent(redis, "1005") == cost
    finally:
        await watch.close()


def of_call(linkedid: str) -> Callable[[Message], bool]:
    """The events of one call: its channels' own, and the DialEnd whose only channel is the dialled."""
    return lambda m: linkedid in (m.get("Linkedid"), m.get("DestLinkedid"))


async def test_the_callgate_ami_user_gets_only_the_events_the_feed_reads(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """The shipped eventfilter on the real Asterisk: of the many events of a call (the test's own AMI
    user sees HangupRequest, Newchannel, the carrier's PstnReached user event...), the AMI user
    ``callgate`` gets DialEnd, Hangup and the CallgateTrunk user event, and nothing else (this rig's
    user reads no cdr class, so no Cdr)."""
    ast, gate, _ = rig
    watch = await Watch.open(ast)
    conn = await AmiConnection.open("127.0.0.1", ast.ami_port, "callgate", CALLGATE_AMI_SECRET)
    got: list[Message] = []

    async def read() -> None:
        async for message in conn.events(ping_every=30):
            got.append(message)

    reader = asyncio.create_task(read())
    try:
        await watch.originate("1006", "2125550163", hold=1)
        _, rid = await gated_leg(watch, "2125550163")
        assert await settled(redis, rid), gate.tail()
        await conn.send("Ping")  # its answer comes after every event sent to the user before it
        await watch.caught_up()
        call = of_call(rid.partition(":")[0])
        seen = {m.event for m in watch.find(call)}
        assert {"Newchannel", "HangupRequest", "UserEvent", "DialEnd", "Hangup"} <= seen
        assert {(m.event, m.get("UserEvent")) for m in got if call(m)} == {
            ("DialEnd", ""),
            ("Hangup", ""),
            ("UserEvent", TRUNK_EVENT),
        }
        # FullyBooted is written to a session at its login, past the filter
        assert {m.event for m in got} <= {"DialEnd", "Hangup", "UserEvent", "FullyBooted"}
        assert {m.get("UserEvent") for m in got if m.event == "UserEvent"} == {TRUNK_EVENT}
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await conn.close()
        await watch.close()


async def test_a_trunk_call_transferred_into_a_refusal_still_settles_its_leg(
    rig: tuple[AsteriskInstance, Callgate, str], redis: aioredis.Redis
) -> None:
    """The phone blind-transfers its answered trunk call to a number callgate refuses: the trunk
    channel runs the phones' dialplan, enters the gate as nobody's call, is refused and hung up. The
    refusal leaves the trunk channel's CALLGATE_CALL alone (only an admitted call gets one), so its
    Hangup still ends the leg it carries: settled at once, from the answer to that hang-up, not held
    until its reservation expires; and the refusal settles nothing of its own."""
    ast, gate, _ = rig
    number, cuba = "2125550164", "011532345678"
    watch = await Watch.open(ast)
    try:
        await watch.originate("1007", number, hold=60)
        channel, rid = await gated_leg(watch, number)
        assert await watch.wait(reached("+1" + number)), gate.tail()
        answer = await watch.wait(
            lambda m: m.event == "DialEnd" and m.get("Channel") == channel, seconds=5
        )
        assert answer is not None
        assert answer.get("DialStatus") == "ANSWER"
        reply = await watch.conn.send(
            "BlindTransfer", Channel=channel, Context="phones", Exten=cuba
        )
        assert reply.get("Response") == "Success", reply.headers
        refused = await watch.wait(
            lambda m: (
                m.event == "Hangup"
                and m.get("Channel").startswith(f"Local/+1{number}@pstn-")
                and m.get("Exten") == cuba
            )
        )
        assert refused is not None, gate.tail()
        assert refused.variable(RESERVATION_VARIABLE) == rid  # the trunk kept the id it carries
        charged, _, billsec = await settled(redis, rid, seconds=5)
        assert 0 <= billsec <= 2, gate.tail()
        assert charged == -(-RATE * billsec // 60)
        linkedid = rid.partition(":")[0]
        assert await redis.keys(f"cg:{{e2e}}:done:{linkedid}:*") == [f"cg:{{e2e}}:done:{rid}"]
        assert not await redis.zscore("cg:{e2e}:c:ext:1007", rid)
        assert f'"dialled": "{cuba}"' in gate.tail(10_000), "the trunk never reached the gate"
    finally:
        await watch.close()
