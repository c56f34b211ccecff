"""Attacks on the gate's own state, on both stores (in-process and the Lua scripts on a real Redis):
a reused call id (issue 8, finding 2), a forged caller (finding 3), an emergency call (finding 4) and a
script that reaches Redis after the gate gave up on it (finding 9)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callgate.asterisk.gate import Gate, GateSettings
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import CallAttempt
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Store
from callgate.store.redis import RedisStore
from tests.fakes import FakeAudit, FakeChannels
from tests.servers import eventually

NY = ZoneInfo("America/New_York")
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
POLICY = load_policy(
    """\
version: 1
site: {name: bound, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}
emergency: ["911", "933", "112"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "53": "1.10"}}
profiles:
  office:
    destinations: {allow_countries: [US, CU]}
    limits: {concurrent_calls: 2, max_call_duration: 2h, spend: {day: "500.00"}}
extensions:
  - {match: "1001-1099", profile: office}
endpoints: {alice-desk: "1003"}
""",
    "bound.yaml",
)
CUBA = "011532345678"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    s = RedisStore.from_url(redis_url, timeout=5)
    await s.client.flushdb()
    yield s
    await s.aclose()


def gate(store: Store, **settings: float) -> tuple[Gate, FakeChannels]:
    channels, memo = FakeChannels(), Memo(POLICY)
    g = Gate(
        lambda: memo,
        store,
        channels,
        FakeAudit(),
        settings=GateSettings(**settings),  # type: ignore[arg-type]
        clock=lambda: TUE,
    )
    return g, channels


async def test_a_reused_call_id_is_a_new_admission_counted_in_full(store: Store) -> None:
    """Finding 2: four calls to Cuba under the call id of a domestic call are not handed its
    reservation; each is judged at its own rate and counted, so the third meets concurrent_calls."""
    g, _ = gate(store)
    home = await g.decide(CallAttempt("ATTACK", "1001", "2125550123", leg="ch0"))
    assert home.allowed
    assert home.rate is not None
    abroad = [
        await g.decide(CallAttempt("ATTACK", "1001", CUBA, leg=f"ch{i}")) for i in range(1, 5)
    ]
    assert [d.reason for d in abroad] == [
        Reason.ALLOWED,
        Reason.CONCURRENT_CALLS,
        Reason.CONCURRENT_CALLS,
        Reason.CONCURRENT_CALLS,
    ]
    assert not abroad[0].replayed
    assert abroad[0].rate is not None
    assert abroad[0].rate > home.rate
    assert abroad[0].reservation != home.reservation
    # the same channel cannot reuse its own reservation for another number either
    again = await g.decide(CallAttempt("ATTACK", "1001", CUBA, leg="ch0"))
    assert (again.reason, again.replayed) == (Reason.CONCURRENT_CALLS, False)


async def test_a_trunk_failover_gets_the_same_decision_counted_once(store: Store) -> None:
    """The same channel asking again for the same number (FreePBX's second trunk) is the same call."""
    g, _ = gate(store)
    first = await g.decide(CallAttempt("L1", "1001", CUBA, leg="ch1"))
    failover = await g.decide(CallAttempt("L1", "1001", CUBA, leg="ch1"))
    assert first.allowed
    assert failover.allowed
    assert failover.replayed
    assert failover.reservation == first.reservation
    assert failover.allowed_seconds == first.allowed_seconds
    other = await g.decide(CallAttempt("L2", "1001", CUBA, leg="ch2"))
    assert other.allowed
    assert not other.replayed


async def test_parallel_legs_of_one_linkedid_are_each_counted(store: Store) -> None:
    """A ring group or follow-me with several external numbers: one linkedid, one admission per leg."""
    g, _ = gate(store)
    legs = [
        await g.decide(CallAttempt("RG", "1001", f"21255501{i:02d}", leg=f"Local;{i}"))
        for i in range(3)
    ]
    assert [d.reason for d in legs] == [Reason.ALLOWED, Reason.ALLOWED, Reason.CONCURRENT_CALLS]
    assert len({d.reservation for d in legs}) == 3


@pytest.mark.parametrize(
    ("endpoint", "ext", "charged_as"),
    [
        ("1001", "", "1001"),  # a PJSIP phone: its endpoint is its extension
        ("alice-desk", "", "1003"),  # endpoints: maps a name to an extension
        ("1001", "1001", "1001"),  # FreePBX: AMPUSER agrees with the endpoint
        ("1001", "1005", ""),  # the dialplan says one thing, Asterisk another: nobody
        ("", "1005", "1005"),  # a Local channel (follow-me, ring group): the dialplan's ext=
        ("", "", ""),  # nothing known: refused, whatever the caller id said
    ],
)
async def test_the_caller_is_the_endpoint_never_the_caller_id(
    endpoint: str, ext: str, charged_as: str
) -> None:
    """Finding 3: the extension comes from the authenticated endpoint; a mismatch is refused."""
    g, _ = gate(MemoryStore())
    d = await g.decide(CallAttempt("L", ext, "2125550123", leg="ch"), endpoint=endpoint)
    assert d.extension == charged_as
    assert d.allowed is bool(charged_as)
    if not charged_as:
        assert d.reason is Reason.UNKNOWN_EXTENSION


@pytest.mark.parametrize(("dialled", "dial"), [("112", "112"), ("9112", "112"), ("911", "911")])
async def test_an_emergency_call_is_placed_without_a_limit(dialled: str, dial: str) -> None:
    """Finding 4: an emergency call continues with the emergency number to dial, 0 seconds (no L())
    and no TIMEOUT(absolute); even from an extension nobody knows."""
    g, channels = gate(MemoryStore())
    d = await g.handle("ch", CallAttempt("E", "", dialled, leg="ch"))
    assert (d.verdict, d.reason) == (Verdict.ALLOW, Reason.EMERGENCY)
    assert d.variables()["CALLGATE_NUMBER"] == dial
    assert d.variables()["CALLGATE_MAX_SECONDS"] == "0"
    assert channels.actions("ch") == [("continue", "ch", "", "", "")]
    assert "TIMEOUT(absolute)" not in channels.variables("ch")


async def test_a_script_arriving_after_the_deadline_reserves_nothing(
    redis_store: RedisStore,
) -> None:
    """Finding 9: Redis freezes; the gate decides on_store_error at its deadline; the admission script
    still on the wire runs when Redis resumes, after that deadline, and must reserve nothing."""
    g, _ = gate(redis_store, deadline=0.3)
    pid = int((await redis_store.client.info("server"))["process_id"])
    p = prepare(Memo(POLICY), CallAttempt("LATE", "1001", CUBA, leg="ch"), TUE)
    assert p.admission is not None
    on_the_wire = p.admission._replace(deadline_ms=int((time.time() + 0.3) * 1000))
    os.kill(pid, signal.SIGSTOP)
    try:
        script = asyncio.create_task(redis_store.admit(on_the_wire))
        d = await g.decide(CallAttempt("LATE", "1001", CUBA, leg="ch"))
        # Redis stays frozen until the script's deadline has passed (deciding took as long, mostly)
        await eventually(lambda: time.time() * 1000 > on_the_wire.deadline_ms + 10, "the deadline")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (d.verdict, d.reason) == (Verdict.DENY, Reason.STORE_UNAVAILABLE)
    outcome = await script
    assert not outcome.admitted
    keys = [k async for k in redis_store.client.scan_iter(match="cg:{bound}:*")]
    assert not [k for k in keys if ":r:" in k or ":c:" in k or ":s:" in k], keys
    after = await g.decide(CallAttempt("NEXT", "1001", CUBA, leg="ch2"))
    assert after.allowed  # nothing was left holding a slot


async def test_a_caller_gone_before_the_decision_is_applied_holds_nothing(store: Store) -> None:
    """New: the caller hangs up while the gate decides; the call is never dialled, so its reservation
    (a concurrency slot, money) is released at once instead of being charged in full at expiry."""
    g, channels = gate(store)
    channels.gone.add("gone")
    d = await g.handle("gone", CallAttempt("G", "1005", CUBA, leg="gone"))
    assert d.allowed
    assert g.live == {}
    others = [await g.decide(CallAttempt(f"N{i}", "1005", CUBA, leg=f"n{i}")) for i in range(2)]
    assert all(o.allowed for o in others)  # both slots of concurrent_calls: 2 are free


def test_replay_settles_each_call_under_its_reservation_id() -> None:
    """Replay settles a call under the id it was admitted with: the example weekend keeps its three
    concurrent_calls denials (142 when settlements missed their reservations)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "replay", "examples/Master.csv"],
        capture_output=True, text=True, cwd=root, timeout=300, check=True,
    )  # fmt: skip
    assert "allowed 1439 (9 cut short), denied 886" in done.stdout
    by_reason = [line.split() for line in done.stdout.splitlines() if "concurrent_calls  " in line]
    assert by_reason[0][:2] == ["concurrent_calls", "3"]  # denied, by reason: calls, cost
