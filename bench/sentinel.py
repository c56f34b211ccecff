"""Redis Sentinel: what a failover costs callgate, and what ``[redis] wait_replicas`` costs (``make
bench``; alone, ``python -m bench.sentinel``, which starts its own servers).

:func:`sentinel_rig` starts one primary, one replica and three sentinels on loopback ports
(``redis-server CONF --sentinel``: Debian's package has no redis-sentinel binary), and stops them all
on the way out. On it:

* wait: admissions through ``redis+sentinel://``, one at a time (p50, p99) and 32 concurrent, with
  ``wait_replicas`` 0 and 1: what waiting for the replica costs;
* failover: :func:`failover` SIGKILLs the primary while 200 concurrent gates admit calls against small
  spend caps, through a :class:`~callgate.store.redis.RedisStore` on the ``redis+sentinel://`` client,
  each decision bounded by the gate's deadline as ``Gate`` bounds it; it counts the decisions that
  failed (which the gate turns into ``on_store_error``), the time until an admission succeeds on the
  promoted replica, and the spend lost: reservations whose admission was answered but that the new
  primary does not hold (replication is asynchronous). tests/test_sentinel.py asserts on the same
  run, so the figures printed here are the ones the tests hold to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis.asyncio as aioredis

from callgate.core import keys
from callgate.core.admission import Admission
from callgate.errors import StoreUnavailable
from callgate.serve import REDIS_TIMEOUT
from callgate.settings import setting
from callgate.store.connect import client_from_url
from callgate.store.redis import RedisStore
from tests.servers import free_port
from tests.test_spend_invariant import CAPS, admission

SERVICE = "cg"  # the primary's name in the sentinels' `sentinel monitor` line
DOWN_AFTER_MS = 1000  # sentinel down-after-milliseconds: how soon a silent primary is "down"
DEADLINE = float(str(setting("gate", "deadline").default))  # what a decision may wait, as the gate
PER_SITE = 20  # admissions per site: each site's caps (CAPS) fill after a few, racing
RATE, INCREMENT, MAX_SECONDS = 1_000_000, 60, 180  # 1.00/min, 60 s billing: 3.00 a call at most
START_SECONDS = 30.0  # for the servers to start and the sentinels to find each other


@dataclass
class Rig:
    """The running servers: their ports, and the ``redis+sentinel://`` URL that reaches the primary."""

    primary: int
    replica: int
    sentinels: tuple[int, ...]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port``: no goodbye to its clients, no last replication."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start the server of ``port`` again, empty, as it was first started (the sentinels make a
        former primary a replica of the new one)."""
        self.procs[port] = subprocess.Popen(
            self.commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def named_primary(self) -> int | None:
        """The port of the primary the sentinels name now (the first one that answers)."""
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError), _client(port) as s:
                named = s.sentinel_get_master_addr_by_name(SERVICE)
                assert isinstance(named, tuple | list), named
                return int(named[1])
        return None


@contextlib.contextmanager
def _client(port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def _pings(port: int) -> bool:
    with _client(port) as c:
        return bool(c.ping())


def _wait(what: str, check: Callable[[], bool], deadline: float) -> None:
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Sentinel rig is not ready after {START_SECONDS} s: {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def sentinel_rig(workdir: Path) -> Iterator[Rig]:
    """A primary, its replica and three sentinels (quorum 2) on 127.0.0.1, all started here and all
    stopped on the way out, whatever happened; yields once the replica is in sync and every sentinel
    knows the replica and the two other sentinels (so a failover can start at once)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make deps`")
    rig = Rig(free_port(), free_port(), (free_port(), free_port(), free_port()))
    deadline = time.monotonic() + START_SECONDS
    plain = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]

    def start(port: int, *args: str) -> None:
        home = workdir / str(port)
        home.mkdir(parents=True, exist_ok=True)
        rig.commands[port] = [binary, *args, "--dir", str(home)]
        rig.restart(port)

    def replica_in_sync() -> bool:
        with _client(rig.replica) as r:
            return r.info("replication").get("master_link_status") == "up"

    def sentinels_ready() -> bool:
        for port in rig.sentinels:
            with _client(port) as s:
                state = s.sentinel_master(SERVICE)
                assert isinstance(state, dict)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
        return True

    try:
        start(rig.primary, "--port", str(rig.primary), *plain)
        start(rig.replica, "--port", str(rig.replica), *plain)
        _wait("primary up", lambda: _pings(rig.primary), deadline)
        _wait("replica up", lambda: _pings(rig.replica), deadline)
        with _client(rig.replica) as r:
            r.replicaof("127.0.0.1", rig.primary)
        _wait("replica in sync", replica_in_sync, deadline)
        for port in rig.sentinels:
            conf = workdir / f"sentinel-{port}.conf"  # the sentinel rewrites it: its own file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {rig.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            start(port, str(conf), "--sentinel", "--loglevel", "warning")
        _wait("sentinels know each other and the replica", sentinels_ready, deadline)
        yield rig
    finally:
        for proc in rig.procs.values():
            proc.terminate()
        for proc in rig.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- a failover under load -------------------------------------------------------------------------


@dataclass
class Failover:
    """What a failover under load did to the decisions and to the spend."""

    decisions: int = 0
    failed: int = 0  # StoreUnavailable or past the deadline: the gate's on_store_error
    failed_after_follow: int = 0  # failures after the first admission on the new primary
    slowest: float = 0.0  # the longest a decision took, seconds
    named_after: float = 0.0  # from the kill to the sentinels naming the replica
    outage: float = 0.0  # from the kill to the first admission made on the new primary
    follow: float = 0.0  # from the sentinels naming it to that admission
    admitted_before: int = 0  # admissions answered before the kill
    lost_calls: int = 0  # answered as admitted, absent from the new primary
    lost_spend: int = 0  # their reservations, micro-units
    orphans: int = 0  # failed decisions whose reservation the new primary holds
    orphan_spend: int = 0
    over_cap: list[str] = field(default_factory=list)  # keys above their cap: must stay empty
    unbalanced: list[str] = field(default_factory=list)  # counters != their live reservations

    def lines(self, wait_replicas: int) -> list[str]:
        back = ", the old primary restarted once replaced" if wait_replicas else ""
        return [
            f"sentinel failover: primary SIGKILLed under 200 concurrent gates, wait_replicas "
            f"{wait_replicas}{back} (down-after {DOWN_AFTER_MS} ms)",
            f"sentinel   decisions failed (on_store_error)       {self.failed:>10,} of {self.decisions:,}; "
            f"{self.failed_after_follow} after the first on the new primary; slowest "
            f"{self.slowest * 1e3:.0f} ms (deadline {DEADLINE * 1e3:.0f} ms)",
            f"sentinel   kill -> sentinels name the replica      {self.named_after:>10.2f} s",
            f"sentinel   kill -> first admission on new primary  {self.outage:>10.2f} s  (the "
            f"client follows {self.follow * 1e3:.0f} ms after the sentinels name it, no restart)",
            f"sentinel   spend lost: answered, not on new primary {self.lost_spend / 1e6:>9.2f}  in "
            f"{self.lost_calls} of {self.admitted_before} calls admitted before the kill",
            f"sentinel   reserved though the decision failed     {self.orphan_spend / 1e6:>10.2f}  in "
            f"{self.orphans} calls (charged in full when they expire)",
        ]


@dataclass
class _Seen:
    call_id: str
    site: str
    ext: str
    start: float  # monotonic, when it was asked
    at: float  # when the answer came
    reserved: int | None  # None: the decision failed


async def failover(
    rig: Rig,
    *,
    wait_replicas: int = 0,
    gates: int = 200,
    pace: float = 0.05,
) -> Failover:
    """SIGKILL the primary while ``gates`` tasks each admit a call every ``pace`` seconds, as a gate
    does (``asyncio.timeout(deadline)`` around ``RedisStore.admit``, the deadline in the admission
    too); go on until admissions have succeeded on the promoted replica for a second; then read what
    the new primary holds. Site ``fo-N`` takes ``PER_SITE`` consecutive calls against its small caps
    (``CAPS`` of tests/test_spend_invariant.py), so caps are being raced for throughout.

    With ``wait_replicas``, the old primary is started again (empty) once the replica is promoted:
    the new primary has no replica to wait for until the sentinels make the old one its replica."""
    client = client_from_url(
        rig.url, timeout=REDIS_TIMEOUT, max_connections=50, wait_replicas=wait_replicas
    )
    assert isinstance(client, aioredis.Redis)
    store = RedisStore(client)
    numbers = itertools.count()
    seen: list[_Seen] = []
    stop = asyncio.Event()

    async def gate() -> None:
        while not stop.is_set():
            i = next(numbers)
            site, ext = f"fo-{i // PER_SITE}", "ab"[i % 2]
            now_ms = int(time.time() * 1000)
            a: Admission = admission(
                f"c{i}", ext, now_ms, rate=RATE, increment=INCREMENT, max_seconds=MAX_SECONDS
            )._replace(site=site, deadline_ms=now_ms + int(DEADLINE * 1000))
            start = time.monotonic()
            reserved: int | None
            try:
                async with asyncio.timeout(DEADLINE):
                    outcome = await store.admit(a)
                reserved = outcome.reserved if outcome.admitted else 0
            except (StoreUnavailable, TimeoutError):
                reserved = None
            end = time.monotonic()
            seen.append(_Seen(a.call_id, site, ext, start, end, reserved))
            await asyncio.sleep(pace)

    tasks = [asyncio.create_task(gate()) for _ in range(gates)]
    killed_at = named_at = 0.0

    async def pause() -> None:
        await asyncio.sleep(0.02)
        for task in tasks:
            if task.done():  # a gate fails only when this code is wrong
                await task

    try:
        for _ in range(75):  # 1.5 s: every gate under way, the pool warm
            await pause()
        await asyncio.to_thread(rig.kill, rig.primary)
        killed_at = time.monotonic()  # dead: what is asked from now on, another server answers
        limit = killed_at + 60
        while not named_at:
            if await asyncio.to_thread(rig.named_primary) == rig.replica:
                named_at = time.monotonic()
            elif time.monotonic() > limit:
                raise RuntimeError("the sentinels never promoted the replica")
            await pause()
        if wait_replicas:
            await asyncio.to_thread(rig.restart, rig.primary)
        while not any(s.start > killed_at and s.reserved is not None for s in seen):
            if time.monotonic() > limit:
                raise RuntimeError("no admission succeeded on the promoted replica")
            await pause()
        await asyncio.sleep(1.0)  # and they go on succeeding
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.aclose()
    return await _measure(rig.replica, seen, killed_at, named_at)


async def _measure(port: int, seen: list[_Seen], killed_at: float, named_at: float) -> Failover:
    """Hold what the gates were told against what the new primary (``port``) has."""
    first = min(s.at for s in seen if s.start > killed_at and s.reserved is not None)
    f = Failover(
        decisions=len(seen),
        failed=sum(s.reserved is None for s in seen),
        failed_after_follow=sum(s.reserved is None and s.at > first for s in seen),
        slowest=max(s.at - s.start for s in seen),
        named_after=named_at - killed_at,
        outage=first - killed_at,
        follow=max(0.0, first - named_at),
        admitted_before=sum(bool(s.reserved) and s.start <= killed_at for s in seen),
    )
    async with aioredis.Redis(port=port, decode_responses=True) as new:
        costs: dict[str, str | None] = {}
        pipe = new.pipeline(transaction=False)
        for s in seen:
            pipe.hget(keys.site_prefix(s.site) + keys.reservation_key(s.call_id), "cost")
        for s, cost in zip(seen, await pipe.execute(), strict=True):
            costs[s.call_id] = cost
            if s.reserved and cost is None:
                f.lost_calls += 1
                f.lost_spend += s.reserved
            elif s.reserved is None and cost is not None:
                f.orphans += 1
                f.orphan_spend += int(cost)
        for site in sorted({s.site for s in seen}):
            prefix = keys.site_prefix(site)
            for key, cap in CAPS.items():
                committed = int(await new.get(prefix + key) or 0)
                held = sum(
                    int(costs[s.call_id] or 0)
                    for s in seen
                    if s.site == site and key in {f"s:ext:{s.ext}:d", "s:site:d"}
                )
                if committed > cap:
                    f.over_cap.append(f"{prefix}{key} = {committed} > {cap}")
                if committed != held:  # settled 0 + reserved: what the live reservations hold
                    f.unbalanced.append(f"{prefix}{key} = {committed}, reservations {held}")
    return f


# --- what wait_replicas costs ----------------------------------------------------------------------


async def wait_cost(url: str, wait_replicas: int, calls: int = 2000) -> tuple[float, float, float]:
    """Admissions that each reserve (a fresh site each), through ``url`` with ``wait_replicas``: one
    at a time (admissions/s, p99 seconds), then 32 concurrent (admissions/s)."""
    client = client_from_url(
        url, timeout=REDIS_TIMEOUT, max_connections=50, wait_replicas=wait_replicas
    )
    assert isinstance(client, aioredis.Redis)
    store = RedisStore(client)
    now_ms = int(time.time() * 1000)
    tag = f"w{wait_replicas}-{now_ms}"

    def plan(i: int) -> Admission:
        a = admission(f"c{i}", "a", now_ms, rate=RATE, increment=INCREMENT, max_seconds=60)
        return a._replace(site=f"{tag}-{i}")

    try:
        await store.admit(plan(-1))  # the script loaded, a connection open
        took = []
        for i in range(calls):
            start = time.perf_counter()
            outcome = await store.admit(plan(i))
            took.append(time.perf_counter() - start)
            assert outcome.admitted, outcome
        queue = [plan(i) for i in range(calls, 3 * calls)]
        total = len(queue)

        async def worker() -> None:
            while queue:
                await store.admit(queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(32)))
        concurrent = total / (time.perf_counter() - start)
    finally:
        await store.aclose()
    return len(took) / sum(took), statistics.quantiles(took, n=100)[98], concurrent


SCENARIOS = (0, 1)  # wait_replicas


async def _wait_rows(rig: Rig) -> None:
    for replicas in (0, 1):
        seq, p99, par = await wait_cost(rig.url, replicas)
        print(
            f"sentinel admissions, wait_replicas {replicas}, one at a time  {seq:>10,.0f}/s  "
            f"p99 {p99 * 1e3:.3f} ms;  32 concurrent {par:>8,.0f}/s"
        )


def run() -> None:
    """Print what wait_replicas costs, then a failover of each of ``SCENARIOS``, each on a rig of its
    own (started and stopped here)."""
    with tempfile.TemporaryDirectory() as tmp, sentinel_rig(Path(tmp)) as rig:
        asyncio.run(_wait_rows(rig))
    for wait_replicas in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp, sentinel_rig(Path(tmp)) as rig:
            measured = asyncio.run(failover(rig, wait_replicas=wait_replicas))
        for line in measured.lines(wait_replicas):
            print(line)


if __name__ == "__main__":
    run()
    sys.exit(0)
