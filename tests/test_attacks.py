"""The attack catalogue: one row per attack class, against a real Asterisk running the shipped dialplan,
a real `callgate serve` and a real Redis. The assertion is always the same: no forbidden call ever
reaches the trunk (the `[pstn]` stand-in raises `PstnReached` for every call that gets there).

Each row names the finding of issue 8 it proves closed, or says it is a new attack tried here.
docs/security.md lists them with the threat they belong to.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from callgate.asterisk.ami import Message
from tests.asterisk_rig import AsteriskInstance
from tests.e2e import (
    DIALPLAN,
    STAND_INS,
    Serving,
    Watch,
    caller_leg_hangup,
    reached,
    serving,
    shipped_configs,
    trunk_numbers,
)
from tests.servers import eventually, free_port

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SCENARIOS = Path(__file__).parent / "sipp"
SECRET = "attack-secret-1002"
CUBA, LONDON = "011532345678", "011442079460000"

EXTENSIONS = f"""\
[globals]
CALLGATE_TRUNK=Local
CALLGATE_TRUNK_SUFFIX=@pstn

#include "{DIALPLAN / "extensions_callgate.conf"}"

[phones]
include => callgate-outbound

; A dialplan that gives several legs one call id, as a ring group's legs share a linkedid (and as a
; forged call= did before the shipped include was closed): every leg must still be judged and counted.
[shared-id]
exten => _X.,1,Stasis(callgate,${{EXTEN}},ext=1005,call=ATTACK)
 same => n,GotoIf($["${{STASISSTATUS}}" != "SUCCESS"]?no)
 same => n,GotoIf($["${{CALLGATE_VERDICT}}" != "ALLOW"]?no)
 same => n,Dial(Local/${{CALLGATE_NUMBER}}@pstn,,L(${{CALLGATE_MAX_SECONDS}}000))
 same => n(no),Hangup(21)

; A hand-written gate in its simplest documented form, Stasis(callgate,${{EXTEN}}): no filter, and only
; the dialled string passed. Phone 1003 dials from here.
[bare]
exten => _X.,1,Stasis(callgate,${{EXTEN}})
 same => n,GotoIf($["${{STASISSTATUS}}" != "SUCCESS"]?no)
 same => n,GotoIf($["${{CALLGATE_VERDICT}}" != "ALLOW"]?no)
 same => n,Dial(Local/${{CALLGATE_NUMBER}}@pstn,,L(${{CALLGATE_MAX_SECONDS}}000))
 same => n(no),Hangup(21)

{STAND_INS}
; where a phone transfers a call: a colleague who answers and talks for two minutes (a new bridge)
[colleague]
exten => s,1,Dial(Local/s@colleague-phone)
 same => n,Hangup()
[colleague-phone]
exten => s,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()
"""

POLICY = """\
version: 1
site: {name: atk, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny}
emergency: ["911", "933", "112", "999"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "44": "0.60", "53": "1.10"}}
profiles:
  office:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 50, max_call_duration: 1h}
  vip:
    destinations: {allow_countries: [US, GB, CU]}
    limits: {concurrent_calls: 2, max_call_duration: 2h}
  short:
    destinations: {allow_countries: [US]}
    limits: {max_call_duration: 4s}
extensions:
  - {match: "1001-1004", profile: office}
  - {match: "1005", profile: vip}
  - {match: "3000", profile: short}
origins:
  forward: {allow_countries: [US, GB]}   # so that a phone passing as 1005's forward could reach GB
"""

# A phone whose password was stolen: identified by its digest username, with no fixed caller id, so
# Asterisk takes the caller id from the phone's own From: header.
PHONE = f"""\
[1002]
type = endpoint
context = phones
disallow = all
allow = ulaw
auth = 1002
aors = 1002
identify_by = auth_username
transport = transport-udp

[1002]
type = auth
auth_type = userpass
username = 1002
password = {SECRET}

[1002]
type = aor
max_contacts = 1

[1003]
type = endpoint
context = bare
disallow = all
allow = ulaw
auth = 1003
aors = 1003
identify_by = auth_username
transport = transport-udp

[1003]
type = auth
auth_type = userpass
username = 1003
password = {SECRET}

[1003]
type = aor
max_contacts = 1
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {**shipped_configs(ast), "pjsip_custom.conf": PHONE}

    root = Path(tmp_path_factory.mktemp("attacks"))
    with serving(root, EXTENSIONS, POLICY, configs) as rig:
        yield rig


def phone_call(rig: Serving, number: str, *, from_user: str = "1002", phone: str = "1002") -> None:
    """One INVITE from a PJSIP phone (1002, or 1003 in [bare]; digest auth), its From: user chosen by
    the attacker."""
    args = ["sipp", "-sf", str(SCENARIOS / "call-refused.xml"), f"127.0.0.1:{rig.ast.sip_port}"]
    args += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1"]
    args += ["-set", "user", from_user, "-set", "number", number, "-au", phone, "-ap", SECRET]
    args += ["-nostdin", "-timeout", "15s", "-timeout_error"]
    subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )


async def over(rig: Serving, watch: Watch, prefix: str = "") -> None:
    """Every channel whose name starts with ``prefix`` (every channel, by default) is gone, and every
    event Asterisk raised until then has been read: whatever those calls reached, the test knows."""

    def gone() -> bool:
        status, channels = rig.ast.ari("GET", "/channels")
        assert status == 200
        assert isinstance(channels, list)
        return not [c for c in channels if str(c.get("name", "")).startswith(prefix)]

    await eventually(gone, lambda: f"channels {prefix}* gone\n{rig.ast.rx('core show channels')}")
    await watch.caught_up()


def caller_legs(number: str, context: str) -> Callable[[Message], bool]:
    """The Hangup of the channel that ran ``context`` for ``number`` (a Local channel's ;2 half)."""
    return lambda m: (
        m.event == "Hangup"
        and m.get("Channel").startswith(f"Local/{number}@{context}-")
        and m.get("Channel").endswith(";2")
    )


# --- finding 1: the dialled string adds Stasis arguments -------------------------------------------

INJECTIONS = [
    pytest.param(f"{CUBA},ext=1005,call=ATTACK", id="comma-named-args"),
    pytest.param(f"{CUBA},1005,ATTACK", id="comma-positional"),
    pytest.param(f"{CUBA}%2Cext%3D1005", id="percent-encoded-comma"),
    pytest.param(f"{CUBA}=1005", id="equals"),
    pytest.param(f"{CUBA}$%7BEXTEN%7D", id="dialplan-expression"),
    pytest.param(f"{CUBA}%00", id="nul"),
    pytest.param("0115323456%EF%BC%97", id="fullwidth-digit"),
    pytest.param("9" * 600, id="very-long-uri"),
    # issue 10: a phone passing its own call off as a leg it did not dial (a forward of 1005)
    pytest.param(f"{LONDON},origin=forward,ext=1005", id="comma-origin"),
    pytest.param(f"{LONDON},origin=forward", id="comma-origin-alone"),
    pytest.param(f"{LONDON}&origin=forward&ext=1005", id="ampersand-origin"),
    pytest.param(f"{LONDON};origin=forward;ext=1005", id="semicolon-origin"),
    pytest.param(f"{LONDON}%2Corigin%3Dforward%2Cext%3D1005", id="percent-encoded-origin"),
    pytest.param(f"{LONDON},via=2125550100,origin=forward", id="comma-via-origin"),
]


@pytest.mark.parametrize("dialled", INJECTIONS)
async def test_the_dialled_string_cannot_add_arguments(
    rig: Serving, watch: Watch, dialled: str
) -> None:
    """Finding 1 (and new encodings): a phone's request URI with a comma, '=', an escape or junk never
    chooses the extension or the call id, and never reaches the trunk."""
    before = len(rig.decisions())
    await asyncio.to_thread(phone_call, rig, dialled, from_user="1002")
    await over(rig, watch, "PJSIP/1002-")
    assert trunk_numbers(watch) == []
    for d in rig.decisions()[before:]:
        assert d["verdict"] == "DENY", d
        assert d["extension"] in ("1002", ""), d
        assert "ATTACK" not in d["call_id"], d


@pytest.mark.parametrize(
    "dialled",
    [f"{LONDON},origin=forward,ext=1005", f"{LONDON},ext=1005,origin=forward,call=ATTACK"],
)
async def test_a_phone_cannot_pass_its_call_off_as_a_forward(
    rig: Serving, watch: Watch, dialled: str
) -> None:
    """Issue 10, new: phone 1003 (office: US only) behind a hand-written Stasis(callgate,${EXTEN}),
    which neither filters nor passes every name, dials London with ",origin=forward,ext=1005" (1005
    may call London, and so may a forward). A leg that no phone dialled is charged to its ext= whatever
    the endpoint, so this would be 1005's forward: callgate sees that the channel's own extension holds
    a comma and treats the arguments as forged: the call stays the phone's own, unreadable, and London
    is never reached."""
    before = len(rig.decisions())
    await asyncio.to_thread(phone_call, rig, dialled, phone="1003", from_user="1003")
    await over(rig, watch, "PJSIP/1003-")
    assert trunk_numbers(watch) == []
    mine = rig.decisions()[before:]
    # the phone's own call (its endpoint), its arguments forged: unreadable
    assert [(d["extension"], d["origin"], d["reason"]) for d in mine] == [
        ("1003", "dialled", "unparseable_number")
    ]
    assert mine[0]["endpoint"] == "1003"


async def test_the_bare_gate_still_charges_the_phone(rig: Serving, watch: Watch) -> None:
    """The control for the row above: the same phone dialling London plainly is itself (office: US
    only) and is refused for the country."""
    before = len(rig.decisions())
    await asyncio.to_thread(phone_call, rig, LONDON, phone="1003", from_user="1005")
    await over(rig, watch, "PJSIP/1003-")
    assert trunk_numbers(watch) == []
    mine = rig.decisions()[before:]
    assert [(d["extension"], d["origin"], d["reason"]) for d in mine] == [
        ("1003", "dialled", "country_not_allowed")
    ]


# --- finding 3: the caller says it is somebody else ------------------------------------------------


async def test_a_phone_cannot_claim_another_extension_by_its_from_header(
    rig: Serving, watch: Watch
) -> None:
    """Finding 3: phone 1002 (office: US only) sends From: 1005 (vip: Cuba allowed); it is judged as
    the endpoint that authenticated, 1002, and Cuba is refused."""
    before = len(rig.decisions())
    await asyncio.to_thread(phone_call, rig, CUBA, from_user="1005")
    await over(rig, watch, "PJSIP/1002-")
    assert trunk_numbers(watch) == []
    mine = rig.decisions()[before:]
    assert [(d["extension"], d["reason"]) for d in mine] == [("1002", "country_not_allowed")]


async def test_a_local_channel_with_only_a_caller_id_is_nobody(rig: Serving, watch: Watch) -> None:
    """Finding 3: no endpoint and no CALLGATE_EXTENSION: the caller id 1005 is not trusted."""
    before = len(rig.decisions())
    await watch.originate("", CUBA, caller_id="1005")
    decided = await rig.decision(CUBA, before)
    assert await watch.wait(caller_leg_hangup(CUBA), 15)  # refused: the call is over
    assert trunk_numbers(watch) == []
    assert decided["reason"] == "unknown_extension"


# --- finding 2: one call id, many calls --------------------------------------------------------------


async def test_a_shared_call_id_does_not_share_a_reservation(rig: Serving, watch: Watch) -> None:
    """Finding 2: a domestic call under call id ATTACK, then four calls to Cuba under the same id:
    each is judged and counted (concurrent_calls: 2), at Cuba's rate, not handed the domestic one."""

    async def call(number: str) -> None:
        reply = await watch.conn.send(
            "Originate",
            Channel=f"Local/{number}@shared-id/n",
            Context="park",
            Exten="s",
            Priority="1",
            Variable="__HOLD=20",
            Async="true",
        )
        assert reply.get("Response") == "Success", reply.headers

    await call("2125550150")
    domestic = await watch.wait(lambda m: m.get("Number") == "12125550150", 10)
    assert domestic is not None, rig.gate.tail() + rig.ast.log_tail()
    for _ in range(4):
        await call(CUBA)

    def all_judged() -> bool:  # each of the four reached the trunk (held there 20 s) or hung up
        ends = len(watch.find(caller_legs(CUBA, "shared-id")))
        return ends + trunk_numbers(watch).count(CUBA[3:]) >= 4

    await eventually(all_judged, rig.gate.tail)
    assert trunk_numbers(watch).count(CUBA[3:]) == 1, trunk_numbers(watch)
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        rates = set()
        async for key in client.scan_iter(match="cg:{atk}:r:ATTACK:*"):
            rates.add(await client.hget(key, "rate"))
    finally:
        await client.aclose()
    assert rates == {"10000", "1100000"}  # 0.01/min and Cuba's 1.10/min, in micro-units
    rig.ast.rx("channel request hangup all")
    await over(rig, watch)


# --- finding 4: emergency numbers --------------------------------------------------------------------


@pytest.mark.parametrize(("dialled", "trunk"), [("112", "112"), ("999", "999"), ("9112", "112")])
async def test_every_emergency_number_of_the_policy_is_placed(
    rig: Serving, watch: Watch, dialled: str, trunk: str
) -> None:
    """Finding 4: 112 and 999 are on the policy's list but only 911/933/112 in the dialplan; each is
    placed, without a length limit, from an extension nobody knows."""
    await watch.originate("7777", dialled, hold=6)
    assert await watch.wait(
        lambda m: m.get("UserEvent") == "PstnReached" and m.get("Number") == trunk, 10
    )

    def answered(m: Message) -> bool:  # the call's record, written once the far end hung up
        return (
            m.event == "Cdr"
            and m.get("Destination") in (dialled, trunk)
            and m.get("Disposition") == "ANSWERED"
        )

    cdr = await watch.wait(answered, 30)
    assert cdr is not None
    # the far end's 6 s: an L(0) or a 0-second TIMEOUT would have cut it at once
    assert int(cdr.get("BillableSeconds")) >= 5, cdr.headers


async def test_emergency_numbers_are_placed_while_callgate_is_down(
    rig: Serving, watch: Watch
) -> None:
    """Finding 4: the policy's list lives in AstDB, so 999 (in no dialplan) is placed with callgate
    stopped; a normal call is refused (fail closed)."""
    rig.gate.stop()
    try:
        await watch.originate("1001", "999")
        await watch.originate("1001", "2125550160")
        assert await watch.wait(reached("999"), 15)
        assert await watch.wait(caller_leg_hangup("2125550160"), 15)  # refused: it is over
        assert "999" in trunk_numbers(watch)
        assert "2125550160" not in trunk_numbers(watch)
    finally:
        rig.start_gate()


# --- finding 5: transfers ----------------------------------------------------------------------------


def _hangup_of(prefix: str) -> Callable[[Message], bool]:
    return lambda m: m.event == "Hangup" and m.get("Channel").startswith(prefix)


@pytest.mark.parametrize("how", ["blind", "bridge"])
async def test_a_transferred_trunk_call_is_still_cut_at_its_allowed_seconds(
    rig: Serving, watch: Watch, how: str
) -> None:
    """Finding 5: extension 3000 may talk 4 s; once the carrier answers, the trunk call is moved on:
    blind-transferred by the phone to a colleague who talks for 120 s (a new bridge), or pulled into
    another bridge with AMI Bridge (as an attended transfer does). The trunk channel is hung up at 4 s
    after its answer wherever it went, not 120 s later. And the phone that hung up after the transfer
    does not free the call's concurrency slot and money: the leg settles when the trunk call ends,
    charged for all of it."""
    number = f"21255501{72 if how == 'blind' else 73}"
    before = len(rig.decisions())
    await watch.originate("3000", number, hold=60)
    rid = (await rig.decision(number, before))["reservation"]
    answered = await watch.wait(lambda m: m.get("Number") == "1" + number, 10)
    assert answered is not None
    phone = await watch.wait(
        lambda m: m.event == "DialEnd" and m.get("Channel").startswith(f"Local/{number}@phones-"), 5
    )
    assert phone is not None
    if how == "blind":
        reply = await watch.conn.send(
            "BlindTransfer", Channel=phone.get("Channel"), Context="colleague", Exten="s"
        )
    else:
        colleague = await watch.conn.send(
            "Originate",
            Channel="Local/s@colleague-phone/n",
            Context="park",
            Exten="s",
            Priority="1",
            Async="true",
        )
        assert colleague.get("Response") == "Success", colleague.headers
        parked = await watch.wait(
            lambda m: (
                m.event == "Newexten"
                and m.get("Context") == "park"
                and m.get("Channel").startswith("Local/s@colleague-phone-")
            ),
            5,
        )
        assert parked is not None
        reply = await watch.conn.send(
            "Bridge", Channel1=phone.get("DestChannel"), Channel2=parked.get("Channel")
        )
    assert reply.get("Response") == "Success", reply.headers
    phone_record = await watch.wait(
        lambda m: m.event == "Cdr" and m.get("CallgateCall") == rid and m.get("Channel") != "", 5
    )
    assert phone_record is not None
    # A window that must pass, not an event: the spend feed's quiet second after the phone's record
    # (a feed that settled then would have released the reservation by now).
    await asyncio.sleep(1.5)
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        if not watch.find(_hangup_of(f"Local/+1{number}@pstn-")):  # the trunk call is still up
            assert await client.exists(f"cg:{{atk}}:r:{rid}"), "released while the call goes on"
        gone = await watch.wait(_hangup_of(f"Local/+1{number}@pstn-"), 15)
        assert gone is not None, "the transferred trunk call was not hung up\n" + rig.ast.log_tail(
            30
        )
        done = await eventually(lambda: client.get(f"cg:{{atk}}:done:{rid}"), rig.gate.tail)
    finally:
        await client.aclose()
    # charged for the trunk call's whole 4 s, not 0; cut then, not at the carrier's 60 s
    assert 3 <= int(str(done).split(":")[2]) <= 10


async def test_a_transfer_to_an_external_number_is_itself_gated(rig: Serving, watch: Watch) -> None:
    """Finding 5: the phone blind-transfers the trunk call to Cuba in its own context; the trunk
    channel enters callgate as nobody's call and is refused; Cuba is never reached."""
    number = "2125550171"
    before = len(rig.decisions())
    await watch.originate("1001", number, hold=30)
    assert await watch.wait(lambda m: m.get("Number") == "1" + number, 10)
    phone = await watch.wait(
        lambda m: m.event == "DialEnd" and m.get("Channel").startswith(f"Local/{number}@phones-"), 5
    )
    assert phone is not None
    reply = await watch.conn.send(
        "BlindTransfer", Channel=phone.get("Channel"), Context="phones", Exten=CUBA
    )
    assert reply.get("Response") == "Success", reply.headers
    await rig.decision(CUBA, before, 30)
    await over(rig, watch, f"Local/+1{number}@pstn-")  # the transferred trunk call was hung up
    assert CUBA[3:] not in trunk_numbers(watch)
    refused = [d for d in rig.decisions()[before:] if d["dialled"] == CUBA]
    assert refused, "the transfer never reached callgate"
    assert all(d["verdict"] == "DENY" for d in refused), refused
    rig.ast.rx("channel request hangup all")


# --- new attacks ---------------------------------------------------------------------------------------


async def test_preset_verdict_variables_do_not_open_the_gate(rig: Serving, watch: Watch) -> None:
    """New: a call that arrives with CALLGATE_VERDICT=ALLOW and a number already set (from an inherited
    variable) is still refused when callgate refuses it, and when callgate is down."""
    preset = ",CALLGATE_VERDICT=ALLOW,CALLGATE_NUMBER=+532345678,CALLGATE_MAX_SECONDS=7200"
    before = len(rig.decisions())
    await watch.originate("1001", CUBA, variables=preset)
    # decided before callgate stops: a call that enters Stasis while it stops waits there for the
    # next callgate (Router.drain), which this test starts only at its end
    assert (await rig.decision(CUBA, before))["verdict"] == "DENY"
    rig.gate.stop()
    try:
        await watch.originate("1001", CUBA, variables=preset)
        await eventually(lambda: len(watch.find(caller_leg_hangup(CUBA))) >= 2, rig.gate.tail)
    finally:
        rig.start_gate()
    assert CUBA[3:] not in trunk_numbers(watch)
    assert "532345678" not in trunk_numbers(watch)


@pytest.mark.parametrize("ext", ["١٠٠٥", "１００５", "1۰۰5", "߁߀߀߅", "1005 ", "1005\u200b"])
async def test_extensions_in_other_scripts_are_nobody(rig: Serving, watch: Watch, ext: str) -> None:
    """Finding 7: digits of other scripts, a trailing space or a zero-width space are not 1005."""
    before = len(rig.decisions())
    await watch.originate(ext, LONDON)
    decided = await rig.decision(LONDON, before)
    assert await watch.wait(caller_leg_hangup(LONDON), 15)  # refused: the call is over
    assert trunk_numbers(watch) == []
    assert decided["reason"] == "unknown_extension"


async def test_a_caller_hanging_up_during_the_decision_leaves_nothing_reserved(
    rig: Serving, watch: Watch
) -> None:
    """New: the caller hangs up while callgate decides; nothing stays reserved or stranded."""
    before = len(rig.decisions())
    for i in range(10):
        await watch.originate("1004", f"21255502{i:02d}")
        rig.ast.rx("channel request hangup all")
    await over(rig, watch, "Local/21255502")
    entered = {  # the calls that got as far as Stasis(): callgate has them to decide, then release
        m.get("Exten")
        for m in watch.find(lambda m: m.event == "Newexten" and m.get("Application") == "Stasis")
        if m.get("Channel").startswith("Local/21255502")
    }
    await eventually(
        lambda: entered <= {d["dialled"] for d in rig.decisions()[before:]}, rig.gate.tail
    )
    assert not [c for c in rig.ast.rx("core show channels concise").splitlines() if "Stasis" in c]
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    reached = [n for n in trunk_numbers(watch) if n.startswith("21255502")]
    live: list[int] = []

    async def released() -> bool:  # what was admitted is settled once its records are in
        left = [k async for k in client.scan_iter(match="cg:{atk}:c:ext:1004")]
        live[:] = [await client.zcard(k) for k in left]
        return sum(live) <= len(reached)

    try:
        await eventually(released, lambda: f"slots held: {live}, reached: {reached}")
    finally:
        await client.aclose()
