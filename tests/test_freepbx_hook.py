"""The shipped FreePBX predial hook in a real Asterisk, inside a model of the dialplan FreePBX 17
generates for an outbound route, with a real `callgate serve` and Redis.

`FREEPBX17` is that model, written from FreePBX's source (core 17.0.18.4, `functions.inc.php`,
`core_do_get_config`; framework's `extensions.class.php`, whose `ext_macro` writes
`Gosub(macro-X,s,1(args))` and `ext_macroexit` `Return()`): `outbound-allroutes` includes one
`outrt-N` context per route; each dial pattern sets the route's variables and runs
`macro-dialout-trunk(trunk, number, route PIN, continue)` once per trunk of the route; the macro
builds `DIAL_NUMBER` and `OUTNUM = ${OUTPREFIX_<trunk>}${DIAL_NUMBER}`, runs the predial hook,
checks `PREDIAL_HOOK_RET`, and dials `${OUT_<trunk>}/${OUTNUM}${OUT_<trunk>_SUFFIX}` from
`trunk-dial-with-exten`; a failed dial of a trunk marked "continue" returns to the route, which tries
its next trunk. `macro-dialout-dundi` and `macro-dundi-<id>` are modelled the same way
(tests/test_freepbx_dundi.py). Stand-ins (no FreePBX database, no pbx_dundi, no app_authenticate here)
are marked as such. Trunks are Local channels into `[pstn]`, the carrier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callgate.asterisk.ami import Message
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
HOOKS = DIALPLAN / "freepbx" / "extensions_custom.conf"

# macro-dialout-trunk as core_do_get_config writes it on FreePBX 17 (functions.inc.php l.2510-2670),
# without the lines that do not bear on the hook: Alert-Info, CONNECTEDLINE, MOH, confirm, route
# e-mail, and Dial's b(func-apply-sipheaders...) (SIP headers on the trunk channel).
MACRO_DIALOUT_TRUNK = """\
[macro-dialout-trunk]
exten => s,1,Set(DIAL_TRUNK=${ARG1})
 same => n,GosubIf($[$["${ARG3}" != ""] & $["${DB(AMPUSER/${AMPUSER}/pinless)}" != "NOPASSWD"]]?sub-pincheck,s,1(${ARG3}))
 same => n,GotoIf($["x${OUTDISABLE_${DIAL_TRUNK}}" = "xon"]?disabletrunk,1)
 same => n,Set(DIAL_NUMBER=${ARG2})
 same => n,Set(DIAL_TRUNK_OPTIONS=${DIAL_OPTIONS})
 same => n,Set(OUTBOUND_GROUP=OUT_${DIAL_TRUNK})
 same => n,Set(DIAL_TRUNK_OPTIONS=${IF($["${DB_EXISTS(TRUNK/${DIAL_TRUNK}/dialopts)}" = "1"]?${DB_RESULT}:${TRUNK_OPTIONS})})
 same => n,GotoIf($["${OUTMAXCHANS_${DIAL_TRUNK}}" = ""]?nomax)
 same => n,GotoIf($[ ${GROUP_COUNT(OUT_${DIAL_TRUNK})} >= ${OUTMAXCHANS_${DIAL_TRUNK}} ]?chanfull)
 same => n(nomax),GotoIf($["${INTRACOMPANYROUTE}" = "YES"]?skipoutcid)
 same => n,NoOp(stand-in for Gosub(macro-outbound-callerid,s,1(${DIAL_TRUNK})))
 same => n(skipoutcid),GosubIf($["${PREFIX_TRUNK_${DIAL_TRUNK}}" != ""]?sub-flp-${DIAL_TRUNK},s,1())
 same => n,Set(OUTNUM=${OUTPREFIX_${DIAL_TRUNK}}${DIAL_NUMBER})
 same => n,Set(custom=${CUT(OUT_${DIAL_TRUNK},:,1)})
 same => n(gocall),Gosub(macro-dialout-trunk-predial-hook,s,1())
 same => n,GotoIf($["${PREDIAL_HOOK_RET}" = "BYPASS"]?bypass,1)
 same => n,GotoIf($["${custom}" = "AMP"]?customtrunk)
 same => n,Gosub(trunk-dial-with-exten,${DIAL_NUMBER},1())
 same => n,NoOp(Dial failed for some reason with DIALSTATUS = ${DIALSTATUS} and HANGUPCAUSE = ${HANGUPCAUSE})
 same => n,GotoIf($["${ARG4}" = "on"]?continue,1:s-${DIALSTATUS},1)
 same => n(customtrunk),NoOp(custom trunks are not modelled)
 same => n(chanfull),NoOp(max channels used up)
exten => s-BUSY,1,NoOp(Dial failed due to trunk reporting BUSY - giving up)
 same => n,Busy(20)
exten => s-ANSWER,1,NoOp(Call successfully answered - Hanging up now)
 same => n,Hangup()
exten => s-NOANSWER,1,NoOp(Dial failed due to trunk reporting NOANSWER - giving up)
 same => n,Congestion(20)
exten => s-INVALIDNMBR,1,NoOp(Dial failed due to trunk reporting Address Incomplete - giving up)
 same => n,Busy(20)
exten => s-CHANGED,1,NoOp(Dial failed due to trunk reporting Number Changed - giving up)
 same => n,Busy(20)
exten => _s-.,1,Set(RC=${IF($[${ISNULL(${HANGUPCAUSE})}]?0:${HANGUPCAUSE})})
 same => n,Goto(${RC},1)
exten => 17,1,Goto(s-BUSY,1)
exten => 18,1,Goto(s-NOANSWER,1)
exten => 22,1,Goto(s-CHANGED,1)
exten => 23,1,Goto(s-CHANGED,1)
exten => 1,1,Goto(s-INVALIDNMBR,1)
exten => 28,1,Goto(s-INVALIDNMBR,1)
exten => _X,1,Goto(continue,1)
exten => _X.,1,Goto(continue,1)
exten => continue,1(noreport),NoOp(TRUNK Dial failed due to ${DIALSTATUS} HANGUPCAUSE: ${HANGUPCAUSE} - failing through to other trunks)
 same => n,ExecIf($["${AMPUSER}"!="" ]?Set(CALLERID(number)=${AMPUSER}))
 same => n,Return()
exten => disabletrunk,1,NoOp(TRUNK: ${OUT_${DIAL_TRUNK}} DISABLED - falling through to next trunk)
exten => bypass,1,NoOp(TRUNK: ${OUT_${DIAL_TRUNK}} BYPASSING because dialout-trunk-predial-hook)
exten => h,1,NoOp(stand-in for Gosub(macro-hangupcall,s,1()))
"""

# macro-dialout-dundi (l.2674-2810): the same shape, its own hook, and the dial through
# macro-dundi-<trunk>, whose DUNDi switch dials with ${DUNDIDIALARGS} as Dial's options (pbx_dundi.c
# dundi_exec), never with DIAL_TRUNK_OPTIONS.
MACRO_DIALOUT_DUNDI = """\
[macro-dialout-dundi]
exten => s,1,Set(DIAL_TRUNK=${ARG1})
 same => n,GosubIf($[$["${ARG3}" != ""] & $["${DB(AMPUSER/${AMPUSER}/pinless)}" != "NOPASSWD"]]?sub-pincheck,s,1(${ARG3}))
 same => n,GotoIf($["x${OUTDISABLE_${DIAL_TRUNK}}" = "xon"]?disabletrunk,1)
 same => n,Set(DIAL_NUMBER=${ARG2})
 same => n,Set(DIAL_TRUNK_OPTIONS=${DIAL_OPTIONS})
 same => n,Set(OUTBOUND_GROUP=OUT_${DIAL_TRUNK})
 same => n,GotoIf($["${OUTMAXCHANS_${DIAL_TRUNK}}foo" = "foo"]?nomax)
 same => n,GotoIf($[ ${GROUP_COUNT(OUT_${DIAL_TRUNK})} >= ${OUTMAXCHANS_${DIAL_TRUNK}} ]?chanfull)
 same => n(nomax),GotoIf($["${INTRACOMPANYROUTE}" = "YES"]?skipoutcid)
 same => n,Set(DIAL_TRUNK_OPTIONS=${IF($["${DB_EXISTS(TRUNK/${DIAL_TRUNK}/dialopts)}" = "1"]?${DB_RESULT}:${TRUNK_OPTIONS})})
 same => n,NoOp(stand-in for Gosub(macro-outbound-callerid,s,1(${DIAL_TRUNK})))
 same => n(skipoutcid),GosubIf($["${PREFIX_TRUNK_${DIAL_TRUNK}}" != ""]?sub-flp-${DIAL_TRUNK},s,1())
 same => n,Set(OUTNUM=${OUTPREFIX_${DIAL_TRUNK}}${DIAL_NUMBER})
 same => n(gocall),Gosub(macro-dialout-dundi-predial-hook,s,1())
 same => n,GotoIf($["${PREDIAL_HOOK_RET}" = "BYPASS"]?bypass,1)
 same => n,Gosub(macro-dundi-${DIAL_TRUNK},s,1(${OUTNUM}))
 same => n,GotoIf($["${ARG4}" = "on"]?continue,1:s-${DIALSTATUS},1)
 same => n(chanfull),NoOp(max channels used up)
exten => s-BUSY,1,NoOp(Dial failed due to trunk reporting BUSY - giving up)
 same => n,Busy(20)
exten => _s-.,1,Set(RC=${IF($[${ISNULL(${HANGUPCAUSE})}]?0:${HANGUPCAUSE})})
 same => n,Goto(${RC},1)
exten => 17,1,Goto(s-BUSY,1)
exten => _X,1,Goto(continue,1)
exten => _X.,1,Goto(continue,1)
exten => continue,1(noreport),NoOp(TRUNK Dial failed due to ${DIALSTATUS} HANGUPCAUSE: ${HANGUPCAUSE} - failing through to other trunks)
 same => n,ExecIf($["${AMPUSER}"!="" ]?Set(CALLERID(number)=${AMPUSER}))
 same => n,Return()
exten => disabletrunk,1,NoOp(TRUNK: ${OUT_${DIAL_TRUNK}} DISABLED - falling through to next trunk)
exten => bypass,1,NoOp(TRUNK: ${OUT_${DIAL_TRUNK}} BYPASSING because dialout-dundi-predial-hook)
exten => h,1,NoOp(stand-in for Gosub(macro-hangupcall,s,1()))

; core_do_get_config l.1808-1811: the switch and s,1. pbx_dundi is not built here: the stand-in
; extension does what the switch's dundi_exec does on a hit, Dial(<tech>/<dest>,,${DUNDIDIALARGS}),
; the peer's answer being our carrier.
[macro-dundi-5]
exten => s,1,Goto(${ARG1},1)
exten => _[+0-9].,1,Dial(Local/${EXTEN}@pstn,,${DUNDIDIALARGS})
"""

# trunk-dial-with-exten (l.2561-2567): FreePBX 17 dials from here, with DIAL_NUMBER as the extension.
TRUNK_DIAL = """\
[trunk-dial-with-exten]
exten => _X,1,Dial(${OUT_${DIAL_TRUNK}}/${OUTNUM}${OUT_${DIAL_TRUNK}_SUFFIX},${TRUNK_RING_TIMER},${DIAL_TRUNK_OPTIONS})
 same => n,Return()
exten => _[+-X].,1,Dial(${OUT_${DIAL_TRUNK}}/${OUTNUM}${OUT_${DIAL_TRUNK}_SUFFIX},${TRUNK_RING_TIMER},${DIAL_TRUNK_OPTIONS})
 same => n,Return()
exten => _*X.,1,Dial(${OUT_${DIAL_TRUNK}}/${OUTNUM}${OUT_${DIAL_TRUNK}_SUFFIX},${TRUNK_RING_TIMER},${DIAL_TRUNK_OPTIONS})
 same => n,Return()
"""

# The trunks (core_do_get_config l.2062-2083: OUT_<id>, OUT_<id>_SUFFIX for PJSIP, OUTPREFIX_<id> from
# the trunk's "Outbound Dial Prefix"). The stand-in trunks are Local channels into the carrier.
TRUNKS = {
    "1": ("Local", "@pstn", ""),  # a SIP trunk that takes national numbers
    "2": ("Local", "@pstn", "+"),  # a SIP trunk that takes E.164: prefix "+"
    "3": ("Local", "@pstn", "w"),  # an analogue line: a pause ("w") before the digits
    "4": ("Local", "@busy-trunk", "+"),  # a busy E.164 trunk
    "5": ("DUNDI/priv", "", ""),  # a DUNDi trunk (OUT_<id> is tech/channelid)
    "6": ("Local", "@pstn", "1010288"),  # a carrier select code the policy lists in outside_line
    "7": ("Local", "@pstn", "1010321"),  # a carrier select code the policy does not know
    "9": ("Local", "@busy-trunk", ""),  # a busy trunk
}

# (route id, name, [(pattern, what the route passes as the number)], [(trunk, macro, continue)])
ROUTES = (
    ("2", "failover", [("_*81.", "${EXTEN:3}")], [("9", "trunk", "on"), ("1", "trunk", "")]),
    ("3", "e164-failover", [("_*82.", "${EXTEN:3}")], [("4", "trunk", "on"), ("1", "trunk", "")]),
    (
        "4",
        "e164",
        [("_*83011.", "${EXTEN:6}"), ("_*831NXXNXXXXXX", "${EXTEN:3}")],
        [("2", "trunk", "")],
    ),
    ("5", "analogue", [("_*84.", "${EXTEN:3}")], [("3", "trunk", "")]),
    ("6", "carrier-select", [("_*85.", "${EXTEN:3}")], [("6", "trunk", "")]),
    ("7", "unknown-carrier", [("_*86.", "${EXTEN:3}")], [("7", "trunk", "")]),
    ("8", "bypass", [("_*87.", "${EXTEN:3}")], [("1", "trunk-bypass", ""), ("1", "trunk", "")]),
    ("9", "dundi", [("_*88.", "${EXTEN:3}")], [("5", "dundi", "")]),
    ("1", "default", [("_X.", "${EXTEN}")], [("1", "trunk", "")]),  # included last, as a catch-all
)


def _route(
    route_id: str, name: str, patterns: list[tuple[str, str]], trunks: list[tuple[str, str, str]]
) -> str:
    """One outrt-N context as core_do_get_config writes it (l.2185-2310), per dial pattern."""
    lines = [f"[outrt-{route_id}] ; {name}"]
    for pattern, number in patterns:
        lines += [
            f"exten => {pattern},1,Gosub(macro-user-callerid,s,1(LIMIT,EXTERNAL))",
            f" same => n,Set(_ROUTEID={route_id})",
            f" same => n,Set(_ROUTENAME={name})",
            " same => n,Set(_CALLERIDNUMINTERNAL=${CALLERID(num)})",
            " same => n,Set(_NODEST=)",
        ]
        lines += [
            f" same => n,Gosub(macro-dialout-{macro},s,1({trunk},{number},,{cont}))"
            for trunk, macro, cont in trunks
        ]
        lines.append(" same => n,Gosub(macro-outisbusy,s,1())")
    return "\n".join(lines) + "\n"


FREEPBX17 = "\n".join(
    [
        f'#include "{HOOKS}"',
        "[globals]\nTRUNK_OPTIONS=T\nTRUNK_RING_TIMER=300",  # core install.php: TRUNK_OPTIONS=T
        *(
            f"OUT_{t}={tech}\nOUT_{t}_SUFFIX={suffix}\nOUTPREFIX_{t}={prefix}"
            for t, (tech, suffix, prefix) in TRUNKS.items()
        ),
        "",
        "[phones] ; stand-in for from-internal\ninclude => outbound-allroutes",
        "[outbound-allroutes]\n" + "\n".join(f"include => outrt-{r[0]}" for r in ROUTES),
        *(_route(*r) for r in ROUTES),
        MACRO_DIALOUT_TRUNK,
        # the same macro with a hook that answers BYPASS, to show what FreePBX 17 does with it
        MACRO_DIALOUT_TRUNK.replace(
            "[macro-dialout-trunk]", "[macro-dialout-trunk-bypass]"
        ).replace("macro-dialout-trunk-predial-hook", "bypass-hook"),
        MACRO_DIALOUT_DUNDI,
        TRUNK_DIAL,
        """\
[bypass-hook]
exten => s,1,UserEvent(BypassHook,Trunk: ${DIAL_TRUNK})
 same => n,Set(PREDIAL_HOOK_RET=BYPASS)
 same => n,Return()

; stand-in for macro-user-callerid (core Dialplan/macroUserCallerid.php): FreePBX reads AMPUSER from
; the device's own setvar (REALCALLERIDNUM); here from the originated call's CALLGATE_EXTENSION
[macro-user-callerid]
exten => s,1,Set(AMPUSER=${CALLGATE_EXTENSION})
 same => n,Return()

; stand-in for sub-pincheck (l.2427-2431: Authenticate(${ARG1})): nobody here knows a route PIN
[sub-pincheck]
exten => s,1,NoOp(Authenticate(${ARG1}): no route password is entered)
 same => n,Hangup()

; l.2317: Playback(all-circuits-busy-now&please-try-call-later), then off the end of the Gosub
[macro-outisbusy]
exten => s,1,UserEvent(AllTrunksFailed)

[busy-trunk]
exten => _[+0-9].,1,UserEvent(BusyTrunk,Number: ${EXTEN})
 same => n,Busy(1)

; the carrier: every string a trunk sends it (TrunkDialled), then the digits it dials (PstnReached)
[pstn]
exten => _[+w0-9].,1,UserEvent(TrunkDialled,Number: ${EXTEN})
 same => n,Goto(carrier,${FILTER(0-9,${EXTEN})},1)
[carrier]
exten => _X.,1,UserEvent(PstnReached,Number: ${EXTEN})
 same => n,Answer()
 same => n,Wait(${IF($["${HOLD}" = ""]?1:${HOLD})})
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
""",
    ]
)
FEATURES = "[featuremap]\natxfer => *2\n"  # FreePBX's default attended-transfer code

POLICY = """\
version: 1
site: {name: fpbx, region: US, timezone: America/New_York, currency: USD, on_store_error: deny,
       outside_line: ["1010288"]}
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


@contextlib.contextmanager
def freepbx_rig(root: Path) -> Iterator[Serving]:
    """Redis, Asterisk running the FreePBX 17 model with the shipped hooks, and `callgate serve`."""

    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {**shipped_configs(ast), "features.conf": FEATURES}

    with serving(root, FREEPBX17, POLICY, configs) as rig:
        yield rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    with freepbx_rig(Path(tmp_path_factory.mktemp("fpbx"))) as rig:
        yield rig


def user_events(watch: Watch, name: str, dialled: str = "") -> list[str]:
    """The `Number` (or `Trunk`) of every `name` user event so far; with `dialled`, only those raised
    by that call's own channel (the one that ran [phones] for it)."""
    return [
        m.get("Number") or m.get("Trunk")
        for m in watch.messages
        if m.event == "UserEvent"
        and m.get("UserEvent") == name
        and m.get("Channel").startswith(f"Local/{dialled}@phones-" if dialled else "")
    ]


def ran(context: str, dialled: str) -> Callable[[Message], bool]:
    """A dialplan step in `context` of the call that dialled `dialled`."""
    return lambda m: (
        m.event == "Newexten"
        and m.get("Context") == context
        and m.get("Channel").startswith(f"Local/{dialled}@phones-")
    )


async def test_allowed_and_refused_calls(rig: Serving, watch: Watch) -> None:
    """The hook allows a domestic call (it reaches the trunk) and refuses Cuba for office."""
    await watch.originate("1001", "2125550101")
    await watch.originate("1001", CUBA)
    assert await watch.wait(reached("2125550101"), 15), rig.gate.tail()
    assert await watch.wait(caller_leg_hangup(CUBA), 15), rig.gate.tail()  # refused: it is over
    assert trunk_numbers(watch) == ["2125550101"], rig.gate.tail()


@pytest.mark.parametrize("dialled", [f"{CUBA}=1005", f"{CUBA} "])
async def test_the_dialled_number_cannot_add_arguments(
    rig: Serving, watch: Watch, dialled: str
) -> None:
    """Finding 1 through the FreePBX hook: a DIAL_NUMBER with '=' or a space never reaches callgate (the
    hook refuses it before Stasis()) and never reaches the trunk."""
    before = len(rig.decisions())
    await watch.originate("1001", dialled)
    assert await watch.wait(caller_leg_hangup(dialled), 15)  # refused: the call is over
    assert trunk_numbers(watch) == []
    assert rig.decisions()[before:] == []


@pytest.mark.parametrize(
    ("dialled", "judged"),
    [(f"{CUBA},ext=1005,call=ATTACK", None), (f"{CUBA},,ext=1005", CUBA)],
)
async def test_a_comma_is_split_by_freepbx_not_by_callgate(
    rig: Serving, watch: Watch, dialled: str, judged: str | None
) -> None:
    """FreePBX's own Gosub(macro-dialout-trunk,s,1(trunk,${EXTEN},PIN,continue)) splits a dialled string
    at its commas: what follows the number becomes the route PIN (which nobody here knows: the call
    ends) or the continue flag. Either way the hook judges only the number, charged to AMPUSER (1001),
    never to a claimed 1005, and the trunk never sees it."""
    before = len(rig.decisions())
    await watch.originate("1001", dialled)
    assert await watch.wait(caller_leg_hangup(dialled), 15)
    assert trunk_numbers(watch) == []
    mine = rig.decisions()[before:]
    if judged is None:
        assert mine == []
    else:
        assert [(d["dialled"], d["extension"], d["verdict"]) for d in mine] == [
            (judged, "1001", "DENY")
        ]


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
    """Finding 2: the route's first trunk is busy and marked continue, FreePBX tries the next one and
    the hook runs again on the same channel: the same decision, counted once. Finding 3: AMPUSER says
    1005 but the channel is no PJSIP endpoint here, so AMPUSER is the identity; a PJSIP phone's
    endpoint would win (tests/test_attacks.py)."""
    before = len(rig.decisions())
    await watch.originate("1005", "*81" + CUBA)
    assert await watch.wait(reached(CUBA), 10), rig.gate.tail()
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)  # both hook runs
    mine = rig.decisions()[before:]
    assert [(d["verdict"], d["replayed"]) for d in mine] == [("ALLOW", "0"), ("ALLOW", "1")]
    assert mine[0]["reservation"] == mine[1]["reservation"]
    assert user_events(watch, "BusyTrunk") == [CUBA]
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        held = [k async for k in client.scan_iter(match="cg:{fpbx}:r:*")]
    finally:
        await client.aclose()
    assert len(held) <= 1


async def test_a_refusal_never_tries_the_next_trunk(rig: Serving, watch: Watch) -> None:
    """A call the gate refuses on the route's first trunk is over: the hook hangs it up, so FreePBX
    never dials that trunk nor goes on to the next (one decision, no trunk reached, no second hook)."""
    before = len(rig.decisions())
    await watch.originate("1001", "*81" + CUBA)
    assert await watch.wait(caller_leg_hangup("*81" + CUBA), 15), rig.gate.tail()
    await watch.caught_up()
    mine = rig.decisions()[before:]
    assert [(d["verdict"], d["reason"]) for d in mine] == [("DENY", "country_not_allowed")]
    assert user_events(watch, "BusyTrunk") == []
    assert user_events(watch, "AllTrunksFailed") == []
    assert trunk_numbers(watch) == []
    hooks = [
        m for m in watch.find(ran("callgate-freepbx", "*81" + CUBA)) if m.get("Priority") == "1"
    ]
    assert len(hooks) == 1


async def test_bypass_ends_the_call_on_freepbx_17(rig: Serving, watch: Watch) -> None:
    """Why the hook never answers PREDIAL_HOOK_RET=BYPASS: in FreePBX 17's macro-dialout-trunk (a
    Gosub) the bypass label has no Return(), so a hook that answers BYPASS ends the call instead of
    skipping to the route's next trunk (on FreePBX 16 a Macro returned at the end of the label). The
    route's second trunk, which would have taken the call, is never tried."""
    dialled = "*872125550102"
    await watch.originate("1001", dialled)
    assert await watch.wait(caller_leg_hangup(dialled), 15)
    await watch.caught_up()
    assert user_events(watch, "BypassHook", dialled) == ["1"]
    bypassed = ran("macro-dialout-trunk-bypass", dialled)
    assert watch.find(lambda m: bypassed(m) and m.get("Extension") == "bypass")
    assert not watch.find(ran("macro-dialout-trunk", dialled))  # the next trunk's Gosub never ran
    assert trunk_numbers(watch) == []


async def test_an_e164_trunk_is_judged_with_its_plus(rig: Serving, watch: Watch) -> None:
    """A trunk whose Outbound Dial Prefix is "+": the route hands it 12125550101 (allowed, the trunk
    receives +12125550101) and, for 011 4722123456, the number 4722123456, which as it stands is a
    valid New York-looking US number that office may call. The trunk would dial +4722123456, Oslo:
    callgate judges what the trunk receives and refuses it (country_not_allowed, NO)."""
    before = len(rig.decisions())
    await watch.originate("1001", "*8312125550101")
    assert await watch.wait(reached("12125550101"), 15), rig.gate.tail()
    await watch.originate("1001", "*830114722123456")
    assert await watch.wait(caller_leg_hangup("*830114722123456"), 15)
    mine = {d["dialled"]: d for d in rig.decisions()[before:]}
    assert mine["+12125550101"]["verdict"] == "ALLOW"
    oslo = mine["+4722123456"]
    assert (oslo["verdict"], oslo["reason"], oslo["country"]) == (
        "DENY",
        "country_not_allowed",
        "NO",
    )
    assert user_events(watch, "TrunkDialled") == ["+12125550101"]


async def test_a_failover_across_prefixes_is_one_call(rig: Serving, watch: Watch) -> None:
    """The busy first trunk takes E.164 ("+"), the second national numbers: the hook judges
    +12125550101 and then 12125550101, the same number, so the second run gets the same
    reservation back (replayed) and the call is counted once."""
    before = len(rig.decisions())
    await watch.originate("1001", "*8212125550103")
    assert await watch.wait(reached("12125550103"), 15), rig.gate.tail()
    await eventually(lambda: len(rig.decisions()) >= before + 2, rig.gate.tail)
    mine = rig.decisions()[before:]
    assert [(d["dialled"], d["verdict"], d["replayed"]) for d in mine] == [
        ("+12125550103", "ALLOW", "0"),
        ("12125550103", "ALLOW", "1"),
    ]
    assert mine[0]["reservation"] == mine[1]["reservation"]
    assert user_events(watch, "BusyTrunk") == ["+12125550103"]


async def test_pauses_and_carrier_codes_in_the_prefix(rig: Serving, watch: Watch) -> None:
    """A prefix's pauses (w) are not judged and still reach the trunk; a carrier select code is judged
    with the number: 1010288 is in the policy's outside_line, so 1010288 011 53... is Cuba (allowed for
    vip, not for office); 1010321 is not, so its calls are unreadable and refused."""
    before = len(rig.decisions())
    await watch.originate("1001", "*842125550104")
    assert await watch.wait(reached("2125550104"), 15), rig.gate.tail()
    await watch.originate("1005", "*85" + CUBA)
    assert await watch.wait(reached("1010288" + CUBA), 15), rig.gate.tail()
    for refused, judged in (
        ("*85" + CUBA, "1010288" + CUBA),
        ("*862125550105", "10103212125550105"),
    ):
        since = len(rig.decisions())
        await watch.originate("1001", refused)
        await rig.decision(judged, since)
    await watch.caught_up()
    mine = [(d["extension"], d["dialled"], d["reason"]) for d in rig.decisions()[before:]]
    assert sorted(mine) == sorted(
        [
            ("1001", "2125550104", "allowed"),
            ("1005", "1010288" + CUBA, "allowed"),
            ("1001", "1010288" + CUBA, "country_not_allowed"),
            ("1001", "10103212125550105", "unparseable_number"),
        ]
    )
    assert sorted(user_events(watch, "TrunkDialled")) == ["1010288" + CUBA, "w2125550104"]


async def test_a_prefix_shadowed_by_a_channel_variable_is_refused(
    rig: Serving, watch: Watch
) -> None:
    """OUTNUM is built from ${OUTPREFIX_<trunk>}, which a channel variable of that name would shadow;
    the hook reads the trunk's prefix from the global and refuses an OUTNUM that is not that prefix
    followed by DIAL_NUMBER, before Stasis(): the trunk never dials a string callgate did not judge."""
    before = len(rig.decisions())
    await watch.originate("1001", "2125550106", variables=",OUTPREFIX_1=011")
    assert await watch.wait(caller_leg_hangup("2125550106"), 15)
    await watch.caught_up()
    assert rig.decisions()[before:] == []
    assert trunk_numbers(watch) == []


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
    assert await watch.wait(reached(number), 10), rig.gate.tail()
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
