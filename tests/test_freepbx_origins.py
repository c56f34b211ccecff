"""Who caused a FreePBX leg: the shipped hook's [callgate-freepbx-origin] in a real Asterisk, inside the
FreePBX 17 model of tests/test_freepbx_hook.py, with a real `callgate serve` and Redis.

Added to that model, from docs/freepbx-call-shapes.md (FreePBX core/findmefollow/ringgroups 17 source):

- an inbound DID (`ext-did`, C:1526-1540): sets `__FROM_DID` and `__DIRECTION=INBOUND`;
- follow-me (`followme-sub`, FM:180-296): user-callerid, `__NODEST=<ext>`, a plain `RingGroupMethod`,
  `_FMGRP=<ext>`, then `macro-dial` → `dialparties.agi`, which sets `__KEEPCID=TRUE`,
  `__DIALPARTIES=1` (DP:62, 853) and turns each `<num>#` of the list (AstDB
  `AMPUSER/<ext>/followme/grplist`) into `Local/<num>@from-internal/n` (DP:874-886), all dialled at once;
- a ring group (`ext-group`, RG:141, 223): `__NODEST=<group>`, then the same `macro-dial`;
- call forward (`macro-exten-vm` C:3587 `__EXTTOCALL=<ext>`, then `macro-dial-one` MD1:19, 141-152,
  210: AstDB `CF/<ext>` dialled as `Local/<num>@from-internal/n` when there is a ring time);
- DISA (DISA:104-129: `_DISA=disa^<id>^newcall`, `_DISACONTEXT`, then `Local/<num>@from-internal`);
- a queue (queues 17.0.1.6 `functions.inc/dialplan.php`, **QD**): `ext-queues,<q>` runs user-callerid,
  sets `__NODEST=<q>` (QD:117), `QUEUENUM` (QD:268) and runs the real `Queue()` (app_queue, built into the
  test Asterisk), whose static member is the outside number as FreePBX writes it,
  `Local/<num>@from-queue/n` (`Queues.class.php:121`). app_queue copies the caller's inheritable
  variables to the member's `;1` half (AST `apps/app_queue.c:5020`), the Local channel to `;2`; `;2`
  runs `[from-queue]` (QD:574-578: `QAGENT=${EXTEN}`, `__FROMQ=true`, on to `from-queue,${NODEST}`),
  whose queue entry goes to `from-internal,${QAGENT}` (QD:393, "Call as Dialed").

Transfers are Asterisk's own (AMI BlindTransfer sets BLINDTRANSFER as a REFER would) or, where the rig
has no FreePBX device to transfer from, the variable Asterisk would set.

Each Local leg runs `from-internal` → the outbound route, which clears `_NODEST` (`Set(_NODEST=)`,
core_do_get_config l.2185-2310, modelled in `_route`) → `macro-dialout-trunk` → the hook. `dialparties.agi` is an AGI; its stand-in is dialplan.
`macro-user-callerid`'s stand-in sets AMPUSER from `CALLGATE_EXTENSION`, which an inbound call does not
have; without it, from the caller id's device (MUC L37-38: `DB(DEVICE/<caller id>/user)`): empty for an
outside caller, as FreePBX's fallback leaves it (research, (a)), unless his caller id is a device's:
the spoofer's way to name an extension, which no leg of an inbound call may be charged to for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.asterisk_rig import AsteriskInstance
from tests.e2e import Serving, Watch, reached, serving, shipped_configs
from tests.servers import eventually
from tests.test_freepbx_hook import FEATURES, FREEPBX17, HOOKS

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

DID = "2125550100"  # the inbound DID, recorded as via=
MOBILE, MOBILE2, LONDON = "2125550142", "2125550143", "011442079460000"
RING1, RING2 = "2125550150", "2125550151"  # mobiles that ring and never answer (below)
QMOBILE, QMOBILE2 = "2125550146", "2125550147"  # outside members of queues 700 and 701

FREEPBX_PATHS = """\
[carrier] ; more of the carrier: these mobiles ring until the caller gives up
exten => _21255501[5-6]X,1,UserEvent(Ringing,Number: ${EXTEN})
 same => n,Ringing()
 same => n,Wait(20)
 same => n,Hangup()

[from-internal] ; stand-in: from-internal → from-internal-xfer → from-internal-additional
include => outbound-allroutes

; ext-did-0002 (C:1526-1540) for the DID, then its destination (DEST: context^exten, from the test)
[from-pstn]
exten => _X.,1,Set(__FROM_DID=${EXTEN})
 same => n,Set(__DIRECTION=INBOUND)
 same => n,Goto(${CUT(DEST,^,1)},${CUT(DEST,^,2)},1)
 same => n,Hangup()

[ext-findmefollow] ; followme-check → followme-sub (FM:180-296)
exten => _X.,1,Gosub(macro-user-callerid,s,1())
 same => n,Set(__NODEST=${EXTEN})                        ; FM:213
 same => n,Set(RingGroupMethod=ringallv2)
 same => n,Set(_FMGRP=${EXTEN})                          ; FM:243
 same => n,Gosub(macro-dial-model,s,1(30,${DB(AMPUSER/${EXTEN}/followme/grplist)}))
 same => n,Hangup()

[ext-group] ; RG:141, 223 (its list is in FreePBX's database, not AstDB: written out here)
exten => 600,1,Gosub(macro-user-callerid,s,1())
 same => n,Set(__NODEST=${EXTEN})
 same => n,Set(RingGroupMethod=ringall)
 same => n,Gosub(macro-dial-model,s,1(30,2125550144#-2125550145#))
 same => n,Hangup()

; stand-in for macro-dial → dialparties.agi: "<num>#" → Local/<num>@from-internal/n, all at once
[macro-dial-model]
exten => s,1,Set(__KEEPCID=TRUE)
 same => n,Set(__DIALPARTIES=1)
 same => n,Set(LOCAL(list)=${ARG2})
 same => n,Set(LOCAL(ds)=)
 same => n,Set(LOCAL(i)=1)
 same => n,While($[${i} <= ${FIELDQTY(list,-)}])
 same => n,Set(LOCAL(m)=${CUT(list,-,${i})})
 same => n,ExecIf($["${m:-1}" = "#"]?Set(ds=${ds}&Local/${m:0:-1}@from-internal/n))
 same => n,Set(i=$[${i} + 1])
 same => n,EndWhile()
 same => n,Dial(${ds:1},${ARG1})
 same => n,Return()

; DISA 1 (DISA:104-129): after Authenticate (not modelled), _DISA, _DISACONTEXT, _KEEPCID, then
; DISA(no-password,disa-dial), which waits for the caller's digits: here they come as DIGITS
[disa]
exten => 1,1,Set(_DISA=disa^${EXTEN}^newcall)
 same => n,Set(_DISACONTEXT=from-internal)
 same => n,Set(_KEEPCID=TRUE)
 same => n,Goto(disa-dial,${DIGITS},1)
[disa-dial]
exten => _X.,1,Dial(Local/${EXTEN}@${DISACONTEXT},300)
 same => n,Hangup()

[custom-local] ; any path that dials an outside number through a Local channel the hook does not
exten => _X.,1,Dial(Local/${EXTEN}@from-internal/n,30)  ; recognise (a custom destination)
 same => n,Hangup()

; ext-queues (QD:91-290, without announcements, recording, MOH, confirm): queue 700 and 701, both
; "Call as Dialed" (use_queue_context 0); their members are in queues.conf (QUEUES below)
[ext-queues]
exten => _70[01],1,Gosub(macro-user-callerid,s,1())
 same => n,Answer()
 same => n,Set(__FROMQUEUEEXTEN=${CALLERID(number)})
 same => n,Set(__NODEST=${EXTEN})                        ; QD:117
 same => n,Set(__QCONTEXT=0)
 same => n,Set(QUEUENUM=${EXTEN})                        ; QD:268, plain: the member never sees it
 same => n(qcall),Queue(${EXTEN},t,,,20)
 same => n,Set(__NODEST=)                                ; QD:290
 same => n,Hangup()

[from-queue] ; QD:393, 574-580
exten => _X.,1,Set(QAGENT=${EXTEN})
 same => n,Set(__FROMQ=true)
 same => n,GotoIf($["${LEN(${NODEST})}" = "0"]?hangup)
 same => n,GotoIf($["${DIALPLAN_EXISTS(from-queue,${NODEST},1)}" = "1"]?${NODEST},1:hangup)
 same => n(hangup),Hangup()
exten => 700,1,Goto(from-internal,${QAGENT},1)
exten => 701,1,Goto(from-internal,${QAGENT},1)

[ext-local] ; macro-exten-vm (C:3587) → macro-dial-one's cf and dlocal (MD1:19, 141-152, 210)
exten => _X.,1,Set(__EXTTOCALL=${EXTEN})
 same => n,Set(DEXTEN=${DB(CF/${EXTEN})})
 same => n,GotoIf($["${DEXTEN}" = ""]?nocf)
 same => n,Set(__DIVERSION_REASON=unconditional)
 same => n,Dial(Local/${DEXTEN}@from-internal/n,30)
 same => n(nocf),Hangup()
"""

POLICY = """\
version: 1
site: {name: fpbx, region: US, timezone: America/New_York, currency: USD, on_store_error: deny}
emergency: ["911"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01"}}
profiles:
  office:
    destinations: {allow_countries: [US, GB]}
    limits: {concurrent_calls: 5, max_call_duration: 1h}
  single:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 1, max_call_duration: 1h}
  unattributed:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 2, max_call_duration: 10m}
extensions:
  - {match: "1001", profile: office}
  - {match: "1002", profile: office}
  - {match: "1004", profile: office}
  - {match: "1006", profile: single}
  - {match: "1008", profile: office}
  - {match: "ringgroup-600", profile: office}
  - {match: "disa-1", profile: office}
  - {match: "queue-700", profile: office}
  - {match: "inbound", profile: unattributed}
# origins: not written, so forward is domestic only (US) whatever the profile (office may call GB)
"""

# The hook as it was before origins: ext=${AMPUSER}, nothing else (to show what it did to follow-me).
BEFORE = (
    HOOKS.read_text(encoding="utf-8")
    .replace("Gosub(callgate-freepbx-origin,s,1())", "NoOp(before: no origin)")
    .replace(
        "ext=${CALLGATE_FPBX_EXT},call=${CHANNEL(linkedid)},origin=${CALLGATE_FPBX_ORIGIN},"
        "via=${CALLGATE_FPBX_VIA}",
        "ext=${AMPUSER},call=${CHANNEL(linkedid)}",
    )
)


# macro-user-callerid (MUC L37-38): with no CALLGATE_EXTENSION, AMPUSER is the caller id's device's user
STAND_IN = "exten => s,1,Set(AMPUSER=${CALLGATE_EXTENSION})\n"
USER_CALLERID = (
    STAND_IN
    + ' same => n,GotoIf($["${AMPUSER}" != "" | "${CALLERID(num)}" = ""]?done)\n'
    + " same => n,Set(AMPUSER=${DB(DEVICE/${CALLERID(num)}/user)})\n"
    + " same => n(done)"
)
assert FREEPBX17.count(STAND_IN + " same => n,Return()") == 1

# The hook before outside callers' legs were told apart: an unrecognised leg was always "dialled".
GUARD = ' same => n(dialled),GotoIf($["${FROM_DID}" = "" | "${tech}" = "PJSIP"]?done)  ; see 4.\n'
assert HOOKS.read_text(encoding="utf-8").count(GUARD) == 1
UNGUARDED = HOOKS.read_text(encoding="utf-8").replace(GUARD, " same => n(dialled),Return()\n")

# The hook before queues and "inbound" (70125de): such a leg was a forward, but charged to AMPUSER,
# and a queue's member leg was no queue's.
INBOUND = (
    " same => n,Set(CALLGATE_FPBX_EXT=inbound)                ; never AMPUSER: the caller id's\n"
)
QUEUE = ' same => n,GotoIf($["${at:0:11}" = "from-queue-"]?queue)  ; from-queue-<n>;2\n'
assert HOOKS.read_text(encoding="utf-8").count(INBOUND) == 1
assert HOOKS.read_text(encoding="utf-8").count(QUEUE) == 1
CHARGED_TO_AMPUSER = HOOKS.read_text(encoding="utf-8").replace(INBOUND, "").replace(QUEUE, "")

# queues.conf as FreePBX's queue_conf.php writes a static outside member (Queues.class.php:121)
QUEUES = f"""\
[general]
[700]
strategy=ringall
timeout=15
retry=60
member => Local/{QMOBILE}@from-queue/n,0
[701]
strategy=ringall
timeout=15
retry=60
member => Local/{QMOBILE2}@from-queue/n,0
"""


def _dialplan(hooks: Path) -> str:
    plan = FREEPBX17.replace(f'#include "{HOOKS}"', f'#include "{hooks}"') + FREEPBX_PATHS
    return plan.replace(STAND_IN + " same => n,Return()", USER_CALLERID + ",Return()")


def _configs(ast: AsteriskInstance) -> dict[str, str]:
    return {**shipped_configs(ast), "features.conf": FEATURES, "queues.conf": QUEUES}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    root = Path(tmp_path_factory.mktemp("fpbx-origins"))
    with serving(root, _dialplan(HOOKS), POLICY, _configs) as rig:
        yield rig


async def db_put(watch: Watch, family: str, key: str, value: str) -> None:
    reply = await watch.conn.send("DBPut", Family=family, Key=key, Val=value)
    assert reply.get("Response") == "Success", reply.headers


async def inbound(
    watch: Watch, dest: str, *, hold: int = 1, caller: str = "3125550199", extra: str = ""
) -> None:
    """An outside caller dials the DID, which FreePBX sends to `dest` ("context,exten")."""
    await watch.place(
        f"Local/{DID}@from-pstn/n",
        caller_id=f'"Outside" <{caller}>',
        variables=f"__HOLD={hold},DEST={dest.replace(',', '^')}{extra}",
    )


def mine(rig: Serving, before: int) -> list[tuple[str, str, str, str, str]]:
    return sorted(
        (d["dialled"], d["origin"], d["extension"], d["via"], d["reason"])
        for d in rig.decisions()[before:]
    )


async def test_follow_me_before_origins_was_refused(tmp_path: Path) -> None:
    """The hook as it was (ext=${AMPUSER}): 1002's follow-me to a US mobile, on an inbound call, reached
    callgate with an empty AMPUSER and was refused as unknown_extension: the follow-me never rang."""
    hooks = tmp_path / "before.conf"
    hooks.write_text(BEFORE, encoding="utf-8")
    with serving(tmp_path, _dialplan(hooks), POLICY, _configs) as rig:
        watch = await Watch.open(rig.ast)
        try:
            await db_put(watch, "AMPUSER/1002/followme", "grplist", f"1002-{MOBILE}#")
            await inbound(watch, "ext-findmefollow,1002")
            decision = await rig.decision(MOBILE, 0)
        finally:
            await watch.close()
    assert (decision["origin"], decision["extension"], decision["reason"]) == (
        "dialled",
        "",
        "unknown_extension",
    )


async def test_follow_me_to_a_mobile_is_charged_to_its_extension(
    rig: Serving, watch: Watch
) -> None:
    """Now: the same follow-me leg is a forward by 1002 (FreePBX's NODEST, on the Local leg's ;1 half,
    and the number on 1002's own list), via the DID; allowed, and it rings."""
    await db_put(watch, "AMPUSER/1002/followme", "grplist", f"1002-{MOBILE}#")
    before = len(rig.decisions())
    await inbound(watch, "ext-findmefollow,1002")
    await rig.decision(MOBILE, before)
    assert await watch.wait(reached(MOBILE), 15), rig.gate.tail()
    assert mine(rig, before) == [(MOBILE, "forward", "1002", DID, "allowed")]


async def test_a_forward_to_london_is_refused(rig: Serving, watch: Watch) -> None:
    """1004's call forward (AstDB CF/1004) to London: office may dial GB itself, its forward may not
    (origins default: domestic only): forward_not_allowed, charged to 1004, nothing reaches the trunk."""
    await db_put(watch, "CF", "1004", LONDON)
    before = len(rig.decisions())
    await inbound(watch, "ext-local,1004")
    await rig.decision(LONDON, before)
    assert mine(rig, before) == [(LONDON, "forward", "1004", DID, "forward_not_allowed")]


async def test_a_forward_to_a_mobile_is_allowed(rig: Serving, watch: Watch) -> None:
    await db_put(watch, "CF", "1004", MOBILE2)
    before = len(rig.decisions())
    await inbound(watch, "ext-local,1004")
    await rig.decision(MOBILE2, before)
    assert await watch.wait(reached(MOBILE2), 15), rig.gate.tail()
    assert mine(rig, before) == [(MOBILE2, "forward", "1004", DID, "allowed")]


async def test_a_number_not_on_the_follow_me_list_is_charged_to_nobody(
    rig: Serving, watch: Watch
) -> None:
    """NODEST names a follow-me extension whose list does not hold the number this leg dials (here the
    list changed under the model's dial string): refused as unknown_extension, never charged to 1002."""
    await db_put(watch, "AMPUSER/1001/followme", "grplist", f"1001-{MOBILE}#")
    before = len(rig.decisions())
    reply = await watch.conn.send(
        "Originate",
        Channel=f"Local/{MOBILE2}@from-internal/n",
        Context="park",
        Exten="s",
        Priority="1",
        Variable="__NODEST=1001,__HOLD=1",  # as if 1001's follow-me had dialled it
        Async="true",
    )
    assert reply.get("Response") == "Success", reply.headers
    d = await rig.decision(MOBILE2, before)
    assert (d["origin"], d["extension"], d["reason"]) == ("forward", "", "unknown_extension"), (
        rig.ast.log_tail(120)
    )


@pytest.mark.parametrize(
    ("variables", "origin", "extension"),
    [
        ("__EXTTOCALL=1004,__NODEST=1002,FMGRP=1002", "dialled", "1006"),
        # a queue's: what [from-queue] and ext-queues set on a member's leg, and the caller's QUEUENUM
        (f"QAGENT={LONDON},__FROMQ=true,__NODEST=700,QUEUENUM=700", "dialled", "1006"),
        # [phones] is a Local channel: with FROM_DID it is an outside call's leg (never "dialled", never
        # the caller id's extension); a real PJSIP phone's channel stays dialled, and never DISA's
        ("DISA=disa^1^newcall,__FROM_DID=2125550100", "forward", "inbound"),
    ],
)
async def test_a_phone_cannot_make_its_call_look_like_a_forward(
    rig: Serving, watch: Watch, variables: str, origin: str, extension: str
) -> None:
    """A phone's own channel (here [phones], standing in for a PJSIP device, which sets no variable)
    carrying FreePBX's forward, follow-me, queue or DISA variables (stale from an earlier hop of its
    call, or sent by an IAX2 peer): it is no Local leg of from-internal or from-queue, so its call is
    never judged as a forward, follow-me, queue or DISA leg and stays charged to the phone (1006, US
    only): London is refused."""
    await db_put(watch, "CF", "1004", LONDON)
    before = len(rig.decisions())
    await watch.originate("1006", LONDON, variables="," + variables)
    d = await rig.decision(LONDON, before)
    assert (d["origin"], d["extension"], d["verdict"]) == (origin, extension, "DENY")
    if origin == "dialled":
        assert d["reason"] == "country_not_allowed"


async def test_an_outside_caller_id_1001_on_a_local_leg_was_1001s_own_call(tmp_path: Path) -> None:
    """The hole, with the hook as it was: an outside caller sets caller id 1001 and reaches a path that
    dials London through a Local channel (no forward, follow-me, ring group or DISA). FreePBX's
    user-callerid finds device 1001 from that caller id: AMPUSER=1001, and the leg was judged as
    1001's own dialled call with 1001's rights (office may call GB): allowed."""
    hooks = tmp_path / "unguarded.conf"
    hooks.write_text(UNGUARDED, encoding="utf-8")
    with serving(tmp_path, _dialplan(hooks), POLICY, _configs) as rig:
        watch = await Watch.open(rig.ast)
        try:
            await db_put(watch, "DEVICE/1001", "user", "1001")
            await inbound(watch, f"custom-local,{LONDON}", caller="1001")
            decision = await rig.decision(LONDON, 0)
        finally:
            await watch.close()
    assert (decision["origin"], decision["extension"], decision["reason"]) == (
        "dialled",
        "1001",
        "allowed",
    )


async def test_an_outside_caller_id_1001_spent_1001s_budget(tmp_path: Path) -> None:
    """The hole left by the hook as it was (70125de): the same leg, and a queue's outside member, were
    forwards, but charged to AMPUSER, which FreePBX takes from the caller id there: a spoofer with
    caller id 1001 chose whose domestic budget and concurrency slots his calls spent."""
    hooks = tmp_path / "ampuser.conf"
    hooks.write_text(CHARGED_TO_AMPUSER, encoding="utf-8")
    with serving(tmp_path, _dialplan(hooks), POLICY, _configs) as rig:
        watch = await Watch.open(rig.ast)
        try:
            await db_put(watch, "DEVICE/1001", "user", "1001")
            await inbound(watch, f"custom-local,{MOBILE}", caller="1001")
            await rig.decision(MOBILE, 0)
            await inbound(watch, "ext-queues,700", caller="1001")
            await rig.decision(QMOBILE, 0)
        finally:
            await watch.close()
        assert mine(rig, 0) == [
            (MOBILE, "forward", "1001", DID, "allowed"),
            (QMOBILE, "forward", "1001", DID, "allowed"),
        ]


async def test_an_outside_caller_id_1001_on_a_local_leg_is_charged_to_inbound(
    rig: Serving, watch: Watch
) -> None:
    """Now: a leg of an inbound call (FreePBX's FROM_DID) on a channel that is no PJSIP one, which the
    hook does not recognise, is a forward charged to the pseudo-extension "inbound", whatever the
    caller id: within its listed profile (US only, two at a time) a US mobile is allowed, London is
    refused; 1001 holds no slot for either."""
    await db_put(watch, "DEVICE/1001", "user", "1001")
    before = len(rig.decisions())
    await inbound(watch, f"custom-local,{MOBILE}", caller="1001", hold=5)
    await rig.decision(MOBILE, before)
    await inbound(watch, f"custom-local,{LONDON}", caller="1001")
    d = await rig.decision(LONDON, before)
    assert mine(rig, before)[1] == (MOBILE, "forward", "inbound", DID, "allowed")
    assert (d["origin"], d["extension"], d["via"], d["verdict"]) == (
        "forward",
        "inbound",
        DID,
        "DENY",
    )
    assert not await _live(rig, "1001")


async def test_an_unlisted_inbound_is_refused(tmp_path: Path) -> None:
    """A policy that does not list "inbound": such a leg is refused unknown_extension, even to a US
    mobile, and still never charged to the caller id's extension 1001."""
    policy = POLICY.replace('  - {match: "inbound", profile: unattributed}\n', "")
    assert policy != POLICY
    with serving(tmp_path, _dialplan(HOOKS), policy, _configs) as rig:
        watch = await Watch.open(rig.ast)
        try:
            await db_put(watch, "DEVICE/1001", "user", "1001")
            await inbound(watch, f"custom-local,{MOBILE}", caller="1001")
            await rig.decision(MOBILE, 0)
        finally:
            await watch.close()
        assert mine(rig, 0) == [(MOBILE, "forward", "inbound", DID, "unknown_extension")]


async def test_a_queue_outside_member_is_charged_to_the_queue(rig: Serving, watch: Watch) -> None:
    """Queue 700 (a real Queue()) rings its static outside member, a US mobile, for an outside caller
    whose caller id is 1001: the member's Local/<num>@from-queue ;2 leg is a forward charged to
    "queue-700" (listed as office), via the DID; allowed, and it rings. Never 1001's."""
    await db_put(watch, "DEVICE/1001", "user", "1001")
    before = len(rig.decisions())
    await inbound(watch, "ext-queues,700", caller="1001")
    await rig.decision(QMOBILE, before)
    assert await watch.wait(reached(QMOBILE), 15), rig.gate.tail() + rig.ast.log_tail(80)
    assert mine(rig, before)[0] == (QMOBILE, "forward", "queue-700", DID, "allowed")


async def test_an_unlisted_queue_is_refused(rig: Serving, watch: Watch) -> None:
    """Queue 701, which the policy does not list: its outside member's leg is charged to "queue-701"
    and refused unknown_extension."""
    before = len(rig.decisions())
    await inbound(watch, "ext-queues,701")
    await rig.decision(QMOBILE2, before)
    assert mine(rig, before)[0] == (QMOBILE2, "forward", "queue-701", DID, "unknown_extension")


async def test_click_to_call_from_1001_is_still_its_dialled_call(
    rig: Serving, watch: Watch
) -> None:
    """A click-to-call originate into from-internal (no inbound route, no FROM_DID): the Local leg's
    AMPUSER is 1001 from its caller id, as before: 1001's own dialled call, allowed to London."""
    await db_put(watch, "DEVICE/1001", "user", "1001")
    before = len(rig.decisions())
    await watch.place(
        f"Local/{LONDON}@from-internal/n", caller_id='"Ext 1001" <1001>', variables="__HOLD=1"
    )
    await rig.decision(LONDON, before)
    assert mine(rig, before) == [(LONDON, "dialled", "1001", "", "allowed")]


async def test_a_transfer_is_charged_to_the_transferer(rig: Serving, watch: Watch) -> None:
    """Asterisk's BLINDTRANSFER names the transferer's channel. A FreePBX device's channel (AstDB
    DEVICE/1002/dial = PJSIP/1002): charged to its user, origin transfer. A trunk's channel (the remote
    party transferred) on a channel that is no device: charged to nobody."""
    await db_put(watch, "DEVICE/1002", "dial", "PJSIP/1002")
    await db_put(watch, "DEVICE/1002", "user", "1002")
    before = len(rig.decisions())
    await watch.originate("1001", MOBILE, variables=",BLINDTRANSFER=PJSIP/1002-0000002a")
    d = await rig.decision(MOBILE, before)
    assert (d["origin"], d["extension"], d["reason"]) == ("transfer", "1002", "allowed")
    before = len(rig.decisions())
    await watch.originate("1001", MOBILE2, variables=",BLINDTRANSFER=PJSIP/carrier-0000002b")
    d = await rig.decision(MOBILE2, before)
    assert (d["origin"], d["extension"], d["reason"]) == ("transfer", "", "unknown_extension")


async def _live(rig: Serving, extension: str) -> set[str]:
    """The reservations held in the extension's concurrency slots."""
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        members = await client.zrange(f"cg:{{fpbx}}:c:ext:{extension}", 0, -1)
        return {str(m) for m in members}
    finally:
        await client.aclose()


async def test_a_follow_me_to_two_numbers_is_two_admissions(rig: Serving, watch: Watch) -> None:
    """Issue 10 item 5: 1002's follow-me rings two outside numbers at once: two decisions, two
    reservations, both held as 1002's concurrent calls while they ring and talk. For 1006 (one call
    at a time) the second leg is refused: both are counted against the follow-me extension."""
    await db_put(watch, "AMPUSER/1002/followme", "grplist", f"{RING1}#-{RING2}#")
    before = len(rig.decisions())
    await inbound(watch, "ext-findmefollow,1002", hold=8)
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)
    decided = rig.decisions()[before:]
    assert mine(rig, before) == [
        (RING1, "forward", "1002", DID, "allowed"),
        (RING2, "forward", "1002", DID, "allowed"),
    ]
    held = {d["reservation"] for d in decided}
    assert len(held) == 2
    assert held <= await _live(rig, "1002")  # both ringing legs hold a slot of 1002's

    await db_put(watch, "AMPUSER/1006/followme", "grplist", f"{RING1}#-{RING2}#")
    before = len(rig.decisions())
    await inbound(watch, "ext-findmefollow,1006", hold=8)
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)
    assert sorted(d["verdict"] for d in rig.decisions()[before:]) == ["ALLOW", "DENY"]
    assert {d["extension"] for d in rig.decisions()[before:]} == {"1006"}


async def test_a_ring_group_is_charged_to_its_number(rig: Serving, watch: Watch) -> None:
    """Ring group 600 with two outside members: no extension caused these legs; each is charged to the
    policy entry "ringgroup-600" (refused as unknown_extension where the policy does not list it)."""
    before = len(rig.decisions())
    await inbound(watch, "ext-group,600")
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)
    assert mine(rig, before) == [
        ("2125550144", "forward", "ringgroup-600", DID, "allowed"),
        ("2125550145", "forward", "ringgroup-600", DID, "allowed"),
    ]


async def test_a_failover_of_a_forwarded_leg_is_one_admission(rig: Serving, watch: Watch) -> None:
    """1004 forwards to *81<number>: the failover route's first trunk is busy and marked continue, the
    hook runs again on the same Local leg for the next trunk: the same reservation, replayed, one
    admission, charged to 1004 both times."""
    await db_put(watch, "CF", "1004", "*81" + MOBILE)
    before = len(rig.decisions())
    await inbound(watch, "ext-local,1004")
    assert await watch.wait(reached(MOBILE), 15), rig.gate.tail() + rig.ast.log_tail(80)
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)
    decided = rig.decisions()[before:]
    assert [(d["origin"], d["extension"], d["verdict"], d["replayed"]) for d in decided] == [
        ("forward", "1004", "ALLOW", "0"),
        ("forward", "1004", "ALLOW", "1"),
    ]
    assert decided[0]["reservation"] == decided[1]["reservation"]


async def test_disa_is_charged_to_its_entry(rig: Serving, watch: Watch) -> None:
    """An outside caller given DISA 1's dial tone: its legs are origin disa, charged to "disa-1" (the
    policy lists it as office); a US mobile is allowed, London (office may, DISA's default may not)
    is refused disa_not_allowed."""
    before = len(rig.decisions())
    await inbound(watch, "disa,1", extra=f",DIGITS={MOBILE}")
    await rig.decision(MOBILE, before)
    await inbound(watch, "disa,1", extra=f",DIGITS={LONDON}")
    await rig.decision(LONDON, before)
    assert mine(rig, before) == [
        (LONDON, "disa", "disa-1", DID, "disa_not_allowed"),
        (MOBILE, "disa", "disa-1", DID, "allowed"),
    ]


async def test_the_far_end_transferring_a_call_abroad_is_refused(
    rig: Serving, watch: Watch
) -> None:
    """A real blind transfer (AMI BlindTransfer on the trunk's channel, as the far end's REFER would):
    Asterisk moves 1001's channel to from-internal,<London> with BLINDTRANSFER naming the trunk's
    channel. No device transferred it: origin transfer, charged to nobody, refused."""
    await watch.originate("1001", MOBILE, hold=30)
    assert await watch.wait(reached(MOBILE), 15), rig.gate.tail()
    trunk = await watch.wait(
        lambda m: m.event == "Newchannel" and m.get("Channel").startswith(f"Local/{MOBILE}@pstn-"),
        5,
    )
    assert trunk is not None
    before = len(rig.decisions())
    reply = await watch.conn.send(
        "BlindTransfer", Channel=trunk.get("Channel"), Exten=LONDON, Context="from-internal"
    )
    assert reply.get("Response") == "Success", reply.headers
    d = await rig.decision(LONDON, before)
    assert (d["origin"], d["extension"], d["reason"]) == ("transfer", "", "unknown_extension")


async def forwarded_by(watch: Watch, number: str, forwarder: str) -> None:
    """What Dial() does when the phone it rings answers "302 Moved" to ``number``: it calls
    Local/<number>@from-internal (FreePBX's FORWARD_CONTEXT) with FORWARDERNAME = the phone's channel,
    which the Local channel copies to its ;2 half, where the route and the hook run."""
    await watch.place(
        f"Local/{number}@from-internal/n",
        caller_id='"Ext 1001" <1001>',
        variables=f"__HOLD=1,AMPUSER=1001,FORWARDERNAME={forwarder}",
    )


async def test_a_devices_own_302_forward_is_charged_to_the_device(
    rig: Serving, watch: Watch
) -> None:
    """1001 calls 1008, whose phone answers 302 to another number. Before, the forwarded leg was
    1001's own dialled call: 1008's phone chose where 1001's rights (and budget) went. Now it is
    1008's forward: to a US mobile allowed; to London, which 1008 may dial, refused by the forward
    block (domestic only)."""
    await db_put(watch, "DEVICE/1008", "dial", "PJSIP/1008")
    await db_put(watch, "DEVICE/1008", "user", "1008")
    before = len(rig.decisions())
    await forwarded_by(watch, MOBILE, "PJSIP/1008-0000003a")
    await forwarded_by(watch, LONDON, "PJSIP/1008-0000003b")
    mobile, london = await rig.decision(MOBILE, before), await rig.decision(LONDON, before)
    assert (mobile["origin"], mobile["extension"], mobile["reason"]) == (
        "forward",
        "1008",
        "allowed",
    )
    assert (london["origin"], london["extension"], london["reason"]) == (
        "forward",
        "1008",
        "forward_not_allowed",
    )
