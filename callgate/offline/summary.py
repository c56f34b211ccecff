"""What a replay adds up to, in bounded memory: the figures of ``replay``'s terminal summary and of its
HTML report (callgate/offline/html.py).

Every replayed row passes once through :meth:`Summary.add`; nothing keeps the rows. What is kept is
bounded whatever the file's length: sums per reason and origin (the enums bound them), per country (the
world bounds them), per extension and per number (:class:`Tally`: at most ``2 * cap`` keys), spend per
time bucket (:class:`Timeline`: at most ``buckets`` of them, wider as the file is longer), and the calls a
person reads one by one, the largest ``top`` of each list with the count and sum of the rest (:class:`Top`).

The tuning list (:class:`Tuning`) is the denied calls that look legitimate: a phone's own call (origin
``dialled``), refused by a rule about where, when or how often (a reason that counts toward a lockdown,
core.bursts), from an extension that never behaved like an attacked one during the whole replay: it was
never refused ``extension_locked``, and never had ``lockdown.after_denied`` such denials within its window
(the example's 5 within 10 minutes when the policy has no lockdown). A leg no phone dialled (a forward, a
transfer) is set off by an outside caller, so it is never on the list; its refusals are counted by origin.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Generic, TypeVar

from callgate.core.admission import money_text
from callgate.core.bursts import NOT_THE_CALLERS
from callgate.core.policy import Burst, Policy
from callgate.offline.replay import Replayed, Totals

TOP = 20  # calls of each list, and rows of each table, a person reads
TALLY_CAP = 10_000  # extensions, numbers: kept exactly up to twice this many distinct keys
BUCKETS = 400  # points of the spend-over-time chart, at most
HOUR_MS = 3600 * 1000
# the widths a time bucket may take, in hours: each a multiple of the one before, so buckets merge
LADDER = (1, 2, 6, 12, 24, 7 * 24, 28 * 24, 364 * 24)
EXAMPLE_BURST = Burst(5, 600)  # the example policy's lockdown.after_denied
LONGEST = 64  # characters of a CDR string kept (a field may hold 128 kB); longer ones end in "…"

# A Tally's sums for one key: [calls, denied, cost in the CDR, cost under the policy] (micro-units)
CALLS, DENIED, COST, KEPT = range(4)


K = TypeVar("K", str, tuple[str, str, str])


class Tally(Generic[K]):
    """Sums per key, at most ``2 * cap`` keys: when the table is full, only the ``cap`` largest by cost
    in the CDR are kept (``pruned`` counts such prunings; after one, the sums of a key seen again are
    at least what they say, and the report says so)."""

    __slots__ = ("cap", "pruned", "rows")

    def __init__(self, cap: int = TALLY_CAP) -> None:
        self.cap = cap
        self.rows: dict[K, list[int]] = {}
        self.pruned = 0

    def add(self, key: K, denied: int, cost: int, kept: int) -> None:
        entry = self.rows.get(key)
        if entry is None:
            if len(self.rows) >= 2 * self.cap:
                self._prune()
            entry = self.rows[key] = [0, 0, 0, 0]
        entry[CALLS] += 1
        entry[DENIED] += denied
        entry[COST] += cost
        entry[KEPT] += kept

    def top(self, n: int) -> list[tuple[K, list[int]]]:
        """The ``n`` keys that cost most in the CDR (then the most calls, then by key)."""
        return heapq.nsmallest(
            n, self.rows.items(), key=lambda kv: (-kv[1][COST], -kv[1][CALLS], kv[0])
        )

    def _prune(self) -> None:
        self.pruned += 1
        self.rows = dict(self.top(self.cap))


class Top:
    """The ``n`` calls of largest weight (micro-units), and the count and sum of every call added."""

    __slots__ = ("count", "heap", "micro", "n", "seq")

    def __init__(self, n: int = TOP) -> None:
        self.n = n
        self.heap: list[tuple[int, int, Replayed]] = []
        self.count = self.micro = self.seq = 0

    def add(self, weight: int, r: Replayed) -> None:
        self.count += 1
        self.micro += weight
        self.seq -= 1  # of equal weights, the earlier call is kept
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, (weight, self.seq, _trimmed(r)))
        elif (weight, self.seq) > self.heap[0][:2]:
            heapq.heapreplace(self.heap, (weight, self.seq, _trimmed(r)))

    def merge(self, other: Top) -> None:
        for weight, _, r in other.heap:
            self.add(weight, r)
        self.count += other.count - len(other.heap)
        self.micro += other.micro - sum(weight for weight, _, _ in other.heap)

    def calls(self) -> list[tuple[int, Replayed]]:
        """The calls kept, largest weight first."""
        return [(weight, r) for weight, _, r in sorted(self.heap, reverse=True)]


class Tuning:
    """The denied calls that look legitimate (the module's docstring says which), by extension until the
    end: an extension's earlier denials leave the list when it later behaves like an attacked one. At
    most ``cap`` extensions are followed (a PBX has far fewer); the denials of any other are counted in
    ``untracked``."""

    __slots__ = ("burst", "by_extension", "cap", "count", "n", "recent", "untracked", "within_ms")

    def __init__(self, burst: Burst = EXAMPLE_BURST, n: int = TOP, cap: int = TALLY_CAP) -> None:
        self.n, self.cap, self.count, self.within_ms = n, cap, burst.count, burst.within * 1000
        self.by_extension: dict[str, Top] = {}
        self.recent: dict[str, deque[int]] = {}  # the last burst.count denials' start times
        self.burst: set[str] = set()  # extensions that behaved like attacked ones
        self.untracked = 0

    def add(self, r: Replayed) -> None:
        """A denied call of a phone's own (origin dialled)."""
        extension = short(r.extension or "")
        if extension in self.burst or r.reason in NOT_THE_CALLERS:
            if r.reason == "extension_locked":
                self._attacked(extension)
            return
        recent = self.recent.get(extension)
        if recent is None:
            if len(self.recent) >= self.cap:
                self.untracked += 1
                return
            recent = self.recent[extension] = deque(maxlen=self.count)
            self.by_extension[extension] = Top(self.n)
        recent.append(r.start_ms)
        if len(recent) == self.count and recent[-1] - recent[0] <= self.within_ms:
            self._attacked(extension)
        else:
            self.by_extension[extension].add(r.cost_micro, r)

    def _attacked(self, extension: str) -> None:
        if len(self.burst) < self.cap:
            self.burst.add(extension)
        self.by_extension.pop(extension, None)
        self.recent.pop(extension, None)

    def result(self) -> Top:
        """The largest ``n`` of the list by cost in the CDR, and the count and sum of all of it."""
        merged = Top(self.n)
        for top in self.by_extension.values():
            merged.merge(top)
        return merged


class Timeline:
    """Spend per time bucket, as the CDR has it and under the policy, each call at its start time.

    A bucket is an hour of the site's clock (its UTC offset at the first call) while the calls span at
    most ``buckets`` hours; past that, buckets widen to the next width of :data:`LADDER` (2, 6, 12
    hours, a day, a week, ...) and merge, so at most ``buckets`` are ever held."""

    __slots__ = ("buckets", "cap", "first", "last", "offset_ms", "step", "width_ms")

    def __init__(self, buckets: int = BUCKETS) -> None:
        self.cap = buckets
        self.step, self.width_ms, self.offset_ms = 0, HOUR_MS, 0
        self.buckets: dict[int, list[int]] = {}  # bucket -> [cost, kept]
        self.first = self.last = 0  # the first and last bucket held

    def add(self, start_ms: int, cost: int, kept: int) -> None:
        key = (start_ms + self.offset_ms) // self.width_ms
        bucket = self.buckets.get(key)
        if bucket is None:
            if not self.buckets:
                self.first = self.last = key
            self.first, self.last = min(self.first, key), max(self.last, key)
            while self.last - self.first >= self.cap:
                self._widen()
                key = (start_ms + self.offset_ms) // self.width_ms
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = [0, 0]
        bucket[0] += cost
        bucket[1] += kept

    def _widen(self) -> None:
        self.step += 1
        old = self.width_ms
        hours = (
            LADDER[self.step]
            if self.step < len(LADDER)
            else LADDER[-1] * 2 ** (self.step - len(LADDER) + 1)
        )
        self.width_ms = hours * HOUR_MS
        merged: dict[int, list[int]] = {}
        for key, (cost, kept) in self.buckets.items():
            into = merged.setdefault(key * old // self.width_ms, [0, 0])
            into[0] += cost
            into[1] += kept
        self.buckets = merged
        self.first, self.last = min(merged), max(merged)

    def series(self) -> list[tuple[int, int, int]]:
        """(bucket start in ms since the epoch, cost, kept) for every bucket from the first to the
        last, empty ones included."""
        width, offset, buckets, empty = self.width_ms, self.offset_ms, self.buckets, [0, 0]
        series = []
        for key in range(self.first, self.last + 1) if buckets else ():
            cost, kept = buckets.get(key, empty)
            series.append((key * width - offset, cost, kept))
        return series


@dataclass(slots=True)
class Summary:
    """Everything the report shows of a replay, added up one row at a time (:meth:`add`)."""

    tz: tzinfo
    currency: str
    burst: Burst = EXAMPLE_BURST
    top: int = TOP
    totals: Totals = field(default_factory=Totals)
    by_reason: dict[str, list[int]] = field(default_factory=dict)  # reason -> [calls, cost]
    extensions: Tally[str] = field(default_factory=Tally)
    countries: Tally[str] = field(default_factory=Tally)
    numbers: Tally[str] = field(default_factory=Tally)
    groups: Tally[tuple[str, str, str]] = field(default_factory=Tally)  # ext, reason, country
    timeline: Timeline = field(default_factory=Timeline)
    cut: Top = field(init=False)  # the calls cut short; weight: what cutting them saved
    tuning: Tuning = field(init=False)  # the denied calls that look legitimate
    first_ms: int = 0  # the first and last start of an outbound call
    last_ms: int = 0

    def __post_init__(self) -> None:
        self.cut = Top(self.top)
        self.tuning = Tuning(self.burst, self.top)

    @classmethod
    def of(cls, policy: Policy) -> Summary:
        burst = policy.lockdown.after_denied if policy.lockdown else EXAMPLE_BURST
        return cls(policy.site.timezone, policy.site.currency, burst)

    def add(self, r: Replayed) -> None:
        """One replayed row (every row, skipped ones too: they are counted)."""
        self.totals.add(r)
        if r.verdict == "skip":
            return
        start, cost, kept = r.start_ms, r.cost_micro, r.allowed_micro
        if not self.first_ms:
            self.first_ms = start
            offset = datetime.fromtimestamp(start / 1000, self.tz).utcoffset()
            self.timeline.offset_ms = int(offset.total_seconds() * 1000) if offset else 0
        self.first_ms, self.last_ms = min(self.first_ms, start), max(self.last_ms, start)
        self.timeline.add(start, cost, kept)
        denied = r.verdict == "deny"
        extension, country = short(r.extension or "?"), r.country or "-"
        self.extensions.add(extension, denied, cost, kept)
        self.countries.add(country, denied, cost, kept)
        self.numbers.add(r.number or short(r.dst), denied, cost, kept)
        if denied:
            group = self.by_reason.get(r.reason)
            if group is None:
                group = self.by_reason[r.reason] = [0, 0]
            group[0] += 1
            group[1] += cost
            self.groups.add((extension, r.reason, country), 1, cost, 0)
            if r.origin == "dialled":
                self.tuning.add(r)
        elif r.allowed_seconds < r.billsec:
            self.cut.add(cost - kept, r)

    def figures(self) -> dict[str, object]:
        """The report's totals as plain data (the HTML page carries them, machine-readable): counts,
        and money in the jsonl's own text (six decimals)."""
        t, tuning = self.totals, self.tuning.result()
        return {
            "currency": self.currency,
            "rows": t.rows,
            "calls": t.calls,
            "allowed": t.allowed,
            "denied": t.denied,
            "cut": t.cut,
            "cost": money_text(t.cost),
            "allowed_cost": money_text(t.allowed_cost),
            "saved": money_text(t.cost - t.allowed_cost),
            "by_reason": {
                reason: {"calls": calls, "cost": money_text(cost)}
                for reason, (calls, cost) in self.denials()
            },
            "cut_short": {"calls": self.cut.count, "saved": money_text(self.cut.micro)},
            "tuning": {"calls": tuning.count, "cost": money_text(tuning.micro)},
            "first": _iso(self.first_ms, self.tz) if t.calls else None,
            "last": _iso(self.last_ms, self.tz) if t.calls else None,
        }

    def denials(self) -> list[tuple[str, list[int]]]:
        """(reason, [calls, cost in the CDR]), the costliest first."""
        return sorted(self.by_reason.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))


def short(text: str) -> str:
    """A CDR string as kept: at most :data:`LONGEST` characters."""
    return text if len(text) <= LONGEST else text[: LONGEST - 1] + "…"


def _trimmed(r: Replayed) -> Replayed:
    """The row as a list keeps it: its CDR strings :func:`short`."""
    return r._replace(
        uniqueid=short(r.uniqueid), src=short(r.src), dst=short(r.dst), via=short(r.via),
        extension=None if r.extension is None else short(r.extension),
    )  # fmt: skip


def _iso(ms: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds")
