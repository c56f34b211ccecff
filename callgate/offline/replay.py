"""Replay an Asterisk ``Master.csv`` through a policy: what would have been stopped, and what it saves.

Rows are streamed and reordered by start time within a bounded horizon (cdr_csv writes a row when a call
ends). Each outbound call is decided by the very engine ``serve`` runs, on the in-process store, at its
start time; an allowed call lasts its real billable seconds cut to its allowed seconds, and is settled when
it would have ended, so overlapping calls are concurrent and the spend caps see what they would have seen.
"""

from __future__ import annotations

import gc
import heapq
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from callgate.core.admission import billed_seconds, cost_micro, from_micro, money_text, to_micro
from callgate.core.bursts import lockdown_rule, short_call_rule
from callgate.core.engine import rule_on
from callgate.core.memo import Memo
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
_SHORT_CODE = re.compile(r"[0-9*#]+", re.ASCII)  # an extension or a feature code, when short
_NAME = re.compile(r"[A-Za-z]+", re.ASCII)  # s, h, i, t, fax: the dialplan's own extensions


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
    start: str = ""
    reported: tuple[str, ...] = ()  # reasons of the rules in mode: report that would have denied

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

    @property
    def saved(self) -> Decimal:
        return from_micro(self.cost - self.allowed_cost)

    def add(self, r: Replayed) -> None:
        self.rows += 1
        if r.verdict == "skip":
            return
        self.calls += 1
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


def replay(
    policy: Policy,
    rows: Iterable[CdrRow],
    *,
    only: Filter = Filter(),
    store: MemoryStore | None = None,
) -> Iterator[Replayed]:
    """Decide every row (in start order) and yield what happened to it."""
    store = store or MemoryStore()
    memo = Memo(policy)
    site, emergency, increment = policy.site.name, emergency_numbers(policy), policy.rates.increment
    # (end ms, call id, billsec, extension) of the allowed calls in progress
    ending: list[tuple[int, str, int, str]] = []
    for row in rows:
        start_ms = int(row.start.timestamp() * 1000)
        while ending and ending[0][0] <= start_ms:
            _settle(memo, store, heapq.heappop(ending))
        call_id = row.uniqueid or f"line-{row.line}"
        if not only.outbound(row, emergency):
            yield Replayed(
                call_id,
                row.src,
                row.dst,
                None,
                None,
                "skip",
                "not_outbound",
                row.billsec,
                0,
                0,
                0,
            )
            continue
        prepared = prepare(memo, CallAttempt(call_id, row.src, row.dst, row.accountcode), row.start)
        outcome = store.admit_now(prepared.admission) if prepared.admission is not None else None
        ruling = rule_on(prepared, outcome, detail=False)
        rate = to_micro(prepared.rate) if prepared.rate is not None else 0
        cost = cost_micro(rate, billed_seconds(row.billsec, increment))
        if ruling.verdict is Verdict.ALLOW:
            seconds = row.billsec if ruling.seconds == 0 else min(row.billsec, ruling.seconds)
            allowed_cost = cost_micro(rate, billed_seconds(seconds, increment))
            if prepared.admission is not None:
                ring_ms = max(row.duration - row.billsec, 0) * 1000
                end_ms = start_ms + ring_ms + seconds * 1000
                # settled under the reservation id it was admitted with (plan.reservation_id)
                reservation = prepared.admission.call_id
                heapq.heappush(ending, (end_ms, reservation, seconds, row.src))
            verdict, allowed_seconds = "allow", ruling.seconds or row.billsec
        else:
            allowed_cost, verdict, allowed_seconds = 0, "deny", 0
            lockdown = lockdown_rule(memo, ruling.reason)
            if lockdown is not None:
                store.count_burst_now(site, row.src, call_id, start_ms, lockdown)
        number = prepared.number
        reported = tuple(
            r.reason.value for r in ruling.results if r.outcome == REPORT and r.reason is not None
        )
        yield Replayed(
            call_id, row.src, row.dst, number.e164, number.country, verdict, ruling.reason.value,
            row.billsec, allowed_seconds, cost, allowed_cost, reported=reported,
        )  # fmt: skip
    while ending:
        _settle(memo, store, heapq.heappop(ending))


def _settle(memo: Memo, store: MemoryStore, ending: tuple[int, str, int, str]) -> None:
    """A replayed call ends: settle it, and count it if it was a short one (limits.short_calls)."""
    end_ms, call_id, seconds, extension = ending
    site = memo.policy.site.name
    store.settle_now(site, call_id, seconds, end_ms)
    short = short_call_rule(memo, extension, seconds)
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
