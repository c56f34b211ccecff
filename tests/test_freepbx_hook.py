"""The shipped FreePBX predial hook in a real Asterisk, entered the way FreePBX 17's
`macro-dialout-trunk` enters it (Gosub, once per trunk attempt, OUTNUM sent to the trunk unchanged,
DIAL_TRUNK_OPTIONS appended to by the hook), with a real `callgate serve` and Redis.

The stand-in `[fpbx-outbound]` context does what FreePBX does around the hook (docs/install.md,
/work/shared/notes/freepbx-facts.md): AMPUSER from the device, OUTNUM, TRUNK_OPTIONS=T, the hook, Dial;
a busy first trunk fails over to the second, which runs the hook again on the same channel.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    DIALPLAN,
    Callgate,
    Watch,
    app_registered,
    callgate_env,
    shipped_configs,
    wait_until,
)
from tests.servers import redis_server

pytestmark = pytest.mark.asterisk

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
"""

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
extensions:
  - {match: "1001", profile: office}
  - {match: "1005", profile: vip}
"""


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("fpbx"))
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
    ):
        gate = Callgate(callgate_env(ast, redis_url, root / "policy.yaml"), root / "callgate.log")
        gate.start()
        try:
            if not wait_until(lambda: app_registered(ast), 20):
                pytest.fail(f"callgate did not register its Stasis app\n{gate.tail()}")
            yield Rig(ast, gate, redis_url)
        finally:
            gate.stop()


@pytest.fixture
async def watch(rig: Rig) -> AsyncIterator[Watch]:
    w = await Watch.open(rig.ast)
    yield w
    await w.close()


def pstn(watch: Watch) -> list[str]:
    return [m.get("Number") for m in watch.messages if m.get("UserEvent") == "PstnReached"]


def decisions(rig: Rig) -> list[dict[str, str]]:
    text = rig.gate.log.read_text(encoding="utf-8", errors="replace")
    return [json.loads(line) for line in text.splitlines() if '"event": "decision"' in line]


async def test_allowed_and_refused_calls(rig: Rig, watch: Watch) -> None:
    """The hook allows a domestic call (it reaches the trunk) and refuses Cuba for office."""
    await watch.originate("1001", "2125550101")
    await watch.originate("1001", CUBA)
    await asyncio.sleep(3)
    assert pstn(watch) == ["2125550101"], rig.gate.tail()


@pytest.mark.parametrize("outnum", [f"{CUBA},ext=1005,call=ATTACK", f"{CUBA}=1005", f"{CUBA} "])
async def test_outnum_cannot_add_arguments(rig: Rig, watch: Watch, outnum: str) -> None:
    """Finding 1 through the FreePBX hook: OUTNUM with a comma, '=' or a space never reaches callgate
    as arguments and never reaches the trunk."""
    before = len(decisions(rig))
    await watch.originate("1001", outnum)
    await asyncio.sleep(2)
    assert pstn(watch) == []
    assert decisions(rig)[before:] == []  # refused by the hook itself, before Stasis()


@pytest.mark.parametrize("number", ["112", "999"])
async def test_emergency_numbers_are_placed_whatever_the_route(
    rig: Rig, watch: Watch, number: str
) -> None:
    """Finding 4: on a route not marked Emergency, a number of the policy's list is still placed, with
    no L(0) appended to the trunk options."""
    await watch.originate("1001", number, hold=4)
    assert await watch.wait(lambda m: m.get("Number") == number, 10)
    await asyncio.sleep(3)
    assert f"Local/{number}@pstn" in rig.ast.rx("core show channels concise")


async def test_a_failover_is_one_call_and_ampuser_cannot_be_claimed(rig: Rig, watch: Watch) -> None:
    """Finding 2: the first trunk is busy, the hook runs again on the same channel: the same decision,
    counted once. Finding 3: AMPUSER says 1005 but the channel is no PJSIP endpoint here, so AMPUSER
    is the identity; a PJSIP phone's endpoint would win (tests/test_attacks.py)."""
    before = len(decisions(rig))
    await watch.originate("1005", CUBA, variables=",FAILOVER=1")
    assert await watch.wait(lambda m: m.get("Number") == CUBA[3:] or m.get("Number") == CUBA, 10)
    await asyncio.sleep(1)
    mine = decisions(rig)[before:]
    assert [(d["verdict"], d["replayed"]) for d in mine] == [("ALLOW", "0"), ("ALLOW", "1")]
    assert mine[0]["reservation"] == mine[1]["reservation"]
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        held = [k async for k in client.scan_iter(match="cg:{fpbx}:r:*")]
    finally:
        await client.aclose()
    assert len(held) <= 1
