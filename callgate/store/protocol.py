"""The counter store seam: one small Protocol, two implementations.

* :class:`callgate.store.memory.MemoryStore`: in-process, for ``explain``, ``replay`` and unit tests;
* :class:`callgate.store.redis.RedisStore`: Redis, shared by every gate of a site, one round trip per call.

Both keep the same semantics, checked by one shared test suite (``tests/test_store.py``):

* ``admit`` reads every check of an :class:`~callgate.core.admission.Admission` and, when the call fits under
  all of them (and the extension is not locked), reserves it on every one, atomically. Admitting a call id
  that already holds a reservation returns that reservation (``replayed``) and counts nothing again.
* ``peek`` reads the same values and never writes (``explain``).
* ``settle`` charges a call from its real billable seconds (cut to its allowed seconds and rounded up to
  the billing increment) and releases the rest of its reservation; it is idempotent by reservation id.
  ``billsec=None`` means the call cannot be settled (its answer or its record could not be read): its
  whole reservation stays charged, and only its concurrency slots are freed. A negative count, which no
  caller should send, is taken the same way.
* ``release`` frees the concurrency slots of a live reservation when the channel it was admitted for has
  hung up (its money stays reserved until ``settle`` or expiry), so a redial right after a hang-up is not
  refused while the call's CDR is on its way. Any other channel, an unknown or expired reservation, or
  a second release changes nothing (False).
* A reservation that is never settled expires ``hold`` seconds after its allowed seconds end. Its money
  stays charged in full; its concurrency slot is freed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from callgate.core.admission import Admission, BurstRule, Outcome
from callgate.core.policy import LockScope


class SettleStatus(enum.StrEnum):
    SETTLED = "settled"
    ALREADY_SETTLED = "already_settled"
    UNKNOWN = "unknown"  # never admitted here, or its reservation already expired (charged in full)


class Settlement(NamedTuple):
    status: SettleStatus
    charged: int = 0  # micro-units
    released: int = 0  # micro-units given back to every cap the call was reserved on
    billsec: int = 0  # the billable seconds charged (cut, rounded up; in full: the allowed)


SETTLED_MEMORY = (
    2 * 86400
)  # seconds a settled call id is remembered, so a repeated settle is a no-op


@dataclass(frozen=True, slots=True)
class BurstCount:
    """What counting one event of a burst rule saw: events in the window, and the lock it set."""

    count: int
    locked: bool  # this event set (or widened) the extension's lock
    lock: LockScope | None  # the lock now held


class Store(Protocol):
    async def admit(self, admission: Admission) -> Outcome: ...

    async def peek(self, admission: Admission) -> Outcome: ...

    async def settle(
        self, site: str, reservation_id: str, billsec: int | None, at_ms: int
    ) -> Settlement: ...

    async def release(self, site: str, reservation_id: str, channel: str, at_ms: int) -> bool: ...

    async def set_lock(self, site: str, extension: str, scope: str | None) -> None: ...

    async def set_panic(self, site: str, on: bool) -> None: ...

    async def count_burst(
        self, site: str, extension: str, call_id: str, at_ms: int, rule: BurstRule
    ) -> BurstCount: ...

    async def locks(self, site: str) -> dict[str, str]: ...

    async def panic(self, site: str) -> bool: ...

    async def aclose(self) -> None: ...
