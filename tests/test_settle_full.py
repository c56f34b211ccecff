"""What cannot be settled is charged in full: the spend feed never turns a record it cannot read, or a
call whose answer it did not see, into 0 seconds (issue 8, finding 8).

Cdr mode: an answered record whose BillableSeconds is missing or anything but plain ASCII digits of a
sane size settles its call in full. Hangup mode: settlement is keyed on the reservation id the gate set
as ``CALLGATE_CALL`` (``ChanVariable`` in the events, through manager.conf ``channelvars``) and on the
channel that carries it; a hangup whose answer was not seen is charged in full, unless the channel was
never up.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callgate.asterisk.ami import Message, parse_message
from callgate.asterisk.gate import Gate
from callgate.asterisk.spend import SpendFeed, billable
from callgate.core.decision import RESERVATION_VARIABLE
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.settingtable import SettleFrom
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Settlement, SettleStatus
from tests.fakes import FakeAudit, FakeChannels
from tests.servers import eventually

UP, RINGING = "6", "5"


def cdr(call: str, disposition: str | None, billsec: str | None) -> Message:
    lines = ["Event: Cdr", "UniqueID: 1732.1", f"CallgateCall: {call}"]
    if disposition is not None:
        lines.append(f"Disposition: {disposition}")
    if billsec is not None:
        lines.append(f"BillableSeconds: {billsec}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def channel_event(
    event: str,
    uniqueid: str,
    *,
    call: str | None = None,
    state: str = UP,
    linkedid: str = "1732.0",
    **extra: str,
) -> Message:
    """A DialEnd or Hangup as Asterisk writes it with ``channelvars = CALLGATE_CALL``."""
    lines = [
        f"Event: {event}",
        f"Channel: PJSIP/1001-{uniqueid}",
        f"ChannelState: {state}",
        f"Uniqueid: {uniqueid}",
        f"Linkedid: {linkedid}",
    ]
    if call is not None:
        lines.append(f"ChanVariable: {RESERVATION_VARIABLE}={call}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def dial_end(uniqueid: str, call: str, status: str = "ANSWER", *, state: str = UP) -> Message:
    return channel_event(
        "DialEnd", uniqueid, call=call, state=state, DialStatus=status, DestUniqueid=f"{uniqueid}9"
    )


class Recorder:
    """The settle callable the feed is given: records (reservation id, billsec)."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, int | None]] = []

    async def __call__(self, rid: str, billsec: int | None) -> Settlement:
        self.settled.append((rid, billsec))
        return Settlement(SettleStatus.SETTLED)


@pytest.mark.parametrize(
    ("disposition", "billsec", "expected"),
    [
        ("ANSWERED", "42", 42),
        ("ANSWERED", "0", 0),
        ("ANSWERED", None, None),  # missing
        ("ANSWERED", "", None),
        ("ANSWERED", "junk", None),
        ("ANSWERED", "-5", None),
        ("ANSWERED", "+10", None),
        ("ANSWERED", "\u0661\u0660", None),  # Arabic-Indic 10: int() would read it
        ("ANSWERED", "\uff11\uff10", None),  # fullwidth 10
        ("ANSWERED", "1_0", None),  # int() reads 10
        ("ANSWERED", "1e3", None),
        ("ANSWERED", "10.5", None),
        ("ANSWERED", "9" * 40, None),  # absurdly large
        ("ANSWERED", "9" * 5000, None),  # beyond int()'s digit limit
        ("NO ANSWER", "junk", 0),  # an unanswered record costs nothing, whatever it says
        ("BUSY", None, 0),
        ("FAILED", "0", 0),
        ("CONGESTION", "0", 0),
        ("CANCEL", "0", 0),
        (None, "42", None),  # no disposition: was it answered? cannot tell
        ("UNKNOWN", "0", None),
        ("answered", "42", None),
    ],
)
def test_billable_seconds_of_one_record(
    disposition: str | None, billsec: str | None, expected: int | None
) -> None:
    """Only plain ASCII digits of a sane size on an answered record are believed; an unanswered
    record is 0; anything else is None (cannot be settled: charged in full)."""
    assert billable(cdr("L1", disposition, billsec)) == expected


async def test_cdr_records_that_cannot_be_read_charge_their_call_in_full() -> None:
    """A garbled answered record makes its whole call unsettleable, even beside a good record; calls
    with readable records settle as before."""
    recorder = Recorder()
    feed = SpendFeed(recorder, quiet=0.05)
    feed.on_event(cdr("L1", "NO ANSWER", "0"))  # failover: first trunk unanswered
    feed.on_event(cdr("L1", "ANSWERED", "\u0661\u0660"))
    feed.on_event(cdr("L2", "ANSWERED", "75"))
    feed.on_event(cdr("L2", "ANSWERED", "+10"))
    feed.on_event(cdr("L3", "ANSWERED", None))
    feed.on_event(cdr("L4", "NO ANSWER", "0"))
    feed.on_event(cdr("L4", "ANSWERED", "30"))
    await eventually(lambda: len(recorder.settled) == 4, "each call settled after its quiet time")
    await feed.flush()
    assert sorted(recorder.settled, key=lambda s: s[0]) == [
        ("L1", None),
        ("L2", None),
        ("L3", None),
        ("L4", 30),
    ]


def hangup_feed() -> tuple[SpendFeed, Recorder, list[float]]:
    recorder, now = Recorder(), [1000.0]
    return SpendFeed(recorder, source=SettleFrom.HANGUP, clock=lambda: now[0]), recorder, now


async def settle_all(feed: SpendFeed) -> None:
    await asyncio.sleep(0)
    await feed.flush()


async def test_hangup_settles_the_answered_seconds_of_the_channel_that_carries_the_id() -> None:
    """DialEnd ANSWER of the dialling channel that carries CALLGATE_CALL, its Hangup 7.9 s later: 7 s
    (whole seconds, rounded down, as Asterisk counts billsec)."""
    feed, recorder, now = hangup_feed()
    feed.on_event(dial_end("1732.1", "1732.0:aaaa"))
    now[0] += 7.9
    feed.on_event(channel_event("Hangup", "1732.1", call="1732.0:aaaa"))
    await settle_all(feed)
    assert recorder.settled == [("1732.0:aaaa", 7)]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # restart or AMI gap: the answer was never seen, the channel was up when it hung up
        ([channel_event("Hangup", "1732.1", call="R:1", state=UP)], [("R:1", None)]),
        # a DialEnd that was not an answer, then the channel hangs up up: answered by something unseen
        (
            [
                dial_end("1732.1", "R:1", "NOANSWER"),
                channel_event("Hangup", "1732.1", call="R:1", state=UP),
            ],
            [("R:1", None)],
        ),
        # the channel never got to Up: nobody answered it, nothing was spent
        (
            [
                dial_end("1732.1", "R:1", "BUSY", state=RINGING),
                channel_event("Hangup", "1732.1", call="R:1", state=RINGING),
            ],
            [("R:1", 0)],
        ),
        ([channel_event("Hangup", "1732.1", call="R:1", state="4")], [("R:1", 0)]),
        # a state Asterisk would not write: charged in full
        ([channel_event("Hangup", "1732.1", call="R:1", state="")], [("R:1", None)]),
        ([channel_event("Hangup", "1732.1", call="R:1", state="x")], [("R:1", None)]),
        # no CALLGATE_CALL, or an empty one: not a gated channel, nothing to settle (the old feed
        # settled the linkedid on the Hangup of the call's first channel)
        ([channel_event("Hangup", "1732.0", linkedid="1732.0")], []),
        ([channel_event("Hangup", "1732.1", call="")], []),
        # the id is on the dialled channel only (DestChanVariable): not the dialler's answer
        (
            [
                parse_message(
                    b"Event: DialEnd\r\nUniqueid: 1732.1\r\nChannelState: 6\r\n"
                    b"DestUniqueid: 1732.2\r\nDestChanVariable: CALLGATE_CALL=R:1\r\n"
                    b"DialStatus: ANSWER\r\n\r\n"
                ),
                channel_event("Hangup", "1732.2", call="R:1", state=UP),
            ],
            [("R:1", None)],
        ),
    ],
)
async def test_hangup_without_a_seen_answer(
    events: list[Message], expected: list[tuple[str, int | None]]
) -> None:
    """A hangup whose answer was not seen is charged in full (None); a channel that never came up
    settles at 0; channels without the id settle nothing."""
    feed, recorder, now = hangup_feed()
    for event in events:
        now[0] += 5
        feed.on_event(event)
    await settle_all(feed)
    assert recorder.settled == expected


async def test_legs_that_share_a_linkedid_settle_each_on_its_own() -> None:
    """A ring group's two external legs share the linkedid; each is settled with its own seconds, at
    its own hangup, under its own id."""
    feed, recorder, now = hangup_feed()
    feed.on_event(dial_end("1732.1", "1732.0:leg1"))
    now[0] += 2
    feed.on_event(dial_end("1732.5", "1732.0:leg2"))
    now[0] += 10
    feed.on_event(channel_event("Hangup", "1732.5", call="1732.0:leg2"))
    await settle_all(feed)
    assert recorder.settled == [("1732.0:leg2", 10)]
    now[0] += 20
    feed.on_event(channel_event("Hangup", "1732.1", call="1732.0:leg1"))
    await settle_all(feed)
    assert recorder.settled == [("1732.0:leg2", 10), ("1732.0:leg1", 32)]


async def test_a_copy_of_the_id_on_another_channel_does_not_settle_the_call() -> None:
    """Once a DialEnd named the channel that dials with an id, another channel carrying a copy of the
    variable (inherited by a dialplan) cannot settle it early, and its DialEnd is not the answer."""
    feed, recorder, now = hangup_feed()
    feed.on_event(dial_end("1732.1", "R:1", "NOANSWER", state=RINGING))
    feed.on_event(dial_end("1732.7", "R:1", "ANSWER"))  # the copy's answer
    feed.on_event(channel_event("Hangup", "1732.7", call="R:1", state=RINGING))
    await settle_all(feed)
    assert recorder.settled == []
    feed.on_event(dial_end("1732.1", "R:1", "ANSWER"))  # failover: the second trunk answers
    now[0] += 12
    feed.on_event(channel_event("Hangup", "1732.1", call="R:1"))
    await settle_all(feed)
    assert recorder.settled == [("R:1", 12)]


async def test_forgotten_answers_are_charged_in_full() -> None:
    """Past its bound the feed forgets the oldest answers; their calls are then charged in full, never
    as 0 s."""
    feed, recorder, now = hangup_feed()
    feed.limit = 4
    for i in range(6):
        feed.on_event(dial_end(f"1.{i}", f"R:{i}"))
    now[0] += 30
    feed.on_event(channel_event("Hangup", "1.0", call="R:0"))
    feed.on_event(channel_event("Hangup", "1.5", call="R:5"))
    await settle_all(feed)
    assert recorder.settled == [("R:0", None), ("R:5", 30)]


# Recorded from the test Asterisk 22.10.1 (tests/test_settle_hangup.py's rig, the shipped manager.conf
# with the hangup-mode filter), trimmed to the headers that name the channels: every DialEnd and Hangup
# of one call held 2 s by the carrier, and of one the carrier refused as busy. Events are separated by a
# blank line; the first DialEnd comes at the answer, the rest about two seconds later.
ANSWERED = """\
Event: DialEnd
Channel: Local/2125550161@phones-00000000;2
ChannelState: 4
Uniqueid: 1796000554.1
Linkedid: 1796000554.0
ChanVariable: CALLGATE_CALL=1796000554.0:cfacfca6a60d4b7f
DestChannel: Local/+12125550161@pstn-00000001;1
DestChannelState: 6
DestUniqueid: 1796000554.2
DestChanVariable: CALLGATE_CALL=
DialStatus: ANSWER

Event: DialEnd
DestChannel: Local/2125550161@phones-00000000;1
DestChannelState: 6
DestUniqueid: 1796000554.0
DestChanVariable: CALLGATE_CALL=
DialStatus: ANSWER

Event: Hangup
Channel: Local/+12125550161@pstn-00000001;2
ChannelState: 6
Uniqueid: 1796000554.3
Linkedid: 1796000554.0
ChanVariable: CALLGATE_CALL=

Event: Hangup
Channel: Local/+12125550161@pstn-00000001;1
ChannelState: 6
Uniqueid: 1796000554.2
Linkedid: 1796000554.0
ChanVariable: CALLGATE_CALL=

Event: Hangup
Channel: Local/2125550161@phones-00000000;2
ChannelState: 6
Uniqueid: 1796000554.1
Linkedid: 1796000554.0
ChanVariable: CALLGATE_CALL=1796000554.0:cfacfca6a60d4b7f

Event: Hangup
Channel: Local/2125550161@phones-00000000;1
ChannelState: 6
Uniqueid: 1796000554.0
Linkedid: 1796000554.0
ChanVariable: CALLGATE_CALL=
"""
ANSWERED_ID = "1796000554.0:cfacfca6a60d4b7f"
REFUSED = """\
Event: DialEnd
Channel: Local/2125550199@phones-00000002;2
ChannelState: 4
Uniqueid: 1796000560.8
Linkedid: 1796000560.7
ChanVariable: CALLGATE_CALL=1796000560.7:99e07f693836f86f
DestChannel: Local/+12125550199@pstn-00000003;1
DestChannelState: 0
DestUniqueid: 1796000560.9
DestChanVariable: CALLGATE_CALL=
DialStatus: BUSY

Event: Hangup
Channel: Local/+12125550199@pstn-00000003;1
ChannelState: 0
Uniqueid: 1796000560.9
Linkedid: 1796000560.7
ChanVariable: CALLGATE_CALL=

Event: Hangup
Channel: Local/2125550199@phones-00000002;2
ChannelState: 4
Uniqueid: 1796000560.8
Linkedid: 1796000560.7
ChanVariable: CALLGATE_CALL=1796000560.7:99e07f693836f86f

Event: Hangup
Channel: Local/+12125550199@pstn-00000003;2
ChannelState: 7
Uniqueid: 1796000560.10
Linkedid: 1796000560.7
ChanVariable: CALLGATE_CALL=

Event: DialEnd
DestChannel: Local/2125550199@phones-00000002;1
DestChannelState: 0
DestUniqueid: 1796000560.7
DestChanVariable: CALLGATE_CALL=
DialStatus: NOANSWER

Event: Hangup
Channel: Local/2125550199@phones-00000002;1
ChannelState: 0
Uniqueid: 1796000560.7
Linkedid: 1796000560.7
ChanVariable: CALLGATE_CALL=
"""
REFUSED_ID = "1796000560.7:99e07f693836f86f"


def transcript(text: str) -> list[Message]:
    return [parse_message(block.replace("\n", "\r\n").encode()) for block in text.split("\n\n")]


@pytest.mark.parametrize(
    ("text", "expected"), [(ANSWERED, [(ANSWERED_ID, 2)]), (REFUSED, [(REFUSED_ID, 0)])]
)
async def test_a_recorded_call_settles_once_under_its_reservation_id(
    text: str, expected: list[tuple[str, int | None]]
) -> None:
    """Real events: only the gated channel settles, once, under its CALLGATE_CALL; the other channels
    of the call (Local halves, the carrier's, the linkedid's first channel) settle nothing."""
    feed, recorder, now = hangup_feed()
    for i, event in enumerate(transcript(text)):
        if i == 1:
            now[0] += 2.4
        feed.on_event(event)
    await settle_all(feed)
    assert recorder.settled == expected


NY = ZoneInfo("America/New_York")
POLICY = load_policy(
    """\
version: 1
site: {name: full, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: "0.10", increment: 60}
profiles:
  office:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 1, max_call_duration: 10m, spend: {day: "5.00"}}
extensions:
  - {match: "1001", profile: office}
""",
    "full",
)


async def test_hangup_without_answer_through_the_gate_charges_in_full_and_frees_the_slot() -> None:
    """Gate, feed and store together: the unseen answer keeps the whole reservation on the spend cap,
    and the extension's one concurrency slot is free for its next call."""
    store, channels = MemoryStore(), FakeChannels()
    at = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
    memo = Memo(POLICY)
    gate = Gate(lambda: memo, store, channels, FakeAudit(), clock=lambda: at)
    first = await gate.handle("ch1", CallAttempt("1732.0", "1001", "2125550123"))
    assert first.allowed
    assert not (await gate.decide(CallAttempt("1733.0", "1001", "2125550124"))).allowed  # 1 slot
    rid = channels.variables("ch1").get(RESERVATION_VARIABLE) or first.reservation
    feed = SpendFeed(gate.settle, source=SettleFrom.HANGUP)
    feed.on_event(channel_event("Hangup", "ch1", call=rid, state=UP))
    await settle_all(feed)
    assert store.reservations("full") == 0
    spent = store.money("full", "s:ext:1001:2026-11-17")
    assert spent == 1_000_000 == int(first.reserved * 1_000_000)  # 10 min at 0.10: all of it
    second = await gate.decide(CallAttempt("1734.0", "1001", "2125550125"))
    assert second.allowed


def trunk_answered(uniqueid: str, call: str) -> Message:
    """The user event the dialplan's [callgate-limit] raises on the trunk channel when it answers."""
    text = f"Event: UserEvent\r\nUserEvent: CallgateTrunk\r\nUniqueid: {uniqueid}\r\nCall: {call}\r\n\r\n"
    return parse_message(text.encode())


async def test_a_transferred_call_holds_its_reservation_until_the_trunk_hangs_up() -> None:
    """New attack: the phone transfers its trunk call elsewhere and hangs up, to free its concurrency
    slot and the rest of its money while the call goes on. Hangup mode: the leg settles only when the
    trunk channel hangs up, with every second from the answer."""
    feed, recorder, now = hangup_feed()
    feed.on_event(dial_end("1732.1", "R:1"))
    feed.on_event(trunk_answered("1732.2", "R:1"))
    now[0] += 10
    feed.on_event(channel_event("Hangup", "1732.1", call="R:1"))  # the phone leaves: transferred
    await asyncio.sleep(0)
    assert recorder.settled == []
    now[0] += 50
    feed.on_event(channel_event("Hangup", "1732.2", call="R:1"))  # the trunk call ends
    await settle_all(feed)
    assert recorder.settled == [("R:1", 60)]


async def test_a_transferred_call_in_cdr_mode_adds_the_trunk_records() -> None:
    """CDR mode: the phone's record comes at the transfer; the leg is settled only after the trunk
    channel hung up, with the seconds of its own records added."""
    recorder = Recorder()
    feed = SpendFeed(recorder, quiet=0.05)
    feed.on_event(trunk_answered("1732.2", "R:1"))
    feed.on_event(cdr("R:1", "ANSWERED", "10"))  # the phone's record, at the transfer
    await eventually(lambda: "R:1" not in feed.timers, "the quiet time after the record")
    assert (recorder.settled, feed.tasks) == ([], set())  # it passed: nothing settled
    feed.on_event(channel_event("Hangup", "1732.2", call="R:1"))
    feed.on_event(cdr("R:1", "ANSWERED", "50"))  # the trunk channel's record in its new bridge
    await eventually(lambda: recorder.settled, "the settlement after the trunk's record")
    await feed.flush()
    assert recorder.settled == [("R:1", 60)]


async def test_an_untransferred_call_settles_as_before() -> None:
    """The trunk channel hangs up with the phone (either first): nothing is deferred."""
    feed, recorder, now = hangup_feed()
    feed.on_event(dial_end("1732.1", "R:1"))
    feed.on_event(trunk_answered("1732.2", "R:1"))
    now[0] += 30
    feed.on_event(channel_event("Hangup", "1732.2", call="R:1"))
    feed.on_event(channel_event("Hangup", "1732.1", call="R:1"))
    await settle_all(feed)
    assert recorder.settled == [("R:1", 30)]


async def test_a_redial_right_after_a_hang_up_is_not_a_second_call_in_flight() -> None:
    """Issue 13: in CDR mode the slot stayed taken until the call's records had come in and gone quiet
    (about a second), so a quick redial was refused as concurrent_calls, and the refusal counted toward
    locking the extension. The gated channel's Hangup frees the slot at once; its money waits for its
    record. Any other channel carrying the id (a copy, the trunk of a transfer) frees nothing."""
    store, channels = MemoryStore(), FakeChannels()
    at = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
    memo = Memo(POLICY)
    gate = Gate(lambda: memo, store, channels, FakeAudit(), clock=lambda: at)
    first = await gate.handle("1732.1", CallAttempt("1732.0", "1001", "2125550123", leg="1732.1"))
    assert first.allowed
    rid = first.reservation
    recorder = Recorder()
    feed = SpendFeed(recorder, quiet=60, release=gate.release)  # the record is slow to go quiet
    feed.on_event(
        channel_event("Hangup", "1732.7", call=rid)
    )  # a copy of the id on another channel
    await asyncio.gather(*feed.tasks)
    redial = CallAttempt("1733.0", "1001", "2125550123", leg="1733.1")
    assert (await gate.decide(redial)).reason.value == "concurrent_calls"
    feed.on_event(channel_event("Hangup", "1732.1", call=rid))  # the gated channel
    feed.on_event(cdr(rid, "ANSWERED", "30"))
    await asyncio.gather(*feed.tasks)
    assert (await gate.decide(redial)).allowed
    assert store.money("full", "s:ext:1001:2026-11-17") == 2_000_000  # both reserved in full
    assert recorder.settled == []  # the first call's money waits for its record's quiet time
    await feed.flush()
    assert recorder.settled == [(rid, 30)]


async def test_a_transferred_call_keeps_its_slot_until_the_trunk_hangs_up() -> None:
    """The phone transferred its trunk call and hung up: the call goes on, so does its slot, until the
    trunk channel hangs up."""
    store, channels = MemoryStore(), FakeChannels()
    at = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
    memo = Memo(POLICY)
    gate = Gate(lambda: memo, store, channels, FakeAudit(), clock=lambda: at)
    first = await gate.handle("1732.1", CallAttempt("1732.0", "1001", "2125550123", leg="1732.1"))
    feed = SpendFeed(Recorder(), quiet=60, release=gate.release)
    feed.on_event(trunk_answered("1732.2", first.reservation))
    feed.on_event(channel_event("Hangup", "1732.1", call=first.reservation))
    await asyncio.gather(*feed.tasks)
    redial = CallAttempt("1733.0", "1001", "2125550123", leg="1733.1")
    assert (await gate.decide(redial)).reason.value == "concurrent_calls"
    feed.on_event(channel_event("Hangup", "1732.2", call=first.reservation))  # the call ends
    await asyncio.gather(*feed.tasks)
    assert (await gate.decide(redial)).allowed
    await feed.flush()


async def test_a_phone_that_hangs_up_before_its_trunk_channel_frees_its_slot_after_it() -> None:
    """The usual hang-up: the phone's Hangup comes first, its trunk channel's a moment after; the slot
    is freed then, not a quiet second after the records."""
    store, channels = MemoryStore(), FakeChannels()
    at = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
    memo = Memo(POLICY)
    gate = Gate(lambda: memo, store, channels, FakeAudit(), clock=lambda: at)
    first = await gate.handle("1732.1", CallAttempt("1732.0", "1001", "2125550123", leg="1732.1"))
    recorder = Recorder()
    feed = SpendFeed(recorder, quiet=60, release=gate.release)
    feed.on_event(trunk_answered("1732.2", first.reservation))
    feed.on_event(channel_event("Hangup", "1732.1", call=first.reservation))
    feed.on_event(cdr(first.reservation, "ANSWERED", "30"))
    feed.on_event(channel_event("Hangup", "1732.2", call=first.reservation))
    await asyncio.gather(*feed.tasks)
    redial = CallAttempt("1733.0", "1001", "2125550123", leg="1733.1")
    assert (await gate.decide(redial)).allowed
    assert recorder.settled == []
    await feed.flush()
    assert recorder.settled == [(first.reservation, 30)]
