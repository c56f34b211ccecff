"""`callgate status` reads what the gates wrote to a real Redis: calls admitted and settled through the
Lua scripts, spend against caps, calls in flight and the live calls they are, counters, locks, panic,
policy version; on a redis-server and on each master of a Redis Cluster."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from callgate.cli import main
from callgate.core.keys import site_prefix
from callgate.core.memo import Memo
from callgate.core.origins import Origin
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.errors import StoreUnavailable
from callgate.ops.metrics import Metrics, MetricsServer
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import fetch_health, read_status
from callgate.ops.statustext import as_json, money, render_text
from callgate.ops.statustree import LiveCall, SpendLine, Status
from callgate.store.redis import RedisStore
from tests.conftest import DEPLOYMENTS, OpenStore
from tests.servers import free_port

DEFAULT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
# the shipped example, with caps over the whole office profile and a report-only site cap
TEXT = DEFAULT.replace(
    '      spend: {hour: "15.00", day: "40.00", month: "400.00"}\n',
    '      spend: {hour: "15.00", day: "40.00", month: "400.00"}\n'
    "    profile_limits:\n"
    "      concurrent_calls: 10\n"
    '      spend: {month: "2000.00"}\n',
).replace(
    'spend: {day: "300.00", month: "3000.00"}',
    'spend: {day: "300.00", month: "3000.00", mode: report}',
)
POLICY = load_policy(TEXT, "p.yaml")
MEMO = Memo(POLICY)
SITE = POLICY.site.name
P = site_prefix(SITE)
NOW = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Tuesday, office hours
MS = int(NOW.timestamp() * 1000)


RESERVATIONS: dict[str, str] = {}  # call id -> its reservation id (plan.reservation_id)


@pytest.fixture(params=DEPLOYMENTS)
async def redis_store(
    request: pytest.FixtureRequest, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> RedisStore:
    """On a server, and on each master of a cluster: there the site is a name whose hash tag lands on
    that master, and ``TEXT``, ``POLICY``, ``MEMO``, ``SITE`` and ``P`` are its."""
    store, site = await open_store(request.param, SITE)
    text = TEXT.replace(f"name: {SITE}", f"name: {site}")
    policy = load_policy(text, "p.yaml")
    named = {
        "TEXT": text,
        "POLICY": policy,
        "MEMO": Memo(policy),
        "SITE": site,
        "P": site_prefix(site),
    }
    for name, value in named.items():
        monkeypatch.setitem(globals(), name, value)
    return store


async def admit(
    store: RedisStore,
    call_id: str,
    ext: str,
    number: str,
    at: datetime = NOW,
    *,
    origin: Origin = Origin.DIALLED,
) -> int:
    """Admit one call the way the gate does, on channel chan-<call id> of gate pbx1; the money it
    reserved (micro-units)."""
    attempt = CallAttempt(call_id, ext, number, leg=f"chan-{call_id}", origin=origin)
    p = prepare(MEMO, attempt, at)
    assert p.admission is not None
    RESERVATIONS[call_id] = p.admission.call_id
    outcome = await store.admit(p.admission._replace(instance="pbx1"))
    assert outcome.admitted
    return outcome.reserved


async def busy_site(store: RedisStore) -> None:
    """Two calls of 1001 up (one abroad, one its forward), one of 2000 settled after a minute;
    locks and panic on."""
    forward = Origin.FORWARD
    assert await admit(store, "a", "1001", "2125550123", origin=forward) == 1_200_000  # 2 h at 0.01
    assert await admit(store, "b", "1001", "011442079460123") == 2_400_000  # 2 h at 0.02/min
    assert await admit(store, "c", "2000", "2125550124") == 1_200_000
    settled = await store.settle(SITE, RESERVATIONS["c"], 60, MS + 20_000)
    assert settled.charged == 10_000
    await store.set_lock(SITE, "1005", "international")
    await store.set_lock(SITE, "2000", "all")
    await store.set_panic(SITE, True)


def spend_of(status: Status) -> dict[tuple[str, str], SpendLine]:
    return {(x.scope, x.period): x for x in status.spend}


async def test_spend_reservations_counters_locks_panic(redis_store: RedisStore) -> None:
    """Every figure matches what the Lua scripts wrote: spend per scope and period against its cap."""
    await busy_site(redis_store)
    status = await read_status(redis_store.client, POLICY, NOW + timedelta(seconds=30))
    assert (status.reservations, status.reserved) == (2, 3_600_000)
    assert (status.panic, status.locks) == (True, (("1005", "international"), ("2000", "all")))
    spend = {k: (x.spent, x.cap, x.percent) for k, x in spend_of(status).items()}
    assert spend == {
        ("ext:1001", "hour"): (3_600_000, 15_000_000, 24),
        ("ext:1001", "day"): (3_600_000, 40_000_000, 9),
        ("ext:1001", "month"): (3_600_000, 400_000_000, Decimal("0.9")),
        ("ext:2000", "hour"): (10_000, 15_000_000, Decimal("0.1")),
        ("ext:2000", "day"): (10_000, 150_000_000, 0),
        ("ext:2000", "month"): (10_000, 400_000_000, 0),
        ("prof:office", "month"): (3_610_000, 2_000_000_000, Decimal("0.2")),
        ("site", "day"): (3_610_000, 300_000_000, Decimal("1.2")),
        ("site", "month"): (3_610_000, 3_000_000_000, Decimal("0.1")),
    }
    assert spend_of(status)[("site", "day")].report
    assert not spend_of(status)[("ext:1001", "day")].report
    # site first, then profiles, then the fullest extension
    scopes = list(dict.fromkeys(x.scope for x in status.spend))
    assert scopes == ["site", "prof:office", "ext:1001", "ext:2000"]
    assert [x.bucket for x in status.spend if x.scope == "ext:1001"] == [
        "2026-11-17T10",
        "2026-11-17",
        "2026-11",
    ]
    counters = {c.scope: {n.name: (n.value, n.limit) for n in c.counts} for c in status.counters}
    assert counters["ext:1001"] == {
        "calls_per_minute": (2, 4),
        "calls_per_hour": (2, 60),
        "international_calls_per_hour": (1, 10),
        "concurrent_calls": (2, 3),
    }
    assert counters["ext:2000"]["concurrent_calls"] == (0, 3)  # settled: its slot is free
    assert counters["ext:2000"]["calls_per_minute"] == (1, 4)  # still counted in the window
    assert counters["site"] == {
        "calls_per_minute": (0, None),
        "calls_per_hour": (0, None),
        "international_calls_per_hour": (1, 60),
        "concurrent_calls": (2, 20),
    }
    assert counters["prof:office"]["concurrent_calls"] == (2, 10)
    assert [c.scope for c in status.counters] == ["site", "prof:office", "ext:1001", "ext:2000"]


async def test_time_moves_windows_and_buckets(redis_store: RedisStore) -> None:
    """Later reads drop calls out of their windows, and a new hour starts an empty bucket."""
    await busy_site(redis_store)
    later = await read_status(redis_store.client, POLICY, NOW + timedelta(minutes=61))
    counters = {c.scope: {n.name: n.value for n in c.counts} for c in later.counters}
    assert counters["ext:1001"]["calls_per_minute"] == 0
    assert counters["ext:1001"]["calls_per_hour"] == 0
    assert counters["ext:1001"]["concurrent_calls"] == 2  # reserved for 2 h + hold
    assert "ext:2000" not in counters  # nothing in any window, nothing up
    hour = spend_of(later)[("ext:1001", "hour")]
    assert (hour.bucket, hour.spent, hour.cap) == ("2026-11-17T11", 0, 15_000_000)
    assert spend_of(later)[("ext:1001", "day")].spent == 3_600_000


async def test_only_this_site_and_the_current_periods(redis_store: RedisStore) -> None:
    """Yesterday's buckets, other sites and keys of unknown shapes are left out."""
    c = redis_store.client
    await c.set(P + "s:ext:1001:2026-11-16", 9_000_000)  # yesterday
    await c.set(P + "s:ext:1001:2026-11-17T09", 9_000_000)  # the hour before
    await c.set(site_prefix("other-site") + "s:ext:1001:2026-11-17", 9_000_000)
    await c.set(P + "s:ext:1002:2026-11-17", 5_000_000)
    await c.set(P + "s:ext:1019:2026-11-17", 39_000_000)  # 97.5% of its day cap: listed first
    await c.set(P + "r:foreign", "not a hash")  # a reservation of a shape not known here
    await c.set(P + "policy:active", "7")  # a version whose record is missing
    status = await read_status(c, POLICY, NOW)
    assert [(x.scope, x.period, x.spent) for x in status.spend if x.spent] == [
        ("ext:1019", "day", 39_000_000),
        ("ext:1002", "day", 5_000_000),
    ]
    assert (status.live_calls, status.reservations) == (0, 0)
    assert status.active is not None
    assert (status.active.version, status.active.digest) == (7, "")


@pytest.mark.parametrize(
    ("later", "live"),
    [
        (timedelta(seconds=30), ["a", "b"]),  # c was settled after a minute
        (timedelta(hours=2, minutes=9), ["a", "b"]),  # allowed 2 h, held 10 min more
        (timedelta(hours=2, minutes=11), []),  # expired: charged in full, no longer up
    ],
)
async def test_live_calls_are_the_reservations(
    redis_store: RedisStore, later: timedelta, live: list[str]
) -> None:
    """The live calls are the admitted calls not yet settled nor expired, read from the reservations
    the admission script wrote: who, where, on which channel and gate, since when, for how long."""
    await busy_site(redis_store)
    status = await read_status(redis_store.client, POLICY, NOW + later)
    assert (status.live_calls, status.reservations) == (len(live), len(live))
    assert [x.call_id for x in status.live] == [RESERVATIONS[c] for c in live]
    if live:
        assert status.live[1] == LiveCall(
            RESERVATIONS["b"], "1001", "+442079460123", True, "chan-b",
            "2026-11-17T10:00:00-05:00", 7200, "pbx1", MS + 7_800_000, "dialled",
        )  # fmt: skip
        assert (status.live[0].international, status.live[0].origin) == (False, "forward")
        assert (
            "  1001 -> +442079460123 (international) since 2026-11-17T10:00:00-05:00, at most "
            "7200s, channel chan-b on pbx1"
        ) in render_text(status)
        assert "  1001 -> +12125550123 (domestic, forward) since " in render_text(status)
    else:
        assert "live calls" not in render_text(status)


async def test_live_calls_earliest_first_all_counted(redis_store: RedisStore) -> None:
    """The first live_limit calls by admission time are listed (not by id); all are counted."""
    for call_id, seconds in [("z", 0), ("y", 5), ("x", 10)]:
        at = NOW + timedelta(seconds=seconds)
        await admit(redis_store, call_id, "1001", f"21255501{seconds:02d}", at)
    status = await read_status(
        redis_store.client, POLICY, NOW + timedelta(seconds=30), live_limit=2
    )
    assert (status.live_calls, [x.call_id for x in status.live]) == (
        3,
        [RESERVATIONS["z"], RESERVATIONS["y"]],
    )
    assert status.live[1].admitted_at == "2026-11-17T10:00:05-05:00"
    text = render_text(status)
    assert "live calls 3" in text
    assert "  ... and 1 more" in text
    unlisted = await read_status(redis_store.client, POLICY, NOW, live_limit=0)  # as /metrics
    assert (unlisted.live_calls, unlisted.live, unlisted.reserved) == (3, (), status.reserved)


async def test_policy_version(redis_store: RedisStore) -> None:
    """The active version with who pushed it; no "caps from" line when the caps are its own."""
    c = redis_store.client
    pushed = await PolicyStore(c, SITE).push(TEXT, "p.yaml", {}, by="alice@pbx", at=NOW)
    status = await read_status(c, POLICY, NOW)
    assert status.active is not None
    assert (status.active.version, status.active.pushed_by) == (1, "alice@pbx")
    assert status.active.digest == pushed.stored.digest == POLICY.digest
    assert status.policy_version == 1
    text = render_text(status)
    assert "policy     version 1 sha256:" in text
    assert "caps from" not in text  # the caps are the active version's


async def test_text_and_json(redis_store: RedisStore) -> None:
    """The text names what an admin looks for; the JSON holds the same figures, money exact."""
    await busy_site(redis_store)
    status = await read_status(redis_store.client, POLICY, NOW + timedelta(seconds=30))
    text = render_text(status)
    assert f"site       {SITE} at 2026-11-17T10:00:30-05:00" in text
    assert "policy     no version active in Redis (file mode)" in text
    assert "caps from  p.yaml sha256:" in text
    assert "panic      ON: every international call is refused" in text
    assert "locks      1005 (international), 2000 (all)" in text
    assert "in flight  2 admitted calls not yet settled, 3.60 USD reserved" in text
    line = next(x for x in text.splitlines() if x.startswith("  ext:1001") and "hour" in x)
    assert line.split() == ["ext:1001", "hour", "2026-11-17T10", "3.60", "15.00", "24.0%"]
    assert any(x.startswith("  site") and x.endswith("(mode: report)") for x in text.splitlines())
    row = next(x for x in text.splitlines() if x.startswith("  ext:1001") and "/" in x)
    assert row.split() == ["ext:1001", "2/4", "2/60", "1/10", "2/3"]
    data = json.loads(as_json(status))
    assert data["reservations"] == {"count": 2, "reserved": "3.60", "reserved_micro": 3_600_000}
    assert data["locks"] == {"1005": "international", "2000": "all"}
    assert data["policy"]["active"] is None
    day = next(x for x in data["spend"] if (x["scope"], x["period"]) == ("ext:2000", "day"))
    assert day == {
        "scope": "ext:2000", "period": "day", "bucket": "2026-11-17", "spent": "0.01",
        "spent_micro": 10_000, "cap": "150.00", "cap_micro": 150_000_000, "percent": 0.0,
        "report": False,
    }  # fmt: skip
    ext = next(x for x in data["counters"] if x["scope"] == "ext:1001")
    assert ext["concurrent_calls"] == {"value": 2, "limit": 3}
    assert (data["truncated"], data["health"], data["live_calls"]["count"]) == (False, None, 2)
    assert data["live_calls"]["calls"][1] == {
        "call_id": RESERVATIONS["b"], "extension": "1001", "number": "+442079460123",
        "international": True, "channel": "chan-b", "admitted_at": "2026-11-17T10:00:00-05:00",
        "allowed_seconds": 7200, "instance": "pbx1", "until_ms": MS + 7_800_000,
        "origin": "dialled",
    }  # fmt: skip
    assert data["live_calls"]["calls"][0]["origin"] == "forward"


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0.00"),
        (12_500_000, "12.50"),
        (1_234, "0.001234"),
        (3_610_000, "3.61"),
        (-5, "-0.000005"),
    ],
)
def test_money_is_exact(micro: int, text: str) -> None:
    """Amounts are shown exactly, with at least two decimals."""
    assert money(micro) == text


async def test_a_scan_cut_short_still_shows_site_and_profiles(redis_store: RedisStore) -> None:
    """Past max_keys the scan stops and says so; the site's and profiles' caps are read anyway."""
    await busy_site(redis_store)
    status = await read_status(redis_store.client, POLICY, NOW, max_keys=1)
    assert status.truncated
    scopes = {x.scope for x in status.spend}
    assert {"site", "prof:office"} <= scopes
    assert spend_of(status)[("site", "day")].spent == 3_610_000
    assert "some extensions are not shown" in render_text(status)


async def test_empty_site(redis_store: RedisStore) -> None:
    """A site with no traffic: caps at zero, no counters, nothing in flight."""
    status = await read_status(redis_store.client, POLICY, NOW)
    assert {(x.scope, x.period, x.spent) for x in status.spend} == {
        ("prof:office", "month", 0),
        ("site", "day", 0),
        ("site", "month", 0),
    }
    assert (status.counters, status.reservations, status.live_calls, status.locks) == ((), 0, 0, ())
    assert "no call in the last hour, none up now" in render_text(status)


async def test_redis_down_is_store_unavailable() -> None:
    """A Redis that does not answer is StoreUnavailable (the CLI prints it), not a traceback."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="redis"):
            await read_status(store.client, POLICY, NOW)
    finally:
        await store.aclose()


async def test_fetch_health() -> None:
    """The /health body comes back with 200 and with 503; nothing listening is None."""
    metrics = Metrics()
    server = MetricsServer(metrics, port=0)
    await server.start()
    try:
        down = await fetch_health(f"http://127.0.0.1:{server.port}/health")
        metrics.set_link("ari", True)
        metrics.set_link("redis", True)
        up = await fetch_health(f"http://127.0.0.1:{server.port}/health")
    finally:
        await server.stop()
    assert down is not None
    assert up is not None
    assert (down["status"], up["status"]) == ("down", "degraded")
    # nothing listening: None, not an error (how soon: `make bench`, row "status")
    assert await fetch_health(f"http://127.0.0.1:{free_port()}/health") is None


# the command connects by URL: a redis-server's (the cluster form is RedisStore.from_url's to take)
@pytest.mark.parametrize("redis_store", ["redis"], indirect=True)
async def test_status_command(
    redis_store: RedisStore, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`callgate status` reads the active version's caps and a running gate's links; --json too."""
    await PolicyStore(redis_store.client, SITE).push(
        TEXT, "p.yaml", {}, by="t", at=datetime.now(UTC)
    )
    p = prepare(Memo(POLICY), CallAttempt("x", "1001", "2125550123"), datetime.now(UTC))
    assert p.admission is not None
    await redis_store.admit(p.admission)
    metrics = Metrics()
    for link in ("ari", "ami", "redis"):
        metrics.set_link(link, True)
    server = MetricsServer(metrics, port=0)
    await server.start()
    try:
        health = f"http://127.0.0.1:{server.port}/health"
        base = ["status", "--redis", redis_url, "--site", SITE, "--health", health]
        assert await asyncio.to_thread(main, base) == 0
        text = capsys.readouterr().out
        assert await asyncio.to_thread(main, [*base, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
    finally:
        await server.stop()
    assert "policy     version 1 sha256:" in text
    assert "gate       ok: ari up, ami up, redis up (policy version 0, up 0h00m)" in text
    assert "in flight  1 admitted calls not yet settled" in text
    assert "live calls 1\n  1001 -> +12125550123 (domestic) since" in text
    assert data["health"]["links"] == {"ari": "up", "ami": "up", "redis": "up"}
    assert data["reservations"]["count"] == data["live_calls"]["count"] == 1
    assert data["policy"]["active"]["version"] == 1
