"""``serve``'s own numbers: Prometheus ``/metrics`` and a ``/health`` endpoint for the supervisor.

:class:`Metrics` holds the process's own :class:`~prometheus_client.CollectorRegistry` (no global
prometheus_client state) and is fed by the gate: each decision, each link going up or down, the policy
version. The site's state in Redis (spend against caps, reservations, locks, panic) is read at scrape time
by the ``refresh`` of :class:`MetricsServer` (:func:`site_state`): Redis is the one truth shared by every
gate of a site, and it changes without this gate deciding anything (another gate's admissions, a
settlement, a reservation expiring, a new day), so a gauge fed from this gate's decisions would be wrong.

``/health`` answers 200 with a JSON body while the ARI and Redis links are up, 503 (same body) otherwise;
AMI being down only delays settlement (reservations then expire and charge in full), so it makes the
status ``degraded`` but does not fail health. With ``[ami] enabled = false`` ``serve`` builds
:class:`Metrics` without the ``ami`` link: a link that is turned off is not a degradation, and ARI and
Redis up is ``ok``. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callgate.asterisk.events import AlertRaised, Decided, Event, Unrouted
from callgate.core.decision import Decision
from callgate.core.policy import LockScope, Policy
from callgate.core.reasons import Reason, Verdict
from callgate.ops.status import read_status
from callgate.ops.statustree import Status
from callgate.settings import setting
from callgate.store.connect import Client

log = logging.getLogger("callgate.metrics")


class Link(StrEnum):
    """A link of the gate to the outside: ``callgate_link_up{link=...}`` and /health's ``links``."""

    ARI = "ari"
    AMI = "ami"
    REDIS = "redis"
    AGI = "agi"  # the FastAGI door listening (watched only when [agi] listen is set)


LINKS = (Link.ARI, Link.AMI, Link.REDIS)  # watched by default
NEEDED = (Link.ARI, Link.AGI, Link.REDIS)  # health fails without these, of those watched
# the [metrics] defaults, from the settings table (loopback: the endpoint has no authentication)
DEFAULT_HOST = str(setting("metrics", "host").default)
DEFAULT_PORT = int(str(setting("metrics", "port").default))
# 0.1 ms (a decision from a warm Redis on loopback) to 1 s (the default [gate] deadline)
DECISION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
STATE_TIMEOUT = 0.5  # seconds a scrape waits for the site's state before serving without it
STATE_MAX_AGE = 1.0  # scrapes within this many seconds of a read reuse it


class _Callbacks(Collector):
    """Values read from the running process at scrape time (queue lengths, drop counts)."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, Callable[[], float], bool]] = {}

    def describe(self) -> list[Metric]:
        return []  # names are checked by Metrics.expose

    def collect(self) -> Iterator[Metric]:
        for name, (doc, read, counter) in self.sources.items():
            try:
                value = float(read())
            except Exception:  # a broken callback must not break the scrape
                log.exception("metric %s could not be read", name)
                continue
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(name, doc, value=value)


class Metrics:
    """Every number ``serve`` exports; the gate feeds it, ``MetricsServer`` serves it."""

    def __init__(
        self, *, links: Iterable[str] = LINKS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "callgate_decisions", "Decisions by verdict and reason", ["verdict", "reason"],
            registry=r,
        )  # fmt: skip
        for verdict in Verdict:  # at 0 from the start: the first one is an increase (an alert rule)
            self.decisions.labels(verdict.value, Reason.STORE_UNAVAILABLE.value)
        self.tenant_decisions = Counter(
            "callgate_tenant_decisions",
            "Decisions of each tenant (many tenants behind one gate) by verdict",
            ["site", "verdict"],
            registry=r,
        )
        self.latency = Histogram(
            "callgate_decision_seconds",
            "StasisStart to continue or hang-up, as the gate measures it",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.reported = Counter(
            "callgate_reported", "Rules in mode: report that would have denied", ["reason"],
            registry=r,
        )  # fmt: skip
        self.live_calls = Gauge(
            "callgate_live_calls", "Calls this gate admitted that are not settled yet", registry=r
        )
        self.link = Gauge("callgate_link_up", "1 while the link is up", ["link"], registry=r)
        self.policy_version = Gauge(
            "callgate_policy_version", "Redis version of the running policy (0: a file)", registry=r
        )
        self.policy_info = Gauge(
            "callgate_policy_info", "1, labelled with the running policy's sha256 (12 hex digits)",
            ["digest"], registry=r,
        )  # fmt: skip
        self.alerts = Counter(
            "callgate_alerts", "Alerts raised, before rate limiting", ["kind"], registry=r
        )
        # the site's state in Redis, read at scrape time (site_state)
        self.state_up = Gauge(
            "callgate_state_up", "1 when the last scrape-time read of the site's state worked",
            registry=r,
        )  # fmt: skip
        self.spend = Gauge(
            "callgate_spend_micro",
            "Money committed (settled + reserved) in the current period, micro-units",
            ["scope", "period"],
            registry=r,
        )
        self.spend_cap = Gauge(
            "callgate_spend_cap_micro", "The policy's cap of the scope and period, micro-units",
            ["scope", "period"], registry=r,
        )  # fmt: skip
        self.reservations = Gauge(
            "callgate_reservations", "Admitted calls of the site not yet settled", registry=r
        )
        self.reserved = Gauge(
            "callgate_reserved_micro", "Money the site's unsettled calls hold, micro-units",
            registry=r,
        )  # fmt: skip
        self.locked = Gauge(
            "callgate_locked_extensions", "Locked extensions of the site", ["scope"], registry=r
        )
        self.panic = Gauge("callgate_panic", "1 while the site's panic switch is on", registry=r)
        ProcessCollector(registry=r)  # memory, CPU, open files, start time (Linux)
        self._callbacks = _Callbacks()
        r.register(self._callbacks)

        self.clock = clock
        self.started = clock()
        self.links: dict[str, bool] = {}
        for name in links:
            self.set_link(name, False)
        self.version: tuple[int, str] = (0, "")

    # --- fed by the gate ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An :class:`callgate.asterisk.events.Events` subscriber: decisions and alerts raised."""
        if isinstance(event, Decided):
            self.observe_decision(event.decision, event.seconds)
        elif isinstance(event, AlertRaised):
            self.alerts.labels(event.kind).inc()
        elif isinstance(event, Unrouted):  # many tenants: a call no tenant's gate decides
            self.count_decision(Verdict.DENY.value, Reason.UNKNOWN_SITE.value, event.seconds)

    def for_tenant(self, site: str) -> Callable[[Event], None]:
        """A subscriber for one tenant's events (many tenants behind one gate): its decisions by
        verdict, beside what :meth:`on_event` counts for all tenants together."""

        def count(event: Event) -> None:
            if isinstance(event, Decided):
                self.tenant_decisions.labels(site, event.decision.verdict.value).inc()

        return count

    def observe_decision(self, decision: Decision, seconds: float) -> None:
        """One decision: its verdict, reason and time."""
        self.count_decision(decision.verdict.value, decision.reason.value, seconds)
        for r in decision.reported:
            self.reported.labels(r.reason.value if r.reason else "").inc()

    def count_decision(self, verdict: str, reason: str, seconds: float) -> None:
        self.decisions.labels(verdict, reason).inc()
        self.latency.observe(seconds)

    def set_link(self, name: str, up: bool) -> None:
        self.links[name] = up
        self.link.labels(name).set(1 if up else 0)

    def set_policy_version(self, version: int, digest: str = "") -> None:
        self.version = (version, digest[:12])
        self.policy_version.set(version)
        self.policy_info.clear()
        if digest:
            self.policy_info.labels(digest[:12]).set(1)

    def expose(
        self, name: str, documentation: str, read: Callable[[], float], *, counter: bool = False
    ) -> None:
        """Export ``read()`` at every scrape (a queue length; with ``counter``, a running total)."""
        if name in {m.name for m in self.registry.collect()}:
            raise ValueError(f"metric {name} is already exported")
        self._callbacks.sources[name] = (documentation, read, counter)

    def update_state(self, status: Status | None) -> None:
        """Set the site's gauges from a status read; None: the read failed (their series go)."""
        for gauge in (self.spend, self.spend_cap, self.locked):
            gauge.clear()
        self.state_up.set(0 if status is None else 1)
        if status is None:
            return
        for x in status.spend:
            self.spend.labels(x.scope, x.period).set(x.spent)
            if x.cap is not None:
                self.spend_cap.labels(x.scope, x.period).set(x.cap)
        self.reservations.set(status.reservations)
        self.reserved.set(status.reserved)
        self.panic.set(1 if status.panic else 0)
        for scope in LockScope:
            self.locked.labels(scope).set(sum(1 for _, held in status.locks if held == scope))

    # --- read by the server -------------------------------------------------------------------

    def health(self, extra: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy while every NEEDED link is up."""
        ok = all(self.links[name] for name in NEEDED if name in self.links)
        status = "ok" if all(self.links.values()) else "degraded" if ok else "down"
        body: dict[str, Any] = {"policy_version": self.version[0], **extra}
        body |= {
            "status": status,
            "links": {name: "up" if up else "down" for name, up in self.links.items()},
            "uptime_s": round(self.clock() - self.started, 1),
        }
        return ok, body


def site_state(
    metrics: Metrics,
    client: Client,
    policy: Callable[[], Policy],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[], Awaitable[None]]:
    """A ``MetricsServer`` refresh that reads the site's state from Redis into ``metrics``."""

    async def refresh() -> None:
        metrics.update_state(await read_status(client, policy(), clock(), live_limit=0))

    return refresh


class MetricsServer:
    """GET /metrics and /health on ``host:port`` (loopback by default).

    ``extra`` is called on every request; its fields join the /health body. ``refresh`` runs before a
    scrape (at most once every ``max_age`` seconds, at most STATE_TIMEOUT long); when it fails or is
    slow, the scrape is served without the site's state (``callgate_state_up`` 0).
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        extra: Callable[[], dict[str, Any]] = dict,
        *,
        refresh: Callable[[], Awaitable[None]] | None = None,
        max_age: float = STATE_MAX_AGE,
    ) -> None:
        self.metrics, self.host, self.port, self.extra = metrics, host, port, extra
        self.refresh, self.max_age = refresh, max_age
        self.runner: web.AppRunner | None = None
        self._prometheus = make_aiohttp_handler(metrics.registry)
        self._lock = asyncio.Lock()
        self._read_at: float | None = None

    async def _refresh(self) -> None:
        if self.refresh is None:
            return
        async with self._lock:  # scrapes at once share one read
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.max_age:
                return
            self._read_at = now
            try:
                async with asyncio.timeout(STATE_TIMEOUT):
                    await self.refresh()
            except Exception as exc:  # Redis down or slow: serve the rest
                log.debug("site state not read for /metrics: %r", exc)
                self.metrics.update_state(None)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        await self._refresh()
        return await self._prometheus(request)

    async def _health(self, _: web.Request) -> web.Response:
        ok, body = self.metrics.health(self.extra())
        return web.Response(
            text=json.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    async def start(self) -> None:
        """Listen; OSError when the address is taken (``serve`` logs it and runs on)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner
        if self.port == 0:  # an ephemeral port (tests): the one the system chose
            self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
