"""Replay an Asterisk ``Master.csv`` through a policy: what would have been stopped, and what it saves.

Each outbound leg is judged with its :class:`~callgate.core.origins.Origin` and the extension that caused
it, told from the CDR's own columns by :class:`Linker` (a phone's own call, a forward, a follow-me or
ring group leg through a ``Local`` channel, a transfer); never from the outside caller's number.

Rows are streamed and reordered by start time within a bounded horizon (cdr_csv writes a row when a call
ends). Each outbound call is decided by the very engine ``serve`` runs, on the in-process store, at its
start time; an allowed call lasts its real billable seconds cut to its allowed seconds, and is settled when
it would have ended, so overlapping calls are concurrent and the spend caps see what they would have seen.
"""

from __future__ import annotations

import gc
import heapq
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, NamedTuple, TypeVar

from callgate.core.admission import billed_seconds, cost_micro, from_micro, money_text
from callgate.core.bursts import lockdown_rule, short_call_rule
from callgate.core.engine import rule_on
from callgate.core.memo import Memo
from callgate.core.origins import Origin
from callgate.core.plan import prepare
from callgate.core.policy import Policy
from callgate.core.reasons import Verdict
from callgate.core.rules import REPORT, CallAttempt
from callgate.offline.cdr import CdrRow
from callgate.store.memory import MemoryStore

# Destination contexts of calls coming in from a trunk (FreePBX and common plain-Asterisk names).
INBOUND_CONTEXTS = frozenset(
    {"from-pstn", "from-trunk", "ext-did", "from-did-direct", "from-external", "from-sip-external"}
)
# Destination contexts of a blind transfer's transferee (FreePBX's; plain Asterisk: TRANSFER_CONTEXT).
TRANSFER_CONTEXTS = frozenset({"from-internal-xfer"})
_SHORT_CODE = re.compile(r"[0-9*#]+", re.ASCII)  # an extension or a feature code, when short
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_LINK_HORIZON_MS = 24 * 3600 * 1000  # how long replay remembers a channel (the longest call)
_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z]+", re.ASCII)  # s, h, i, t, fax: the dialplan's own extensions
# Enum members read for every row, as module constants: on Python 3.11 reading one off its class costs
# about 40 ns, a global about 5.
_DIALLED: Final = Origin.DIALLED
_FORWARD: Final = Origin.FORWARD
_TRANSFER: Final = Origin.TRANSFER
_ALLOW: Final = Verdict.ALLOW


class Replayed(NamedTuple):
    """One row of the replay; the fields of ``replay --format jsonl`` (product.md)."""

    uniqueid: str
    src: str
    dst: str
    number: str | None
    country: str | None
    verdict: str  # allow | deny | skip
    reason: str
    billsec: int
    allowed_seconds: int
    cost_micro: int  # what the call cost in the CDR, micro-units
    allowed_micro: int  # what it would have cost under the policy, micro-units
    start_ms: int = 0  # when the call started, ms since the epoch (not in the jsonl)
    reported: tuple[str, ...] = ()  # reasons of the rules in mode: report that would have denied
    origin: str = "dialled"  # who caused the leg (core.origins.Origin)
    extension: str | None = (
        None  # whom it is charged to ("" when the CDR cannot tell); None: skipped
    )
    via: str = ""  # the inbound DID (or the trunk) that brought the call in, when known

    @property
    def cost(self) -> Decimal:
        return from_micro(self.cost_micro)

    @property
    def allowed_cost(self) -> Decimal:
        return from_micro(self.allowed_micro)

    def as_json(self) -> dict[str, object]:
        return {
            "uniqueid": self.uniqueid,
            "src": self.src,
            "dst": self.dst,
            "number": self.number,
            "country": self.country,
            "verdict": self.verdict,
            "reason": self.reason,
            "billsec": self.billsec,
            "allowed_seconds": self.allowed_seconds,
            "cost": money_text(self.cost_micro),
            "allowed_cost": money_text(self.allowed_micro),
            "reported": list(self.reported),
            "origin": self.origin,
            "extension": self.extension,
            "via": self.via,
        }


@dataclass(slots=True)
class Totals:
    rows: int = 0
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    cut: int = 0  # allowed, but shorter than in the CDR (budget or max duration)
    by_reason: Counter[str] = field(default_factory=Counter)
    cost: int = 0  # micro-units, as the CDR happened
    allowed_cost: int = 0  # micro-units, under the policy
    by_report: Counter[str] = field(default_factory=Counter)  # mode: report rules that would deny
    by_origin: Counter[tuple[str, str]] = field(default_factory=Counter)  # (origin, verdict)
    unattributed: int = 0  # legs no phone dialled whose extension the CDR could not tell

    @property
    def saved(self) -> Decimal:
        return from_micro(self.cost - self.allowed_cost)

    def add(self, r: Replayed) -> None:
        self.rows += 1
        if r.verdict == "skip":
            return
        self.calls += 1
        if r.origin != "dialled":
            self.by_origin[r.origin, r.verdict] += 1
            self.unattributed += not r.extension
        self.cost += r.cost_micro
        self.allowed_cost += r.allowed_micro
        if r.reported:
            self.by_report.update(r.reported)
        if r.verdict == "allow":
            self.allowed += 1
            self.cut += r.allowed_seconds < r.billsec
        else:
            self.denied += 1
            self.by_reason[r.reason] += 1


@dataclass(frozen=True, slots=True)
class Filter:
    """Which rows are outbound calls: the ones the dialplan would have handed to the live gate.

    A row is an outbound attempt unless its ``dcontext`` is an inbound one (or not one of
    ``contexts``, when given), or its ``dst`` is empty, a dialplan name (ASCII letters only: ``s``,
    ``h``, ``fax``) or a short code: at most ``internal_digits`` characters of ASCII ``0-9*#`` (an
    extension, a feature code such as ``*97``) that is not an emergency number, with or without an
    outside-line prefix. Every other ``dst`` is judged as written, never trimmed, by the engine the
    live gate runs: ``sip:...``, a leading space or digits of another script are what a phone can
    send, and the gate denies them as ``unparseable_number``, so replay shows them denied too.
    """

    contexts: frozenset[str] = frozenset()  # when set, only these dcontexts
    inbound: frozenset[str] = INBOUND_CONTEXTS
    internal_digits: int = (
        5  # a dialled string of at most this many digits is an internal extension
    )
    transfer: frozenset[str] = TRANSFER_CONTEXTS  # dcontexts of a transferee's leg
    forward: frozenset[str] = frozenset()  # dcontexts whose outbound legs are forwards
    trunks: frozenset[str] = frozenset()  # trunk endpoints, besides those seen bringing calls in
    via: tuple[
        tuple[str, str], ...
    ] = ()  # (DID or trunk, extension): who a call that came in on it is for

    def outbound(self, row: CdrRow, emergency: frozenset[str] = frozenset()) -> bool:
        """``emergency``: the policy's emergency numbers, also behind each outside-line prefix
        (:func:`emergency_numbers`); they are calls, however short."""
        dst = row.dst
        if not dst or (self.contexts and row.dcontext not in self.contexts):
            return False
        if row.dcontext in self.inbound:
            return False
        if len(dst) <= self.internal_digits and _SHORT_CODE.fullmatch(dst):
            return dst in emergency
        return _NAME.fullmatch(dst) is None


def emergency_numbers(policy: Policy) -> frozenset[str]:
    """The policy's emergency numbers as dialled, alone and behind each outside-line prefix."""
    alone = frozenset(policy.emergency)
    return alone | {p + e for p in policy.site.outside_line for e in alone}


class Cause(NamedTuple):
    """Who an outbound leg is charged to, and why."""

    extension: str  # "" when the CDR cannot tell
    origin: Origin
    via: str = ""  # the inbound DID, or the trunk when the DID is not in the CDR


class _Seen(NamedTuple):
    """What a channel's earlier rows said: the cause of its own legs and the phone it last reached."""

    cause: Cause
    phone: str  # the extension of the phone it last reached, "" if none
    answered: int  # when that phone answered (ms since the epoch); 0: it did not


def endpoint(channel: str) -> tuple[str, str]:
    """``PJSIP/voipco-0000001a`` -> ``("PJSIP", "voipco")``; a Local channel's name without ``;1``/``;2``:
    ``Local/19175550142@from-internal-0000002b;2`` -> ``("Local", "19175550142@from-internal-0000002b")``."""
    tech, _, rest = channel.partition("/")
    if tech == "Local":
        return tech, rest[:-2] if rest[-2:] in (";1", ";2") else rest
    name, dash, _ = rest.rpartition("-")
    return tech, name if dash else rest


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _forwarder(row: CdrRow) -> str:
    """The endpoint whose phone forwarded a ``Dial()`` (it answered "302 Moved"): the row reached a
    Local channel that the Dial's own targets do not name, Asterisk's way of following the 302; the
    endpoint is the Dial's one target (``PJSIP/1002``, FreePBX's ``PJSIP/1002/sip:1002@host``). "" for
    anything else, and for a Dial of several phones: which of them forwarded, the row does not say."""
    if row.lastapp != "Dial" or "Local/" in row.lastdata:
        return ""
    targets = row.lastdata.partition(",")[0].split("&")
    if len(targets) != 1:
        return ""
    tech, _, rest = targets[0].partition("/")
    endpoint, _, contact = rest.partition("/")
    if not tech or not endpoint or "@" in endpoint or (contact and not contact.startswith("sip:")):
        return ""
    return endpoint


def dial_target(lastdata: str, trunk: str) -> str | None:
    """The number ``Dial()``'s arguments send to the endpoint ``trunk``: ``PJSIP/NUMBER@trunk``, or
    ``SIP/trunk/NUMBER`` (also IAX2, DAHDI...); the first such target of an ``&`` list, else None."""
    for target in lastdata.partition(",")[0].split("&"):
        rest = target.partition("/")[2]
        number, at, name = rest.rpartition("@")
        if at and name == trunk and number:
            return number
        name, slash, number = rest.partition("/")
        if slash and name == trunk and number and "/" not in number:
            return number
    return None


class Linker:
    """Tells, from a row and the call's earlier rows, whether the row is an outbound leg, the string it
    dialled and who caused it (a :class:`Cause`). Rows must come in start order.

    A channel's earlier rows are remembered by channel name (unique within a call), a ``Local`` channel's
    cause by its name without ``;1``/``;2``, and a call's inbound side by ``linkedid`` (newcdrcolumns), for
    a day (bounded). Trunks are the endpoints given, and every endpoint seen bringing a call into an
    inbound context. The outside caller's number (``src`` of a trunk's or a Local channel's row) is
    never used. docs/operations.md lists the shapes and what each needs from the admin.
    """

    def __init__(self, only: Filter, endpoints: Mapping[str, str] | None = None) -> None:
        self.only = only
        self.via = dict(only.via)
        self.trunks = set(only.trunks)
        self.endpoints = endpoints or {}
        self.channels: dict[str, tuple[int, _Seen]] = {}
        self.locals: dict[str, tuple[int, Cause]] = {}
        self.calls: dict[str, tuple[int, Cause]] = {}
        self.expiry: deque[tuple[int, int, str]] = deque()  # (start ms, table, key)

    def leg(
        self, row: CdrRow, start_ms: int, emergency: frozenset[str] = frozenset()
    ) -> tuple[str, Cause] | None:
        """The dialled string and cause of ``row`` when it is an outbound leg, else None; the row is
        remembered either way."""
        only, trunks, expiry = self.only, self.trunks, self.expiry
        if expiry and expiry[0][0] < start_ms - _LINK_HORIZON_MS:
            self._forget(start_ms - _LINK_HORIZON_MS)
        tech, name = endpoint(row.channel)
        inbound = row.dcontext in only.inbound
        if inbound and tech != "Local" and name:
            trunks.add(name)
        dtech, dname = endpoint(row.dstchannel) if row.dstchannel else ("", "")
        outbound = only.outbound(row, emergency)
        target = None
        if dname and dtech != "Local" and not (outbound and dname in trunks):
            target = dial_target(row.lastdata, dname)
            if target is not None:  # Dial(PJSIP/NUMBER@endpoint) reached that endpoint: a trunk
                trunks.add(dname)
        remembered = self.channels.get(row.channel)
        seen = None if remembered is None else remembered[1]
        cause: Cause
        if tech == "Local" and seen is not None and row.channel.endswith(";1"):
            cause = seen.cause  # the ;1 half a call reached runs dialplan: it was transferred
        elif tech == "Local":
            found = self._get(self.locals, name) or self._get(self.calls, row.linkedid or "")
            cause = found if found is not None else Cause("", _FORWARD)
        elif name in self.trunks:  # a call that came in: src is the outside caller
            if seen is not None:
                cause = seen.cause
            else:
                via = row.dst if inbound and row.dst and not _is_short(row.dst, only) else name
                cause = Cause(self.via.get(via) or self.via.get(name, ""), _FORWARD, via)
        elif seen is not None and not seen.phone:
            cause = seen.cause  # a phone's channel that the far end transferred
        else:
            cause = tuple.__new__(Cause, (row.src, _DIALLED, ""))  # Cause(row.src, _DIALLED)
        if seen is not None and seen.phone:  # a phone was reached on this channel before
            # moved on after the phone answered: transferred; before (a forward on no answer, or a
            # follow-me ringing the phone and other numbers at once): forwarded
            answered = 0 < seen.answered <= start_ms
            origin = _TRANSFER if answered else _FORWARD
            cause = Cause(seen.phone, origin, cause.via)
        dialled: str | None = None
        if outbound:
            dialled = row.dst
        elif (
            target is not None
            and not (only.contexts and row.dcontext not in only.contexts)
            and (inbound or cause.origin is not _DIALLED or _DIGITS.fullmatch(row.dst))
        ):  # a Dial() to a trunk from an inbound context, a call that came in, or an extension
            dialled = target
            if cause.origin is _DIALLED:
                cause = Cause(self._extension(row.dst, cause), _FORWARD, cause.via)
        if row.dcontext in only.transfer:
            cause = cause._replace(origin=_TRANSFER)
        elif row.dcontext in only.forward and cause.origin is _DIALLED:
            cause = cause._replace(origin=_FORWARD)
        self._remember(row, start_ms, tech, name, dtech, dname, cause, seen)
        return None if dialled is None else (dialled, cause)

    def _extension(self, dst: str, cause: Cause) -> str:
        """The extension a call reached when it went on elsewhere: ``dst`` when it is an extension, the
        extension of the DID ``dst`` (``via``), else the cause's own."""
        if len(dst) <= self.only.internal_digits and _DIGITS.fullmatch(dst):
            return dst
        return self.via.get(dst) or cause.extension

    def _remember(  # noqa: PLR0917
        self,
        row: CdrRow,
        start_ms: int,
        tech: str,
        name: str,
        dtech: str,
        dname: str,
        cause: Cause,
        seen: _Seen | None,
    ) -> None:
        base = cause if seen is None else seen.cause
        phone, answered = ("", 0) if seen is None else (seen.phone, seen.answered)
        if row.dstchannel and tech != "Local" and (dtech == "Local" or dname in self.trunks):
            # should the party this call reached run dialplan later (a Local ;1 half, or the
            # carrier's channel), it was transferred: by the phone whose call it was, or, from a
            # trunk's channel, by the far end (nobody's)
            by = "" if name in self.trunks else self.endpoints.get(name, name)
            # _Seen(Cause(by, _TRANSFER, base.via), "", 0), built as plain tuples: every outbound row
            moved = tuple.__new__(_Seen, (tuple.__new__(Cause, (by, _TRANSFER, base.via)), "", 0))
            self._put(self.channels, 0, row.dstchannel, start_ms, moved)
        if row.dstchannel and dtech != "Local" and dname not in self.trunks:
            phone = self.endpoints.get(dname, dname)
            answered = _ms(row.answer) if row.answer is not None else 0
            if tech != "Local" and name in self.trunks and answered:  # the far end may transfer it:
                # nobody's, as the live gate has it (an outside caller moving the phone he reached)
                self._put(self.channels, 0, row.dstchannel, start_ms,
                          _Seen(Cause("", _TRANSFER, base.via), "", 0))  # fmt: skip
        if phone or base.origin is not _DIALLED:  # else a later row is the phone's own too
            self._put(self.channels, 0, row.channel, start_ms, _Seen(base, phone, answered))
        forwarder = _forwarder(row) if dtech == "Local" else ""
        if forwarder and forwarder not in self.trunks:  # a phone answered the Dial with 302
            self._put(self.locals, 1, dname, start_ms,
                      Cause(self.endpoints.get(forwarder, forwarder), _FORWARD, cause.via))  # fmt: skip
        elif dtech == "Local":
            if cause.origin is _DIALLED and not _is_short(row.dst, self.only):
                leg = cause  # a phone's own call that goes out through a Local channel
            else:
                origin = _TRANSFER if cause.origin is _TRANSFER else _FORWARD
                leg = Cause(self._extension(row.dst, cause), origin, cause.via)
            self._put(self.locals, 1, dname, start_ms, leg)
        linked = row.linkedid
        if linked and tech != "Local" and name in self.trunks and linked not in self.calls:
            self._put(self.calls, 2, linked, start_ms, base)

    def _get(self, table: dict[str, tuple[int, _T]], key: str) -> _T | None:
        found = table.get(key)
        return None if found is None else found[1]

    def _put(
        self, table: dict[str, tuple[int, _T]], kind: int, key: str, ms: int, value: _T
    ) -> None:
        table[key] = (ms, value)
        self.expiry.append((ms, kind, key))

    def _forget(self, before_ms: int) -> None:
        expiry = self.expiry
        tables: tuple[dict[str, tuple[int, object]], ...] = (self.channels, self.locals, self.calls)  # type: ignore[assignment]
        while expiry and expiry[0][0] < before_ms:
            ms, kind, key = expiry.popleft()
            table = tables[kind]
            found = table.get(key)
            if found is not None and found[0] == ms:
                del table[key]


def _is_short(dst: str, only: Filter) -> bool:
    return len(dst) <= only.internal_digits and _SHORT_CODE.fullmatch(dst) is not None


def replay(
    policy: Policy,
    rows: Iterable[CdrRow],
    *,
    only: Filter = Filter(),
    store: MemoryStore | None = None,
) -> Iterator[Replayed]:
    """Decide every row (in start order) and yield what happened to it.

    Each outbound leg is judged as the leg of its origin, charged to the extension that caused it
    (:class:`Linker`); ``dst`` of a :class:`Replayed` is the string judged: the row's ``dst``, or the
    number ``Dial()`` sent to the trunk when ``dst`` is the DID or extension the call came in on."""
    store = store or MemoryStore()
    memo = Memo(policy)
    linker = Linker(only, policy.endpoints)
    site, emergency, increment = policy.site.name, emergency_numbers(policy), policy.rates.increment
    new = tuple.__new__  # NamedTuples without their Python-level __new__
    # (end ms, call id, billsec, extension, origin) of the allowed calls in progress
    ending: list[tuple[int, str, int, str, Origin]] = []
    for row in rows:
        start_ms = int(row.start.timestamp() * 1000)
        while ending and ending[0][0] <= start_ms:
            _settle(memo, store, heapq.heappop(ending))
        call_id = row.uniqueid or f"line-{row.line}"
        leg = linker.leg(row, start_ms, emergency)
        if leg is None:  # Replayed(...), every field
            yield new(Replayed, (call_id, row.src, row.dst, None, None, "skip", "not_outbound",
                                 row.billsec, 0, 0, 0, start_ms, (), "dialled", None, ""))  # fmt: skip
            continue
        dialled, (extension, origin, via) = leg
        attempt = CallAttempt(call_id, extension, dialled, row.accountcode, origin=origin, via=via)
        prepared = prepare(memo, attempt, row.start)
        admission = prepared.admission
        outcome = store.admit_now(admission) if admission is not None else None
        ruling = rule_on(prepared, outcome, detail=False)
        # the rate in micro-units, as the admission holds it (replay has no provider above the site,
        # so to_micro(prepared.rate)); an emergency call has none
        rate = admission.rate if admission is not None else 0
        billsec = row.billsec
        cost = cost_micro(rate, billed_seconds(billsec, increment))
        if ruling.verdict is _ALLOW:
            seconds = billsec if ruling.seconds == 0 else min(billsec, ruling.seconds)
            allowed_cost = cost_micro(rate, billed_seconds(seconds, increment))
            if admission is not None:
                ring_ms = max(row.duration - billsec, 0) * 1000
                end_ms = start_ms + ring_ms + seconds * 1000
                # settled under the reservation id it was admitted with (plan.reservation_id)
                heapq.heappush(ending, (end_ms, admission.call_id, seconds, extension, origin))
            verdict, allowed_seconds = "allow", ruling.seconds or billsec
        else:
            allowed_cost, verdict, allowed_seconds = 0, "deny", 0
            lockdown = lockdown_rule(memo, ruling.reason, origin)
            if lockdown is not None:
                store.count_burst_now(site, extension, call_id, start_ms, lockdown)
        number = prepared.number
        reported = tuple(  # a list comprehension: quicker than a generator here
            [r.reason.value for r in ruling.results if r.outcome == REPORT and r.reason is not None]
        )
        yield new(
            Replayed,
            (call_id, row.src, dialled, number.e164, number.country, verdict, ruling.reason.value,
             billsec, allowed_seconds, cost, allowed_cost, start_ms, reported, origin.value, extension,
             via),
        )  # fmt: skip
    while ending:
        _settle(memo, store, heapq.heappop(ending))


def _settle(memo: Memo, store: MemoryStore, ending: tuple[int, str, int, str, Origin]) -> None:
    """A replayed call ends: settle it, and count it if it was a short one (limits.short_calls; a
    phone's own calls only)."""
    end_ms, call_id, seconds, extension, origin = ending
    site = memo.policy.site.name
    store.settle_now(site, call_id, seconds, end_ms)
    short = short_call_rule(memo, extension, seconds, origin)
    if short is not None:
        store.count_burst_now(site, extension, call_id, end_ms, short)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """For the length of a replay, let the cyclic garbage collector run a hundred times less often.

    A replay builds millions of short-lived tuples that hold no cycles; the collector's default
    (a pass every 700 allocations, walking the rows held for start order and the store's counters)
    costs a tenth of the time for nothing. The objects alive before are frozen out of its passes.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
