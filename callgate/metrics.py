"""``serve``'s own numbers: Prometheus ``/metrics`` and a ``/health`` endpoint for the supervisor.

The registry is the process's own (no global prometheus_client state). ``/health`` answers 200 with a
JSON body while the ARI and Redis links are up, 503 (same body) otherwise; AMI being down only delays
settlement (reservations then expire and charge in full), so it is reported but does not fail health.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from callgate.engine import Decision

LINKS = ("ari", "ami", "redis")
NEEDED = ("ari", "redis")  # health fails without these


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "callgate_decisions",
            "Decisions by verdict and reason",
            ["verdict", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "callgate_decision_seconds",
            "StasisStart to continue/hang-up, as the gate measures it",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.reported = Counter(
            "callgate_reported", "Rules in mode: report that would have denied", ["reason"],
            registry=r,
        )  # fmt: skip
        self.live_calls = Gauge("callgate_live_calls", "Admitted calls not yet settled", registry=r)
        self.link = Gauge("callgate_link_up", "1 while the link is up", ["link"], registry=r)
        self.policy_version = Gauge(
            "callgate_policy_version", "Redis version of the running policy (0: a file)", registry=r
        )
        self.alerts = Counter("callgate_alerts", "Alerts raised", ["kind"], registry=r)
        self.reserved = Gauge(
            "callgate_reserved_micro", "Money reserved by the last admitted call", registry=r
        )
        self.links: dict[str, bool] = dict.fromkeys(LINKS, False)
        for name in LINKS:
            self.link.labels(name).set(0)
        self.started = time.monotonic()

    def observe_decision(self, decision: Decision, seconds: float) -> None:
        self.decisions.labels(decision.verdict.value, decision.reason.value).inc()
        self.latency.observe(seconds)
        for r in decision.reported:
            self.reported.labels(r.reason.value if r.reason else "").inc()

    def set_link(self, name: str, up: bool) -> None:
        self.links[name] = up
        self.link.labels(name).set(1 if up else 0)

    def health(self, extra: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        ok = all(self.links[name] for name in NEEDED)
        body = {
            "status": "ok" if ok else "degraded",
            "links": {name: "up" if up else "down" for name, up in self.links.items()},
            "uptime_s": round(time.monotonic() - self.started, 1),
            **extra,
        }
        return ok, body

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics and /health on ``host:port`` (loopback by default)."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.metrics, self.host, self.port, self.extra = metrics, host, port, extra
        self.runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        self.extra()  # refreshes the gauges read at scrape time
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _health(self, _: web.Request) -> web.Response:
        ok, body = self.metrics.health(self.extra())
        return web.Response(
            text=json.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
