"""``make bench``: decisions per second of the pure engine, a million-range prefix list (a decision and a
reload), Redis admissions (throughput, p50/p99), how soon alerts, scrapes and policy pushes take effect
(bench/latency.py), a 3-master Redis Cluster against one server (bench/cluster.py), a Sentinel failover
and WAIT's cost (bench/sentinel.py), replay, the gate in a real Asterisk (bench/gate.py).

Every figure is measured in this one run, on this machine; ratios compare figures of the same run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from bench import cluster, sentinel
from bench.latency import bench_latency
from bench.prefixes import bench_prefixes
from bench.replay import bench_stages
from callgate.core.admission import Outcome
from callgate.core.engine import peeked
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.store.redis import RedisStore
from tests.servers import redis_server

NY = ZoneInfo("America/New_York")
AT = datetime(2026, 11, 17, 10, 0, tzinfo=NY)
DIALLED = [f"1212555{i:04d}" for i in range(0, 5000, 7)] + [
    f"01144207946{i:04d}" for i in range(0, 3000, 11)
]


def policy() -> Policy:
    text = (
        resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8")
    )
    return load_policy(text, "default")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


def bench_engine(p: Policy) -> float:
    """prepare + judge + conclude with given counter values: no store, no IO."""
    attempts = [
        CallAttempt(f"c{i}", f"10{i % 20 + 1:02d}", DIALLED[i % len(DIALLED)])
        for i in range(len(DIALLED))
    ]
    memo = Memo(p)
    for a in attempts:  # warm the number cache: a PBX dials the same numbers again and again
        prepare(memo, a, AT)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        for a in attempts:
            prep = prepare(memo, a, AT)
            assert prep.admission is not None
            peeked(prep, Outcome(values=(0,) * len(prep.admission.checks)))
        n += len(attempts)
    elapsed = time.perf_counter() - start
    print(
        f"engine   pure decisions (prepare+judge+conclude)       {rate(n, elapsed)}  ({elapsed / n * 1e6:.1f} us each)"
    )
    return n / elapsed


async def bench_redis(p: Policy, url: str) -> tuple[float, float]:
    store = RedisStore.from_url(url, timeout=5)
    await store.client.flushdb()
    t0 = AT.timestamp()
    memo = Memo(p)

    def admission(i: int) -> object:
        at = datetime.fromtimestamp(t0 + i * 0.001, NY)
        prep = prepare(
            memo, CallAttempt(f"b{i}", f"10{i % 20 + 1:02d}", DIALLED[i % len(DIALLED)]), at
        )
        return prep.admission

    plans = [admission(i) for i in range(6000)]
    await store.admit(plans[0])  # type: ignore[arg-type]
    latencies = []
    for plan in plans[1:3001]:
        s = time.perf_counter()
        await store.admit(plan)  # type: ignore[arg-type]
        latencies.append(time.perf_counter() - s)
    q = statistics.quantiles(latencies, n=100)
    seq = len(latencies) / sum(latencies)
    print(
        f"redis    admissions, one at a time                     {rate(len(latencies), sum(latencies))}  p50 {q[49] * 1e3:.3f} ms  p99 {q[98] * 1e3:.3f} ms"
    )
    queue = list(plans[3001:])

    async def worker() -> None:
        while queue:
            await store.admit(queue.pop())  # type: ignore[arg-type]

    s = time.perf_counter()
    total = len(queue)
    await asyncio.gather(*(worker() for _ in range(32)))
    par = total / (time.perf_counter() - s)
    print(f"redis    admissions, 32 concurrent                     {par:>12,.0f}/s")
    await store.aclose()
    return seq, par


def main() -> int:
    rows = int(os.environ.get("CALLGATE_BENCH_ROWS", "1000000"))
    p = policy()
    print(f"callgate bench, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    engine = bench_engine(p)
    bench_prefixes()  # a 1M-range deny list against a 10-range one, and its reload (bench/prefixes.py)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        seq, par = asyncio.run(bench_redis(p, url))
        bench_latency(url)  # what the tests only check happens: how soon it does (bench/latency.py)
    cluster.run()  # a 3-master Redis Cluster against one server, 1,000 sites (bench/cluster.py)
    sentinel.run()  # a failover under load, and what wait_replicas = 1 costs (bench/sentinel.py)
    # replay pure and compiled, each stage against the csv-reading floor (bench/replay.py)
    speeds = bench_stages(rows, Path(os.environ.get("CALLGATE_COMPILED", "build/compiled")))
    print(f"ratio    redis sequential / pure engine                {seq / engine:>12.3f}")
    print(f"ratio    redis 32-concurrent / sequential              {par / seq:>12.2f}")
    if len(speeds) == 2:
        ratio = speeds["compiled"] / speeds["pure Python"]
        print(f"ratio    replay compiled / pure Python                 {ratio:>12.2f}")
    from bench.gate import bench_gate  # the gate in a real Asterisk (bench/gate.py)

    bench_gate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
