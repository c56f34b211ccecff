"""The spend feed: AMI events settle the reservations of the calls they describe.

Each gated leg holds its reservation under a reservation id, which the gate sets on the gated channel as
``CALLGATE_CALL``. What the feed cannot settle is charged in full: it settles with ``None`` (the whole
reservation stays charged, only the concurrency slots are freed), never with 0 seconds.

From CDRs (the default): one call ends in several ``Cdr`` events (one per party A/B pair, and Local
channels add pairs of their own). Only the records of the gated channel count: when it admits a call, the
gate sets ``CDR(callgate)`` to the reservation id, and the shipped ``cdr_manager.conf`` maps that
variable into the event as ``CallgateCall``. Records without it are ignored. A route that fails over to a
second trunk gives the gated channel one unanswered and one answered record, so the feed gathers a leg's
records for ``QUIET`` seconds after the last one, then settles once with the sum of the billable seconds
of its answered records. An unanswered record costs nothing; an answered one is believed only when its
``BillableSeconds`` is plain ASCII digits of a sane size, and any other record of the gated channel
(garbled seconds, an unknown disposition) makes its leg unsettleable.

Without CDRs (``[ami] settle_from = "hangup"``), the feed reads ``DialEnd`` and ``Hangup`` events, which
carry ``ChanVariable: CALLGATE_CALL=...`` through manager.conf ``channelvars``. A ``DialEnd`` whose
dialling channel carries the id names that channel as the leg's; with ``DialStatus: ANSWER`` it also marks
the answer. That channel's ``Hangup`` settles the leg with the seconds since the answer, counted as
Asterisk counts billable seconds (whole seconds, rounded down). A hangup whose answer was not seen
(callgate restarted during the call, an AMI gap) is charged in full, unless the channel never came up
(its state at hangup is not Up): a channel that was never answered spent nothing.

A leg is over when its trunk channel is over too. When the trunk answers, the dialplan's
``[callgate-limit]`` (Dial's ``U()``) puts the reservation id on the trunk channel (``CALLGATE_CALL`` and
``CDR(callgate)``) and raises ``UserEvent: CallgateTrunk``. The feed keeps such channels as the leg's
*carriers* until their ``Hangup``: while one is up (the phone transferred the trunk call elsewhere and
hung up), the leg is not settled, so its concurrency slot and its money stay held; the trunk channel's own
records (CDR mode) or its hang-up (hangup mode) then complete the leg's seconds. The carrier's own
``DialEnd`` (after a blind transfer the trunk channel dials the colleague itself, with the id on it) is
never taken for the leg's, in whatever order it arrives around the phone's ``Hangup``; and once the gated
channel has hung up, no other channel's event with the id reopens or changes its leg.

Only an admitted call carries the id: the gate sets ``CALLGATE_CALL`` when it admits a call and leaves
the variable alone when it refuses one, so a refused call's ``Hangup`` (``CALLGATE_CALL=`` empty) costs
no store round trip however many a caller places.

In CDR mode the gated channel's ``Hangup`` (``CALLGATE_CALL`` in its ``channelvars``) frees the leg's
concurrency slots at once (``release``; the store checks that the channel is the one the reservation was
admitted for), unless a carrier is still up: a redial right after a hang-up is not a second call in
flight while the records go quiet. The money waits for the records.

Settling is idempotent in the store, so a repeated or late event costs nothing twice. A leg whose events
never arrive is charged in full when its reservation expires.

A settlement the store refuses is retried for about 30 seconds. When ``serve`` stops, :meth:`SpendFeed.flush`
settles what is gathered; a settlement waiting for its next retry gets one last try at once, and what is
still unwritten after a few seconds (Redis down) is logged and left to reservation expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from callgate.asterisk.ami import Message
from callgate.core.decision import RESERVATION_VARIABLE  # set by the gate; in events: channelvars
from callgate.errors import StoreUnavailable
from callgate.settingtable import SettleFrom
from callgate.store.protocol import Settlement

log = logging.getLogger("callgate.spend")

QUIET = 1.0  # seconds to wait for more records of the same call
CALL_HEADER = "CallgateCall"  # cdr_manager.conf [mappings] callgate => CallgateCall

# Asterisk's dispositions of a record that was not answered (cdr.c ast_cdr_disp2str): it cost nothing.
UNANSWERED = frozenset({"NO ANSWER", "FAILED", "BUSY", "CONGESTION", "CANCEL"})
# No call lasts a month; a record that says so is garbled. (Anything above a call's allowed seconds is
# charged as its whole reservation by the store anyway.)
MAX_BILLSEC = 31 * 86400
# ASCII digits only: int() would also read "+10", " 10", "1_0" and the digits of other scripts.
_SECONDS = re.compile(r"[0-9]{1,12}")
# Channel states (ChannelState) of a channel that was never answered: all but 6 (Up).
NEVER_UP = frozenset({"0", "1", "2", "3", "4", "5", "7", "8", "9"})
LEGS = 100_000  # legs (and trunk channels) remembered until their Hangup
TRUNK_EVENT = (
    "CallgateTrunk"  # UserEvent raised by the dialplan's [callgate-limit] on the trunk channel
)
ATTEMPTS = 5  # tries of one settlement, 1, 2, 4, 8 and 16 s apart: about 30 s of a store outage
SHOWN = 20  # reservation ids named in the log line of what a stop left unsettled


def call_id(message: Message) -> str:
    """The reservation id of a record of a gated channel; "" for any other record."""
    return message.get(CALL_HEADER)


def seconds(text: str) -> int | None:
    """A count of seconds written as Asterisk writes it; None for anything else."""
    if _SECONDS.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= MAX_BILLSEC else None


def billable(message: Message) -> int | None:
    """The billable seconds of one Cdr record: 0 unless it was answered; None if it cannot be read."""
    disposition = message.get("Disposition")
    if disposition in UNANSWERED:
        return 0
    if disposition != "ANSWERED":
        return None
    return seconds(message.get("BillableSeconds"))


def _plus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


class _Leg(NamedTuple):
    channel: str  # the Uniqueid of the channel that dials with the reservation id
    answered: float | None  # when its Dial was answered (the feed's clock)


class SpendFeed:
    def __init__(
        self,
        settle: Callable[[str, int | None], Awaitable[Settlement]],
        *,
        quiet: float = QUIET,
        source: SettleFrom = SettleFrom.CDR,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> None:
        self._settle = settle
        self._release = release
        self.quiet = quiet
        self.source = SettleFrom(source)
        self.clock = clock
        self.legs: dict[str, _Leg] = {}  # hangup mode: reservation id -> its leg, until its Hangup
        # reservation id -> the trunk channels (Uniqueid) that carry it and are still up
        self.carriers: dict[str, set[str]] = {}
        # hangup mode: legs whose gated channel hung up while their trunk channel is still up
        self.deferred: dict[str, float | None] = {}
        # CDR mode: legs whose gated channel (reservation id -> its Uniqueid) hung up while a trunk
        # channel was still up; their slots are freed when the last one hangs up
        self.unfreed: dict[str, str] = {}
        self.limit = LEGS
        self.pending: dict[str, int | None] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.settling: set[str] = set()  # reservation ids whose settlement is not written yet
        self.stopping = asyncio.Event()  # set by flush(): no more waiting between retries
        self.failure = ""  # why the store last refused a settlement

    def on_event(self, message: Message) -> None:
        if self._follow_trunk(message):
            return
        if self.source is SettleFrom.HANGUP:
            self._on_channel_event(message)
            return
        if message.event == "Hangup":
            self._hung_up(message)
            return
        if message.event != "Cdr":
            return
        rid = call_id(message)
        if not rid:
            return
        billsec = billable(message)
        if billsec is None:
            log.warning(
                "Cdr of %r cannot be settled (Disposition %r, BillableSeconds %r): charged in full",
                rid, message.get("Disposition")[:20], message.get("BillableSeconds")[:20],
            )  # fmt: skip
        self.pending[rid] = _plus(self.pending.get(rid, 0), billsec)
        timer = self.timers.pop(rid, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self.timers[rid] = loop.call_later(self.quiet, self._due, rid)

    def _on_channel_event(self, message: Message) -> None:
        rid = message.variable(RESERVATION_VARIABLE)  # the event's Channel, never its DestChannel
        if not rid or rid in self.deferred:
            return  # not a gated channel; or the gated channel hung up and the leg waits for its trunk
        channel = message.get("Uniqueid")
        leg = self.legs.get(rid)
        if leg is not None and leg.channel != channel:
            return  # another channel with a copy of the variable: not the leg that was gated
        if message.event == "DialEnd":
            if leg is None:
                leg = self.legs[rid] = _Leg(channel, None)
                self._forget_oldest()
            if message.get("DialStatus") == "ANSWER" and leg.answered is None:
                self.legs[rid] = leg._replace(answered=self.clock())
        elif message.event == "Hangup":
            self.legs.pop(rid, None)
            if self.carriers.get(rid):  # transferred: the trunk call goes on; settle when it ends
                self.deferred[rid] = leg.answered if leg is not None else None
                return
            if leg is not None and leg.answered is not None:
                self._start(rid, int(self.clock() - leg.answered))
            elif message.get("ChannelState") in NEVER_UP:
                self._start(rid, 0)
            else:
                log.warning(
                    "the answer of %r was not seen (callgate restarted, or AMI lost events): "
                    "charged in full", rid,
                )  # fmt: skip
                self._start(rid, None)

    def _hung_up(self, message: Message) -> None:
        """CDR mode: a channel carrying a reservation id hung up. If it is the gated channel (the store
        checks the channel the call was admitted for), its concurrency slots are freed now, or, while a
        trunk channel of the leg is still up, when the last one hangs up (a phone that hangs up first is
        followed by its trunk channel's Hangup at once; after a transfer, when the call ends); not when its
        records have come in and gone quiet: a redial right after a hang-up is not refused as a second
        call in flight. A failure is left to the settlement."""
        rid = message.variable(RESERVATION_VARIABLE)
        if not rid or self._release is None:
            return
        if self.carriers.get(rid):  # a trunk channel is up: free the slot when the last one ends
            self.unfreed[rid] = message.get("Uniqueid")
            if len(self.unfreed) > self.limit:  # trunk hang-ups missed: forget the oldest
                for old in list(self.unfreed)[: len(self.unfreed) - self.limit // 2]:
                    del self.unfreed[old]
            return
        self._free_soon(rid, message.get("Uniqueid"))

    def _free_soon(self, rid: str, channel: str) -> None:
        task = asyncio.create_task(self._free(rid, channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _free(self, rid: str, channel: str) -> None:
        assert self._release is not None
        try:
            await self._release(rid, channel)
        except StoreUnavailable as exc:
            log.debug("freeing the slots of %s failed (%s); its settlement frees them", rid, exc)

    def _follow_trunk(self, message: Message) -> bool:
        """Keep track of the trunk channels that carry a leg; True when the event was one of theirs."""
        if message.event == "UserEvent" and message.get("UserEvent") == TRUNK_EVENT:
            rid = message.get("Call")
            if rid:
                self.carriers.setdefault(rid, set()).add(message.get("Uniqueid"))
                if len(self.carriers) > self.limit:  # hang-ups missed: forget the oldest
                    for old in list(self.carriers)[: len(self.carriers) - self.limit // 2]:
                        del self.carriers[old]
            return True
        if message.event not in ("Hangup", "DialEnd"):
            return False
        rid = message.variable(RESERVATION_VARIABLE)
        channels = self.carriers.get(rid)
        if not rid or channels is None or message.get("Uniqueid") not in channels:
            return False
        if message.event == "DialEnd":
            return True  # the trunk channel dials on (a blind transfer): not the gated leg's Dial
        channels.discard(message.get("Uniqueid"))
        if not channels:
            del self.carriers[rid]
            self._trunk_over(rid)
        return True

    def _trunk_over(self, rid: str) -> None:
        """The last trunk channel of a leg hung up: the leg may now be settled."""
        if self.source is SettleFrom.HANGUP:
            if rid in self.deferred:
                answered = self.deferred.pop(rid)
                self._start(rid, None if answered is None else int(self.clock() - answered))
            return
        channel = self.unfreed.pop(rid, None)
        if channel is not None:  # the gated channel hung up before its trunk channel
            self._free_soon(rid, channel)
        if rid in self.pending:  # its records are in: settle a quiet moment after the last one
            timer = self.timers.pop(rid, None)
            if timer is not None:
                timer.cancel()
            self.timers[rid] = asyncio.get_running_loop().call_later(self.quiet, self._due, rid)

    def _forget_oldest(self) -> None:
        """Legs whose Hangup was missed: forget the oldest. They are then charged in full."""
        if len(self.legs) > self.limit:
            for old in list(self.legs)[: len(self.legs) - self.limit // 2]:
                del self.legs[old]

    def _start(self, rid: str, billsec: int | None) -> None:
        self.settling.add(rid)
        task = asyncio.create_task(self._run(rid, billsec))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _due(self, rid: str) -> None:
        self.timers.pop(rid, None)
        if self.carriers.get(rid):
            return  # its trunk channel is still up (a transfer): the trunk's Hangup settles it
        self._start(rid, self.pending.pop(rid, 0))

    async def _run(self, rid: str, billsec: int | None) -> None:
        """Settle one leg, retrying while the store is down. Once stopping, a failed try is the last:
        the id stays in ``settling`` and :meth:`flush` reports it with the others."""
        for attempt in range(ATTEMPTS):
            try:
                result = await self._settle(rid, billsec)
            except StoreUnavailable as exc:
                self.failure = str(exc)
                if self.stopping.is_set():
                    return
                log.warning("settling %s failed (%s); retry %d", rid, exc, attempt + 1)
                with contextlib.suppress(TimeoutError):  # a stop ends the wait: one last try now
                    await asyncio.wait_for(self.stopping.wait(), 2**attempt)
                continue
            except Exception:
                self.settling.discard(rid)
                raise
            self.settling.discard(rid)
            log.debug("settled %s: %s", rid, result)
            return
        if not self.stopping.is_set():
            self.settling.discard(rid)
            log.error("could not settle %s; its reservation will be charged in full at expiry", rid)

    async def flush(self, within: float | None = None) -> list[str]:
        """Settle everything gathered so far (at shutdown), for at most ``within`` seconds.

        A settlement waiting for its next retry tries once more at once, and no more. Returns the
        reservation ids left unsettled (logged once, together): each is charged in full when its
        reservation expires, as for any leg whose settlement never arrives."""
        self.stopping.set()
        for rid, timer in list(self.timers.items()):
            timer.cancel()
            self._due(rid)
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=within)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
                self.failure = self.failure or f"no answer within {within:g}s"
        left = sorted(self.settling)
        if left:
            more = f" and {len(left) - SHOWN} more" if len(left) > SHOWN else ""
            log.error(
                "could not settle %d call%s before stopping (%s): %s%s; each is charged in full when "
                "its reservation expires",
                len(left), "" if len(left) == 1 else "s", self.failure, ", ".join(left[:SHOWN]), more,
            )  # fmt: skip
        return left
