"""`callgate status` reads what the gates wrote to a real Redis: spend against caps, calls in flight,
counters, locks, panic and the policy version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from callgate.cli import main
from callgate.engine import prepare
from callgate.policyfile import load_policy
from callgate.policystore import PolicyStore
from callgate.redisstore import RedisStore
from callgate.rules import CallAttempt
from callgate.status import read_status, render_text

TEXT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
POLICY = load_policy(TEXT, "p.yaml")
NOW = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))


async def admit(store: RedisStore, call_id: str, ext: str, number: str) -> None:
    p = prepare(POLICY, CallAttempt(call_id, ext, number), NOW)
    assert p.admission is not None
    assert (await store.admit(p.admission)).admitted


async def test_status_of_a_busy_site(redis_store: RedisStore) -> None:
    """Two calls in flight, one settled: spend, reservations, counters, locks, panic all show."""
    await admit(redis_store, "a", "1001", "2125550123")
    await admit(redis_store, "b", "1001", "011442079460123")
    await admit(redis_store, "c", "2000", "2125550124")
    await redis_store.settle(POLICY.site.name, "c", 60, int(NOW.timestamp() * 1000) + 61_000)
    await redis_store.set_lock(POLICY.site.name, "1005", "international")
    await redis_store.set_panic(POLICY.site.name, True)
    status = await read_status(redis_store.client, POLICY, NOW + timedelta(seconds=70))
    assert (status.reservations, status.panic, status.locks) == (2, True, {"1005": "international"})
    day = {(x.scope, x.period): x for x in status.spend}
    assert day[("ext:2000", "day")].spent == "0.01"  # 60 s at 0.01/min, settled
    assert day[("ext:2000", "day")].cap == "150.00"
    assert day[("site", "day")].cap == "300.00"
    assert day[("site", "day")].percent is not None
    counters = {c.scope: c for c in status.counters}
    assert counters["ext:1001"].last_hour == 2
    assert counters["ext:1001"].concurrent == 2
    assert counters["ext:2000"].concurrent == 0
    text = render_text(status)
    assert "panic    ON" in text
    assert "1005 (international)" in text


async def test_status_command_reads_the_active_policy(
    redis_store: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --policy, status uses the version active in Redis and names it."""
    await PolicyStore(redis_store.client, POLICY.site.name).push(
        TEXT, "p.yaml", {}, by="t", at=datetime.now(UTC)
    )
    args = ["status", "--redis", redis_url, "--site", POLICY.site.name, "--health", ""]
    assert await _run(args) == 0
    out = capsys.readouterr().out
    assert "policy   version 1" in out


async def _run(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)
