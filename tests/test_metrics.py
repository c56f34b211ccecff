"""/metrics in Prometheus' text format and /health for the supervisor, from a real HTTP server; the
site's spend read from a real Redis at scrape time."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from callgate.core.engine import decide
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.ops.metrics import DEFAULT_HOST, Metrics, MetricsServer, site_state
from callgate.store.memory import MemoryStore
from callgate.store.redis import RedisStore
from tests.servers import WAIT, free_port

POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"), "p"
)
TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
DOC = (Path(__file__).resolve().parents[1] / "docs" / "monitoring.md").read_text("utf-8")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def scrape(http: aiohttp.ClientSession, server: MetricsServer) -> Samples:
    async with http.get(f"http://127.0.0.1:{server.port}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def health(http: aiohttp.ClientSession, server: MetricsServer) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{server.port}/health") as reply:
        return reply.status, await reply.json()


@pytest.fixture
async def served(metrics: Metrics) -> AsyncIterator[MetricsServer]:
    server = MetricsServer(metrics, port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


async def test_decisions_by_verdict_and_reason(
    metrics: Metrics, served: MetricsServer, http: aiohttp.ClientSession
) -> None:
    """Real decisions are counted by verdict and reason; their times land in the right buckets."""
    store = MemoryStore()
    for number, seconds in [("2125550123", 0.00015), ("011537123456", 0.003)]:
        d = decide(Memo(POLICY), CallAttempt(number, "1001", number), store.admit_now, TUE)
        metrics.observe_decision(d, seconds)
    metrics.count_decision("DENY", "store_unavailable", 1.5)
    s = await scrape(http, served)
    assert s[("callgate_decisions_total", (("reason", "allowed"), ("verdict", "ALLOW")))] == 1
    assert (
        s[("callgate_decisions_total", (("reason", "country_not_allowed"), ("verdict", "DENY")))]
        == 1
    )
    assert (
        s[("callgate_decisions_total", (("reason", "store_unavailable"), ("verdict", "DENY")))] == 1
    )
    bucket = "callgate_decision_seconds_bucket"
    assert s[(bucket, (("le", "0.0001"),))] == 0
    assert s[(bucket, (("le", "0.00025"),))] == 1
    assert s[(bucket, (("le", "0.005"),))] == 2
    assert s[(bucket, (("le", "1.0"),))] == 2
    assert s[(bucket, (("le", "+Inf"),))] == 3
    assert s[("callgate_decision_seconds_count", ())] == 3
    assert s[("callgate_decision_seconds_sum", ())] == pytest.approx(1.50315)


async def test_store_failures_read_zero_from_the_start(
    served: MetricsServer, http: aiohttp.ClientSession
) -> None:
    """Before any decision, callgate_decisions_total{reason="store_unavailable"} reads 0 for both
    verdicts: the first call decided without Redis is an increase (the CallgateStoreFailures rule)."""
    s = await scrape(http, served)
    decisions = {labels: v for (name, labels), v in s.items() if name == "callgate_decisions_total"}
    assert decisions == {
        (("reason", "store_unavailable"), ("verdict", verdict)): 0 for verdict in ("ALLOW", "DENY")
    }


async def test_links_policy_live_and_callbacks(
    metrics: Metrics, served: MetricsServer, http: aiohttp.ClientSession
) -> None:
    """Link gauges, the policy version and digest, live calls and values read at scrape time."""
    queue = [1, 2, 3]
    metrics.set_link("ari", True)
    metrics.live_calls.set_function(lambda: 4)
    metrics.set_policy_version(3, "c7ca252f0117aaaa")
    metrics.alerts.labels("lock").inc()
    metrics.expose("callgate_audit_queue", "Audit entries waiting for Redis", lambda: len(queue))
    metrics.expose("callgate_audit_dropped", "Audit entries dropped", lambda: 7, counter=True)
    metrics.expose("callgate_broken", "A callback that fails", lambda: 1 / 0)
    with pytest.raises(ValueError, match="already exported"):
        metrics.expose("callgate_live_calls", "twice", lambda: 0)
    s = await scrape(http, served)
    assert s[("callgate_link_up", (("link", "ari"),))] == 1
    assert s[("callgate_link_up", (("link", "ami"),))] == 0
    assert s[("callgate_link_up", (("link", "redis"),))] == 0
    assert s[("callgate_live_calls", ())] == 4
    assert s[("callgate_policy_version", ())] == 3
    assert s[("callgate_policy_info", (("digest", "c7ca252f0117"),))] == 1
    assert s[("callgate_alerts_total", (("kind", "lock"),))] == 1
    assert s[("callgate_audit_queue", ())] == 3
    assert s[("callgate_audit_dropped_total", ())] == 7
    assert not any(name == "callgate_broken" for name, _ in s)
    assert s[("process_resident_memory_bytes", ())] > 0
    metrics.set_policy_version(4, "0123456789abcdef")
    s = await scrape(http, served)
    assert [labels for name, labels in s if name == "callgate_policy_info"] == [
        (("digest", "0123456789ab"),)
    ]


@pytest.mark.parametrize(
    ("up", "code", "status"),
    [
        ((), 503, "down"),
        (("ari",), 503, "down"),
        (("ari", "ami"), 503, "down"),
        (("ari", "redis"), 200, "degraded"),
        (("ari", "ami", "redis"), 200, "ok"),
    ],
)
async def test_health_needs_ari_and_redis(
    metrics: Metrics,
    http: aiohttp.ClientSession,
    up: tuple[str, ...],
    code: int,
    status: str,
) -> None:
    """200 while ARI and Redis are up (AMI down only degrades), 503 otherwise, same body shape."""
    server = MetricsServer(metrics, port=0, extra=lambda: {"site": "acme-nyc", "live_calls": 2})
    metrics.set_policy_version(7, "abc")
    for link in up:
        metrics.set_link(link, True)
    await server.start()
    try:
        got, body = await health(http, server)
    finally:
        await server.stop()
    assert (got, body["status"]) == (code, status)
    assert body["links"] == {k: "up" if k in up else "down" for k in ("ari", "ami", "redis")}
    assert (body["policy_version"], body["site"], body["live_calls"]) == (7, "acme-nyc", 2)
    assert 0 <= body["uptime_s"] < 60


async def test_health_without_ami(http: aiohttp.ClientSession) -> None:
    """A gate with AMI turned off is ok with ARI and Redis alone."""
    metrics = Metrics(links=("ari", "redis"))
    metrics.set_link("ari", True)
    metrics.set_link("redis", True)
    server = MetricsServer(metrics, port=0)
    await server.start()
    try:
        assert await health(http, server) == (
            200,
            {
                "policy_version": 0,
                "status": "ok",
                "links": {"ari": "up", "redis": "up"},
                "uptime_s": pytest.approx(0, abs=60),
            },
        )
    finally:
        await server.stop()


async def test_spend_read_from_redis_at_scrape_time(
    metrics: Metrics, redis_store: RedisStore, http: aiohttp.ClientSession
) -> None:
    """Spend, caps, reservations, locks and panic come from Redis on each scrape (every gate's)."""
    for call_id, number in [("a", "2125550123"), ("b", "011442079460123")]:
        p = prepare(Memo(POLICY), CallAttempt(call_id, "1001", number), TUE)
        assert p.admission is not None
        assert (await redis_store.admit(p.admission)).admitted
    await redis_store.set_lock(POLICY.site.name, "1005", "international")
    refresh = site_state(metrics, redis_store.client, lambda: POLICY, clock=lambda: TUE)
    server = MetricsServer(metrics, port=0, refresh=refresh, max_age=0)
    await server.start()
    try:
        s = await scrape(http, server)
        await redis_store.set_panic(POLICY.site.name, True)
        again = await scrape(http, server)
    finally:
        await server.stop()
    labels = (("period", "day"), ("scope", "ext:1001"))
    assert s[("callgate_spend_micro", labels)] == 3_600_000
    assert s[("callgate_spend_cap_micro", labels)] == 40_000_000
    assert s[("callgate_spend_micro", (("period", "day"), ("scope", "site")))] == 3_600_000
    assert s[("callgate_spend_cap_micro", (("period", "month"), ("scope", "site")))] == 3e9
    assert (s[("callgate_reservations", ())], s[("callgate_reserved_micro", ())]) == (2, 3_600_000)
    assert s[("callgate_locked_extensions", (("scope", "international"),))] == 1
    assert s[("callgate_locked_extensions", (("scope", "all"),))] == 0
    assert (s[("callgate_panic", ())], again[("callgate_panic", ())]) == (0, 1)
    assert s[("callgate_state_up", ())] == 1


async def test_state_unreadable_or_slow(metrics: Metrics, http: aiohttp.ClientSession) -> None:
    """A failing or slow state read never fails nor stalls a scrape: the state's series go."""
    metrics.spend.labels("site", "day").set(5)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("redis down")

    server = MetricsServer(metrics, port=0, refresh=failing)
    await server.start()
    try:
        s = await scrape(http, server)
        await asyncio.gather(*(scrape(http, server) for _ in range(5)))
    finally:
        await server.stop()
    assert calls == 1  # scrapes within a second share one read
    assert s[("callgate_state_up", ())] == 0
    assert not any(name == "callgate_spend_micro" for name, _ in s)

    given_up = asyncio.Event()

    async def stuck() -> None:  # a read that never returns
        try:
            await asyncio.Event().wait()
        finally:
            given_up.set()

    server = MetricsServer(Metrics(), port=0, refresh=stuck)
    await server.start()
    try:  # the scrape is served without the state (STATE_TIMEOUT; how long: `make bench`, "metrics")
        s = await asyncio.wait_for(scrape(http, server), WAIT)
    finally:
        await server.stop()
    assert given_up.is_set()  # the read was cancelled, not left running
    assert s[("callgate_state_up", ())] == 0


async def test_server_binds_loopback_and_stops_cleanly(
    metrics: Metrics, http: aiohttp.ClientSession
) -> None:
    """Loopback by default; stop frees the port at once; a taken port is an OSError, nothing leaks."""
    assert DEFAULT_HOST == "127.0.0.1"
    port = free_port()
    server = MetricsServer(metrics, port=port)
    await server.start()
    assert server.runner is not None
    assert [a[0] for a in server.runner.addresses] == ["127.0.0.1"]
    taken = MetricsServer(Metrics(), port=port)
    with pytest.raises(OSError, match="address already in use"):
        await taken.start()
    assert taken.runner is None
    await server.stop()
    await server.stop()  # twice is fine
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"http://127.0.0.1:{port}/health")
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    again = MetricsServer(metrics, port=port)
    await again.start()
    try:
        assert (await health(http, again))[0] == 503
    finally:
        await again.stop()


def test_the_docs_example_rules_name_only_documented_metrics() -> None:
    """docs/monitoring.md's example rules load and name only metrics the page documents (that every
    documented metric is exported by a running gate is test_monitoring_live's)."""
    documented = {re.sub(r"_total$", "", n) for n in re.findall(r"`(callgate_\w+)`", DOC)}
    process = {f.name for f in Metrics().registry.collect() if f.name.startswith("process_")}
    families = documented | process
    blocks = re.findall(r"^```yml\n(.*?)^```", DOC, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1  # `yml`, not `yaml`: the yaml blocks of the docs are policies
    rules = yaml.safe_load(blocks[0])["groups"][0]["rules"]
    assert len(rules) >= 10
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "annotations"}, rule
        for name in re.findall(r"\b((?:callgate|process)_\w+)", rule["expr"]):
            assert re.sub(r"_(total|bucket|count|sum)$", "", name) in families, (rule, name)
