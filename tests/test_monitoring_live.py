"""Every metric and every `status` field that docs/monitoring.md documents has a live source in a
running `callgate serve`, and moves when it should.

One real Redis, one real Asterisk with the shipped configs, `callgate serve` following the policy in
Redis (so the policy version is real), a webhook receiver on loopback for the alerts. The module walks
an admin's afternoon: a call held up, a refused one, one that takes a cap to 100% and one over it, a
report-only rule, a lockdown, a manual lock, a panic that hangs up a call abroad, a policy push, and
Redis going away. It scrapes `/metrics` and reads `callgate status --json` after each step, and at the
end checks that each documented metric was exported and each one that should move did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    ROOT,
    Callgate,
    Watch,
    app_registered,
    caller_leg_hangup,
    callgate_env,
    reached,
    shipped_configs,
    wait_until,
)
from tests.servers import free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

SITE = "mon"
DOC = (ROOT / "docs" / "monitoring.md").read_text("utf-8")
POLICY = """\
version: 1
site: {{name: mon, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}}
site_limits: {{spend: {{day: "500.00"}}}}
emergency: ["911"]
rates: {{default: "0.05", increment: 1, prefixes: {{"1": "0.01", "44": "0.60", "53": "1.10"}}}}
alerts: {{webhook: "http://127.0.0.1:{hook}/alerts"}}
profiles:
  office:
    destinations: {{allow_countries: [US, GB]}}
    limits: {{calls_per_minute: 500, concurrent_calls: 50, max_call_duration: 1h,
             spend: {{day: "100.00"}}}}
  spender:
    destinations: {{allow_countries: [GB]}}
    limits: {{max_call_duration: 1h, spend: {{day: "30.00"}}}}
  trial:
    destinations: {{allow_countries: [US]}}
    limits: {{calls_per_minute: {{value: 1, mode: report}}, max_call_duration: 1h}}
extensions:
  - {{match: "1001-1019", profile: office}}
  - {{match: "2000", profile: spender}}
  - {{match: "3000", profile: trial}}
lockdown:
  after_denied: {{calls: 3, within: 10m}}
  locks: international
{extra}"""
# Moving these needs an overflowing queue (100,000 audit entries or 10,000 alerts): they are
# exported and stay 0 here; the units in test_metrics/test_alerts prove them.
HELD = 4.5  # seconds a held webhook delivery waits at most (callgate gives up after 5)
NEVER_MOVE_HERE = {"callgate_audit_dropped", "callgate_alerts_dropped"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str
    root: Path
    hook: _webhook
    seen: list[Samples] = field(default_factory=list)  # every scrape, in order
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gate.env['CALLGATE_METRICS_PORT']}"


def cli(rig: Rig, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "callgate.cli", *args, "--redis", rig.redis_url, "--site", SITE],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def status(rig: Rig) -> dict[str, Any]:
    out = cli(rig, "status", "--json", "--health", f"{rig.base}/health")
    data: dict[str, Any] = json.loads(out.stdout)
    rig.statuses.append(data)
    return data


async def scrape(rig: Rig) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"{rig.base}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    rig.seen.append(samples)
    return samples


async def until_scraped(
    rig: Rig, name: str, labels: dict[str, str], want: float | Callable[[float], bool]
) -> Samples:
    """Scrape until `name{labels}` reads `want` (or satisfies it); the site's state is read at most
    once a second, settlements and the panic poll take their time: up to 15 s."""
    key = (name, tuple(sorted(labels.items())))
    ok = want if callable(want) else (lambda v: v == want)
    for _ in range(150):
        s = await scrape(rig)
        if ok(s.get(key, 0.0)):
            return s
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} never read {want}: {s.get(key)}\n{rig.gate.tail()}")


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("mon"))
    hooks: list[dict[str, Any]] = []
    hook_port = free_port()
    (root / "policy.yaml").write_text(POLICY.format(hook=hook_port, extra=""), encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
        _webhook(hook_port, hooks) as hook,
    ):
        rig = Rig(ast, Callgate({}, root / "callgate.log"), redis_url, root, hook)
        cli(rig, "policy", "push", str(root / "policy.yaml"))
        rig.gate.env = callgate_env(
            ast, redis_url, root / "unused.yaml",
            CALLGATE_POLICY_SOURCE="redis", CALLGATE_POLICY_SITE=SITE, CALLGATE_POLICY_FILE="",
            CALLGATE_ALERTS_DENY_BURST="2", CALLGATE_ALERTS_MIN_INTERVAL="1",
        )  # fmt: skip
        rig.gate.start()
        try:
            if not wait_until(lambda: app_registered(ast), 20):
                pytest.fail(f"callgate did not register its Stasis app\n{rig.gate.tail()}")
            yield rig
        finally:
            rig.gate.stop()


class _webhook:
    """A webhook receiver in a thread of its own (the tests' loops come and go)."""

    def __init__(self, port: int, into: list[dict[str, Any]]) -> None:
        self.port, self.into = port, into
        self.hold = threading.Event()  # while set, each delivery waits (at most HELD seconds)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def receive(request: web.Request) -> web.Response:
            for _ in range(int(HELD / 0.05)):
                if not self.hold.is_set():
                    break
                await asyncio.sleep(0.05)
            self.into.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/alerts", receive)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __enter__(self) -> _webhook:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def refused(watch: Watch, dialled: str) -> None:
    hangup = await watch.wait(caller_leg_hangup(dialled))
    assert hangup is not None
    assert hangup.get("Cause") == "21", hangup.headers


async def test_at_rest(rig: Rig) -> None:
    """Before any call: links up, the state read, the policy version and digest exported, status
    shows the active version and the gate's health."""
    s = await until_scraped(rig, "callgate_link_up", {"link": "ami"}, 1)
    assert value(s, "callgate_link_up", link="ari") == 1
    assert value(s, "callgate_link_up", link="redis") == 1
    s = await until_scraped(rig, "callgate_state_up", {}, 1)
    assert value(s, "callgate_policy_version") == 1
    digests = [labels for name, labels in s if name == "callgate_policy_info"]
    assert len(digests) == 1
    assert len(dict(digests[0])["digest"]) == 12
    assert value(s, "callgate_spend_cap_micro", scope="site", period="day") == 500_000_000
    assert value(s, "callgate_panic") == 0
    st = status(rig)
    assert st["policy"]["active"]["version"] == 1
    assert st["policy"]["active"]["digest"].startswith(dict(digests[0])["digest"])
    assert st["health"]["status"] == "ok"
    assert st["health"]["links"]["ami"] == "up"
    assert st["panic"] is False
    assert st["locks"] == {}
    assert st["live_calls"]["count"] == 0


async def test_a_call_held_up_is_live_everywhere(rig: Rig, watch: Watch) -> None:
    """An admitted call, still up: counted as a decision, live in this gate, a reservation holding
    money on the caps, listed by status with who admitted it; its end settles it."""
    await watch.originate("1001", "2125550101", hold=8)
    assert await watch.wait(reached("+12125550101")), rig.gate.tail()
    s = await until_scraped(rig, "callgate_reservations", {}, 1)
    assert value(s, "callgate_decisions_total", verdict="ALLOW", reason="allowed") == 1
    assert value(s, "callgate_decision_seconds_count") == 1
    assert value(s, "callgate_live_calls") == 1
    assert value(s, "callgate_reserved_micro") == 600_000  # 1h at 0.01/min
    assert value(s, "callgate_spend_micro", scope="ext:1001", period="day") == 600_000
    assert value(s, "callgate_spend_micro", scope="site", period="day") == 600_000
    st = status(rig)
    assert st["reservations"]["count"] == 1
    assert st["reservations"]["reserved_micro"] == 600_000
    assert st["live_calls"]["count"] == 1
    (call,) = st["live_calls"]["calls"]
    assert (call["extension"], call["number"], call["international"]) == (
        "1001", "+12125550101", False,
    )  # fmt: skip
    assert call["channel"]
    assert call["admitted_at"]
    assert call["allowed_seconds"] == 3600
    assert call["until_ms"] > 0
    assert any((x["scope"], x["period"]) == ("ext:1001", "day") for x in st["spend"])
    assert any(c["scope"] == "ext:1001" for c in st["counters"])
    s = await until_scraped(rig, "callgate_reservations", {}, 0)  # hung up, settled by its CDR
    assert value(s, "callgate_live_calls") == 0
    assert 0 < value(s, "callgate_spend_micro", scope="ext:1001", period="day") < 600_000


async def test_refusals_are_counted_and_alerted(rig: Rig, watch: Watch) -> None:
    """Two refusals of one extension: counted by reason, and (deny_burst 2) one deny_burst alert,
    delivered to the webhook."""
    for n in (1, 2):
        number = f"01153712345{n}"
        await watch.originate("1002", number)
        await refused(watch, number)
    s = await until_scraped(
        rig, "callgate_decisions_total", {"verdict": "DENY", "reason": "country_not_allowed"}, 2
    )
    assert value(s, "callgate_alerts_total", kind="deny_burst") >= 1
    assert wait_until(lambda: any(h["kind"] == "deny_burst" for h in rig.hook.into), 10), (
        rig.hook.into
    )
    await until_scraped(rig, "callgate_alerts_sent_total", {}, lambda v: v >= 1)


async def test_a_cap_reached_then_exceeded(rig: Rig, watch: Watch) -> None:
    """A call abroad takes a 30.00 day cap to 100% (spend_100 alert, spend at the cap); the next is
    refused with spend_cap_day."""
    await watch.originate("2000", "011442079460100", hold=2)
    assert await watch.wait(reached("+442079460100")), rig.gate.tail()
    s = await until_scraped(
        rig, "callgate_spend_micro", {"scope": "ext:2000", "period": "day"}, 30_000_000
    )
    assert value(s, "callgate_spend_cap_micro", scope="ext:2000", period="day") == 30_000_000
    assert value(s, "callgate_alerts_total", kind="spend_100") == 1
    await watch.originate("2000", "011442079460101")
    await refused(watch, "011442079460101")
    await until_scraped(
        rig, "callgate_decisions_total", {"verdict": "DENY", "reason": "spend_cap_day"}, 1
    )
    st = status(rig)
    line = next(x for x in st["spend"] if (x["scope"], x["period"]) == ("ext:2000", "day"))
    assert line["cap_micro"] == 30_000_000
    assert line["spent_micro"] == 30_000_000


async def test_a_report_only_rule_is_counted_not_enforced(rig: Rig, watch: Watch) -> None:
    """calls_per_minute 1 in mode: report: the second call goes through and is counted as reported."""
    for n in (1, 2):
        await watch.originate("3000", f"212555030{n}")
        assert await watch.wait(reached(f"+1212555030{n}")), rig.gate.tail()
    await until_scraped(rig, "callgate_reported_total", {"reason": "velocity_minute"}, 1)


async def test_lockdown_and_a_manual_lock(rig: Rig, watch: Watch) -> None:
    """Three refusals lock 1005 (lock alert, locked_extensions{international}); `callgate lock --all`
    locks 1006; status lists both; unlock lifts them. The webhook is slow meanwhile: the alerts raised
    wait in the alert queue until it answers."""
    rig.hook.hold.set()
    for n in (1, 2, 3):
        number = f"01153712346{n}"
        await watch.originate("1005", number)
        await refused(watch, number)
    cli(rig, "lock", "1006", "--all")
    s = await until_scraped(rig, "callgate_locked_extensions", {"scope": "all"}, 1)
    assert value(s, "callgate_locked_extensions", scope="international") == 1
    assert value(s, "callgate_alerts_total", kind="lock") == 1
    await until_scraped(rig, "callgate_alerts_queue", {}, lambda v: v >= 1)
    rig.hook.hold.clear()
    await until_scraped(rig, "callgate_alerts_queue", {}, 0)
    await watch.originate("1006", "2125550106")
    await refused(watch, "2125550106")
    await until_scraped(
        rig, "callgate_decisions_total", {"verdict": "DENY", "reason": "extension_locked"}, 1
    )
    assert status(rig)["locks"] == {"1005": "international", "1006": "all"}
    cli(rig, "unlock", "1005")
    cli(rig, "unlock", "1006")
    await until_scraped(rig, "callgate_locked_extensions", {"scope": "all"}, 0)


async def test_panic_then_calm(rig: Rig, watch: Watch) -> None:
    """Panic: the switch reads 1, a call abroad in progress is hung up, the panic alert is counted,
    status says so; calm puts it back."""
    await watch.originate("1007", "011442079460107", hold=30)
    assert await watch.wait(reached("+442079460107")), rig.gate.tail()
    cli(rig, "panic")
    await until_scraped(rig, "callgate_panic", {}, 1)
    assert await watch.wait(caller_leg_hangup("011442079460107"), 10), rig.gate.tail()
    assert status(rig)["panic"] is True
    await until_scraped(rig, "callgate_alerts_total", {"kind": "panic"}, 1)
    cli(rig, "calm")
    await until_scraped(rig, "callgate_panic", {}, 0)
    await until_scraped(rig, "callgate_alerts_total", {"kind": "calm"}, 1)


async def test_a_pushed_policy_moves_the_version(rig: Rig) -> None:
    """A second version pushed: the gate runs it within a second; its version and digest are exported;
    policy_activated is counted."""
    (rig.root / "v2.yaml").write_text(POLICY.format(hook=rig.hook.port, extra="# v2\n"), "utf-8")
    cli(rig, "policy", "push", str(rig.root / "v2.yaml"))
    s = await until_scraped(rig, "callgate_policy_version", {}, 2)
    assert value(s, "callgate_alerts_total", kind="policy_activated") == 1
    assert status(rig)["policy"]["active"]["version"] == 2


async def test_redis_gone(rig: Rig, watch: Watch) -> None:
    """Redis shut down: the state is unreadable (state_up 0, its series gone), the Redis link is down,
    /health is 503, a call is decided by on_store_error and its audit entry waits in the queue."""
    client = aioredis.Redis.from_url(rig.redis_url)
    with contextlib.suppress(Exception):
        await client.shutdown(nosave=True)
    s = await until_scraped(rig, "callgate_link_up", {"link": "redis"}, 0)
    s = await until_scraped(rig, "callgate_state_up", {}, 0)
    assert not any(name == "callgate_spend_micro" for name, _ in s)
    async with aiohttp.ClientSession() as http, http.get(f"{rig.base}/health") as reply:
        assert reply.status == 503
    await watch.originate("1008", "2125550108")
    assert await watch.wait(reached("+12125550108")), rig.gate.tail()  # domestic: allowed
    s = await until_scraped(rig, "callgate_audit_queue", {}, 1)
    assert value(s, "callgate_decisions_total", verdict="ALLOW", reason="store_unavailable") == 1
    assert value(s, "callgate_alerts_total", kind="store_failure") == 1


# exported only with many tenants behind one gate: proven by tests/test_tenants_e2e.py
TENANTS_ONLY = {"callgate_tenant_decisions"}


def _documented_metrics() -> set[str]:
    """Every `callgate_*` name in docs/monitoring.md's tables and text (without `_total`)."""
    return {re.sub(r"_total$", "", n) for n in re.findall(r"`(callgate_\w+)`", DOC)}


def test_every_documented_metric_was_exported_and_moved(rig: Rig) -> None:
    """Over the whole walk: each documented metric appeared in a scrape, and each moved (took more
    than one value, or appeared with a new label set) unless it only moves on an overflow."""
    assert rig.seen, "no scrape"
    documented = _documented_metrics()
    exported: set[str] = set()
    history: dict[str, set[tuple[tuple[tuple[str, str], ...], float]]] = {}
    for samples in rig.seen:
        present = set()
        for (name, labels), v in samples.items():
            if name.endswith("_created"):
                continue
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            present.add(family)
            history.setdefault(family, set()).add((labels, v))
        for family in documented - present:  # absent, then present: that moved too
            history.setdefault(family, set()).add(((("absent", ""),), 0.0))
        exported |= present
    assert documented - TENANTS_ONLY <= exported, documented - exported
    assert {f for f in exported if f.startswith("callgate_")} <= documented, "undocumented"
    still = {f for f in documented - NEVER_MOVE_HERE - TENANTS_ONLY if len(history[f]) < 2}
    assert not still, still


def test_every_documented_status_field_was_seen(rig: Rig) -> None:
    """The --json fields docs/monitoring.md lists are all present, and each took a real value at some
    point of the walk (a live call, a lock, panic, a version, the gate's health)."""
    assert rig.statuses
    listed = re.search(r"`--json` prints the same as one object: (.*?)\n\n", DOC, re.DOTALL)
    assert listed is not None
    names = set(re.findall(r"`([a-z_]+)`", listed.group(1)))  # field names are lower case
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if v not in (None, [], {}, 0, "", False) or k in {"truncated", "report"}:
                    seen.add(k)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for st in rig.statuses:
        walk(st)
    assert names - seen <= {"percent"}, names - seen  # percent: only for capped lines, seen above
