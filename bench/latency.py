"""How soon things happen that the tests only check happen (``make bench``; alone, ``python -m
bench.latency``, which starts a redis-server of its own). The tests assert what is done, never how
fast, since they run on shared and noisy machines; the figures are printed here instead.

* alerts: one ``raise_alert`` while the webhook receiver holds the request of the alert before it
  (tests/test_alerts.py: it only queues);
* metrics: a scrape of /metrics when the site-state read never returns: served without the state after
  ``STATE_TIMEOUT`` (tests/test_metrics.py);
* status: ``fetch_health`` of a port nothing listens on (tests/test_status.py: it is None);
* policy: from ``policy push`` returning to the new version in force in a following gate
  (``RedisPolicy.watch``, which reads the active version every ``POLL`` seconds; tests/test_ops_e2e.py
  and the README's "within a second").
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiohttp
from aiohttp import web

from callgate.core.policyfile import load_policy
from callgate.ops.alerts import Alert, Alerter, Webhook
from callgate.ops.livepolicy import POLL, RedisPolicy
from callgate.ops.metrics import STATE_TIMEOUT, Metrics, MetricsServer
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import fetch_health
from callgate.store.redis import RedisStore
from tests.servers import free_port, redis_server

ALERTS = 10_000  # raise_alert calls timed
SCRAPES = 3
PROBES = 20
PUSHES = 5


async def bench_alerts() -> None:
    answer, holding = asyncio.Event(), asyncio.Event()

    async def stalled(request: web.Request) -> web.Response:
        holding.set()
        await answer.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", stalled)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    quiet = logging.getLogger("callgate.alerts")  # raise_alert logs each alert: kept, not printed
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    alerter = Alerter([Webhook(f"http://127.0.0.1:{port}/hook", timeout=60)], min_interval=0)
    stop = asyncio.Event()
    task = asyncio.create_task(alerter.run(stop))
    took = []
    try:
        alerter.raise_alert(Alert("deny_burst", "bench", "first", "held by the receiver"))
        await asyncio.wait_for(holding.wait(), 30)
        for i in range(ALERTS):
            alert = Alert("deny_burst", "bench", str(i), "queued behind it")
            start = time.perf_counter()
            alerter.raise_alert(alert)
            took.append(time.perf_counter() - start)
            if i % 100 == 0:
                await asyncio.sleep(0)  # the delivery task runs in between, still held
        alerter.queue.clear()  # not delivered: stopping would try to
    finally:
        answer.set()
        stop.set()
        await asyncio.wait_for(task, 30)
        await runner.cleanup()
        quiet.propagate = True
    q = statistics.quantiles(took, n=100)
    print(
        f"alerts   raise_alert, receiver holding a request (of {ALERTS:,})  "
        f"p50 {q[49] * 1e6:.1f} us  p99 {q[98] * 1e6:.1f} us  worst {max(took) * 1e6:.1f} us"
    )


async def bench_metrics() -> None:
    async def stuck() -> None:
        await asyncio.Event().wait()

    server = MetricsServer(Metrics(), port=0, refresh=stuck, max_age=0)
    await server.start()
    took = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(SCRAPES):
                start = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{server.port}/metrics") as reply:
                    await reply.read()
                took.append(time.perf_counter() - start)
    finally:
        await server.stop()
    print(
        f"metrics  scrape, state read never returns (best/worst of {SCRAPES})     "
        f"{min(took):>8.3f} s / {max(took):.3f} s  (STATE_TIMEOUT {STATE_TIMEOUT} s)"
    )


async def bench_status() -> None:
    took = []
    for _ in range(PROBES):
        start = time.perf_counter()
        found = await fetch_health(f"http://127.0.0.1:{free_port()}/health")
        took.append(time.perf_counter() - start)
        assert found is None
    print(
        f"status   fetch_health, nothing listening (p50/worst of {PROBES})       "
        f"{statistics.median(took) * 1e3:>8.2f} ms / {max(took) * 1e3:.2f} ms"
    )


async def bench_policy(url: str) -> None:
    text = (
        resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8")
    )
    site = load_policy(text, "bench").site.name
    store = RedisStore.from_url(url, timeout=5)
    await store.client.flushdb()
    policies = PolicyStore(store.client, site)
    await policies.push(text, "bench.yaml", {}, by="bench", at=datetime.now(UTC))
    holder = await RedisPolicy.start(policies)
    stop = asyncio.Event()
    watch = asyncio.create_task(holder.watch(stop))
    took = []
    try:
        for i in range(PUSHES):
            changed = f"{text}\n# bench push {i}\n"
            start = time.perf_counter()
            pushed = await policies.push(
                changed, "bench.yaml", {}, by="bench", at=datetime.now(UTC)
            )
            deadline = start + 30
            while holder().revision != pushed.stored.version:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"version {pushed.stored.version} never came in force")
                await asyncio.sleep(0.002)
            took.append(time.perf_counter() - start)
    finally:
        stop.set()
        await watch
        await store.aclose()
    print(
        f"policy   push to in force on a following gate (p50/worst of {PUSHES})  "
        f"{statistics.median(took):>8.3f} s / {max(took):.3f} s  (polled every {POLL} s)"
    )


def bench_latency(redis_url: str) -> None:
    async def run() -> None:
        await bench_alerts()
        await bench_metrics()
        await bench_status()
        await bench_policy(redis_url)

    asyncio.run(run())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        bench_latency(url)
