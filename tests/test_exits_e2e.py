"""Legs that Asterisk's own applications place, in a real Asterisk through the shipped include and
`callgate serve`: voicemail's "0 for the operator" exit (VoiceMail), its call-back and dial-out
(VoiceMailMain), an IVR's dial-out (Background, WaitExten, Read), DISA, a dial-out into a ConfBridge
conference (AMI Originate) and a call-back service (the Originate application). Each is set up the way
docs/install.md tells a plain-Asterisk admin, charged to the extension that caused it and judged by its
profile and by its origin's block.

The outside caller is a Local channel originated into `[from-trunk]` (no endpoint, no extension); its
own half runs `[caller]`, which presses keys with SendDTMF once the application answers, so the real
applications read real DTMF frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

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

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SITE = "org"
VOICEMAIL_DID, VOICEMAIL_ACCESS_DID, IVR_DID = "2125550100", "2125550109", "2125550110"
DISA_DID, DISA_PIN_DID, CALLBACK_DID = "2125550199", "2125550198", "2125550177"
PIN = "4242"  # 1001's voicemail PIN (the one an attacker guesses)
MOBILE, PREMIUM, LONDON = "2125550142", "19005550199", "011442079460000"
LONDON_DIGITS = "442079460000"

# docs/install.md's recipes for plain Asterisk, with the real applications. The mailbox names its own
# exit contexts (voicemail.conf `exitcontext=`, `callback=`, `dialout=`), so each context knows whose
# mailbox it serves; the DIDs are 1001's (voicemail, and its access from outside), the auto attendant's
# (charged to reception, 1002), DISA's and the call-back service's (1001's).
EXTENSIONS = f"""\
{SHIPPED}
[phones]
include => callgate-outbound

[from-trunk]
exten => {VOICEMAIL_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})  ; 1001's DID, straight to its voicemail
 same => n,Answer()
 same => n,VoiceMail(1001@default,u)
 same => n,Hangup()
exten => {VOICEMAIL_ACCESS_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})  ; 1001's mailbox from outside (PIN)
 same => n,Answer()
 same => n,VoiceMailMain(1001@default)
 same => n,Hangup()
exten => {IVR_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})
 same => n,Goto(ivr-main,s,1)
exten => {DISA_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})
 same => n,DISA(no-password,disa-1001)                 ; no-password: only for a test line
exten => {DISA_PIN_DID},1,Set(__CALLGATE_VIA=${{EXTEN}})
 same => n,DISA(7531,disa-1001)                        ; the PIN, then #, then the number
exten => {CALLBACK_DID},1,Set(CALLBACK=${{FILTER(0-9,${{CALLERID(num)}})}})  ; never more than digits
 same => n,Set(CHANNEL(hangup_handler_push)=callback-1001,s,1)
 same => n,Hangup()                                    ; ring, hang up, be called back

[vm-exit-1001]                                          ; 1001's mailbox: exitcontext=vm-exit-1001
exten => o,1,Set(CALLGATE_ORIGIN=voicemail)             ; "press 0 for the operator"...
 same => n,Set(CALLGATE_EXTENSION=1001)                 ; ...out of 1001's mailbox: charged to 1001
 same => n,Goto(callgate-outbound,${{DB(vmoperator/1001)}},1)

[vm-out-1001]                                           ; 1001's mailbox: callback= and dialout=
exten => _X.,1,Set(CALLGATE_ORIGIN=voicemail)
 same => n,Set(CALLGATE_EXTENSION=1001)
 same => n,Goto(callgate-outbound,${{EXTEN}},1)

[ivr-main]                                              ; "1: our sales line; 9: dial a number"
exten => s,1,Answer()
 same => n,Background(basic-pbx-ivr-main)
 same => n,WaitExten(10)
exten => 1,1,Goto(ivr-out,${{DB(ivr/sales)}},1)
exten => 9,1,Read(NUMBER,vm-enter-num-to-call,20,,1,10)
 same => n,Goto(ivr-out,${{NUMBER}},1)
exten => i,1,Hangup()
exten => t,1,Hangup()

[ivr-out]                                               ; the auto attendant is reception's, 1002
exten => _X.,1,Set(CALLGATE_ORIGIN=ivr)
 same => n,Set(CALLGATE_EXTENSION=1002)
 same => n,Goto(callgate-outbound,${{EXTEN}},1)

[disa-1001]
exten => _X.,1,Set(CALLGATE_ORIGIN=disa)
 same => n,Set(CALLGATE_EXTENSION=1001)
 same => n,Goto(callgate-outbound,${{EXTEN}},1)

[conference]                                            ; 1001's conference room
exten => 7001,1,Answer()
 same => n,ConfBridge(7001)
 same => n,Hangup()

[callback-1001]                                         ; the hang-up handler of a call-back request
exten => s,1,GotoIf($["${{CALLBACK}}" = ""]?done)
 same => n,Originate(Local/${{CALLBACK}}@callgate-outbound/n,exten,park,s,1,30,av(CALLGATE_ORIGIN=originate^CALLGATE_EXTENSION=1001^CALLGATE_VIA={CALLBACK_DID}))
 same => n(done),Return()

; The outside caller's own half: presses KEYS once the other half answers, plays SAY, stays STAY s.
[caller]
exten => s,1,ExecIf($["${{KEYS}}" != ""]?SendDTMF(${{KEYS}}))
 same => n,ExecIf($["${{SAY}}" != ""]?Playback(${{SAY}}))
 same => n,Wait(${{IF($["${{STAY}}" = ""]?30:${{STAY}})}})
 same => n,Hangup()

{STAND_INS}"""

# 1001's mailbox: "0" leaves for the operator (exitcontext), "3 2 1" while a message plays calls its
# sender back (callback), "3 4" dials a number (dialout). No e-mail, no envelope read out.
VOICEMAIL = f"""\
[general]
format = wav
attach = no
envelope = no

[default]
1001 => {PIN},Alice,,,operator=yes|exitcontext=vm-exit-1001|callback=vm-out-1001|dialout=vm-out-1001
"""

CONFBRIDGE = """\
[general]

[default_bridge]
type = bridge

[default_user]
type = user
quiet = yes
"""

POLICY = f"""\
version: 1
site: {{name: {SITE}, region: US, timezone: America/New_York, currency: USD, on_store_error: deny}}
emergency: ["911"]
rates: {{default: "0.05", increment: 1, prefixes: {{"1": "0.01", "44": "0.02"}}}}
profiles:
  wide:                                   # 1001-1003 may call the US and London, premium too
    destinations: {{allow_countries: [US, GB]}}
    limits: {{concurrent_calls: 20, max_call_duration: 4s}}
extensions:
  - {{match: "1001-1003", profile: wide}}
origins:
  disa: {{deny_countries: [GB]}}            # DISA: whatever 1001 may call but London
# voicemail, ivr and originate are not named: the default, US only and no premium-type numbers
lockdown:
  after_denied: {{calls: 3, within: 10m}}   # 3 refusals of an extension's own calls lock it
  locks: all
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {
            **shipped_configs(ast),
            "voicemail.conf": VOICEMAIL,
            "confbridge.conf": CONFBRIDGE,
        }

    root = Path(tmp_path_factory.mktemp("exits"))
    with serving(root, EXTENSIONS, POLICY, configs) as rig:
        yield rig


async def call_in(
    watch: Watch,
    did: str,
    *,
    keys: str = "",
    say: str = "",
    stay: int = 30,
    caller: str = "4155550199",
) -> None:
    """An outside caller (caller id `caller`, which they choose) calls `did`; once answered it
    presses `keys` (SendDTMF: `W` is a one-second pause), plays the prompt `say`, and hangs up after
    `stay` seconds."""
    await watch.place(
        f"Local/{did}@from-trunk/n",
        context="caller",
        caller_id=f'"Outside" <{caller}>',
        variables=f"KEYS={keys},SAY={say},STAY={stay}",
    )


async def db_put(watch: Watch, family: str, key: str, value: str) -> None:
    reply = await watch.conn.send("DBPut", Family=family, Key=key, Val=value)
    assert reply.get("Response") == "Success", reply.headers


def verdict(decided: dict[str, str]) -> tuple[str, str, str, str]:
    """What the admin reads first in an audit entry: verdict, reason, extension charged, origin."""
    return decided["verdict"], decided["reason"], decided["extension"], decided["origin"]


async def audit_of(rig: Serving, reservation: str, seconds: float = 10) -> dict[str, str]:
    """The entry of a decision in the Redis audit stream (`cg:{site}:audit`), by its reservation."""
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            entries: Any = await client.xrevrange(f"cg:{{{SITE}}}:audit", count=200)
            for _id, fields in entries:
                if fields.get("reservation") == reservation:
                    return {str(k): str(v) for k, v in fields.items()}
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    raise AssertionError(f"no audit entry for reservation {reservation!r}")


async def decided_times(rig: Serving, dialled: str, times: int, since: int) -> None:
    """Wait until `dialled` was decided `times` times after the first `since` decisions."""
    deadline = time.monotonic() + 20
    while len([d for d in rig.decisions()[since:] if d["dialled"] == dialled]) < times:
        assert time.monotonic() < deadline, rig.gate.tail()
        await asyncio.sleep(0.1)


def hangup_of(prefix: str) -> Callable[[Message], bool]:
    return lambda m: m.event == "Hangup" and m.get("Channel").startswith(prefix)


def ran(context: str, exten: str) -> Callable[[Message], bool]:
    """A channel ran `exten` in `context` (where the application sent the caller)."""
    return lambda m: (
        m.event == "Newexten" and m.get("Context") == context and m.get("Extension") == exten
    )


async def nothing_reached(watch: Watch, *numbers: str) -> None:
    """None of `numbers` reached the trunk (after every event raised so far was read)."""
    await watch.caught_up()
    assert not {n.lstrip("+") for n in numbers} & set(trunk_numbers(watch))


# --- voicemail: "press 0 for the operator" ----------------------------------------------------------


async def test_voicemail_exit_to_the_operators_mobile_is_the_mailboxs_call(
    rig: Serving, watch: Watch
) -> None:
    """A caller in 1001's voicemail presses 0: VoiceMail leaves for `o` in the mailbox's exitcontext,
    which sends the caller to the operator's US mobile: allowed, charged to 1001 with origin voicemail
    and the DID as via, in the log and in the Redis audit stream."""
    await db_put(watch, "vmoperator", "1001", MOBILE)
    before = len(rig.decisions())
    await call_in(watch, VOICEMAIL_DID, keys="WW0", stay=3)
    decided = await rig.decision(MOBILE, before, seconds=20)
    assert verdict(decided) == ("ALLOW", "allowed", "1001", "voicemail")
    assert decided["via"] == VOICEMAIL_DID
    assert watch.find(ran("vm-exit-1001", "o"))
    assert await watch.wait(reached("+1" + MOBILE), 10)
    audited = await audit_of(rig, decided["reservation"])
    assert (audited["extension"], audited["origin"], audited["via"]) == (
        "1001",
        "voicemail",
        VOICEMAIL_DID,
    )


@pytest.mark.parametrize(
    "operator", [pytest.param(PREMIUM, id="premium"), pytest.param(LONDON, id="london")]
)
async def test_voicemail_exit_cannot_reach_a_premium_number_or_abroad(
    rig: Serving, watch: Watch, operator: str
) -> None:
    """The attack: 1001's operator number was set to a premium number (or London), then a caller
    presses 0 in 1001's voicemail. 1001 may dial both itself; a voicemail exit may not (the default
    block): refused voicemail_not_allowed, and nothing reaches the trunk."""
    await db_put(watch, "vmoperator", "1001", operator)
    before = len(rig.decisions())
    await call_in(watch, VOICEMAIL_DID, keys="WW0", stay=3)
    decided = await rig.decision(operator, before, seconds=20)
    assert verdict(decided) == ("DENY", "voicemail_not_allowed", "1001", "voicemail")
    assert decided["rule"] == "origin"
    assert watch.find(ran("vm-exit-1001", "o"))
    assert await watch.wait(hangup_of(f"Local/{VOICEMAIL_DID}@from-trunk-"), 15)
    await nothing_reached(watch, PREMIUM, LONDON_DIGITS)


# --- voicemail: call-back and dial-out (VoiceMailMain) -----------------------------------------------


async def leave_message(rig: Serving, watch: Watch, caller: str) -> None:
    """`caller` (a caller id they set themselves) leaves 1001 a message: # skips the greeting, three
    seconds of speech, hang up. 1001's mailbox holds that message only (so 1 plays it)."""
    box = rig.ast.workdir / "spool" / "voicemail" / "default" / "1001"
    for old in box.glob("*/msg*"):
        old.unlink()
    inbox = box / "INBOX"
    await call_in(watch, VOICEMAIL_DID, keys="WW#", say="tt-weasels", stay=0, caller=caller)
    deadline = time.monotonic() + 30
    while not list(inbox.glob("msg*.txt")):
        assert time.monotonic() < deadline, rig.ast.log_tail()
        await asyncio.sleep(0.2)


# The PIN and #; 1 plays the first new message; 3 (which stops it) opens the advanced options; then
# 2 1 calls the message's sender back, or 4 dials a number the caller keys in (ended with #).
CALL_BACK = f"WW{PIN}#WWW1WWW3WWW2WWWW1"
DIAL_OUT = f"WW{PIN}#WWW1WWW3WWW4WWW{{number}}#"


async def test_voicemail_call_back_to_a_mobile_is_the_mailboxs_call(
    rig: Serving, watch: Watch
) -> None:
    """A US mobile leaves 1001 a message; 1001 calls in from outside, plays it and presses 3 2 1:
    VoiceMailMain sends the call to the mailbox's callback context with the sender's number, and the
    call-back goes out, charged to 1001 with origin voicemail."""
    await leave_message(rig, watch, MOBILE)
    before = len(rig.decisions())
    await call_in(watch, VOICEMAIL_ACCESS_DID, keys=CALL_BACK, stay=40)
    decided = await rig.decision(MOBILE, before, seconds=45)
    assert verdict(decided) == ("ALLOW", "allowed", "1001", "voicemail")
    assert decided["via"] == VOICEMAIL_ACCESS_DID
    assert watch.find(ran("vm-out-1001", MOBILE))
    assert await watch.wait(reached("+1" + MOBILE), 10)


async def test_voicemail_call_back_of_a_forged_caller_id_is_refused(
    rig: Serving, watch: Watch
) -> None:
    """The attack: a message left with a premium number as its caller id, then someone with 1001's
    PIN calls in from outside, plays it and presses 3 2 1 to call its sender back: refused
    voicemail_not_allowed, charged to 1001, and nothing reaches the trunk."""
    await leave_message(rig, watch, PREMIUM)
    before = len(rig.decisions())
    await call_in(watch, VOICEMAIL_ACCESS_DID, keys=CALL_BACK, stay=40)
    decided = await rig.decision(PREMIUM, before, seconds=45)
    assert verdict(decided) == ("DENY", "voicemail_not_allowed", "1001", "voicemail")
    assert watch.find(ran("vm-out-1001", PREMIUM))
    await nothing_reached(watch, PREMIUM)


async def test_voicemail_dial_out_with_a_guessed_pin_cannot_call_abroad(
    rig: Serving, watch: Watch
) -> None:
    """The attack: a guessed PIN, then the advanced options' "make a call" (3 4, voicemail.conf
    `dialout=`) with a London number keyed in: refused voicemail_not_allowed, charged to 1001."""
    await leave_message(rig, watch, MOBILE)  # the advanced options need a message to open
    before = len(rig.decisions())
    await call_in(watch, VOICEMAIL_ACCESS_DID, keys=DIAL_OUT.format(number=LONDON), stay=50)
    decided = await rig.decision(LONDON, before, seconds=55)
    assert verdict(decided) == ("DENY", "voicemail_not_allowed", "1001", "voicemail")
    assert watch.find(ran("vm-out-1001", LONDON))
    await nothing_reached(watch, LONDON_DIGITS)


# --- an IVR that dials out ---------------------------------------------------------------------------


async def test_ivr_option_to_the_sales_mobile_is_receptions_call(
    rig: Serving, watch: Watch
) -> None:
    """A caller presses 1 in the auto attendant (Background, WaitExten): the option's context sends
    the call to the sales line's US mobile, charged to reception (1002) with origin ivr."""
    await db_put(watch, "ivr", "sales", MOBILE)
    before = len(rig.decisions())
    await call_in(watch, IVR_DID, keys="WW1", stay=5)
    decided = await rig.decision(MOBILE, before, seconds=20)
    assert verdict(decided) == ("ALLOW", "allowed", "1002", "ivr")
    assert decided["via"] == IVR_DID
    assert watch.find(ran("ivr-out", MOBILE))
    assert await watch.wait(reached("+1" + MOBILE), 10)


@pytest.mark.parametrize(
    "number", [pytest.param(PREMIUM, id="premium"), pytest.param(LONDON, id="london")]
)
async def test_ivr_dial_by_number_cannot_reach_a_premium_number_or_abroad(
    rig: Serving, watch: Watch, number: str
) -> None:
    """The attack: a caller presses 9 in the auto attendant and keys in a premium or London number
    (Read): 1002 may dial both, an IVR leg may not (the default block): refused ivr_not_allowed."""
    before = len(rig.decisions())
    await call_in(watch, IVR_DID, keys=f"WW9WW{number}#", stay=10)
    decided = await rig.decision(number, before, seconds=30)
    assert verdict(decided) == ("DENY", "ivr_not_allowed", "1002", "ivr")
    assert watch.find(ran("ivr-out", number))
    await nothing_reached(watch, PREMIUM, LONDON_DIGITS)


# --- DISA --------------------------------------------------------------------------------------------


async def test_disa_caller_cannot_reach_a_denied_country(rig: Serving, watch: Watch) -> None:
    """The attack: a caller at a real DISA() keys in London, which 1001 may dial but the disa block
    denies: refused disa_not_allowed, charged to 1001, nothing reaches the trunk."""
    before = len(rig.decisions())
    await call_in(watch, DISA_DID, keys=f"WW{LONDON}#", stay=5)
    decided = await rig.decision(LONDON, before, seconds=20)
    assert verdict(decided) == ("DENY", "disa_not_allowed", "1001", "disa")
    assert decided["via"] == DISA_DID
    await nothing_reached(watch, LONDON_DIGITS)


async def test_disa_with_its_pin_reaches_a_us_number_as_the_extensions_call(
    rig: Serving, watch: Watch
) -> None:
    """DISA with a PIN: the PIN, #, a US number, #: allowed, charged to 1001 with origin disa. A wrong
    PIN gets no further than DISA itself: callgate never sees a call."""
    number = "2125550147"
    before = len(rig.decisions())
    await call_in(watch, DISA_PIN_DID, keys=f"WW1111#W{number}#", stay=3)
    await call_in(watch, DISA_PIN_DID, keys=f"WW7531#W{number}#", stay=5)
    decided = await rig.decision(number, before, seconds=20)
    assert verdict(decided) == ("ALLOW", "allowed", "1001", "disa")
    assert await watch.wait(reached("+1" + number), 10)
    assert "got bad password 1111" in rig.ast.log_path.read_text(errors="replace")
    assert [d["dialled"] for d in rig.decisions()[before:]] == [number]


# --- conference dial-out and a call-back service (originate) ------------------------------------------


async def conference_dial_out(watch: Watch, number: str) -> None:
    """What a conference's "add a participant" button does: AMI Originate of the number into the gate
    as 1001's originate; once answered, the call joins 1001's ConfBridge room 7001."""
    reply = await watch.conn.send(
        "Originate",
        Channel=f"Local/{number}@callgate-outbound/n",
        Context="conference",
        Exten="7001",
        Priority="1",
        Variable="CALLGATE_ORIGIN=originate,CALLGATE_EXTENSION=1001,__HOLD=60",
        Async="true",
        Timeout="30000",
    )
    assert reply.get("Response") == "Success", reply.headers


def joined(prefix: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.event == "ConfbridgeJoin"
        and m.get("Conference") == "7001"
        and m.get("Channel").startswith(prefix)
    )


async def test_conference_dial_out_joins_a_us_number_and_refuses_london(
    rig: Serving, watch: Watch
) -> None:
    """1001 is in its ConfBridge room and dials a US mobile and a London number into it: the mobile
    joins as 1001's originate and is cut at 1001's 4 s although the far end stays 60; London (which
    1001 may dial itself) is refused originate_not_allowed, never reaches the trunk and never joins."""
    reply = await watch.conn.send(
        "Originate",
        Channel="Local/7001@conference/n",
        Context="park",
        Exten="s",
        Priority="1",
        Async="true",
    )
    assert reply.get("Response") == "Success", reply.headers
    assert await watch.wait(joined("Local/7001@conference-"), 10), "the owner never joined"
    before = len(rig.decisions())
    await conference_dial_out(watch, MOBILE)
    await conference_dial_out(watch, LONDON)
    allowed, refused = await rig.decision(MOBILE, before), await rig.decision(LONDON, before)
    assert verdict(allowed) == ("ALLOW", "allowed", "1001", "originate")
    assert verdict(refused) == ("DENY", "originate_not_allowed", "1001", "originate")
    assert await watch.wait(reached("+1" + MOBILE), 10)
    assert await watch.wait(joined(f"Local/{MOBILE}@callgate-outbound-"), 10), "no join"
    cut = await watch.wait(hangup_of(f"Local/+1{MOBILE}@pstn-"), 15)
    assert cut is not None, "the conference's outside leg was not cut at its allowed seconds"
    left = await watch.wait(
        lambda m: m.event == "ConfbridgeLeave" and m.get("Channel").startswith(f"Local/{MOBILE}@")
    )
    assert left is not None
    assert await watch.wait(hangup_of(f"Local/{LONDON}@callgate-outbound-"), 10)
    await nothing_reached(watch, LONDON_DIGITS)
    assert not watch.find(joined(f"Local/{LONDON}@callgate-outbound-"))


async def test_call_back_service_calls_a_mobile_back_as_the_owners_originate(
    rig: Serving, watch: Watch
) -> None:
    """A US mobile rings 1001's call-back DID and hangs up; the hang-up handler's Originate() calls
    it back through the gate: allowed, charged to 1001 with origin originate and the DID as via."""
    before = len(rig.decisions())
    await call_in(watch, CALLBACK_DID, stay=0, caller=MOBILE)
    decided = await rig.decision(MOBILE, before, seconds=20)
    assert verdict(decided) == ("ALLOW", "allowed", "1001", "originate")
    assert decided["via"] == CALLBACK_DID
    assert await watch.wait(reached("+1" + MOBILE), 10)


@pytest.mark.parametrize(
    "caller", [pytest.param(PREMIUM, id="premium"), pytest.param(LONDON, id="london")]
)
async def test_call_back_service_cannot_be_pointed_at_a_premium_number_or_abroad(
    rig: Serving, watch: Watch, caller: str
) -> None:
    """The attack: the caller id is the caller's to set, so a fraudster rings the call-back DID "from"
    a premium or London number: the call-back is refused originate_not_allowed."""
    before = len(rig.decisions())
    await call_in(watch, CALLBACK_DID, stay=0, caller=caller)
    decided = await rig.decision(caller, before, seconds=20)
    assert verdict(decided) == ("DENY", "originate_not_allowed", "1001", "originate")
    await nothing_reached(watch, PREMIUM, LONDON_DIGITS)


async def test_refused_exits_set_off_by_outside_callers_never_lock_the_extension(
    rig: Serving, watch: Watch
) -> None:
    """Three refusals of 1003's own calls lock it (`lockdown`); after every refused voicemail, IVR,
    DISA and call-back leg of this module (outside callers set them off) and three more call-back
    requests "from" a premium number, 1001 still dials out: an outside caller cannot lock it."""
    cuba = "011532345678"  # 1003 may not call Cuba
    before = len(rig.decisions())
    for _ in range(3):
        await watch.originate("1003", cuba)
    await decided_times(rig, cuba, 3, before)
    await watch.originate("1003", "2125550148")
    assert verdict(await rig.decision("2125550148", before)) == (
        "DENY",
        "extension_locked",
        "1003",
        "dialled",
    )
    for _ in range(3):
        await call_in(watch, CALLBACK_DID, stay=0, caller=PREMIUM)
    await decided_times(rig, PREMIUM, 3, before)
    refused = [d for d in rig.decisions() if d["extension"] == "1001" and d["verdict"] == "DENY"]
    assert len(refused) >= 3
    await watch.originate("1001", "2125550149")
    assert verdict(await rig.decision("2125550149", before)) == (
        "ALLOW",
        "allowed",
        "1001",
        "dialled",
    )
