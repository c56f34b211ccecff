"""The Stasis layer and the spend feed on events recorded from the real test Asterisk.

The fixtures (tests/fixtures/transcripts/*.json) are written by ``python -m tests.record_transcripts``:
one call per file, the ARI frames of the Stasis app and the AMI events of the shipped ``callgate`` AMI
user, in the order they arrived, each with its arrival time. Here they are played back into callgate's
own ``Router`` (a ``Gate`` on a ``MemoryStore``, fake channel control) and ``SpendFeed``, time-scaled,
so the feed's quiet second and the gaps between events keep their real proportions. No Redis, no
Asterisk.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import itertools
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest

from callgate.asterisk.ami import TERMINATOR, Message, parse_message
from callgate.asterisk.ari import AriClient
from callgate.asterisk.gate import Gate
from callgate.asterisk.spend import CALL_HEADER, QUIET, TRUNK_EVENT, SpendFeed
from callgate.asterisk.stasis import Router, read_start
from callgate.core.decision import RESERVATION_VARIABLE
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.settingtable import SettleFrom
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Settlement, SettleStatus
from tests import record_transcripts
from tests.e2e import CALLGATE_AMI_SECRET, POLICY, TEST_AMI_SECRET
from tests.fakes import FakeAudit, FakeChannels

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
SCALE = 0.02  # a recorded second lasts 20 ms here (the feed's quiet second too)
RIG_SECRETS = ("callgate-test", CALLGATE_AMI_SECRET, TEST_AMI_SECRET)  # asterisk_rig, e2e


class Event(NamedTuple):
    at: float
    source: str  # "ari" | "ami"
    ari: Mapping[str, Any]
    ami: Message


@dataclass(frozen=True, slots=True)
class Transcript:
    name: str
    header: Mapping[str, Any]
    events: tuple[Event, ...]

    def ami(self, event: str, **headers: str) -> list[tuple[int, Event]]:
        """(index, event) of the AMI events named ``event`` whose headers have these values."""
        return [
            (i, e)
            for i, e in enumerate(self.events)
            if e.source == "ami"
            and e.ami.event == event
            and all(e.ami.get(k) == v for k, v in headers.items())
        ]

    def ari(self, kind: str) -> list[Mapping[str, Any]]:
        return [e.ari for e in self.events if e.source == "ari" and e.ari.get("type") == kind]


def load(name: str) -> Transcript:
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    events = []
    for entry in data["events"]:
        if entry["source"] == "ami":
            block = ("\r\n".join(entry["lines"])).encode() + TERMINATOR
            events.append(Event(entry["at"], "ami", {}, parse_message(block)))
        else:
            events.append(Event(entry["at"], "ari", entry["event"], Message({}, {})))
    return Transcript(name, data["header"], tuple(events))


# What the recorder drove (tests/record_transcripts.py SCENARIOS): who dialled what, and the verdict.
CALLS = {
    "allowed": ("1001", "2125550123", "ALLOW", "allowed"),
    "denied": ("1001", "011532345678", "DENY", "country_not_allowed"),
    "unanswered": ("1002", "2125550199", "ALLOW", "allowed"),
    "transfer": ("3000", "2125550172", "ALLOW", "allowed"),
}


# -- the fixtures themselves ------------------------------------------------------------------------


def test_there_is_one_fixture_per_recorded_scenario() -> None:
    """Every scenario of the recorder has its file, and every file comes from a scenario."""
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(record_transcripts.SCENARIOS)
    assert sorted(CALLS) == sorted(record_transcripts.SCENARIOS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_fixture_is_well_formed(name: str) -> None:
    """A header (Asterisk version, date, how to regenerate, the steps, the gate's decision), then
    events in arrival order, each an ARI frame or an AMI block; no password of the rig anywhere."""
    text = (FIXTURES / f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert set(data) == {"header", "events"}
    header = data["header"]
    assert header["scenario"] == name
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", header["asterisk"])
    assert datetime.fromisoformat(header["recorded"]).tzinfo is not None
    assert record_transcripts.REGENERATE in header["regenerate"]
    assert header["steps"]
    assert isinstance(header["steps"], list)
    assert len(header["gate"]) == 1
    at = [e["at"] for e in data["events"]]
    assert at == sorted(at)
    assert at[0] >= 0
    for entry in data["events"]:
        assert set(entry) in ({"at", "source", "event"}, {"at", "source", "lines"}), entry
        if entry["source"] == "ari":
            assert isinstance(entry["event"].get("type"), str)
            assert entry["event"]["application"] == record_transcripts.APP
        else:
            assert entry["source"] == "ami"
            assert entry["lines"][0].startswith("Event: ")
            assert all(": " in line or line.endswith(":") for line in entry["lines"])
    for secret in RIG_SECRETS:
        assert secret not in text
    assert not re.search(r"(?i)\b(secret|password)\b", text)


def test_regenerating_is_documented() -> None:
    """The command in the headers runs the recorder, whose docstring gives it and says what it does."""
    assert record_transcripts.REGENERATE == ".venv/bin/python -m tests.record_transcripts"
    doc = record_transcripts.__doc__ or ""
    assert record_transcripts.REGENERATE.removeprefix(".venv/bin/") in doc
    assert "tests/fixtures/transcripts" in doc
    assert record_transcripts.OUT == FIXTURES
    assert callable(record_transcripts.main)


# -- the AMI event filter -------------------------------------------------------------------------------

MANAGER_CONF = Path(__file__).parent.parent / "dialplan" / "manager.conf"
# the filter shipped before, which Asterisk found anywhere in an event's text
UNANCHORED = ("Event: (Cdr|DialEnd|Hangup)", "UserEvent: CallgateTrunk")
LIBC = ctypes.util.find_library("c") if platform.libc_ver()[0] == "glibc" else None
REG_EXTENDED, REG_NOSUB = 1, 8  # glibc <regex.h>


def feed_reads(message: Message) -> bool:
    """An event the spend feed reads: Cdr, DialEnd, Hangup and the trunk channel's user event."""
    if message.event == "UserEvent":
        return message.get("UserEvent") == TRUNK_EVENT
    return message.event in {"Cdr", "DialEnd", "Hangup"}


def shipped_filters() -> tuple[str, ...]:
    lines = MANAGER_CONF.read_text(encoding="utf-8").splitlines()
    return tuple(
        line.removeprefix("eventfilter=") for line in lines if line.startswith("eventfilter=")
    )


def passes(filters: Sequence[str], text: str) -> bool:
    """Whether Asterisk sends an event with these legacy include filters: manager.c compiles each
    with regcomp(REG_EXTENDED | REG_NOSUB) and sends the event when one is found in its whole text;
    here glibc's own regcomp and regexec do it, as in Asterisk."""
    assert LIBC is not None
    libc = ctypes.CDLL(LIBC)
    found = False
    for pattern in filters:
        regex = ctypes.create_string_buffer(256)  # a regex_t: 64 bytes on glibc, room to spare
        assert libc.regcomp(regex, pattern.encode(), REG_EXTENDED | REG_NOSUB) == 0, pattern
        found = found or libc.regexec(regex, text.encode(), 0, None, 0) == 0
        libc.regfree(regex)
    return found


def event_text(*lines: str) -> str:
    return "".join(f"{line}\r\n" for line in lines) + "\r\n"


def test_the_callgate_ami_user_got_only_what_the_feed_reads() -> None:
    """The fixtures hold what the shipped AMI user got from the real Asterisk through its eventfilter:
    every kind of event the feed reads, and nothing else (not the HangupRequest that the unanchored
    filter let through, nor the rig carrier's own user event)."""
    got = [e.ami for name in CALLS for e in load(name).events if e.source == "ami"]
    assert [m.event for m in got if not feed_reads(m)] == []
    assert {m.event for m in got} == {"Cdr", "DialEnd", "Hangup", "UserEvent"}
    assert shipped_filters() != UNANCHORED


CHANNEL = ("Privilege: call,all", "Channel: PJSIP/1001-00000001", "ChannelState: 4")


@pytest.mark.skipif(LIBC is None, reason="glibc's regex engine (the one Asterisk uses on Linux)")
@pytest.mark.parametrize(
    ("lines", "shipped", "unanchored"),
    [
        (("Event: Hangup", *CHANNEL, "Cause: 16"), True, True),
        (("Event: DialEnd", *CHANNEL, "DialStatus: ANSWER"), True, True),
        (("Event: Cdr", "Privilege: cdr,all", "Disposition: ANSWERED"), True, True),
        (
            ("Event: UserEvent", *CHANNEL, "UserEvent: CallgateTrunk", "Call: 1.0:ab"),
            True,
            True,
        ),
        (("Event: HangupRequest", *CHANNEL), False, True),
        (("Event: Newchannel", *CHANNEL, "CallerIDName: Event: Hangup"), False, True),
        (
            ("Event: Newstate", *CHANNEL, "CallerIDName: UserEvent: CallgateTrunk"),
            False,
            True,
        ),
        (("Event: UserEvent", *CHANNEL, "UserEvent: PstnReached"), False, False),
        (("Event: UserEvent", *CHANNEL, "UserEvent: CallgateTrunkX"), False, True),
        (
            ("Event: UserEvent", "CallerIDName: x UserEvent: CallgateTrunk", "UserEvent: Other"),
            False,
            True,
        ),
        (("Event: CdrX",), False, True),
        (("Event: DialEndX",), False, True),
    ],
)
def test_the_shipped_eventfilter_as_asterisk_applies_it(
    lines: tuple[str, ...], shipped: bool, unanchored: bool
) -> None:
    """Anchored at the event's first line, the shipped filter passes the four events the feed reads
    and no other, whatever a caller writes into the caller id; the unanchored one passed far more."""
    assert passes(shipped_filters(), event_text(*lines)) is shipped
    assert passes(UNANCHORED, event_text(*lines)) is unanchored


@pytest.mark.skipif(LIBC is None, reason="glibc's regex engine (the one Asterisk uses on Linux)")
def test_every_recorded_event_passes_the_shipped_eventfilter() -> None:
    """Each event of the fixtures, as the text Asterisk filtered, passes the filter it came through."""
    for name in CALLS:
        data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        for entry in data["events"]:
            if entry["source"] == "ami":
                assert passes(shipped_filters(), event_text(*entry["lines"])), entry["lines"][0]


# -- the Stasis layer -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_recorded_stasis_start_reads_as_the_call(name: str) -> None:
    """One StasisStart per call; read_start gives the extension and number the phone dialled, and
    the call id is the call's linkedid as AMI reports it for the same channel."""
    t = load(name)
    extension, dialled, _, _ = CALLS[name]
    (start_event,) = t.ari("StasisStart")
    start = read_start(start_event["channel"], start_event["args"])
    assert start is not None
    assert start.channel_id == t.header["gate"][0]["channel"]
    assert start.endpoint == ""  # a Local channel: the extension comes from ext=
    attempt = start.attempt
    assert (attempt.extension, attempt.dialled, attempt.leg) == (
        extension,
        dialled,
        start.channel_id,
    )
    assert attempt.account_code == ""
    (_, hangup), *_ = t.ami("Hangup", Uniqueid=start.channel_id)
    assert attempt.call_id == hangup.ami.get("Linkedid") != start.channel_id


@dataclass
class FakeAri(FakeChannels):
    """What the Router asks of ARI besides the gate's channel control."""

    app: str = record_transcripts.APP
    globals: dict[str, str] = field(default_factory=dict)

    async def set_global(self, variable: str, value: str) -> None:
        self.globals[variable] = value

    async def channels(self) -> list[dict[str, Any]]:
        return []


class Settled(NamedTuple):
    reservation: str
    billsec: int | None
    fed: int  # how many events of the transcript had been fed when it was settled
    result: Settlement


class Player:
    """callgate's Router and SpendFeed on one MemoryStore, fed a transcript at SCALE speed."""

    def __init__(self, source: str) -> None:
        policy = load_policy(POLICY, "tests/e2e.py POLICY")
        self.store = MemoryStore()
        self.channels = FakeAri()
        self.audit = FakeAudit()
        memo = Memo(policy)
        self.gate = Gate(lambda: memo, self.store, self.channels, self.audit)
        self.router = Router(self.gate, cast(AriClient, self.channels))
        self.now = 0.0
        self.fed = 0
        self.settled: list[Settled] = []
        self.feed = SpendFeed(
            self._settle, quiet=QUIET * SCALE, source=SettleFrom(source), clock=lambda: self.now
        )

    async def _settle(self, reservation: str, billsec: int | None) -> Settlement:
        result = await self.gate.settle(reservation, billsec)
        self.settled.append(Settled(reservation, billsec, self.fed, result))
        return result

    async def play(self, events: Sequence[Event]) -> None:
        for event in events:
            await asyncio.sleep(max(event.at - self.now, 0) * SCALE)
            self.now = event.at
            self.fed += 1
            if event.source == "ari":
                self.router.dispatch(event.ari)
                await self.router.drain()  # the gate answered before the next frame came
            else:
                self.feed.on_event(event.ami)

    async def finish(self) -> None:
        """Let the feed's quiet second pass, then wait for the settlements."""
        await asyncio.sleep(3 * QUIET * SCALE)
        await self.router.drain()
        await asyncio.gather(*self.feed.tasks)


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_the_router_decides_the_recorded_call_as_the_live_gate_did(name: str) -> None:
    """Dispatching the recorded frames gives the live decision, the same reservation id, and the
    variables Asterisk reported setting (ChannelVarset): CALLGATE_CALL only on an admitted call; then
    continue or a hangup with cause 21."""
    t = load(name)
    _, _, verdict, reason = CALLS[name]
    live = t.header["gate"][0]
    player = Player("cdr")
    await player.play([e for e in t.events if e.source == "ari"])
    ((decision, channel),) = player.audit.decisions
    assert channel == live["channel"]
    assert (decision.verdict.value, decision.reason.value) == (verdict, reason)
    assert decision.reservation == live["reservation"]
    assert decision.allowed_seconds == live["allowed_seconds"]
    held = player.channels.variables(channel)
    varset = {e["variable"]: e["value"] for e in t.ari("ChannelVarset")}
    assert varset == {k: v for k, v in held.items() if k.startswith("CALLGATE_")}
    if verdict == "ALLOW":
        assert varset[RESERVATION_VARIABLE] == held["CDR(callgate)"] == decision.reservation
        assert player.channels.actions(channel) == [("continue", channel, "", "", "")]
    else:
        assert decision.reservation  # the store was asked, and held nothing for it
        assert RESERVATION_VARIABLE not in held
        assert "CDR(callgate)" not in held
        assert player.channels.actions(channel) == [("hangup", channel, "21")]
    assert player.channels.globals  # the emergency numbers, published with the first call


# -- the spend feed -----------------------------------------------------------------------------------


def reservation(t: Transcript) -> str:
    return str(t.header["gate"][0]["reservation"])


def cdr_seconds(t: Transcript) -> int:
    """What Asterisk's own records of the call say: the billable seconds of the answered records
    that carry its reservation id (the gated channel's, and the trunk channel's after a transfer)."""
    records = t.ami("Cdr", **{CALL_HEADER: reservation(t)})
    return sum(
        int(e.ami.get("BillableSeconds"))
        for _, e in records
        if e.ami.get("Disposition") == "ANSWERED"
    )


def trunk_channels(t: Transcript) -> set[str]:
    return {e.ami.get("Uniqueid") for _, e in t.ami("UserEvent", UserEvent=TRUNK_EVENT)}


def last_hangup(t: Transcript) -> int:
    """The index of the last Hangup of the gated channel or of a trunk channel carrying the call."""
    ours = {t.header["gate"][0]["channel"], *trunk_channels(t)}
    return max(i for i, e in t.ami("Hangup") if e.ami.get("Uniqueid") in ours)


def answered_seconds(t: Transcript) -> int:
    """From the DialEnd ANSWER of the gated channel to the last hang-up, whole seconds."""
    (_, answer), *_ = t.ami("DialEnd", Uniqueid=t.header["gate"][0]["channel"], DialStatus="ANSWER")
    return int(t.events[last_hangup(t)].at - answer.at)


@pytest.mark.parametrize(
    ("name", "low", "high"), [("allowed", 2, 3), ("transfer", 2, 3), ("unanswered", 0, 0)]
)
def test_the_recorded_seconds_are_the_calls_real_length(name: str, low: int, high: int) -> None:
    """The carrier held the allowed call 2 s; the transferred one was cut at its 3 allowed seconds."""
    t = load(name)
    assert low <= cdr_seconds(t) <= high
    if name != "unanswered":
        assert low <= answered_seconds(t) <= high


@pytest.mark.parametrize("source", ["cdr", "hangup"])
async def test_a_refused_call_costs_no_settlement(source: str) -> None:
    """A refused call holds no reservation and carries no id: its records have no CallgateCall and its
    channel hangs up with ``CALLGATE_CALL=`` empty, so neither mode asks the store anything (a flood
    of refused calls is no load on it)."""
    t = load("denied")
    gated = t.header["gate"][0]["channel"]
    ((_, hangup),) = t.ami("Hangup", Uniqueid=gated)
    assert hangup.ami.values("ChanVariable") == [f"{RESERVATION_VARIABLE}="]  # listed, never set
    assert all(not e.ami.get(CALL_HEADER) for _, e in t.ami("Cdr"))
    player = Player(source)
    await player.play(t.events)
    await player.finish()
    assert player.settled == []
    assert player.store.reservations("e2e") == 0
    assert (player.feed.legs, player.feed.pending, player.feed.tasks) == ({}, {}, set())


@pytest.mark.parametrize("source", ["cdr", "hangup"])
async def test_a_transferred_call_holds_its_reservation_until_the_trunk_hangs_up(
    source: str,
) -> None:
    """The phone's channel hangs up (and its record arrives) seconds before the trunk channel does:
    until the trunk's Hangup, nothing is settled and the reservation and its slot stay held."""
    t = load("transfer")
    rid = reservation(t)
    trunk = trunk_channels(t)
    assert len(trunk) == 1
    (cut,) = [i for i, e in t.ami("Hangup") if e.ami.get("Uniqueid") in trunk]
    gated = t.header["gate"][0]["channel"]
    phone_gone = [i for i, _ in t.ami("Hangup", Uniqueid=gated)]
    assert phone_gone
    assert phone_gone[0] < cut
    assert t.events[cut].at - t.events[phone_gone[0]].at > QUIET  # the quiet second passes between
    player = Player(source)
    await player.play(t.events[:cut])
    await asyncio.sleep(3 * QUIET * SCALE)
    assert player.settled == []
    assert player.store.reservations("e2e") == 1
    assert rid in player.gate.live
    await player.play(t.events[cut:])
    await player.finish()
    assert [s.reservation for s in player.settled] == [rid]
    assert player.settled[0].result.status is SettleStatus.SETTLED


# -- the order of the events ---------------------------------------------------------------------------
# Asterisk keeps the order of one channel's events (they pass through one topic), not the order between
# channels, and the Cdr records come from the CDR engine on a path of their own. So between runs of the
# same call, the Cdr and the Hangup swap, and so do the trunk channel's DialEnd (a blind transfer dials
# from it) and the phone's Hangup. The table plays the closing events of each recorded call in every
# order a run may give them.

# indexes of events that always come in this order (one channel's, or the records of one channel)
Chain = tuple[int, ...]


def merges(*chains: Chain) -> list[Chain]:
    """Every interleaving of the chains that keeps each chain's own order."""
    live = [c for c in chains if c]
    if not live:
        return [()]
    return [
        (chain[0], *rest)
        for i, chain in enumerate(live)
        for rest in merges(*live[:i], chain[1:], *live[i + 1 :])
    ]


def reordered(t: Transcript, *orders: Chain) -> Transcript:
    """The transcript with the events of each order moved into the slots they held, in that order;
    each takes its slot's arrival time, so the times still only grow."""
    events = list(t.events)
    for order in orders:
        for slot, index in zip(sorted(order), order, strict=True):
            events[slot] = t.events[index]._replace(at=t.events[slot].at)
    return Transcript(t.name, t.header, tuple(events))


def closing_chains(t: Transcript) -> list[tuple[Chain, ...]]:
    """Groups of chains whose events a run may interleave, one group per moment of the call."""

    def only(found: list[tuple[int, Event]]) -> Chain:
        assert len(found) == 1, found
        return (found[0][0],)

    rid, phone = reservation(t), t.header["gate"][0]["channel"]
    phone_records = tuple(i for i, _ in t.ami("Cdr", **{CALL_HEADER: rid, "UniqueID": phone}))
    phone_hangup = only(t.ami("Hangup", Uniqueid=phone))
    if t.name == "unanswered":  # busy: the phone's DialEnd and Hangup, its two records
        return [(phone_records, (*only(t.ami("DialEnd", Uniqueid=phone)), *phone_hangup))]
    (trunk,) = trunk_channels(t)
    trunk_hangup = only(t.ami("Hangup", Uniqueid=trunk))
    if t.name == "allowed":  # the carrier hangs up: both channels end, the phone's record comes
        return [(phone_records, trunk_hangup, phone_hangup)]
    trunk_records = tuple(i for i, _ in t.ami("Cdr", **{CALL_HEADER: rid, "UniqueID": trunk}))
    return [  # the phone transfers and hangs up; seconds later, the trunk channel ends
        (phone_records, phone_hangup, only(t.ami("DialEnd", Uniqueid=trunk))),
        (trunk_records, trunk_hangup),
    ]


def describe(t: Transcript, order: Chain) -> str:
    phone = t.header["gate"][0]["channel"]
    names = []
    for index in order:
        e = t.events[index].ami
        who = "phone" if phone in (e.get("Uniqueid"), e.get("UniqueID")) else "trunk"
        names.append(f"{who}-{e.event}")
    return ",".join(names)


def every_order() -> list[Any]:
    rows = []
    for name in ("allowed", "transfer", "unanswered"):
        t = load(name)
        for orders in itertools.product(*(merges(*group) for group in closing_chains(t))):
            label = "/".join(describe(t, order) for order in orders)
            for source in ("cdr", "hangup"):
                rows.append(pytest.param(name, orders, source, id=f"{name}:{source}:{label}"))
    return rows


ORDERS = every_order()


def test_the_table_holds_the_recorded_orders_and_the_one_that_leaked() -> None:
    """Each recorded order is a row; so is the transfer whose trunk DialEnd comes after the phone's
    Hangup (the order that once left a leg in the feed), and the one where it comes before."""
    for name in ("allowed", "transfer", "unanswered"):
        t = load(name)
        recorded = tuple(
            tuple(sorted(c for chain in group for c in chain)) for group in closing_chains(t)
        )
        assert any(p.values[0] == name and p.values[1] == recorded for p in ORDERS), name
    transfer = [p.id for p in ORDERS if p.values[0] == "transfer" and p.values[2] == "hangup"]
    assert len(transfer) == 6 * 2
    assert any("phone-Hangup,trunk-DialEnd" in i for i in transfer)
    assert any("trunk-DialEnd,phone-Hangup" in i for i in transfer)
    assert len(ORDERS) == 2 * (6 + 12 + 6)


@pytest.mark.parametrize(("name", "orders", "source"), ORDERS)
async def test_in_any_order_the_call_settles_once_and_the_feed_forgets_it(
    name: str, orders: tuple[Chain, ...], source: str
) -> None:
    """Whatever the order of the closing events: one settlement, under the call's reservation, of
    the seconds Asterisk counted (Cdr mode) or from the answer to the last hang-up (hangup mode),
    after the last channel hung up; then the feed holds nothing of the call (legs, trunk channels,
    deferred legs, records, timers) and the store no reservation."""
    t = reordered(load(name), *orders)
    player = Player(source)
    await player.play(t.events)
    await player.finish()
    if name == "unanswered":
        expected = 0
    else:
        expected = cdr_seconds(t) if source == "cdr" else answered_seconds(t)
    ((rid, billsec, fed, result),) = player.settled
    assert (rid, billsec, result.status) == (reservation(t), expected, SettleStatus.SETTLED)
    assert result.billsec == expected
    assert (result.charged > 0) == (expected > 0)
    assert fed > last_hangup(t)
    feed = player.feed
    assert (feed.legs, feed.carriers, feed.deferred, feed.pending, feed.timers) == (
        {},
        {},
        {},
        {},
        {},
    )
    assert feed.tasks == set()
    assert player.store.reservations("e2e") == 0
    assert player.gate.live == {}
