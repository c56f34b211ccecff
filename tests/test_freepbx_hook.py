"""The shipped FreePBX predial hook in a real Asterisk, entered the way FreePBX 17's
`macro-dialout-trunk` enters it (Gosub, once per trunk attempt, OUTNUM sent to the trunk unchanged,
DIAL_TRUNK_OPTIONS appended to by the hook), with a real `callgate serve` and Redis.

The stand-in `[fpbx-outbound]` context does what FreePBX does around the hook (docs/install.md,
/work/shared/notes/freepbx-facts.md): AMPUSER from the device, OUTNUM, TRUNK_OPTIONS=T, the hook, Dial;
a busy first trunk fails over to the second, which runs the hook again on the same channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.asterisk_rig import AsteriskInstance
from tests.e2e import (
    DIALPLAN,
    Serving,
    Watch,
    caller_leg_hangup,
    cdr_of,
    reached,
    serving,
    shipped_configs,
    trunk_numbers,
)
from tests.servers import eventually

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

CUBA = "011532345678"
EXTENSIONS = f"""\
#include "{DIALPLAN / "freepbx" / "extensions_custom.conf"}"

[phones]
exten => _X.,1,Set(AMPUSER=${{CALLGATE_EXTENSION}})
 same => n,Set(OUTNUM=${{EXTEN}})
 same => n,Set(DIAL_TRUNK_OPTIONS=T)
 same => n,Gosub(macro-dialout-trunk-predial-hook,s,1)
 same => n,Dial(Local/${{OUTNUM}}@${{IF($["${{FAILOVER}}" = "1"]?busy-trunk:pstn)}},,${{DIAL_TRUNK_OPTIONS}})
 same => n,Set(DIAL_TRUNK_OPTIONS=T)
 same => n,Gosub(macro-dialout-trunk-predial-hook,s,1)
 same => n,Dial(Local/${{OUTNUM}}@pstn,,${{DIAL_TRUNK_OPTIONS}})
 same => n,Hangup()

[busy-trunk]
exten => _X.,1,Busy(1)

[pstn]
exten => _X.,1,UserEvent(PstnReached,Number: ${{EXTEN}})
 same => n,Answer()
 same => n,Wait(${{IF($["${{HOLD}}" = ""]?1:${{HOLD}})}})
 same => n,Hangup()

[park]
exten => s,1,Wait(120)
 same => n,Hangup()

; where a phone transfers a call: a colleague who answers and talks for two minutes
[colleague]
exten => 5,1,Dial(Local/s@colleague-phone)
 same => n,Hangup()
[colleague-phone]
exten => s,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()
"""
FEATURES = "[featuremap]\natxfer => *2\n"  # FreePBX's default attended-transfer code

POLICY = """\
version: 1
site: {name: fpbx, region: US, timezone: America/New_York, currency: USD, on_store_error: deny}
emergency: ["911", "933", "112", "999"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "53": "1.10"}}
profiles:
  office:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 5, max_call_duration: 1h}
  vip:
    destinations: {allow_countries: [US, CU]}
    limits: {concurrent_calls: 5, max_call_duration: 1h}
  short:
    destinations: {allow_countries: [US]}
    limits: {max_call_duration: 10s}
extensions:
  - {match: "1001", profile: office}
  - {match: "1005", profile: vip}
  - {match: "3000", profile: short}
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {**shipped_configs(ast), "features.conf": FEATURES}

    with serving(Path(tmp_path_factory.mktemp("fpbx")), EXTENSIONS, POLICY, configs) as rig:
        yield rig


@pytest.fixture
async def watch(rig: Serving) -> AsyncIterator[Watch]:
    w = await Watch.open(rig.ast)
    yield w
    await w.close()


async def test_allowed_and_refused_calls(rig: Serving, watch: Watch) -> None:
    """The hook allows a domestic call (it reaches the trunk) and refuses Cuba for office."""
    await watch.originate("1001", "2125550101")
    await watch.originate("1001", CUBA)
    assert await watch.wait(reached("2125550101"), 15), rig.gate.tail()
    assert await watch.wait(caller_leg_hangup(CUBA), 15), rig.gate.tail()  # refused: it is over
    assert trunk_numbers(watch) == ["2125550101"], rig.gate.tail()


@pytest.mark.parametrize("outnum", [f"{CUBA},ext=1005,call=ATTACK", f"{CUBA}=1005", f"{CUBA} "])
async def test_outnum_cannot_add_arguments(rig: Serving, watch: Watch, outnum: str) -> None:
    """Finding 1 through the FreePBX hook: OUTNUM with a comma, '=' or a space never reaches callgate
    as arguments and never reaches the trunk."""
    before = len(rig.decisions())
    await watch.originate("1001", outnum)
    assert await watch.wait(caller_leg_hangup(outnum), 15)  # refused: the call is over
    assert trunk_numbers(watch) == []
    assert rig.decisions()[before:] == []  # refused by the hook itself, before Stasis()


@pytest.mark.parametrize("number", ["112", "999"])
async def test_emergency_numbers_are_placed_whatever_the_route(
    rig: Serving, watch: Watch, number: str
) -> None:
    """Finding 4: on a route not marked Emergency, a number of the policy's list is still placed, with
    no L(0) appended to the trunk options."""
    await watch.originate("1001", number, hold=4)
    assert await watch.wait(lambda m: m.get("Number") == number, 10)
    cdr = await watch.wait(lambda m: cdr_of(number)(m) and m.get("Disposition") == "ANSWERED", 30)
    assert cdr is not None
    assert int(cdr.get("BillableSeconds")) >= 3  # the far end's 4 s: an L(0) would have cut it at 0


async def test_a_failover_is_one_call_and_ampuser_cannot_be_claimed(
    rig: Serving, watch: Watch
) -> None:
    """Finding 2: the first trunk is busy, the hook runs again on the same channel: the same decision,
    counted once. Finding 3: AMPUSER says 1005 but the channel is no PJSIP endpoint here, so AMPUSER
    is the identity; a PJSIP phone's endpoint would win (tests/test_attacks.py)."""
    before = len(rig.decisions())
    await watch.originate("1005", CUBA, variables=",FAILOVER=1")
    assert await watch.wait(lambda m: m.get("Number") == CUBA[3:] or m.get("Number") == CUBA, 10)
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)  # both hook runs
    mine = rig.decisions()[before:]
    assert [(d["verdict"], d["replayed"]) for d in mine] == [("ALLOW", "0"), ("ALLOW", "1")]
    assert mine[0]["reservation"] == mine[1]["reservation"]
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        held = [k async for k in client.scan_iter(match="cg:{fpbx}:r:*")]
    finally:
        await client.aclose()
    assert len(held) <= 1


async def test_an_attended_transfer_does_not_lift_the_limit(rig: Serving, watch: Watch) -> None:
    """Finding 5 in FreePBX's shape: TRUNK_OPTIONS=T lets the phone transfer the trunk call. Extension
    3000 may talk 10 s; after the carrier answers, the phone starts an attended transfer (*2, AMI
    Atxfer), dials its colleague (5 in the transfer context), who answers and would talk for 120 s, and
    hangs up to complete it. The trunk call, now bridged with the colleague, is still hung up 10 s
    after its answer, and charged for all of it."""
    number = "2125550180"
    before = len(rig.decisions())
    await watch.originate("3000", number, hold=60)
    rid = (await rig.decision(number, before))["reservation"]
    assert await watch.wait(lambda m: m.get("Number") == number, 10), rig.gate.tail()
    dial = await watch.wait(
        lambda m: m.event == "DialEnd" and m.get("Channel").startswith(f"Local/{number}@phones-"), 5
    )
    assert dial is not None
    phone = dial.get("Channel")
    reply = await watch.conn.send("Atxfer", Channel=phone, Exten="5", Context="colleague")
    assert reply.get("Response") == "Success", reply.headers
    colleague = await watch.wait(
        lambda m: m.event == "Newexten" and m.get("Context") == "colleague-phone", 8
    )
    assert colleague is not None, rig.ast.log_tail(30)
    talking = await watch.wait(  # the colleague has answered (Answer() returned): they talk
        lambda m: (
            m.event == "Newexten"
            and m.get("Context") == "colleague-phone"
            and m.get("Application") == "Wait"
        ),
        8,
    )
    assert talking is not None, rig.ast.log_tail(30)
    await watch.conn.send("Hangup", Channel=phone)  # the transferer hangs up: transfer complete
    assert await watch.wait(lambda m: m.event == "AttendedTransfer", 5), rig.ast.log_tail(30)
    gone = await watch.wait(
        lambda m: m.event == "Hangup" and m.get("Channel").startswith(f"Local/{number}@pstn-"), 20
    )
    assert gone is not None, "the transferred trunk call was not hung up\n" + rig.ast.log_tail(40)
    # the phone hung up seconds before: the leg was settled only now, for the trunk call's whole 10 s
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        done = await eventually(lambda: client.get(f"cg:{{fpbx}}:done:{rid}"), rig.gate.tail)
    finally:
        await client.aclose()
    # its 10 s, cut then: not at the carrier's 60 s nor after the colleague's 120 s
    assert 9 <= int(str(done).split(":")[2]) <= 15
