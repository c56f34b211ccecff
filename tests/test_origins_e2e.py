"""Legs that no phone dialled, in a real Asterisk through the shipped include and `callgate serve`:
inbound calls forwarded (a Goto, as docs/install.md shows, and a follow-me through a Local channel),
and DISA, each charged to the extension that caused it, judged by its profile and its origin's block.

Inbound calls come in two ways: a Local channel originated into `[from-trunk]` (no endpoint), and a
SIPp INVITE from the PJSIP endpoint `carrier` (the inbound trunk: its channel is no extension's).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from callgate.asterisk.ami import Message
from tests.asterisk_rig import AsteriskInstance
from tests.e2e import (
    SHIPPED,
    STAND_INS,
    Serving,
    Watch,
    reached,
    serving,
    shipped_configs,
    trunk_numbers,
)
from tests.servers import free_port

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SCENARIOS = Path(__file__).parent / "sipp"
SECRET = "carrier-secret"
DID, FOLLOW_ME_DID = "2125550100", "2125550101"
MOBILE, PREMIUM, LONDON = "2125550142", "19005550199", "011442079460000"

# [from-trunk] and [disa-1001] are docs/install.md's examples for plain Asterisk (the phone the forward rings
# when no target is set is left out; DISA() itself, which
# waits for the caller's keys, is stood in for by calling [disa-1001] with the digits as the extension).
EXTENSIONS = f"""\
{SHIPPED}
[phones]
include => callgate-outbound

[from-trunk]
exten => {DID},1,Set(__CALLGATE_VIA=${{EXTEN}})        ; the DID, recorded with every leg it leads to
 same => n,Set(TARGET=${{DB(forward/1001)}})           ; 1001's forward ("*72" would set it)
 same => n,GotoIf($["${{TARGET}}" = ""]?ring)
 same => n,Set(CALLGATE_ORIGIN=forward)                ; a forward...
 same => n,Set(CALLGATE_EXTENSION=1001)                ; ...caused by 1001: charged to 1001
 same => n,Goto(callgate-outbound,${{TARGET}},1)
 same => n(ring),Hangup()
exten => {FOLLOW_ME_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})
 same => n,Set(__CALLGATE_ORIGIN=forward)              ; inherited by the Local channel
 same => n,Set(__CALLGATE_EXTENSION=1001)
 same => n,Dial(Local/${{DB(followme/1001)}}@callgate-outbound)
 same => n,Hangup()

[disa-1001]
exten => _X.,1,Set(CALLGATE_ORIGIN=disa)
 same => n,Set(CALLGATE_EXTENSION=1001)
 same => n,Goto(callgate-outbound,${{EXTEN}},1)

{STAND_INS}"""

POLICY = """\
version: 1
site: {name: org, region: US, timezone: America/New_York, currency: USD, on_store_error: deny}
emergency: ["911"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "44": "0.02"}}
profiles:
  wide:                                   # 1001 may call the US and London, premium numbers too
    destinations: {allow_countries: [US, GB]}
    limits: {concurrent_calls: 20, max_call_duration: 4s}
extensions:
  - {match: "1001", profile: wide}
origins:
  disa: {deny_countries: [GB]}            # DISA: whatever 1001 may call but London
# forward is not named: the default, US only and no premium-type numbers
"""

# The inbound trunk: a PJSIP endpoint whose calls run [from-trunk]. Its channel is no extension.
CARRIER = f"""\
[carrier]
type = endpoint
context = from-trunk
disallow = all
allow = ulaw
auth = carrier
aors = carrier
identify_by = auth_username
transport = transport-udp

[carrier]
type = auth
auth_type = userpass
username = carrier
password = {SECRET}

[carrier]
type = aor
max_contacts = 1
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {**shipped_configs(ast), "pjsip_custom.conf": CARRIER}

    root = Path(tmp_path_factory.mktemp("origins"))
    with serving(root, EXTENSIONS, POLICY, configs) as rig:
        yield rig


async def inbound(watch: Watch, exten: str, context: str = "from-trunk", hold: int = 1) -> None:
    """An inbound call to ``exten`` in ``context``, as a Local channel (no endpoint, no extension)."""
    await watch.place(
        f"Local/{exten}@{context}/n", caller_id='"Outside" <4155550199>', variables=f"__HOLD={hold}"
    )


async def set_forward(watch: Watch, family: str, number: str) -> None:
    reply = await watch.conn.send("DBPut", Family=family, Key="1001", Val=number)
    assert reply.get("Response") == "Success", reply.headers


def hangup_of(prefix: str) -> Callable[[Message], bool]:
    return lambda m: m.event == "Hangup" and m.get("Channel").startswith(prefix)


async def test_a_forward_to_a_mobile_is_allowed_charged_to_the_extension_and_limited(
    rig: Serving, watch: Watch
) -> None:
    """An inbound call to 1001's DID, forwarded by 1001 to a US mobile: allowed, charged to 1001 with
    origin forward and the DID as via, and cut at 1001's 4 s although the far end talks for 60."""
    await set_forward(watch, "forward", MOBILE)
    before = len(rig.decisions())
    await inbound(watch, DID, hold=60)
    decided = await rig.decision(MOBILE, before)
    assert {
        k: decided[k] for k in ("verdict", "extension", "origin", "via", "allowed_seconds")
    } == {
        "verdict": "ALLOW",
        "extension": "1001",
        "origin": "forward",
        "via": DID,
        "allowed_seconds": "4",
    }
    assert await watch.wait(reached("+1" + MOBILE), 10)
    answered = await watch.wait(lambda m: m.event == "DialEnd" and m.get("DialStatus") == "ANSWER")
    assert answered is not None
    gone = await watch.wait(hangup_of(f"Local/+1{MOBILE}@pstn-"), 15)
    assert gone is not None, "the forwarded call was not cut at its allowed seconds"
    cdr = await watch.wait(
        lambda m: m.event == "Cdr" and m.get("CallgateCall") == decided["reservation"], 15
    )
    assert cdr is not None
    assert int(cdr.get("BillableSeconds")) <= 5, cdr.headers


@pytest.mark.parametrize(
    ("target", "why"),
    [(PREMIUM, "premium_rate is in origins.forward.deny_number_types"), (LONDON, "GB is not in")],
)
async def test_a_forward_to_a_premium_number_or_abroad_is_refused(
    rig: Serving, watch: Watch, target: str, why: str
) -> None:
    """1001 may dial both itself; its forward may not (the default: US only, no premium types). The
    leg is refused with forward_not_allowed and nothing reaches the trunk."""
    await set_forward(watch, "forward", target)
    before = len(rig.decisions())
    await inbound(watch, DID)
    decided = await rig.decision(target, before)
    assert (decided["verdict"], decided["reason"], decided["rule"]) == (
        "DENY",
        "forward_not_allowed",
        "origin",
    )
    assert (decided["extension"], decided["origin"]) == ("1001", "forward")
    assert await watch.wait(hangup_of(f"Local/{DID}@from-trunk-"), 10)  # refused: it is over
    await watch.caught_up()
    assert trunk_numbers(watch) == []


async def test_a_follow_me_leg_through_a_local_channel_is_the_extensions(
    rig: Serving, watch: Watch
) -> None:
    """Follow-me as Dial(Local/NUMBER@callgate-outbound) with inherited __CALLGATE_ORIGIN and
    __CALLGATE_EXTENSION: the Local channel's leg is 1001's forward, allowed to a US number."""
    number = "2125550143"
    await set_forward(watch, "followme", number)
    before = len(rig.decisions())
    await inbound(watch, FOLLOW_ME_DID)
    decided = await rig.decision(number, before)
    assert (decided["verdict"], decided["extension"], decided["origin"], decided["via"]) == (
        "ALLOW",
        "1001",
        "forward",
        FOLLOW_ME_DID,
    )
    assert await watch.wait(reached("+1" + number), 10)


async def test_disa_cannot_reach_what_its_block_denies(rig: Serving, watch: Watch) -> None:
    """The digits a DISA caller keys in ([disa-1001], as DISA() leaves them): London, which 1001 may
    dial but the disa block denies, is refused with disa_not_allowed; a US number goes through."""
    before = len(rig.decisions())
    await inbound(watch, LONDON, context="disa-1001")
    decided = await rig.decision(LONDON, before)
    assert (decided["reason"], decided["extension"], decided["origin"]) == (
        "disa_not_allowed",
        "1001",
        "disa",
    )
    number = "2125550144"
    await inbound(watch, number, context="disa-1001")
    assert (await rig.decision(number, before))["origin"] == "disa"
    assert await watch.wait(reached("+1" + number), 10)
    assert "442079460000" not in trunk_numbers(watch)


def carrier_call(rig: Serving, did: str) -> subprocess.CompletedProcess[str]:
    """One inbound INVITE from the trunk endpoint `carrier` (digest auth), answered and hung up by
    the far end the forward reaches."""
    args = ["sipp", "-sf", str(SCENARIOS / "call-answered.xml"), f"127.0.0.1:{rig.ast.sip_port}"]
    args += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1"]
    args += ["-set", "user", "carrier", "-set", "number", did, "-au", "carrier", "-ap", SECRET]
    args += ["-nostdin", "-timeout", "20s", "-timeout_error"]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )


async def test_a_forward_on_the_trunks_own_channel_is_charged_to_the_extension(
    rig: Serving, watch: Watch
) -> None:
    """The inbound call on the carrier's PJSIP channel is forwarded by 1001: its endpoint (carrier)
    is no extension and does not agree with ext=1001, yet the leg is 1001's, with the endpoint
    recorded. As the carrier's own call (no origin) the same channel would be nobody's."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: docker/build-asterisk.sh installs Debian's sip-tester")
    number = "2125550145"
    await set_forward(watch, "forward", number)
    before = len(rig.decisions())
    done = await asyncio.to_thread(carrier_call, rig, DID)
    assert done.returncode == 0, done.stderr[-2000:] + rig.gate.tail()
    decided = await rig.decision(number, before)
    assert {k: decided[k] for k in ("verdict", "extension", "origin", "via", "endpoint")} == {
        "verdict": "ALLOW",
        "extension": "1001",
        "origin": "forward",
        "via": DID,
        "endpoint": "carrier",
    }
    assert await watch.wait(reached("+1" + number), 10)


async def test_an_originate_from_a_crm_is_the_extensions_click_to_call(
    rig: Serving, watch: Watch
) -> None:
    """AMI Originate of Local/NUMBER into the gate with CALLGATE_ORIGIN=originate and
    CALLGATE_EXTENSION=1001 (docs/install.md): a US number goes through as 1001's originate; London,
    which 1001 may dial, is refused by the default block with originate_not_allowed."""
    before = len(rig.decisions())
    number = "2125550146"
    await watch.originate("1001", number, variables=",CALLGATE_ORIGIN=originate")
    await watch.originate("1001", LONDON, variables=",CALLGATE_ORIGIN=originate")
    allowed, refused = await rig.decision(number, before), await rig.decision(LONDON, before)
    assert (allowed["verdict"], allowed["extension"], allowed["origin"]) == (
        "ALLOW",
        "1001",
        "originate",
    )
    assert (refused["reason"], refused["origin"]) == ("originate_not_allowed", "originate")
    assert await watch.wait(reached("+1" + number), 10)
    assert "442079460000" not in trunk_numbers(watch)
