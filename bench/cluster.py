"""Redis Cluster against one Redis server, in the same run (``python -m bench.cluster``): admissions
for 1,000 sites spread over the slots, and reading those 1,000 sites' state.

Both deployments are started here on loopback (tests/servers.py): one redis-server, and a Cluster of
three masters. The same admissions (the default policy's, site ``site-NNNN`` for call ``i % 1000``) go
to each, one at a time (p50/p99) and 32 at a time. Then every site's state is read: ``read_status`` (what ``callgate status`` and /metrics read: a
SCAN of the site's keys, then two pipelined round trips), and ``locks`` + ``panic`` (what
``callgate locks`` reads), one site after another and 32 sites at a time; and ``status --all``
(callgate.ops.statusall: one pass over every key, then each site's reads). On a Cluster each site's
reads go to the one master of its slot. Python is the client in both cases and usually the bottleneck
on a small machine: the figures compare the two in this one run.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from redis.asyncio.cluster import RedisCluster

from callgate.core.admission import Admission
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.ops.policystore import PolicyStore
from callgate.ops.status import read_status
from callgate.ops.statusall import read_all
from callgate.store.redis import RedisStore
from tests.servers import Cluster, redis_cluster, redis_server

SITES = 1_000
SEQUENTIAL = 3_000  # admissions timed one at a time
CONCURRENT = 6_000  # admissions timed 32 at a time
WORKERS = 32
NY = ZoneInfo("America/New_York")
AT = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
DIALLED = [f"1212555{i:04d}" for i in range(0, 5000, 7)] + [
    f"01144207946{i:04d}" for i in range(0, 3000, 11)
]


def row(label: str, figure: str, more: str = "") -> None:
    """One line of the bench's table: the section, what was measured, the figure, and its detail."""
    print(f"cluster  {label:<56}{figure}  {more}".rstrip())


def site(i: int) -> str:
    return f"site-{i % SITES:04d}"


def plans(policy: Policy) -> list[Admission]:
    """The admissions, in order: call i of site ``site(i)``, a millisecond apart."""
    memo, out = Memo(policy), []
    for i in range(1 + SEQUENTIAL + CONCURRENT):
        attempt = CallAttempt(f"b{i}", f"10{i % 20 + 1:02d}", DIALLED[i % len(DIALLED)])
        prep = prepare(memo, attempt, AT + timedelta(milliseconds=i))
        assert prep.admission is not None
        out.append(prep.admission._replace(site=site(i)))
    return out


async def bounded(jobs: list[Awaitable[object]]) -> float:
    """Seconds to await ``jobs`` (coroutines not yet started), at most WORKERS at a time."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            await queue.pop()

    s = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.perf_counter() - s


async def bench_one(
    name: str, store: RedisStore, admissions: list[Admission], policy: Policy
) -> dict[str, float]:
    """Admissions per second (one at a time, WORKERS at a time), then seconds to read every site."""
    await store.admit(admissions[0])  # loads the script
    latencies = []
    for a in admissions[1 : 1 + SEQUENTIAL]:
        s = time.perf_counter()
        await store.admit(a)
        latencies.append(time.perf_counter() - s)
    q = statistics.quantiles(latencies, n=100)
    seq = len(latencies) / sum(latencies)
    p50, p99 = f"p50 {q[49] * 1e3:.3f} ms", f"p99 {q[98] * 1e3:.3f} ms"
    row(f"admissions, one at a time, {name}", f"{seq:>12,.0f}/s", f"{p50}  {p99}")
    rest = admissions[1 + SEQUENTIAL :]
    par = len(rest) / await bounded([store.admit(a) for a in rest])
    row(f"admissions, {WORKERS} concurrent, {name}", f"{par:>12,.0f}/s")

    policies = [replace(policy, site=replace(policy.site, name=site(i))) for i in range(SITES)]
    now = AT + timedelta(seconds=30)

    async def status(p: Policy) -> None:
        await read_status(store.client, p, now)

    async def locks(p: Policy) -> None:  # `callgate locks`
        await store.locks(p.site.name)
        await store.panic(p.site.name)

    figures = {"seq": seq, "par": par}
    for what, read in {"read_status": status, "locks + panic": locks}.items():
        s = time.perf_counter()
        for p in policies:
            await read(p)
        one = time.perf_counter() - s
        many = await bounded([read(p) for p in policies])
        row(
            f"{what}, {SITES:,} sites one by one, {name}",
            f"{one * 1e3:>9,.0f} ms",
            f"{one / SITES * 1e3:.2f} ms a site; {WORKERS} at a time {many * 1e3:,.0f} ms",
        )
        figures[what] = one
    texts = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    base = policy.site.name
    for p in policies:  # status --all reads each site's active pushed version
        mine = texts.replace(f"name: {base}", f"name: {p.site.name}")
        await PolicyStore(store.client, p.site.name).push(mine, "bench", {}, by="bench", at=AT)
    s = time.perf_counter()
    found = await read_all(store.client, now)
    took = time.perf_counter() - s
    assert len(found.sites) == SITES, len(found.sites)
    row(
        f"status --all, {SITES:,} sites in one pass, {name}",
        f"{took * 1e3:>9,.0f} ms",
        f"{found.keys:,} keys; {took / SITES * 1e3:.2f} ms a site",
    )
    figures["status --all"] = took
    return figures


async def bench(url: str, cluster: Cluster) -> None:
    text = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    policy = load_policy(text, "default")
    admissions = plans(policy)
    spread = Counter(cluster.port_of(site(i)) for i in range(SITES))
    masters = f"{len(cluster.ports)}-master cluster"
    row(
        f"{SITES:,} sites on the {masters}'s masters",
        " / ".join(f"{spread[port]}" for port in cluster.ports),
        f"{len(admissions):,} admissions on each deployment",
    )
    single = RedisStore.from_url(url, timeout=5)
    on_cluster = RedisStore(
        RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    )
    try:
        await single.client.flushdb()
        await on_cluster.client.flushdb()
        one = await bench_one("one server", single, admissions, policy)
        many = await bench_one(masters, on_cluster, admissions, policy)
        keys = await single.client.dbsize()
    finally:
        await single.aclose()
        await on_cluster.aclose()
    row(
        "keys then held (each scan of a site walks them all)",
        f"{keys:>12,}",
        "on one server; a third on each master",
    )
    ratios = {
        "admissions, one at a time": many["seq"] / one["seq"],
        f"admissions, {WORKERS} concurrent": many["par"] / one["par"],
        f"read_status of {SITES:,} sites, time": many["read_status"] / one["read_status"],
        f"status --all of {SITES:,} sites, time": many["status --all"] / one["status --all"],
    }
    for what, ratio in ratios.items():
        print(f"ratio    {'cluster / one server, ' + what:<56}{ratio:>12.2f}")


def run() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp) / "one") as url,
        redis_cluster(Path(tmp) / "cluster") as cluster,
    ):
        asyncio.run(bench(url, cluster))


if __name__ == "__main__":
    run()
