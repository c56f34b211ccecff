"""``callgate serve``: one asyncio process with the Stasis app, the AMI spend feed and the audit writer.

Everything is built here, once, and passed down. Each link to the outside has its own loop that
reconnects with capped exponential backoff, so a restarted Asterisk or Redis is picked up without a
restart of callgate:

* ARI: connect the events websocket (that registers the Stasis app), then decide every channel already
  waiting in the app (``Router.reconcile``), then route events until the websocket dies;
* AMI: log in, feed ``Cdr`` events to the spend feed, ping every few seconds;
* audit: drain decisions into the Redis stream.

At start-up it warns when Redis keeps nothing across its own restart (no append-only file, no RDB
snapshots): the caps, counters, locks and panic switch would then reset with it. Its log
(:mod:`callgate.ops.logs`, set up by the command line) runs every record through a filter, so no secret
of the settings reaches a log line.

SIGTERM/SIGINT stop it: no new events are read, calls being decided are finished, pending settlements
are written, then the queued audit entries and alerts. Each step waits a bounded time (``STOP_*``), so a
stop takes seconds whatever Redis, ARI or AMI are doing; what a step could not finish is logged: a call
still undecided stays waiting in Stasis for the next callgate, an unwritten settlement is charged in full
when its reservation expires, an audit entry not streamed is in the log anyway.

The policy follows its source (:mod:`callgate.ops.livepolicy`): a watched file (SIGHUP re-reads it
at once) or the version active in Redis; a broken policy keeps the running one and logs why. The site's
panic flag is read every half second; when it goes up, this instance hangs up its international calls.

Many tenants behind one gate (``[policy] tenants``): each tenant is a site of its own, built the same
way (its :class:`~callgate.ops.livepolicy.RedisPolicy`, gate, audit stream, alert triggers and panic
watch) once its first pushed policy loads, and sharing the ARI and Redis clients, the spend feed and the
metrics. The router hands each call to the gate of the site its dialplan named (``site=``); the spend
feed hands each settlement to the tenant the reservation id names (``<site>~<id>``). The policy of
``[policy] site``, if one is pushed, is the provider's: its ``site_limits`` count the calls of all its
tenants ``P/T`` together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from callgate.asterisk.agi import AgiServer
from callgate.asterisk.ami import AmiConnection, AmiControl
from callgate.asterisk.ari import AriClient
from callgate.asterisk.events import Events, PanicEnded, PanicStarted
from callgate.asterisk.gate import Gate, GateSettings, Pbx
from callgate.asterisk.spend import SpendFeed
from callgate.asterisk.stasis import Router
from callgate.core.memo import Memo
from callgate.errors import AmiUnavailable, AriUnavailable, StoreUnavailable
from callgate.ops.alerts import FINAL_FLUSH
from callgate.ops.audit import Audit
from callgate.ops.livepolicy import FilePolicy, RedisPolicy
from callgate.ops.metrics import LINKS, Link, Metrics, MetricsServer, site_state
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import persistence
from callgate.ops.triggers import AlertTriggers
from callgate.ops.waits import until_stopped
from callgate.settings import Settings, listen_address, redact_url
from callgate.settingtable import PolicySource
from callgate.store.redis import RedisStore

log = logging.getLogger("callgate.serve")

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0
PANIC_POLL = 0.5  # seconds between reads of the site's panic flag
# Seconds a Redis connect or reply may take: short, so a dead or frozen Redis gives the policy's
# on_store_error within the [gate] deadline (1 s) rather than a call kept waiting. The admin commands
# wait longer (callgate.ops.admin.REDIS_TIMEOUT): a person at a shell would rather have the answer.
REDIS_TIMEOUT = 0.5
PRIVILEGED = 1024  # ports below this only a privileged process may listen on (Linux's default)

# How long a stop waits for each step (seconds): the calls being decided; then the links, the
# settlements and the writers side by side; then the closes. At most about 10 s in all (the alerts'
# last try is the longest), far below systemd's 60 s (packaging/callgate.service).
STOP_APPLY = 2.0  # calls being decided: [gate] deadline for the store, plus this for ARI
STOP_LINKS = 1.0  # the loops that read ARI, AMI, the panic flag and the policy (told at once)
STOP_SETTLE = 2.0  # pending settlements: one last try each (callgate.asterisk.spend)
STOP_WRITERS = FINAL_FLUSH + 1.0  # the audit queue (its own bound) and the alerts' last try
STOP_CLOSE = 1.0  # the metrics server and the ARI and Redis clients


@dataclass(frozen=True, slots=True)
class _Site:
    """What serves one site: its policy holder, gate, audit stream and alert triggers."""

    holder: FilePolicy | RedisPolicy
    gate: Gate
    audit: Audit
    triggers: AlertTriggers


def _open_site(
    settings: Settings,
    holder: FilePolicy | RedisPolicy,
    store: RedisStore,
    ari: Pbx,
    here: GateSettings,
    *,
    tenant: str = "",
    above: Callable[[], Memo | None] | None = None,
) -> _Site:
    audit = Audit(store.client, holder().site.name)
    events = Events()
    events.subscribe(audit.on_event)
    gate = Gate(holder.memo, store, ari, events, settings=here, tenant=tenant, above=above)
    return _Site(holder, gate, audit, AlertTriggers(settings, gate, holder))


async def _forever(name: str, once: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``once`` again and again with capped backoff while it fails, until ``stop``."""
    delay = BACKOFF_FIRST
    while not stop.is_set():
        started = time.monotonic()
        try:
            await until_stopped(once(), stop)  # a stop also ends a connect or a reconcile
        except (AriUnavailable, AmiUnavailable) as exc:
            log.warning("%s link down: %s; retrying in %.1fs", name, exc, delay)
        except Exception:  # a bug in one loop must not stop the gate
            log.exception("%s loop failed; retrying in %.1fs", name, delay)
        if time.monotonic() - started > BACKOFF_MAX * 3:
            delay = BACKOFF_FIRST  # it was up for a while: this is a fresh failure
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _bounded(tasks: Sequence[asyncio.Task[None]], within: float) -> None:
    """Wait for ``tasks`` at most ``within`` seconds; cancel those still running, and say which."""
    if not tasks:
        return
    done, late = await asyncio.wait(tasks, timeout=within)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed while stopping", task.get_name(), exc_info=task.exception())
    if late:
        names = ", ".join(sorted(task.get_name() for task in late))
        log.warning("stopping: %s cut short after %gs", names, within)
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=STOP_CLOSE)


async def _open_policy(settings: Settings, store: RedisStore) -> FilePolicy | RedisPolicy:
    if settings.policy_source == PolicySource.REDIS:
        return await RedisPolicy.start(
            PolicyStore(store.client, settings.policy_site), settings.policy_file
        )
    return FilePolicy(settings.policy_file)


async def _watch_panic(
    gate: Gate, store: RedisStore, metrics: Metrics, stop: asyncio.Event
) -> None:
    """Follow the site's panic flag; when it goes up, hang up this instance's international calls.
    Each read is also the Redis link's health check; the link going down or up is logged once."""
    was_on, was_up = False, True
    while not stop.is_set():
        try:
            on = await store.panic(gate.policy().site.name)
            metrics.set_link(Link.REDIS, True)
            if not was_up:
                log.info("Redis link up again")
            was_up = True
        except StoreUnavailable as exc:
            metrics.set_link(Link.REDIS, False)
            if was_up:
                log.warning("Redis link down: %s; calls follow the policy's on_store_error", exc)
            was_up = False
            on = was_on  # unknown: the admission script still refuses international calls if set
        if on and not was_on:
            if gate.tenant:
                log.warning("panic: tenant %r refuses international calls", gate.tenant)
            else:
                log.warning("panic: the site refuses international calls")
            hung = await gate.hang_up_international()
            gate.events.emit(PanicStarted(hung))
        elif was_on and not on:
            log.warning(
                "calm: panic is over%s", f" for tenant {gate.tenant!r}" if gate.tenant else ""
            )
            gate.events.emit(PanicEnded())
        was_on = on
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PANIC_POLL)


def _monitoring(
    settings: Settings, sites: dict[str, _Site], store: RedisStore, *, single: bool
) -> tuple[Metrics, MetricsServer]:
    """The metrics, each fed from its live source, and the /metrics + /health server. ``sites``: the
    one site (``single``) or the tenants served so far (``serve`` adds each one as it opens, and
    subscribes the metrics to its events)."""
    # a link turned off (AMI, or one of the doors) is not a degradation: it is not watched at all
    off = {
        Link.ARI: not settings.ari_url,
        Link.AMI: not settings.ami_enabled,
        Link.AGI: not settings.agi_listen,
    }
    metrics = Metrics(links=tuple(n for n in (*LINKS, Link.AGI) if not off.get(n, False)))

    def live() -> list[_Site]:
        return list(sites.values())

    def total(count: Callable[[_Site], int]) -> int:
        return sum(count(site) for site in live())

    metrics.live_calls.set_function(lambda: total(lambda s: len(s.gate.live)))
    for name, doc, read, counter in (
        (
            "callgate_audit_queue",
            "Audit entries waiting for Redis",
            lambda: total(lambda s: len(s.audit.queue)),
            False,
        ),
        (
            "callgate_audit_dropped",
            "Audit entries dropped, the queue full",
            lambda: total(lambda s: s.audit.dropped),
            True,
        ),
        (
            "callgate_alerts_queue",
            "Alerts waiting for delivery",
            lambda: total(lambda s: len(s.triggers.alerter.queue)),
            False,
        ),
        (
            "callgate_alerts_sent",
            "Alert deliveries that succeeded",
            lambda: total(lambda s: s.triggers.alerter.sent),
            True,
        ),
        (
            "callgate_alerts_dropped",
            "Alerts dropped, the queue full",
            lambda: total(lambda s: s.triggers.alerter.dropped),
            True,
        ),
    ):
        metrics.expose(name, doc, read, counter=counter)
    if not single:  # the tenants' versions and state: `callgate status --site` for each
        for site in sites.values():
            site.gate.events.subscribe(metrics.on_event)

        def tenants_health() -> dict[str, object]:
            return {
                "tenants": {
                    name: {
                        "policy_version": s.holder().revision,
                        "policy_digest": s.holder().digest[:12],
                    }
                    for name, s in sorted(sites.items())
                },
                "live_calls": total(lambda s: len(s.gate.live)),
                "store_down": any(s.gate.store_down for s in live()),
            }

        return metrics, MetricsServer(
            metrics, settings.metrics_host, settings.metrics_port, tenants_health
        )
    (only,) = sites.values()
    gate, policy = only.gate, only.holder
    gate.events.subscribe(metrics.on_event)
    metrics.set_policy_version(policy().revision, policy().digest)
    policy.listeners.append(lambda new: metrics.set_policy_version(new.revision, new.digest))

    def health_extra() -> dict[str, object]:
        return {
            "site": policy().site.name,
            "policy_version": policy().revision,
            "policy_digest": policy().digest[:12],
            "live_calls": len(gate.live),
            "store_down": gate.store_down,
        }

    return metrics, MetricsServer(
        metrics,
        settings.metrics_host,
        settings.metrics_port,
        health_extra,
        refresh=site_state(metrics, store.client, policy),
    )


async def _ari_once(ari: AriClient, router: Router, metrics: Metrics, stop: asyncio.Event) -> None:
    """Connect the events websocket (that registers the app), decide what waits, route events."""
    async with ari.event_stream() as events:
        log.info("ARI connected: Stasis app %r at %s", ari.app, redact_url(ari.base))
        metrics.set_link(Link.ARI, True)
        try:
            await router.reconcile()

            async def read() -> None:
                async for event in events:
                    router.dispatch(event)

            await until_stopped(read(), stop)
        finally:
            metrics.set_link(Link.ARI, False)


async def _ami_once(
    settings: Settings,
    feed: SpendFeed,
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    control: AmiControl | None = None,
    router: Router | None = None,
) -> None:
    """Log in to AMI and feed Cdr events to the spend feed until the link dies or serve stops.
    Without ARI, ``control`` (the router's way to Asterisk) uses this link while it is up, and the
    emergency numbers are published once it is (as ARI's reconcile does)."""
    conn = await AmiConnection.open(
        settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret
    )
    log.info("AMI connected: %s:%d", settings.ami_host, settings.ami_port)
    metrics.set_link(Link.AMI, True)

    async def read() -> None:
        async for message in conn.events():
            feed.on_event(message)

    if control is not None:
        control.conn = conn
    if router is not None:  # answered through read(), which runs below
        task = asyncio.create_task(router.publish_emergency())
        router.tasks.add(task)
        task.add_done_callback(router.tasks.discard)
    try:
        await until_stopped(read(), stop)
    finally:
        if control is not None and control.conn is conn:
            control.conn = None
        metrics.set_link(Link.AMI, False)
        await conn.close()


async def _check_persistence(store: RedisStore, stop: asyncio.Event) -> None:
    """Once Redis answers: warn when it keeps nothing across its own restart."""
    delay = BACKOFF_FIRST
    while True:
        try:
            kept = await persistence(store.client)
            break
        except StoreUnavailable:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            delay = min(delay * 2, BACKOFF_MAX)
    if kept:
        log.info("Redis keeps its data across a restart (appendonly or save points are set)")
    elif kept is None:
        log.warning(
            "could not check whether Redis keeps its data across a restart (CONFIG GET was "
            "refused); without appendonly or save points, a restart of Redis resets the spend "
            "caps, the counters, the locks and the panic switch"
        )
    else:
        log.warning(
            "Redis keeps nothing across a restart (appendonly no, no save points): a restart of "
            "Redis resets the spend caps, the counters, the locks and the panic switch, and loses "
            "the pushed policy versions; set appendonly yes (docs/operations.md, troubleshooting)"
        )


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    store = RedisStore.from_url(
        settings.redis_url, timeout=REDIS_TIMEOUT, wait_replicas=settings.redis_wait_replicas
    )
    if settings.tenants:
        from callgate.tenants import serve_tenants  # it builds on this module's parts

        await serve_tenants(settings, store, stop)
        return
    policy = await _open_policy(settings, store)
    ari, ami = _asterisk(settings)
    # each reservation records which gate admitted it (`callgate status` lists the live calls)
    here = replace(settings.gate, instance=socket.gethostname())
    site = _open_site(settings, policy, store, ari or ami, here)
    gate = site.gate
    router = Router(gate, ari or ami)
    feed = SpendFeed(gate.settle, source=settings.ami_settle_from, release=gate.release)
    metrics, web = _monitoring(settings, {"": site}, store, single=True)
    await _start_web(settings, web)
    agi = await _start_agi(settings, router, metrics)
    _handle_signals(stop, policy)
    audit_stop = asyncio.Event()  # set once the calls being decided are done, so theirs are written
    links = _link_tasks(
        settings, ari=ari, ami=ami, router=router, feed=feed, metrics=metrics, store=store,
        stop=stop,
    )  # fmt: skip
    links += [
        asyncio.create_task(policy.watch(stop), name="policy watch"),
        asyncio.create_task(_watch_panic(gate, store, metrics, stop), name="panic watch"),
    ]
    writers = [
        asyncio.create_task(site.audit.run(audit_stop), name="audit stream"),
        asyncio.create_task(site.triggers.alerter.run(audit_stop), name="alert delivery"),
    ]
    log.info(
        "callgate serving site %r with policy sha256:%s", policy().site.name, policy().digest[:12]
    )
    await _run_until_stopped(
        settings, router=router, feed=feed, web=web, ari=ari, store=store, links=links,
        writers=writers, stop=stop, audit_stop=audit_stop, agi=agi,
    )  # fmt: skip


def _asterisk(settings: Settings) -> tuple[AriClient | None, AmiControl]:
    """The ARI client (None: no ARI, ``[ari] url`` empty) and the AMI control, which stands in for
    ARI outside a call when there is none (the emergency globals, panic's hang-ups)."""
    ari = None
    if settings.ari_url:
        ari = AriClient(
            settings.ari_url, settings.ari_user, settings.ari_password, settings.ari_app
        )
    return ari, AmiControl()


async def _start_agi(settings: Settings, router: Router, metrics: Metrics) -> AgiServer | None:
    """The FastAGI door, if ``[agi] listen`` is set. A port taken is fatal: the dialplan would refuse
    every call that comes through the door, and a supervisor restarts us."""
    if not settings.agi_listen:
        return None
    host, port = listen_address(settings.agi_listen)
    agi = AgiServer(router, host, port)
    await agi.start()
    metrics.set_link(Link.AGI, True)
    log.info("FastAGI door listening on %s:%d (agi://%s:%d/callgate)", host, port, host, port)
    if port >= PRIVILEGED:
        log.warning(
            "FastAGI door on port %d: any local user may listen there while callgate is down and "
            "answer Asterisk's AGI() in its place (allowing every call); use a port below %d "
            "(127.0.0.1:573, with CAP_NET_BIND_SERVICE: packaging/callgate.service)",
            port, PRIVILEGED,
        )  # fmt: skip
    return agi


async def _start_web(settings: Settings, web: MetricsServer) -> None:
    where = f"http://{settings.metrics_host}:{settings.metrics_port}/"
    if settings.metrics_enabled:
        try:
            await web.start()
            log.info("metrics and health on %s", where)
        except OSError as exc:  # the gate matters more than its numbers: run on without them
            log.error("metrics and health not served on %s: %s", where, exc)


def _handle_signals(stop: asyncio.Event, policy: FilePolicy | RedisPolicy | None) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if isinstance(policy, FilePolicy):
            loop.add_signal_handler(signal.SIGHUP, policy.reload)
        elif policy is not None:  # Redis mode: SIGHUP checks the active version at once
            loop.add_signal_handler(signal.SIGHUP, policy.check_soon)
        else:  # tenants: each follows its own version (never the default: exit)
            loop.add_signal_handler(signal.SIGHUP, lambda: None)


def _link_tasks(
    settings: Settings, *, ari: AriClient | None, ami: AmiControl, router: Router,
    feed: SpendFeed, metrics: Metrics, store: RedisStore, stop: asyncio.Event,
) -> list[asyncio.Task[None]]:  # fmt: skip
    # without ARI, AMI carries what ARI would outside a call (AmiControl), and publishes on login
    ami_once = functools.partial(
        _ami_once, settings, feed, metrics, stop, control=ami,
        router=None if ari is not None else router,
    )  # fmt: skip
    links = [
        asyncio.create_task(_check_persistence(store, stop), name="Redis persistence check"),
    ]
    if ari is not None:
        ari_once = functools.partial(_ari_once, ari, router, metrics, stop)
        links.append(asyncio.create_task(_forever("ARI", ari_once, stop), name="ARI link"))
    if settings.ami_enabled:
        links.append(asyncio.create_task(_forever("AMI", ami_once, stop), name="AMI link"))
    return links


async def _run_until_stopped(
    settings: Settings, *, router: Router, feed: SpendFeed, web: MetricsServer,
    ari: AriClient | None, store: RedisStore, links: list[asyncio.Task[None]],
    writers: list[asyncio.Task[None]], stop: asyncio.Event, audit_stop: asyncio.Event,
    agi: AgiServer | None = None,
) -> None:  # fmt: skip
    # Everything built so far (phonenumbers' metadata, the policy, the clients) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise stall decisions (make bench).
    gc.freeze()
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing calls in progress")
        if agi is not None:  # no new FastAGI session: Asterisk's AGI() fails, the dialplan refuses
            await agi.close()
        await router.drain(settings.gate.deadline + STOP_APPLY)
        audit_stop.set()
        await asyncio.gather(
            _bounded(list(links), STOP_LINKS),
            feed.flush(STOP_SETTLE),
            _bounded(list(writers), STOP_WRITERS),
        )
        closing = [
            asyncio.create_task(web.stop(), name="metrics server"),
            asyncio.create_task(store.aclose(), name="Redis client"),
        ]
        if ari is not None:
            closing.append(asyncio.create_task(ari.aclose(), name="ARI client"))
        await _bounded(closing, STOP_CLOSE)
        log.info("stopped")
