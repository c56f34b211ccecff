"""The spend feed: AMI ``Cdr`` events settle the reservations of the calls they describe.

One call ends in several ``Cdr`` events: one per party A/B pair, and Local channels add pairs of their
own, all with the same LinkedID. Only the records of the gated channel count: before it dials, the shipped
dialplan sets ``CDR(callgate)`` to the call id it gave the gate, and the shipped ``cdr_manager.conf`` maps
that variable into the event as ``CallgateCall``. Records without it are ignored. A route that fails over
to a second trunk gives the gated channel one unanswered and one answered record, so the feed gathers a
call's records for ``QUIET`` seconds after the last one, then settles once with the sum of the billable
seconds of its answered records. Settling is idempotent in the store, so a repeated or late record costs nothing twice. A call whose
records never arrive (AMI was down) is charged in full when its reservation expires.

Without CDRs (``[ami] settle_from = "hangup"``), the feed reads channel events instead: a ``DialEnd``
with ``DialStatus: ANSWER`` marks when the gated call was answered, and the ``Hangup`` of the call's
first channel (its ``Uniqueid`` is the ``Linkedid`` the gate was given) settles it with the seconds
between the two, counted as Asterisk counts billable seconds (whole seconds, rounded down). The call id is
the linkedid in both modes, so a failed-over second trunk attempt is still the same call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from callgate.ami import Message
from callgate.errors import StoreUnavailable
from callgate.store import Settlement

log = logging.getLogger("callgate.spend")

QUIET = 1.0  # seconds to wait for more records of the same call


CALL_HEADER = "CallgateCall"  # cdr_manager.conf [mappings] callgate => CallgateCall


def call_id(message: Message) -> str:
    """The call id the gate decided on, from a record of a gated channel; "" for any other record."""
    return message.get(CALL_HEADER)


def billable(message: Message) -> int:
    """The billable seconds of one Cdr record; 0 unless it was answered."""
    if message.get("Disposition") != "ANSWERED":
        return 0
    try:
        return max(0, int(message.get("BillableSeconds", "0")))
    except ValueError:
        return 0


class SpendFeed:
    def __init__(
        self,
        settle: Callable[[str, int], Awaitable[Settlement]],
        *,
        quiet: float = QUIET,
        source: str = "cdr",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settle = settle
        self.quiet = quiet
        self.source = source  # "cdr" | "hangup"
        self.clock = clock
        self.answered: dict[str, float] = {}  # hangup mode: linkedid -> when its Dial was answered
        self.pending: dict[str, int] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, message: Message) -> None:
        if self.source == "hangup":
            self._on_channel_event(message)
            return
        if message.event != "Cdr":
            return
        cid = call_id(message)
        if not cid:
            return
        self.pending[cid] = self.pending.get(cid, 0) + billable(message)
        timer = self.timers.pop(cid, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self.timers[cid] = loop.call_later(self.quiet, self._due, cid)

    def _on_channel_event(self, message: Message) -> None:
        linked = message.get("Linkedid")
        if not linked:
            return
        if message.event == "DialEnd" and message.get("DialStatus") == "ANSWER":
            self.answered.setdefault(linked, self.clock())
            if len(self.answered) > 100_000:  # answers whose hangup was missed: forget the oldest
                for old in list(self.answered)[:50_000]:
                    del self.answered[old]
        elif message.event == "Hangup" and message.get("Uniqueid") == linked:
            started = self.answered.pop(linked, None)
            billsec = int(self.clock() - started) if started is not None else 0
            self._start(linked, billsec)

    def _start(self, cid: str, billsec: int) -> None:
        task = asyncio.create_task(self._run(cid, billsec))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _due(self, cid: str) -> None:
        self.timers.pop(cid, None)
        self._start(cid, self.pending.pop(cid, 0))

    async def _run(self, cid: str, billsec: int) -> None:
        for attempt in range(5):
            try:
                result = await self._settle(cid, billsec)
            except StoreUnavailable as exc:
                log.warning("settling %s failed (%s); retry %d", cid, exc, attempt + 1)
                await asyncio.sleep(2**attempt)
                continue
            log.debug("settled %s: %s", cid, result)
            return
        log.error("could not settle %s; its reservation will be charged in full at expiry", cid)

    async def flush(self) -> None:
        """Settle everything gathered so far (at shutdown)."""
        for cid, timer in list(self.timers.items()):
            timer.cancel()
            self._due(cid)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
