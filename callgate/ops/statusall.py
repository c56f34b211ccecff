"""``callgate status --all``: every site in one Redis, riskiest first, one line each.

A service provider runs hundreds of PBXs (sites) against one Redis; the question on a Friday night is
which of them is spending. :func:`read_all` answers it in one pass: one ``SCAN`` over every callgate
key (on a Cluster, over each master once), the keys grouped by site (``keys.site_of``; a provider's
tenant ``P/T`` is a site of its own), then for each
site its active policy (two reads) and its state, read as ``callgate status`` reads one site
(:func:`callgate.ops.status.read_status`, fed the keys already found instead of a scan of its own: a
scan per site would walk every key of the server once per site). Sites are read
:data:`AT_ONCE` at a time.

A site is listed when Redis holds any key of it. Its caps are those of its active pushed version; a
site with state but no pushed policy (file mode, or a policy that was never pushed) is listed with
that said and no caps. The order: panic first, then the largest share of any enforced spend cap used
(site, profile or extension; hour, day or month), then the most locked extensions, then the most live
calls; ties by name.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from callgate.core.keys import site_of
from callgate.errors import PolicyError, StoreUnavailable
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import MAX_KEYS, SCAN_COUNT, read_status
from callgate.ops.statustree import SpendLine, Status
from callgate.store.connect import Client
from callgate.store.redis import REDIS_ERRORS, scan_all

AT_ONCE = 32  # sites read concurrently
MAX_KEYS_ALL = 20 * MAX_KEYS  # keys one pass gathers at most, all sites together


@dataclass(frozen=True, slots=True)
class SiteRisk:
    """One site's line: its status against its active policy's caps, or why there is none."""

    site: str
    status: Status | None
    problem: str = ""  # why there is no status: no pushed policy, one this callgate cannot read

    @property
    def worst(self) -> SpendLine | None:
        """The enforced spend cap this site is closest to (None: no cap, or no status)."""
        if self.status is None:
            return None
        capped = [x for x in self.status.spend if x.cap and not x.report]
        return max(capped, key=lambda x: (x.percent or Decimal(0), x.spent), default=None)

    @property
    def risk(self) -> tuple[bool, Decimal, int, int]:
        s, worst = self.status, self.worst
        if s is None:
            return (False, Decimal(-1), 0, 0)
        used = worst.percent if worst is not None and worst.percent is not None else Decimal(0)
        return (s.panic, used, len(s.locks), s.live_calls)


@dataclass(frozen=True, slots=True)
class AllSites:
    sites: tuple[SiteRisk, ...]  # riskiest first
    keys: int  # keys the one pass found
    truncated: bool  # the pass stopped at MAX_KEYS_ALL: sites may be missing or partial


async def read_all(
    client: Client, now: datetime, *, at_once: int = AT_ONCE, max_keys: int = MAX_KEYS_ALL
) -> AllSites:
    """Every site's state at ``now``, riskiest first. Raises StoreUnavailable."""
    try:
        return await _read_all(client, now, at_once, max_keys)
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


async def _read_all(client: Client, now: datetime, at_once: int, max_keys: int) -> AllSites:
    by_site: dict[str, list[str]] = defaultdict(list)
    seen = 0
    truncated = False
    # cg:{S}:... and a tenant's cg:{P}/T:... (keys.site_prefix)
    async for batch in scan_all(client, "cg:{*}*", SCAN_COUNT):
        for key in batch:
            site = site_of(key)
            if site is not None:
                by_site[site].append(key)
        seen += len(batch)
        if seen >= max_keys:
            truncated = True
            break
    gate = asyncio.Semaphore(at_once)

    async def one(site: str) -> SiteRisk:
        async with gate:
            stored = await PolicyStore(client, site).get()
            if stored is None:
                return SiteRisk(site, None, "no policy pushed to Redis (file mode?)")
            try:
                policy = stored.load()
            except PolicyError as exc:
                return SiteRisk(site, None, f"its active policy v{stored.version}: {exc}")
            status = await read_status(client, policy, now, live_limit=0, scanned=by_site[site])
            return SiteRisk(site, replace(status, truncated=truncated))  # a cut pass: any site

    found = await asyncio.gather(*(one(site) for site in sorted(by_site)))
    ranked = sorted(found, key=lambda r: r.site)
    ranked.sort(key=lambda r: r.risk, reverse=True)
    return AllSites(tuple(ranked), seen, truncated)
