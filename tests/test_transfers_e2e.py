"""Transfers and a phone's own forward on plain Asterisk, for real: a PJSIP phone (SIPp) in a call sends a SIP REFER, Asterisk's
res_pjsip_refer performs the blind transfer, and the transferred party's channel enters the shipped
`callgate-outbound` with nothing set by the admin. The dialplan reads what Asterisk wrote on that
channel (BLINDTRANSFER: the transferring channel's name), so the leg is origin=transfer, charged to the
phone that transferred, judged by its profile and the policy's transfer block; and the far end's own
REFER (the carrier's channel transferring) is charged to nobody. A phone that forwards its calls
itself (it answers "302 Moved") is the same story with FORWARDERNAME: the forward is charged to it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    wait_until,
)
from tests.servers import free_port

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SCENARIOS = Path(__file__).parent / "sipp"
PHONE_SECRET, CARRIER_SECRET = "refer-secret-1001", "refer-secret-carrier"
HELD, DID, FORWARDING_DID = "600", "2125550100", "2125550102"
FORWARDING_PORT = free_port()  # phone 1002's SIP port: a SIPp that answers 302
ANSWERING_PORT, ANSWERED_DID = free_port(), "2125550103"  # phone 1003: a SIPp that answers
MOBILE, PREMIUM, LONDON = "2125550142", "19005550199", "011442079460000"

# [phones] is the phones' context, as docs/install.md writes it (no TRANSFER_CONTEXT: Asterisk sends
# the transferred party to the transferring endpoint's own context). 600 is somebody who answers and
# stays on the line, through a Local channel: the party 1001 transfers. The carrier's DID rings 600 too,
# with the trunk's transfers sent where the phones' are (FreePBX does the same: from-internal-xfer);
# left to the trunk endpoint's own context, Asterisk would find no such number there and refuse it.
EXTENSIONS = f"""\
{SHIPPED}
[phones]
exten => {HELD},1,Dial(Local/hold@held/n)
 same => n,Hangup()
include => callgate-outbound

[held]
exten => hold,1,Answer()
 same => n,Wait(30)
 same => n,Hangup()

[from-trunk]
exten => {FORWARDING_DID},1,Set(FORWARD_CONTEXT=phones)  ; where a phone's 302 sends the call on
 same => n,Dial(PJSIP/1002,10)
 same => n,Hangup()
exten => {ANSWERED_DID},1,Set(TRANSFER_CONTEXT=phones)  ; the careless admin again
 same => n,Dial(PJSIP/1003,10)
 same => n,Hangup()
exten => {DID},1,Set(TRANSFER_CONTEXT=phones)   ; the careless admin: the far end's REFER reaches it all
 same => n,Dial(Local/hold@held/n)
 same => n,Hangup()

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
  - {match: "1002", profile: wide}
  - {match: "1003", profile: wide}
# transfer is not named in origins: the default, US only and no premium-type numbers
"""


def endpoint(name: str, context: str, secret: str, extra: str = "") -> str:
    return f"""\
[{name}]
type = endpoint
context = {context}{extra}
disallow = all
allow = ulaw
auth = {name}
aors = {name}
transport = transport-udp
direct_media = no
send_connected_line = no

[{name}]
type = auth
auth_type = userpass
username = {name}
password = {secret}

[{name}]
type = aor
max_contacts = 1
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: docker/build-asterisk.sh installs Debian's sip-tester")

    def configs(ast: AsteriskInstance) -> dict[str, str]:
        # 1001's own calls are held 10 s by the stand-in carrier: long enough to transfer them
        pjsip = endpoint("1001", "phones", PHONE_SECRET, "\nset_var = __HOLD=10")
        pjsip += endpoint("carrier", "from-trunk", CARRIER_SECRET)
        pjsip += endpoint("1002", "phones", "unused-1002")
        pjsip += f"contact = sip:1002@127.0.0.1:{FORWARDING_PORT}\n"  # the aor's static contact
        pjsip += endpoint("1003", "phones", "unused-1003")
        pjsip += f"contact = sip:1003@127.0.0.1:{ANSWERING_PORT}\n"
        return {**shipped_configs(ast), "pjsip_custom.conf": pjsip}

    root = Path(tmp_path_factory.mktemp("transfers"))
    with serving(root, EXTENSIONS, POLICY, configs) as rig:
        yield rig


def refer(rig: Serving, user: str, secret: str, number: str, target: str) -> str:
    """``user`` calls ``number``, is answered, and transfers the call to ``target`` with a REFER.
    Returns "" when the phone's side went as a blind transfer goes, else what went wrong."""
    args = ["sipp", "-sf", str(SCENARIOS / "call-refer.xml"), f"127.0.0.1:{rig.ast.sip_port}"]
    args += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1"]
    args += ["-set", "user", user, "-set", "number", number, "-set", "target", target]
    args += ["-au", user, "-ap", secret, "-nostdin", "-timeout", "20s", "-timeout_error"]
    args += ["-trace_err", "-trace_msg"]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )
    if done.returncode == 0:
        return ""
    logs = sorted(rig.ast.workdir.glob("*_messages.log")) + sorted(
        rig.ast.workdir.glob("*_errors.log")
    )
    text = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs[-2:])
    return f"sipp exit {done.returncode}\n{done.stderr[-2000:]}\n{text}\n{rig.gate.tail()}"


async def phone_transfer(rig: Serving, target: str) -> dict[str, str]:
    """Phone 1001 transfers the party it talks to (600) to ``target``; the gate's decision on it."""
    before = len(rig.decisions())
    failed = await asyncio.to_thread(refer, rig, "1001", PHONE_SECRET, HELD, target)
    assert not failed, failed
    return await rig.decision(target, before)


async def test_a_phone_transfers_its_call_to_a_mobile_charged_to_the_phone_and_limited(
    rig: Serving, watch: Watch
) -> None:
    """A real REFER from 1001: the transferred party's Local channel (no endpoint, no extension of its
    own) reaches the gate as origin=transfer by 1001's channel, charged to 1001, and is cut at 1001's
    4 s limit although the far end would talk for 30."""
    decided = await phone_transfer(rig, MOBILE)
    assert {k: decided[k] for k in ("verdict", "extension", "origin", "allowed_seconds")} == {
        "verdict": "ALLOW",
        "extension": "1001",
        "origin": "transfer",
        "allowed_seconds": "4",
    }
    assert decided["by"].startswith("PJSIP/1001-"), decided
    assert decided["endpoint"] == "", decided  # the transferred party's Local leg: no endpoint
    assert await watch.wait(reached("+1" + MOBILE), 10)
    cdr = await watch.wait(
        lambda m: m.event == "Cdr" and m.get("CallgateCall") == decided["reservation"], 20
    )
    assert cdr is not None
    assert int(cdr.get("BillableSeconds")) <= 5, cdr.headers


@pytest.mark.parametrize("target", [LONDON, PREMIUM])
async def test_a_phone_cannot_transfer_its_call_where_the_transfer_block_forbids(
    rig: Serving, watch: Watch, target: str
) -> None:
    """1001 may dial London and premium numbers itself; a transfer may not (the default block: US
    only, no premium types). The REFER is accepted, the transferred leg refused with
    transfer_not_allowed, and nothing reaches the trunk."""
    decided = await phone_transfer(rig, target)
    assert (decided["verdict"], decided["reason"], decided["rule"]) == (
        "DENY",
        "transfer_not_allowed",
        "origin",
    )
    assert (decided["extension"], decided["origin"]) == ("1001", "transfer")
    await watch.caught_up()
    assert trunk_numbers(watch) == []


async def test_the_far_ends_transfer_of_an_inbound_call_is_charged_to_nobody(
    rig: Serving, watch: Watch
) -> None:
    """The attack from the fraud reports: a caller on the inbound trunk (the carrier's endpoint, which
    may REFER) transfers the call he is in to a number of his choosing. The transferer is the
    carrier's channel, no extension; the transferred party is a Local leg, no extension either: the
    leg is charged to nobody and refused, even to a US mobile, and nothing reaches the trunk."""
    before = len(rig.decisions())
    failed = await asyncio.to_thread(refer, rig, "carrier", CARRIER_SECRET, DID, MOBILE)
    assert not failed, failed
    decided = await rig.decision(MOBILE, before)
    assert (decided["verdict"], decided["reason"], decided["origin"]) == (
        "DENY",
        "unknown_extension",
        "transfer",
    )
    assert decided["by"].startswith("PJSIP/carrier-"), decided
    await watch.caught_up()
    assert trunk_numbers(watch) == []


def forwarding_phone(rig: Serving, target: str) -> subprocess.CompletedProcess[str]:
    """Phone 1002 answers one INVITE with 302 to ``target``."""
    args = ["sipp", "-sf", str(SCENARIOS / "answer-302.xml"), "-i", "127.0.0.1"]
    args += ["-p", str(FORWARDING_PORT), "-mp", str(free_port()), "-m", "1", "-nostdin"]
    args += ["-set", "target", target, "-timeout", "20s", "-timeout_error", "-trace_err"]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )


async def inbound(watch: Watch, did: str) -> None:
    """An inbound call to ``did`` from the trunk's context (a Local channel: no endpoint)."""
    await watch.place(
        f"Local/{did}@from-trunk/n", caller_id='"Outside" <4155550199>', variables="__HOLD=30"
    )


def answering_phone(rig: Serving) -> subprocess.CompletedProcess[str]:
    """Phone 1003 answers one INVITE and stays on the line until hung up."""
    args = ["sipp", "-sf", str(SCENARIOS / "answer-hold.xml"), "-i", "127.0.0.1"]
    args += ["-p", str(ANSWERING_PORT), "-mp", str(free_port()), "-m", "1", "-nostdin"]
    args += ["-timeout", "20s", "-timeout_error", "-trace_err"]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )


async def test_an_outside_caller_cannot_transfer_the_phone_that_answered_him(
    rig: Serving, watch: Watch
) -> None:
    """The attack review found: the carrier's caller reaches 1003, who answers, then transfers 1003's
    channel (a REFER from the trunk) to a number of his choosing. The transferer is the carrier's
    channel: the leg is nobody's and refused, never charged to 1003 (who may call that mobile)."""
    phone = asyncio.create_task(asyncio.to_thread(answering_phone, rig))
    await asyncio.sleep(0.5)  # SIPp listening
    before = len(rig.decisions())
    failed = await asyncio.to_thread(refer, rig, "carrier", CARRIER_SECRET, ANSWERED_DID, MOBILE)
    assert not failed, failed
    decided = await rig.decision(MOBILE, before)
    assert (decided["verdict"], decided["reason"], decided["extension"]) == (
        "DENY",
        "unknown_extension",
        "",
    )
    assert decided["endpoint"] == "1003", decided  # it ran on 1003's own channel
    assert decided["by"].startswith("PJSIP/carrier-"), decided
    done = await phone
    assert done.returncode == 0, done.stderr[-2000:]
    await watch.caught_up()
    assert trunk_numbers(watch) == []


@pytest.mark.parametrize(
    ("target", "verdict", "reason"),
    [(MOBILE, "ALLOW", "allowed"), (LONDON, "DENY", "forward_not_allowed")],
)
async def test_a_phones_own_forward_is_charged_to_the_phone(
    rig: Serving, watch: Watch, target: str, verdict: str, reason: str
) -> None:
    """An inbound call rings 1002, which forwards it itself (302 to ``target``). Asterisk's Dial()
    calls the target through a Local channel with FORWARDERNAME = 1002's channel: the leg is 1002's
    forward, judged by the forward block (London, which 1002 may dial, refused), never nobody's."""
    phone = asyncio.create_task(asyncio.to_thread(forwarding_phone, rig, target))
    await asyncio.sleep(0.5)  # SIPp listening
    before = len(rig.decisions())
    await inbound(watch, FORWARDING_DID)
    decided = await rig.decision(target, before)
    done = await phone
    assert done.returncode == 0, done.stderr[-2000:]
    assert (decided["verdict"], decided["reason"], decided["extension"]) == (
        verdict,
        reason,
        "1002",
    )
    assert decided["origin"] == "forward"
    assert decided["by"].startswith("PJSIP/1002-"), decided
    if verdict == "ALLOW":
        assert await watch.wait(reached("+1" + target), 10)
    else:
        await watch.caught_up()
        assert trunk_numbers(watch) == []


async def test_a_phone_cannot_transfer_its_own_outside_call_abroad(
    rig: Serving, watch: Watch
) -> None:
    """1001 calls a US mobile (its own call, allowed) and then transfers that outside party to London:
    the carrier's leg is the transferred party, sent back into the gate as 1001's transfer, and
    refused by the transfer block although 1001 may dial London itself; nothing reaches London."""
    before = len(rig.decisions())
    failed = await asyncio.to_thread(refer, rig, "1001", PHONE_SECRET, MOBILE, LONDON)
    assert not failed, failed
    own, moved = await rig.decision(MOBILE, before), await rig.decision(LONDON, before)
    assert (own["verdict"], own["origin"], own["extension"]) == ("ALLOW", "dialled", "1001")
    assert (moved["reason"], moved["origin"], moved["extension"]) == (
        "transfer_not_allowed",
        "transfer",
        "1001",
    )
    assert moved["by"].startswith("PJSIP/1001-"), moved
    await watch.caught_up()
    assert trunk_numbers(watch) == ["1" + MOBILE]  # the stand-in reports it without the +


def test_replay_of_this_rigs_cdr_judges_each_leg_as_the_gate_did(
    rig: Serving, tmp_path: Path
) -> None:
    """The Master.csv the calls above wrote, replayed through the same policy: every leg the gate
    decided (matched by its channel's uniqueid) is attributed and judged the same way offline: the
    phone's transfers (the ;1 half its call reached, or its own outside party, running dialplan
    later), the far end's transfer, the phone's 302 forward. (Runs last: it reads the module's CDRs.)"""
    decided = {d["channel"]: d for d in rig.decisions()}
    assert {d["origin"] for d in decided.values()} >= {"transfer", "forward", "dialled"}
    written = lambda: all(uid in rig.ast.cdr_csv.read_text() for uid in decided)  # noqa: E731
    assert wait_until(written, 20), "cdr_csv wrote no row for some decided leg"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    callgate = Path(sys.executable).parent / "callgate"
    args = [str(callgate), "replay", "--policy", str(policy), "--format", "jsonl"]
    args += ["--context", "phones", str(rig.ast.cdr_csv)]  # [pstn] is the stand-in carrier's own
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    replayed = {row["uniqueid"]: row for row in map(json.loads, done.stdout.splitlines())}
    live = {uid: (d["origin"], d["extension"], d["verdict"].lower()) for uid, d in decided.items()}
    offline = {
        uid: (r["origin"], r["extension"] or "", r["verdict"])
        for uid, r in replayed.items()
        if uid in live
    }
    assert offline == live, done.stderr
