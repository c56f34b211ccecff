"""``make bench``, the gate: a do-nothing Stasis app against ``callgate serve``, in one real Asterisk.

Run alone: ``.venv/bin/python -m bench.gate``. ``CALLGATE_BENCH_CALLS`` calls per loop (default 3000),
``CALLGATE_BENCH_CONCURRENCY`` calls in flight in the closed loop (default 32).

One Asterisk (``make asterisk``), one redis-server and the apps, on 127.0.0.1 ports chosen here, all
stopped at the end. Both apps get the same dialplan but for the app's name: a Local channel enters
``Stasis()``, is continued (or hung up) by the app, reports itself in one ``UserEvent`` and hangs up.
Calls are AMI ``Originate`` (async) of ``Local/<number>@bench-<app>/n``.

* ``bench-null``: the do-nothing app, on :class:`callgate.asterisk.ari.AriClient` (callgate's own client), in a
  process of its own like callgate; it continues every channel and does nothing else;
* ``callgate serve`` with the shipped default policy, every rule in force but its counts raised for a
  benchmark's rate, and a mix of numbers of which one in ten is refused; real Redis, the spend feed on.

Each gets a warm-up, a closed loop (as fast as Asterisk takes calls: each call is originated as soon as
another one ends) and an open loop at ``RATE`` attempts per second (it stops offering when more than
``BACKLOG`` calls wait, so an app that cannot keep up shows it without a ten-minute queue).

*In Stasis* is the time a call waits in the app as Asterisk sees it: the dialplan reads the channel's
clock (``STRFTIME(,,%s.%6q)``) right before ``Stasis()`` and right after it returns, or in the ``h``
extension when the app hung the channel up; it takes in StasisStart, its trip over the websocket, the
app's work, its REST requests and Asterisk carrying them out. *Own clock* is each app's own timing of
the same span: the do-nothing app from its task's start to the answer of ``continue``; callgate's
``ms`` in its audit stream (decide, set the variables, continue or hang up). *CPU per call* is the CPU
time (user + system, every thread) each process used in the loop, per call ended: ``/proc/<pid>/stat``,
and ``INFO cpu`` for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bench import agi
from callgate.asterisk.ami import AmiConnection, Message
from callgate.asterisk.ari import AriClient
from callgate.core.keys import AUDIT, site_prefix
from callgate.errors import AriUnavailable
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import Callgate, app_registered, callgate_env, shipped_configs, wait_until
from tests.servers import free_port, redis_server, stop_process

ROOT = Path(__file__).resolve().parent.parent
AGI_SCRIPT_ROW = "AGI script (sh + redis-cli INCR)"
RATE = 200  # attempts per second in the open loop: the goal is stated at this rate
BACKLOG = 2 * RATE  # the open loop stops offering calls when more than this many are waiting
WARMUP = 200
NULL_APP, GATE_APP = "bench-null", "callgate"
AMI_USER, AMI_SECRET = "bench", "bench-secret"
RING_MS = 10_000  # Originate's Timeout: the originating half gives up (cause 19) after this
CALL_TIMEOUT = 20.0  # a call that has not reported itself by then is lost

# STASISSTATUS tells a continued call (SUCCESS) from one no app took (FAILED); a call the app hung up
# reports itself from the h extension. callgate marks the CDRs of the calls it admits for its spend feed.
CONTEXT = """\
[bench-{app}]
exten => _X.,1,Set(BENCH_T0=${{STRFTIME(,,%s.%6q)}})
 same => n,Stasis({app},${{EXTEN}},ext=${{CALLERID(num)}},call=${{CHANNEL(linkedid)}})
 same => n,Set(BENCH_T1=${{STRFTIME(,,%s.%6q)}})
 same => n,{mark}
 same => n,UserEvent(BenchCall,Id: ${{BENCH_ID}},Chan: ${{UNIQUEID}},T0: ${{BENCH_T0}},T1: ${{BENCH_T1}},End: ${{STASISSTATUS}})
 same => n,Hangup()
exten => h,1,GotoIf($["${{BENCH_T1}}" != ""]?done)
 same => n,UserEvent(BenchCall,Id: ${{BENCH_ID}},Chan: ${{UNIQUEID}},T0: ${{BENCH_T0}},T1: ${{STRFTIME(,,%s.%6q)}},End: hangup/${{HANGUPCAUSE}})
 same => n(done),NoOp()

"""
EXTENSIONS = (
    CONTEXT.format(app=NULL_APP, mark="NoOp()")
    + CONTEXT.format(app=GATE_APP, mark="NoOp()")
    + "[bench-park]\nexten => s,1,Hangup()\n"  # where the originating half would go: never answered
)

# callgate/data/default-policy.yaml with every rule kept and its counts raised: 20 extensions placing
# hundreds of calls a second would trip calls_per_minute, short_calls and lockdown at once, and every call
# after that would be a refusal. Hours are open all week so that the mix does not depend on the clock.
POLICY = """\
version: 1
site: {name: bench, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}
emergency: ["911", "933"]
rates:
  default: 0.05
  increment: 60
  prefixes: {"1": 0.01, "1876": 0.45, "44": 0.02, "4470": 0.35, "53": 1.10, "232": 0.90, "881": 6.50}
holidays: ["2026-12-25", "2027-01-01"]
profiles:
  office:
    destinations:
      allow_countries: [US, CA, GB, DE, FR, MX]
      deny_number_types: [premium_rate, shared_cost, uan, personal_number]
      deny_prefixes: ["+1900", "+1976"]
      allow_prefixes: ["+18005551"]
      max_rate: "0.50"
    hours: {international: "mon-sun 00:00-24:00", any: "mon-sun 00:00-24:00", on_holidays: open}
    limits:
      calls_per_minute: 1000000
      calls_per_hour: 10000000
      international_calls_per_hour: 1000000
      concurrent_calls: 10000
      same_number: {calls: 1000, within: 10m}
      distinct_numbers: {numbers: 10000000, within: 1h}
      short_calls: {calls: 10000000, shorter_than: 15s, within: 10m, then: alert}
      max_call_duration: 2h
      spend: {hour: "1000000.00", day: "10000000.00", month: "99999999.00"}
  lobby:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 10000, max_call_duration: 20m, spend: {day: "1000000.00"}}
extensions:
  - {match: "1001-1020", profile: office}
  - {match: "*", profile: lobby}
site_limits:
  concurrent_calls: 100000
  international_calls_per_hour: 10000000
  spend: {day: "99999999.00", month: "999999999.00"}
lockdown:
  after_denied: {calls: 10000000, within: 10m}
  locks: international
"""


def attempt(i: int) -> tuple[str, str]:
    """Extension and dialled number of call ``i``: 85 % US, 5 % London, 5 % Cuba, 5 % premium rate."""
    ext, kind, n = f"10{i % 20 + 1:02d}", i % 20, i % 10_000
    if kind == 17:
        return ext, f"01144207946{n:04d}"
    if kind == 18:
        return ext, f"0115372{n:06d}"  # refused: not an allowed country
    if kind == 19:
        return ext, f"1900555{n:04d}"  # refused: premium rate
    return ext, f"9212555{n:04d}" if kind % 2 else f"1646555{n:04d}"


@dataclass(frozen=True, slots=True)
class Call:
    """One call, as its channel reported it at its end."""

    id: int
    channel: str
    in_stasis_ms: float
    end: str  # SUCCESS (continued), hangup/<cause> (hung up), FAILED (no app)


@dataclass
class Loop:
    """One measured loop."""

    calls: list[Call]
    lost: int
    offered: int  # calls originated
    seconds: float  # first originate to last end
    started: float  # wall clock, to pick the do-nothing app's own timings of this loop
    ended: float
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the loop

    @property
    def rate(self) -> float:
        return len(self.calls) / self.seconds


class Dialer:
    """Originates Local channels over AMI and collects the BenchCall event each one raises at its end."""

    def __init__(self, conn: AmiConnection, context: str) -> None:
        self.conn = conn
        self.context = context
        self.waiting: dict[int, asyncio.Future[Call]] = {}
        self.ids = iter(range(1 << 62))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for m in self.conn.events(ping_every=30):
            call = _call(m) if m.get("UserEvent") == "BenchCall" else None
            if call is None:
                continue
            future = self.waiting.pop(call.id, None)
            if future is not None and not future.done():
                future.set_result(call)

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader

    async def call(self) -> Call | None:
        """Place one call and wait for its end; None when AMI refused it or it never reported."""
        i = next(self.ids)
        ext, number = attempt(i)
        future: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.waiting[i] = future
        try:
            reply = await self.conn.send(
                "Originate",
                Channel=f"Local/{number}@{self.context}/n",
                Context="bench-park",
                Exten="s",
                Priority="1",
                CallerID=f"<{ext}>",
                Variable=f"__BENCH_ID={i}",
                Async="true",
                Timeout=str(RING_MS),
            )
            if reply.get("Response") != "Success":
                return None
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        except TimeoutError:
            return None
        finally:
            self.waiting.pop(i, None)

    async def closed_loop(self, n: int, concurrency: int) -> Loop:
        left, results = n, list[Call | None]()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                results.append(await self.call())

        started, start = time.time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return _loop(results, n, time.perf_counter() - start, started)

    async def open_loop(self, n: int, rate: float) -> Loop:
        tasks: list[asyncio.Task[Call | None]] = []
        started, start = time.time(), time.perf_counter()
        for k in range(n):
            if len(self.waiting) > BACKLOG:
                break
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.call()))
        results = await asyncio.gather(*tasks)
        return _loop(results, len(tasks), time.perf_counter() - start, started)


def _loop(results: Sequence[Call | None], offered: int, seconds: float, started: float) -> Loop:
    calls = [c for c in results if c is not None]
    return Loop(calls, offered - len(calls), offered, seconds, started, time.time())


def _call(m: Message) -> Call | None:
    try:
        ms = (float(m.get("T1")) - float(m.get("T0"))) * 1000
        return Call(int(m.get("Id")), m.get("Chan"), ms, m.get("End"))
    except ValueError:
        return None


# -- the do-nothing app ---------------------------------------------------------------------------


async def null_app(client: AriClient, spans: list[tuple[float, float]]) -> None:
    """Continue every channel that enters the app; time each from its task's start to the answer."""
    tasks: set[asyncio.Task[None]] = set()

    async def go_on(channel_id: str) -> None:
        start = time.perf_counter()
        with contextlib.suppress(AriUnavailable):
            await client.continue_in_dialplan(channel_id)
        spans.append((time.time(), (time.perf_counter() - start) * 1000))

    async with client.event_stream() as events:
        async for event in events:
            if event.get("type") == "StasisStart":
                task = asyncio.create_task(go_on(event["channel"]["id"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


def run_null_app() -> int:
    """``python -m bench.gate --null-app``: serve until SIGTERM, then write the timings to BENCH_SPANS."""
    env, spans = os.environ, list[tuple[float, float]]()

    async def main() -> None:
        client = AriClient(
            env["BENCH_ARI_URL"], env["BENCH_ARI_USER"], env["BENCH_ARI_PASSWORD"], NULL_APP
        )
        app = asyncio.create_task(null_app(client, spans))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await app
        await client.aclose()

    asyncio.run(main())
    Path(env["BENCH_SPANS"]).write_text(json.dumps(spans))
    return 0


class NullApp:
    """The do-nothing app as a child process, like ``callgate serve``."""

    def __init__(self, ast: AsteriskInstance, spans: Path) -> None:
        env = {"BENCH_ARI_URL": ast.ari_url, "BENCH_ARI_USER": ast.ari_user}
        env |= {"BENCH_ARI_PASSWORD": ast.ari_password, "BENCH_SPANS": str(spans)}
        self.spans = spans
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.gate", "--null-app"], env={**os.environ, **env}, cwd=ROOT
        )

    def stop(self) -> list[tuple[float, float]]:
        stop_process(self.proc)
        with contextlib.suppress(OSError, ValueError):
            return [(float(at), float(ms)) for at, ms in json.loads(self.spans.read_text())]
        return []


# -- measuring ------------------------------------------------------------------------------------


def cpu_of(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system, all threads) a process has used, and with ``children`` those of
    the children it reaped (Asterisk's AGI scripts); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def asterisk_pid(ast: AsteriskInstance) -> int:
    """The pid of the Asterisk server (``-f``, not a ``-rx``) run with this instance's config; 0 if none."""
    wanted = str(ast.config).encode()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
            if wanted in args and b"-f" in args:
                return int(proc.name)
    return 0


@dataclass
class Meter:
    """CPU seconds used so far by Asterisk, the app, Redis and this process."""

    pids: dict[str, int]
    redis: aioredis.Redis

    async def sample(self) -> dict[str, float]:
        info = await self.redis.info("cpu")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            name: cpu_of(pid, children=name == "Asterisk") for name, pid in self.pids.items() if pid
        } | {
            "Redis": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            "bench": usage.ru_utime + usage.ru_stime,
        }


@dataclass(frozen=True, slots=True)
class Rig:
    """The servers both apps share."""

    ast: AsteriskInstance
    redis_url: str
    tmp: Path


async def measure(
    rig: Rig, app: str, pid: int, n: int, concurrency: int, *, open_loop: bool = True
) -> tuple[Loop, Loop]:
    """Warm-up, closed loop, open loop, for the Stasis app ``app`` running as process ``pid``
    (``open_loop`` False: no open loop; the closed one is returned twice)."""
    conn = await AmiConnection.open("127.0.0.1", rig.ast.ami_port, AMI_USER, AMI_SECRET)
    dialer = Dialer(conn, f"bench-{app}")
    pids = {"Asterisk": asterisk_pid(rig.ast), "app": pid}
    meter = Meter(pids, aioredis.Redis.from_url(rig.redis_url))
    try:
        await dialer.closed_loop(WARMUP, concurrency)
        before = await meter.sample()
        closed = await dialer.closed_loop(n, concurrency)
        closed.cpu = _minus(await meter.sample(), before)
        if not open_loop:
            return closed, closed
        await asyncio.sleep(2.0)  # the spend feed settles the closed loop's calls
        before = await meter.sample()
        opened = await dialer.open_loop(n, RATE)
        opened.cpu = _minus(await meter.sample(), before)
        return closed, opened
    finally:
        await dialer.close()
        await conn.close()
        await meter.redis.aclose()


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


async def audit_ms(url: str) -> dict[str, float]:
    """Channel id -> the ms callgate wrote to its audit stream for that channel's decision."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    found: dict[str, float] = {}
    key, start = site_prefix("bench") + AUDIT, "-"
    try:
        while True:
            batch = await client.xrange(key, start, "+", count=5000) or []
            for entry_id, fields in batch:
                if fields and "channel" in fields and "ms" in fields:
                    found[str(fields["channel"])] = float(fields["ms"])
                start = f"({entry_id!s}"
            if len(batch) < 5000:
                return found
    finally:
        await client.aclose()


def bench_configs(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped configs, and an AMI user that may originate and reads only UserEvents."""
    configs = shipped_configs(ast)
    # without ARI, callgate writes the emergency globals through AMI (docs/install.md)
    configs["manager.conf"] = configs["manager.conf"].replace(
        "write=system\n", "write=system,call\n"
    )
    configs["manager.conf"] += (
        f"\n[{AMI_USER}]\nsecret={AMI_SECRET}\ndeny=0.0.0.0/0.0.0.0\npermit=127.0.0.1/255.255.255.255\n"
        "read=user,system\nwrite=originate,system\neventfilter=Event: UserEvent\n"
    )
    return configs


@contextlib.contextmanager
def servers(
    tmp: Path, more: str = "", *, managers: str = ""
) -> Iterator[tuple[AsteriskInstance, str]]:
    """Redis and Asterisk, whose dialplan is the Stasis rows' contexts and ``more``; ``managers``:
    more AMI users for manager.conf."""

    def configs(ast: AsteriskInstance) -> dict[str, str]:
        found = bench_configs(ast)
        found["manager.conf"] += managers
        return found

    with (
        redis_server(tmp / "redis") as url,
        asterisk(
            asterisk_prefix(), tmp / "ast", dialplan=EXTENSIONS + more, configs=configs
        ) as ast,
    ):
        ast.rx("core set verbose 0")  # no log line per dialplan step: the gate is what is measured
        yield ast, url


@dataclass
class Side:
    name: str
    closed: Loop
    open: Loop
    own_ms: tuple[list[float], list[float]]  # the app's own timings in the closed and the open loop


def do_nothing(rig: Rig, n: int, concurrency: int) -> Side:
    null = NullApp(rig.ast, rig.tmp / "null-spans.json")
    try:
        if not wait_until(lambda: app_registered(rig.ast, NULL_APP), 20):
            raise RuntimeError("the do-nothing app did not register its Stasis app")
        closed, opened = asyncio.run(measure(rig, NULL_APP, null.proc.pid, n, concurrency))
    finally:
        spans = null.stop()

    def during(loop: Loop) -> list[float]:
        return [ms for at, ms in spans if loop.started <= at <= loop.ended]

    return Side("do-nothing", closed, opened, (during(closed), during(opened)))


def callgate(rig: Rig, n: int, concurrency: int, agi_port: int = 0) -> Side:
    """``callgate serve`` through the Stasis door, or (``agi_port``) through the FastAGI door alone."""
    policy = rig.tmp / "policy.yaml"
    policy.write_text(POLICY)
    if agi_port:
        app, name = agi.GATE, "callgate FastAGI"
        gate = agi.gate_agi(rig.ast, rig.redis_url, policy, agi_port, rig.tmp / "callgate-agi.log")
    else:
        app, name = GATE_APP, "callgate"
        gate = Callgate(callgate_env(rig.ast, rig.redis_url, policy), rig.tmp / "callgate.log")
        gate.start()
    try:
        if not agi_port and not wait_until(lambda: app_registered(rig.ast, GATE_APP), 20):
            raise RuntimeError(f"callgate did not register its Stasis app\n{gate.tail()}")
        assert gate.proc is not None
        closed, opened = asyncio.run(measure(rig, app, gate.proc.pid, n, concurrency))
    finally:
        gate.stop()  # SIGTERM: callgate writes the rest of its audit stream first
    audit = asyncio.run(audit_ms(rig.redis_url))

    def during(loop: Loop) -> list[float]:
        return [audit[c.channel] for c in loop.calls if c.channel in audit]

    return Side(name, closed, opened, (during(closed), during(opened)))


def do_nothing_agi(rig: Rig, n: int, concurrency: int, port: int) -> Side:
    null = agi.NullAgi(port)
    try:
        if not wait_until(lambda: agi.listening(port), 20):
            raise RuntimeError("the do-nothing FastAGI server did not listen")
        closed, opened = asyncio.run(measure(rig, agi.NULL, null.proc.pid, n, concurrency))
    finally:
        null.stop()
    return Side("do-nothing FastAGI", closed, opened, ([], []))


def agi_script(rig: Rig, n: int, concurrency: int) -> Side:
    """The per-call script: no process of its own to measure; its CPU is in Asterisk's children."""
    closed, opened = asyncio.run(measure(rig, agi.SCRIPT, 0, n, concurrency))
    return Side(AGI_SCRIPT_ROW, closed, opened, ([], []))


# -- printing -------------------------------------------------------------------------------------


def quantiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def _p(values: Sequence[float]) -> str:
    p50, p99 = quantiles(values)
    return f"p50 {p50:6.2f} ms  p99 {p99:7.2f} ms"


def report(version: str, sides: Sequence[Side], n: int, concurrency: int) -> None:
    print(
        f"gate     Asterisk {version}, Local channels by AMI Originate, {n} calls a loop, "
        f"{os.cpu_count()} cores shared by Asterisk, the app, Redis and this bench"
    )
    print(
        "gate       in app: channel clock right before Stasis() or AGI() to its return (continued) "
        "or to the h extension (hung up), from each call's UserEvent"
    )
    print(
        "gate       own clock: do-nothing app, its task's start to continue answered; callgate, the ms "
        "of its audit stream (decide, set variables, continue or hang up)"
    )
    print(
        "gate       CPU: user+system of each process (/proc/<pid>/stat; Redis INFO cpu) during "
        "the loop, per call ended; Asterisk's includes the AGI scripts it spawned and reaped"
    )
    width = max(len(side.name) for side in sides) + 1
    for side in sides:
        loops = (
            (side.closed, f"closed loop, {concurrency} in flight", side.own_ms[0]),
            (side.open, f"open loop, {RATE}/s offered", side.own_ms[1]),
        )
        for loop, label, own in loops:
            own_clock = f"  own clock {_p(own)}" if own else ""
            print(
                f"gate     {side.name:<{width}}{label:<27}{loop.rate:>6,.0f} calls/s  in app "
                f"{_p([c.in_stasis_ms for c in loop.calls])}{own_clock}"
            )
            ends: dict[str, int] = {}
            for c in loop.calls:
                ends[c.end] = ends.get(c.end, 0) + 1
            per_call = max(len(loop.calls), 1) / 1000
            cpu = ", ".join(f"{k} {v / per_call:.2f}" for k, v in loop.cpu.items())
            ended = ", ".join(f"{k} {v}" for k, v in sorted(ends.items()))
            short = (
                f"; stopped offering after {loop.offered} (over {BACKLOG} calls waiting)"
                if loop.offered < n
                else ""
            )
            print(f"gate       CPU ms a call: {cpu}; ended: {ended}, lost {loop.lost}{short}")
    by = {side.name: side for side in sides}

    def cpu_ms(side: Side) -> float:
        return sum(side.closed.cpu.values()) / max(len(side.closed.calls), 1) * 1e3

    for top, floor, goal in (
        ("callgate", "do-nothing", "  (goal: 0.8 or more)"),
        ("callgate FastAGI", "do-nothing FastAGI", ""),
        ("callgate FastAGI", "callgate", ""),
        ("callgate FastAGI", AGI_SCRIPT_ROW, ""),
    ):
        if top in by and floor in by:
            t, f = by[top], by[floor]
            print(
                f"ratio    {top} / {floor}: closed-loop calls per second "
                f"{t.closed.rate / f.closed.rate:.3f}{goal}; CPU ms a call, all processes "
                f"{cpu_ms(t) / cpu_ms(f):.3f}"
            )
    for name in ("callgate", "callgate FastAGI"):
        if name in by:
            p99 = quantiles([c.in_stasis_ms for c in by[name].open.calls])[1]
            print(f"goal     {name} p99 in app at {RATE}/s offered {p99:.2f} ms (goal: under 5 ms)")


def bench_gate() -> None:
    """The gate benchmark, as ``make bench`` prints it: both doors, their floors and the per-call
    AGI script, on one Asterisk and one Redis."""
    n = int(os.environ.get("CALLGATE_BENCH_CALLS", "3000"))
    concurrency = int(os.environ.get("CALLGATE_BENCH_CONCURRENCY", "32"))
    gate_port, null_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="callgate-bench-") as name:
        tmp = Path(name)
        script = tmp / "bench-agi.sh"
        with servers(tmp, agi.extensions(gate_port, null_port, script)) as (ast, url):
            agi.write_script(script, url)
            rig = Rig(ast, url, tmp)
            _, info = ast.ari("GET", "/asterisk/info")
            version = info.get("system", {}).get("version", "?") if isinstance(info, dict) else "?"
            sides = [
                do_nothing(rig, n, concurrency),
                callgate(rig, n, concurrency),
                do_nothing_agi(rig, n, concurrency, null_port),
                callgate(rig, n, concurrency, agi_port=gate_port),
                agi_script(rig, n, concurrency),
            ]
    report(version, sides, n, concurrency)


if __name__ == "__main__":
    if sys.argv[1:] == ["--null-app"]:
        sys.exit(run_null_app())
    bench_gate()
