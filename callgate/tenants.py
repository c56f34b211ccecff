"""``callgate serve`` for many tenants behind one gate (``[policy] tenants``; docs/operations.md,
section 9): one gate, policy holder, audit stream, alerts and panic watch per tenant, opened as its
first pushed policy loads; one Router dispatching each call by its ``site=``; one spend feed settling
each reservation with the tenant it names (``<site>~<reservation id>``). The parts it is built from
(a site's gate and its companions, the links, the monitoring, the bounded stop) are
:mod:`callgate.serve`'s, shared with one site's serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from callgate.asterisk.events import Events
from callgate.asterisk.gate import Gate, GateSettings, Pbx, split_carried
from callgate.asterisk.spend import SpendFeed
from callgate.asterisk.stasis import Router
from callgate.core.keys import provider_of
from callgate.core.memo import Memo
from callgate.core.numbers import known_emergency
from callgate.core.policy import Policy
from callgate.errors import BackendUnavailable, PolicyError, Problem
from callgate.ops.livepolicy import RedisPolicy
from callgate.ops.metrics import Metrics
from callgate.ops.policystore import PolicyStore
from callgate.serve import (
    _asterisk,
    _handle_signals,
    _link_tasks,
    _monitoring,
    _open_site,
    _run_until_stopped,
    _Site,
    _start_agi,
    _start_web,
    _watch_panic,
)
from callgate.settings import Settings
from callgate.store.protocol import Settlement, SettleStatus
from callgate.store.redis import RedisStore

log = logging.getLogger("callgate.serve")

TENANT_POLL = 1.0  # seconds between looks for the first policy of a tenant not served yet


def vet(site: str, policy: Policy, region: str = "") -> Policy:
    """What tenant ``site`` runs of a policy it pushed, each time one loads: refused (PolicyError, the
    running one kept) unless it is the policy of ``site``; its ``emergency:`` list cut to the numbers
    libphonenumber knows as emergency numbers of its own region; refused when ``region`` (the one
    ``[policy] tenants`` pins it to) is another. Each listed number goes around the gate, the
    provider's caps included (the dialplan reads the tenant's globals before ``Stasis()``): a
    tenant's policy must not open, say, a premium number by calling it an emergency one, nor, by
    choosing its region, a short number that is an emergency one elsewhere (155, an operator in the
    UK, is one in Turkey): pin the region of tenants whose staff push their own policies."""
    if policy.site.name != site:
        problem = (
            f"the policy pushed for tenant {site!r} is the policy of site {policy.site.name!r}"
        )
        raise PolicyError([Problem(policy.source, 0, "site.name", problem)])
    if region and policy.site.region != region:
        problem = (
            f"is {policy.site.region}, but [policy] tenants pins {site!r} to {region}: a tenant "
            "chooses neither its country nor so its emergency numbers"
        )
        raise PolicyError([Problem(policy.source, 0, "site.region", problem)])
    kept = known_emergency(policy.emergency, policy.site.region)
    if kept == policy.emergency:
        return policy
    left = ", ".join(e for e in policy.emergency if e not in kept)
    log.warning(
        "tenant %r: emergency numbers %s are no emergency numbers of region %s: decided like any "
        "other number", site, left, policy.site.region,
    )  # fmt: skip
    return replace(policy, emergency=kept)


class Tenants:
    """The tenants of a callgate that serves many (``[policy] tenants``): each opens when its first
    pushed policy loads; the provider's policy (``[policy] site``), when pushed, is above them."""

    def __init__(
        self,
        settings: Settings,
        store: RedisStore,
        ari: Pbx,
        here: GateSettings,
        metrics: Callable[[], Metrics | None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.ari = ari
        self.here = here
        self.metrics = metrics
        self.sites: dict[str, _Site] = {}
        self.gates: dict[str, Gate] = {}  # the router's map: a tenant's calls are decided from here
        self.provider: RedisPolicy | None = None
        self.router: Router | None = None  # set by serve once built; told of each tenant opened

    async def find(self, site: str, said: set[str]) -> RedisPolicy | None:
        """The site's policy holder if a policy was pushed and loads; None otherwise (logged, once
        per site in ``said``). A tenant's policy is vetted (:func:`vet`), the provider's is not."""
        tenant = site != self.settings.policy_site
        try:
            return await RedisPolicy.find(
                PolicyStore(self.store.client, site),
                partial(vet, site, region=self.settings.tenant_region(site)) if tenant else None,
            )
        except BackendUnavailable as exc:
            log.warning("cannot read the policy of %s (%s); retrying", site, exc)
        except PolicyError as exc:
            if site not in said:
                said.add(site)
                log.error("the policy pushed for %r is refused: tenant not served\n%s", site, exc)
        return None

    def above(self, tenant: str) -> Callable[[], Memo | None] | None:
        provider = self.settings.policy_site
        if not provider or provider_of(tenant) != provider:
            return None
        return lambda: self.provider.memo() if self.provider is not None else None

    async def open_all(
        self, links: list[asyncio.Task[None]], writers: list[asyncio.Task[None]],
        stop: asyncio.Event, writers_stop: asyncio.Event,
    ) -> None:  # fmt: skip
        """Open each tenant (and the provider) as its first policy appears, until all are open."""
        waiting = list(self.settings.tenants)
        provider = self.settings.policy_site
        said: set[str] = set()
        while not stop.is_set():
            if provider and self.provider is None:
                self.provider = await self.find(provider, said)
                if self.provider is not None:
                    log.info("provider %r: policy sha256:%s above its tenants", provider,
                             self.provider().digest[:12])  # fmt: skip
                    links.append(
                        asyncio.create_task(self.provider.watch(stop), name=f"policy {provider}")
                    )
            for site in list(waiting):
                holder = await self.find(site, said)
                if holder is None:
                    if site not in said:
                        said.add(site)
                        log.warning("tenant %r has no policy pushed: its calls are refused", site)
                    continue
                waiting.remove(site)
                self._start(
                    site, holder, links=links, writers=writers, stop=stop, writers_stop=writers_stop
                )
            if not waiting and (not provider or self.provider is not None):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TENANT_POLL)

    def _start(
        self, site: str, holder: RedisPolicy, *,
        links: list[asyncio.Task[None]], writers: list[asyncio.Task[None]],
        stop: asyncio.Event, writers_stop: asyncio.Event,
    ) -> None:  # fmt: skip
        opened = _open_site(
            self.settings, holder, self.store, self.ari, self.here,
            tenant=site, above=self.above(site),
        )  # fmt: skip
        metrics = self.metrics()
        if metrics is not None:
            opened.gate.events.subscribe(metrics.on_event)
            opened.gate.events.subscribe(metrics.for_tenant(site))
            links.append(
                asyncio.create_task(
                    _watch_panic(opened.gate, self.store, metrics, stop), name=f"panic {site}"
                )
            )
        links.append(asyncio.create_task(holder.watch(stop), name=f"policy {site}"))
        writers.append(asyncio.create_task(opened.audit.run(writers_stop), name=f"audit {site}"))
        writers.append(
            asyncio.create_task(opened.triggers.alerter.run(writers_stop), name=f"alerts {site}")
        )
        self.sites[site] = opened
        self.gates[site] = opened.gate
        log.info("serving tenant %r with policy sha256:%s", site, holder().digest[:12])
        if self.router is not None:  # its emergency numbers, before its first call if ARI is up
            task = asyncio.create_task(self.router.publish_emergency(site))
            self.router.tasks.add(task)
            task.add_done_callback(self.router.tasks.discard)

    async def settle(self, carried: str, billsec: int | None) -> Settlement:
        """The spend feed's settle: the tenant is the one the reservation id names."""
        site, reservation = split_carried(carried)
        gate = self.gates.get(site)
        if gate is not None:
            return await gate.settle(reservation, billsec)
        if site in self.settings.tenants:  # not open (yet): its store keys are known all the same
            at_ms = int(time.time() * 1000)
            return await self.store.settle(site, reservation, billsec, at_ms)
        log.warning("a call ended with reservation %r of no tenant served here: ignored", carried)
        return Settlement(SettleStatus.UNKNOWN)

    async def release(self, carried: str, channel: str) -> bool:
        """The spend feed's release (a gated channel hung up): the tenant the reservation id names."""
        site, reservation = split_carried(carried)
        gate = self.gates.get(site)
        if gate is not None:
            return await gate.release(reservation, channel)
        if site in self.settings.tenants:
            return await self.store.release(site, reservation, channel, int(time.time() * 1000))
        return False


async def serve_tenants(settings: Settings, store: RedisStore, stop: asyncio.Event) -> None:
    """``serve`` for many tenants behind one gate (``[policy] tenants``)."""
    ari, ami = _asterisk(settings)
    here = replace(settings.gate, instance=socket.gethostname())
    cell: list[Metrics] = []
    tenants = Tenants(settings, store, ari or ami, here, lambda: cell[0] if cell else None)
    unrouted = Events()
    router = Router.tenants(tenants.gates, ari or ami, here, unrouted)
    tenants.router = router
    feed = SpendFeed(tenants.settle, source=settings.ami_settle_from, release=tenants.release)
    metrics, web = _monitoring(settings, tenants.sites, store, single=False)
    cell.append(metrics)
    unrouted.subscribe(metrics.on_event)
    await _start_web(settings, web)
    agi = await _start_agi(settings, router, metrics)
    _handle_signals(stop, None)
    audit_stop = asyncio.Event()
    links = _link_tasks(
        settings, ari=ari, ami=ami, router=router, feed=feed, metrics=metrics, store=store,
        stop=stop,
    )  # fmt: skip
    writers: list[asyncio.Task[None]] = []
    links.append(
        asyncio.create_task(
            tenants.open_all(links, writers, stop, audit_stop), name="tenants opening"
        )
    )
    log.info("callgate serving tenants %s", ", ".join(repr(t) for t in settings.tenants))
    loose = [t for t in settings.tenants if not settings.tenant_region(t)]
    if loose:
        log.warning(
            "tenants with no pinned region (%s): each one's pushed policy chooses the country its "
            "emergency numbers are judged by; pin one (\"%s:US\") where tenants push their own "
            "policies (docs/operations.md, section 9)", ", ".join(loose), loose[0],
        )  # fmt: skip
    await _run_until_stopped(
        settings, router=router, feed=feed, web=web, ari=ari, store=store, links=links,
        writers=writers, stop=stop, audit_stop=audit_stop, agi=agi,
    )  # fmt: skip
