"""Operating callgate against a real Asterisk: a pushed policy decides the next call with no call lost
(how soon after the push: `make bench`, row "policy"), lockdown locks and unlock restores, panic hangs up a live international call, a report-only rule
never denies but is in the audit stream, and the reason reaches the CDR."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    ROOT,
    Callgate,
    Watch,
    app_registered,
    caller_leg_hangup,
    callgate_env,
    cdr_of,
    reached,
    shipped_configs,
    wait_until,
)
from tests.servers import eventually, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SITE = "ops"
POLICY = """\
version: 1
site: {name: ops, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}
emergency: ["911", "933"]
rates: {default: "0.05", prefixes: {"1": "0.01", "44": "0.02", "53": "1.10"}}
profiles:
  office:
    destinations: {allow_countries: [US, GB]}
    limits: {calls_per_minute: 500, concurrent_calls: 50, max_call_duration: 1h}
  trial:
    destinations: {allow_countries: [US, GB]}
    limits: {calls_per_minute: {value: 1, mode: report}, max_call_duration: 1h}
extensions:
  - {match: "1001-1019", profile: office}
  - {match: "1020", profile: trial}
lockdown:
  after_denied: {calls: 5, within: 10m}
  locks: international
"""
UK = "011442079460{n:03d}"  # dialled the US way; +44 20 7946 0xxx (Ofcom's range kept for drama)


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str
    root: Path


def cli(rig: Rig, *args: str) -> str:
    """Run a `callgate` admin command against the rig's Redis, as an admin would."""
    done = subprocess.run(
        [sys.executable, "-m", "callgate.cli", *args, "--redis", rig.redis_url, "--site", SITE],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Redis, Asterisk with the shipped configs, and `callgate serve` following the policy in Redis."""
    root = Path(tmp_path_factory.mktemp("ops"))
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
    ):
        rig = Rig(ast, Callgate({}, root / "callgate.log"), redis_url, root)
        cli(rig, "policy", "push", str(root / "policy.yaml"))
        rig.gate.env = callgate_env(
            ast,
            redis_url,
            root / "unused.yaml",
            CALLGATE_POLICY_SOURCE="redis",
            CALLGATE_POLICY_SITE=SITE,
            CALLGATE_POLICY_FILE="",
        )
        rig.gate.start()
        try:
            if not wait_until(lambda: app_registered(ast), 20):
                pytest.fail(f"callgate did not register its Stasis app\n{rig.gate.tail()}")
            yield rig
        finally:
            rig.gate.stop()


@pytest.fixture
async def redis(rig: Rig) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def audit_of(redis: aioredis.Redis, dialled: str, seconds: float = 10) -> dict[str, str]:
    """The audit entry of the latest decision on `dialled` (waits for the stream writer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        entries: Any = await redis.xrevrange(f"cg:{{{SITE}}}:audit", count=200)
        for _id, fields in entries:
            if fields.get("dialled") == dialled:
                return {str(k): str(v) for k, v in fields.items()}
        await asyncio.sleep(0.1)
    raise AssertionError(f"no audit entry for {dialled}")


async def refused(watch: Watch, dialled: str) -> bool:
    hangup = await watch.wait(caller_leg_hangup(dialled))
    assert hangup is not None
    assert await watch.wait(cdr_of(dialled), 15)  # the call's record: all of it is over
    return hangup.get("Cause") == "21" and not watch.find(
        lambda m: m.event == "UserEvent" and m.get("UserEvent") == "PstnReached"
        and m.get("Number", "").endswith(dialled[-10:])
    )  # fmt: skip


async def in_force(rig: Rig, version: int) -> None:
    """Wait until the gate runs policy ``version`` (its /health says so)."""
    await eventually(
        lambda: policy_version(rig, version), lambda: f"version {version}\n{rig.gate.tail()}"
    )


async def policy_version(rig: Rig, version: int) -> bool:
    return bool((await rig.gate.health()).get("policy_version") == version)


async def test_pushed_policy_decides_the_next_call(
    rig: Rig, watch: Watch, redis: aioredis.Redis
) -> None:
    """A call in progress under v1 goes on to its end; once the gate runs v2 after `policy push`,
    the next call is decided by v2, and the audit names the version that decided each call."""
    first = UK.format(n=1)
    await watch.originate("1001", first, hold=6)
    assert await watch.wait(reached(first[3:])), rig.gate.tail()
    assert (await audit_of(redis, first))["policy_version"] == "1"
    stricter = rig.root / "v2.yaml"
    stricter.write_text(POLICY.replace("allow_countries: [US, GB]}\n    limits: {calls_per_minute: 500",
                                       "allow_countries: [US]}\n    limits: {calls_per_minute: 500"))  # fmt: skip
    assert "version 2 active" in cli(rig, "policy", "push", str(stricter))
    await in_force(rig, 2)
    second = UK.format(n=2)
    await watch.originate("1001", second)
    assert await refused(watch, second), rig.gate.tail()
    entry = await audit_of(redis, second)
    assert (entry["reason"], entry["policy_version"]) == ("country_not_allowed", "2")
    cdr = await watch.wait(cdr_of(first), 20)  # the v1 call was not dropped: it ran its 6 s
    assert cdr is not None
    assert cdr.get("Disposition") == "ANSWERED"
    assert int(cdr.get("BillableSeconds")) >= 5
    cli(rig, "policy", "rollback", "1")
    await in_force(rig, 1)  # for the tests after this one


async def test_lockdown_after_five_denials_then_unlock(
    rig: Rig, watch: Watch, redis: aioredis.Redis
) -> None:
    """Five refused attempts lock the extension; its next call abroad is refused with
    extension_locked (the reason is in the CDR too); `callgate unlock` restores it."""
    for n in range(5):
        cuba = f"01153{n}2345678"
        await watch.originate("1002", cuba)
        assert await refused(watch, cuba), rig.gate.tail()
    assert "1002\tinternational" in cli(rig, "locks")
    london = UK.format(n=3)
    await watch.originate("1002", london)
    assert await refused(watch, london)
    assert (await audit_of(redis, london))["reason"] == "extension_locked"
    marked = await watch.wait(
        lambda m: cdr_of(london)(m) and m.get("UserField") == "callgate:extension_locked", 15
    )
    assert marked is not None, [m.headers for m in watch.find(cdr_of(london))]
    cli(rig, "unlock", "1002")
    again = UK.format(n=4)
    await watch.originate("1002", again)
    assert await watch.wait(reached(again[3:])), rig.gate.tail()


async def test_panic_hangs_up_a_live_international_call(rig: Rig, watch: Watch) -> None:
    """`callgate panic` hangs up an international call in progress (not at its end), refuses new ones,
    lets domestic calls through; `callgate calm` ends it."""
    abroad = UK.format(n=5)
    await watch.originate("1003", abroad, hold=60)
    assert await watch.wait(reached(abroad[3:])), rig.gate.tail()
    cli(rig, "panic")
    try:  # hung up, long before the far end's 60 s
        hangup = await watch.wait(caller_leg_hangup(abroad), 30)
        assert hangup is not None, rig.gate.tail()
        refused_abroad = UK.format(n=6)
        await watch.originate("1004", refused_abroad)
        assert await refused(watch, refused_abroad)
        await watch.originate("1004", "2125550177")
        assert await watch.wait(reached("+12125550177"))
    finally:
        cli(rig, "calm")
    after = UK.format(n=7)
    await watch.originate("1004", after)
    assert await watch.wait(reached(after[3:])), rig.gate.tail()


async def test_report_only_rule_never_denies_but_is_audited(
    rig: Rig, watch: Watch, redis: aioredis.Redis
) -> None:
    """calls_per_minute: {value: 1, mode: report}: the second call in a minute still goes through,
    and its audit entry says the rule would have denied it."""
    numbers = ["2125550181", "2125550182"]
    for number in numbers:
        await watch.originate("1020", number)
        assert await watch.wait(reached("+1" + number)), rig.gate.tail()
    first, second = [await audit_of(redis, n) for n in numbers]
    assert first["verdict"] == second["verdict"] == "ALLOW"
    assert first["reported"] == ""
    assert second["reported"] == "limits.calls_per_minute:velocity_minute"


async def test_restart_keeps_following_redis(rig: Rig, watch: Watch) -> None:
    """A restarted gate starts from the active version in Redis, not from any file."""
    rig.gate.stop()
    with contextlib.suppress(FileNotFoundError):
        (rig.root / "unused.yaml").unlink()
    rig.gate.start()
    assert wait_until(lambda: app_registered(rig.ast), 20), rig.gate.tail()
    await watch.originate("1005", "2125550191")
    assert await watch.wait(reached("+12125550191")), rig.gate.tail()


async def test_health_and_metrics_of_the_running_gate(rig: Rig, watch: Watch) -> None:
    """/health is 200 with every link up; /metrics counts the decisions the gate made."""
    base = f"http://127.0.0.1:{rig.gate.env['CALLGATE_METRICS_PORT']}"
    await watch.originate("1006", "2125550195")
    assert await watch.wait(reached("+12125550195")), rig.gate.tail()
    async with aiohttp.ClientSession() as http:
        for _ in range(50):  # the AMI link may still be logging in after a restart
            async with http.get(f"{base}/health") as reply:
                status, body = reply.status, await reply.json()
            if body["links"]["ami"] == "up":
                break
            await asyncio.sleep(0.2)
        async with http.get(f"{base}/metrics") as reply:
            text = await reply.text()
    assert status == 200
    assert body["links"] == {"ari": "up", "ami": "up", "redis": "up"}
    assert body["policy_version"] >= 1
    assert 'callgate_decisions_total{reason="allowed",verdict="ALLOW"}' in text


def live_calls(rig: Rig, number: str) -> list[dict[str, Any]]:
    """The live calls `callgate status --json` lists to ``number`` (E.164)."""
    data = json.loads(cli(rig, "status", "--json", "--health", ""))
    return [c for c in data["live_calls"]["calls"] if c["number"] == number]


async def test_status_lists_the_live_calls_of_the_gate(rig: Rig, watch: Watch) -> None:
    """A call up now is in `callgate status` as the gate's reservation recorded it (extension, number,
    channel, the gate's host); once it has ended and settled it is gone."""
    number = "+12125550171"
    await watch.originate("1007", number[2:], hold=4)
    assert await watch.wait(reached(number)), rig.gate.tail()
    (call,) = live_calls(rig, number)
    assert (call["extension"], call["international"], call["instance"]) == (
        "1007",
        False,
        socket.gethostname(),
    )
    assert call["channel"]
    assert call["allowed_seconds"] == 3600  # office: max_call_duration 1h
    text = cli(rig, "status", "--health", "")
    assert f"  1007 -> {number} (domestic) since " in text
    assert f", channel {call['channel']} on {socket.gethostname()}" in text
    assert wait_until(lambda: not live_calls(rig, number), 30), rig.gate.tail()
