"""The spend invariant: settled + reserved never exceeds any cap, whatever the interleaving."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from callgate.core.admission import Admission, Check, CheckKind
from callgate.core.reasons import Reason
from callgate.store.memory import MemoryStore
from callgate.store.protocol import SettleStatus
from callgate.store.redis import RedisStore
from tests.conftest import DEPLOYMENTS, OpenStore

SITE = "inv"
T0 = 1_795_000_000_000
CAPS = {"s:ext:a:d": 3_000_000, "s:ext:b:d": 5_000_000, "s:site:d": 6_000_000}


def admission(
    call_id: str, ext: str, at: int, *, rate: int, increment: int, max_seconds: int
) -> Admission:
    checks = tuple(
        Check("spend", Reason.SPEND_CAP_DAY, CheckKind.SPEND, key, CAPS[key], 86400)
        for key in (f"s:ext:{ext}:d", "s:site:d")
    )
    return Admission(
        SITE, call_id, at, checks, rate, increment, max_seconds, 600, "lock:x", False, True
    )


class SpendMachine(RuleBasedStateMachine):
    """Random admissions, settlements and passing time against the in-process store."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        self.now = T0
        self.seq = 0
        self.open: dict[str, tuple[int, tuple[str, ...]]] = {}  # call -> (reserved, keys)
        self.charged = dict.fromkeys(CAPS, 0)

    @rule(
        target=calls,
        ext=st.sampled_from(["a", "b"]),
        rate=st.integers(0, 2_000_000),
        increment=st.sampled_from([1, 6, 60]),
        max_seconds=st.integers(60, 7200),
    )
    def admit(self, ext: str, rate: int, increment: int, max_seconds: int) -> str:
        self.seq += 1
        call_id = f"c{self.seq}"
        outcome = self.store.admit_now(
            admission(
                call_id, ext, self.now, rate=rate, increment=increment, max_seconds=max_seconds
            )
        )
        if outcome.admitted:
            assert outcome.allowed_seconds % increment == 0
            assert outcome.allowed_seconds <= max_seconds
            self.open[call_id] = (outcome.reserved, (f"s:ext:{ext}:d", "s:site:d"))
        return call_id

    @rule(call_id=calls, billsec=st.integers(-5, 10_000))
    def settle(self, call_id: str, billsec: int) -> None:
        result = self.store.settle_now(SITE, call_id, billsec, self.now)
        held = self.open.pop(call_id, None)
        if held is None:
            assert result.status is not SettleStatus.SETTLED
            return
        reserved, keys = held
        charged = (
            result.charged if result.status is SettleStatus.SETTLED else reserved
        )  # expired: in full
        assert 0 <= charged <= reserved
        for key in keys:
            self.charged[key] += charged

    @rule(seconds=st.integers(1, 4000))
    def wait(self, seconds: int) -> None:
        self.now += seconds * 1000

    @invariant()
    def never_over_any_cap(self) -> None:
        for key, cap in CAPS.items():
            committed = self.store.money(SITE, key)
            outstanding = sum(r for r, keys in self.open.values() if key in keys)
            assert committed == self.charged[key] + outstanding
            assert committed <= cap


TestSpendMachine = SpendMachine.TestCase
TestSpendMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.fixture(params=DEPLOYMENTS)
async def redis_store(
    request: pytest.FixtureRequest, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> RedisStore:
    """On a server, and on each master of a cluster (``SITE`` is then a name that lands on it)."""
    store, site = await open_store(request.param, SITE)
    monkeypatch.setitem(globals(), "SITE", site)
    return store


async def test_200_concurrent_admissions_never_pass_the_cap(redis_store: RedisStore) -> None:
    """200 simultaneous admissions on a real Redis: the reserved total stays under one small cap."""
    cap = 10_000_000  # 10.00 at 1.00/min with 60 s billing: at most 10 one-minute calls

    async def one(i: int) -> int:
        checks = (Check("spend", Reason.SPEND_CAP_DAY, CheckKind.SPEND, "s:ext:x:d", cap, 86400),)
        a = Admission(SITE, f"c{i}", T0 + i, checks, 1_000_000, 60, 180, 600, "lock:x", False, True)
        outcome = await redis_store.admit(a)
        return outcome.reserved if outcome.admitted else 0

    reserved = await asyncio.gather(*(one(i) for i in range(200)))
    committed = int(await redis_store.client.get(f"cg:{{{SITE}}}:s:ext:x:d") or 0)
    assert committed == sum(reserved) <= cap
    assert sum(1 for r in reserved if r) >= 4  # the cap was used, not refused wholesale
