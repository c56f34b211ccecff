"""The shipped `[macro-dialout-dundi-predial-hook]` in a real Asterisk, inside the model of FreePBX 17's
`macro-dialout-dundi` (tests/test_freepbx_hook.py, `MACRO_DIALOUT_DUNDI`): a route whose trunk is a
DUNDi trunk never runs `macro-dialout-trunk-predial-hook`; FreePBX runs this hook instead, then dials
through `macro-dundi-<trunk>`, whose DUNDi switch takes Dial's options from `DUNDIDIALARGS` alone.
The route is `*88` followed by the number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.e2e import Serving, Watch, app_registered, caller_leg_hangup, cdr_of, reached, wait_until
from tests.servers import eventually
from tests.test_freepbx_hook import CUBA, freepbx_rig, user_events

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

DUNDI = "*88"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    with freepbx_rig(Path(tmp_path_factory.mktemp("dundi"))) as rig:
        yield rig


async def test_a_dundi_call_is_judged_and_cut_at_its_allowed_seconds(
    rig: Serving, watch: Watch
) -> None:
    """Extension 3000 may talk 10 s. Its call through the DUNDi trunk is judged by the DUNDi hook,
    reaches the peer, and is hung up 10 s after the answer though the far end would stay 60 s: the
    hook's L() and U(callgate-limit) went to Dial through DUNDIDIALARGS. The trunk channel carries the
    reservation (the CallgateTrunk event) and the leg is settled at its 10 s."""
    number = "2125550190"
    before = len(rig.decisions())
    await watch.originate("3000", DUNDI + number, hold=60)
    decision = await rig.decision(number, before)
    assert (decision["verdict"], decision["allowed_seconds"]) == ("ALLOW", "10")
    assert await watch.wait(reached(number), 10), rig.gate.tail()
    trunk = await watch.wait(
        lambda m: m.event == "UserEvent" and m.get("UserEvent") == "CallgateTrunk", 10
    )
    assert trunk is not None
    assert trunk.get("Call") == decision["reservation"]
    gone = await watch.wait(
        lambda m: m.event == "Hangup" and m.get("Channel").startswith(f"Local/{number}@pstn-"), 20
    )
    assert gone is not None, "the DUNDi call was not cut\n" + rig.ast.log_tail(40)
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        done = await eventually(
            lambda: client.get(f"cg:{{fpbx}}:done:{decision['reservation']}"), rig.gate.tail
        )
    finally:
        await client.aclose()
    assert 9 <= int(str(done).split(":")[2]) <= 15


async def test_a_dundi_call_the_policy_forbids_never_reaches_the_peer(
    rig: Serving, watch: Watch
) -> None:
    """Office may not call Cuba: the DUNDi hook refuses the call (cause 21) before FreePBX looks the
    number up, and the peer never sees it."""
    before = len(rig.decisions())
    await watch.originate("1001", DUNDI + CUBA)
    hangup = await watch.wait(caller_leg_hangup(DUNDI + CUBA), 15)
    assert hangup is not None
    assert hangup.get("Cause") == "21"
    await watch.caught_up()
    mine = [(d["dialled"], d["verdict"], d["reason"]) for d in rig.decisions()[before:]]
    assert mine == [(CUBA, "DENY", "country_not_allowed")]
    assert user_events(watch, "TrunkDialled") == []


async def test_an_emergency_call_through_dundi_is_placed_without_a_limit(
    rig: Serving, watch: Watch
) -> None:
    """112 through the DUNDi trunk goes around the gate with no L(): the far end's 4 s are all there."""
    await watch.originate("1001", DUNDI + "112", hold=4)
    assert await watch.wait(reached("112"), 10)
    cdr = await watch.wait(lambda m: cdr_of("112")(m) and m.get("Disposition") == "ANSWERED", 30)
    assert cdr is not None
    assert int(cdr.get("BillableSeconds")) >= 3


async def test_the_dundi_hook_fails_closed(rig: Serving, watch: Watch) -> None:
    """callgate stopped: a DUNDi call is refused (cause 21) and never reaches the peer; 911 still is
    placed."""
    rig.gate.stop()
    assert wait_until(lambda: not app_registered(rig.ast), 10)
    try:
        await watch.originate("1001", DUNDI + "911")
        assert await watch.wait(reached("911"), 10)
        await watch.originate("1001", DUNDI + "2125550191")
        hangup = await watch.wait(caller_leg_hangup(DUNDI + "2125550191"), 15)
        assert hangup is not None
        assert hangup.get("Cause") == "21"
        await watch.caught_up()
        assert "2125550191" not in user_events(watch, "TrunkDialled")
    finally:
        rig.start_gate()
