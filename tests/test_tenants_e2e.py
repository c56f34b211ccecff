"""Many tenants behind one `callgate serve`, on a real Asterisk through the shipped include and a real
Redis: three tenants (``acme/a`` and ``acme/b`` of provider ``acme``, and ``globex``), each with its own
policy pushed to Redis and its own context that sets ``CALLGATE_SITE``; a fourth, ``acme/d``, is listed
but has no policy. Each tenant's policy, caps, lock, panic, emergency numbers and audit stream are its
own; a call whose context names no site, or a site that is not served, is refused before any trunk; and
the provider's cap stops all its tenants together.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from callgate.core.keys import AUDIT, reservation_key, settled_key, site_prefix, slots_key
from tests.asterisk_rig import asterisk, asterisk_prefix
from tests.e2e import (
    ROOT,
    SHIPPED,
    STAND_INS,
    Callgate,
    Serving,
    Watch,
    app_registered,
    callgate_env,
    reached,
    shipped_configs,
    trunk_numbers,
    wait_until,
)
from tests.servers import free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

A, B, C, NO_POLICY, PROVIDER = "acme/a", "acme/b", "globex", "acme/d", "acme"
TENANTS = f"{A}, {B}, {C}, {NO_POLICY}"


def context(name: str, site: str) -> str:
    """A tenant's phones: its context names its site, then runs the shipped include."""
    return f"""\
[{name}]
exten => _[0-9+*#].,1,Set(CALLGATE_SITE={site})
 same => n,Goto(callgate-outbound,${{EXTEN}},1)
"""


AGI_PORT = free_port()


def agi_context(name: str, site: str) -> str:
    """A tenant's phones through the FastAGI door (both doors served by one callgate): the shipped
    include's arguments, site= its site, and its fail-closed checks."""
    return f"""\
[{name}]
exten => _X.,1,Set(CALLGATE_VERDICT=)
 same => n,AGI(agi://127.0.0.1:{AGI_PORT}/callgate,${{EXTEN}},ext=${{CALLGATE_EXTENSION}},call=${{CHANNEL(linkedid)}},origin=,via=,by=,site={site})
 same => n,GotoIf($["${{AGISTATUS}}" != "SUCCESS" | "${{CALLGATE_VERDICT}}" != "ALLOW"]?refused)
 same => n,Dial(Local/${{CALLGATE_NUMBER}}@pstn,,L(${{CALLGATE_MAX_SECONDS}}000))
 same => n(refused),Hangup(21)
"""


EXTENSIONS = f"""\
{SHIPPED}
[phones]
include => callgate-outbound

{agi_context("agi-a", A)}
{agi_context("agi-b", B)}
{agi_context("agi-x", "initech")}

{context("tenant-a", A)}
{context("tenant-b", B)}
{context("tenant-c", C)}
{context("tenant-d", NO_POLICY)}
{context("tenant-x", "initech")}
{STAND_INS}"""

POLICY = """\
version: 1
site: {{name: "{site}", region: {region}, timezone: {tz}, currency: USD, on_store_error: deny}}
emergency: {emergency}
rates: {{default: "0.05", increment: 1, prefixes: {{"1": "0.01", "44": "0.02", "33": "0.02"}}}}
profiles:
  office:
    destinations: {{allow_countries: [{countries}]}}
    limits: {{concurrent_calls: 50, max_call_duration: 1h}}
  single:
    destinations: {{allow_countries: [US]}}
    limits: {{concurrent_calls: 1, max_call_duration: 1h}}
extensions:
  - {{match: "1001-1020", profile: office}}
  - {{match: "2000", profile: single}}
{extra}"""

US = {"region": "US", "tz": "America/New_York"}
# acme/a (in the US) lists 999 and a premium number as emergency numbers: neither is one of its
# region, so both are decided like any other number (a tenant's list goes around its provider's caps)
POLICIES = {
    A: POLICY.format(
        site=A, emergency='["911", "999", "19005550100"]', countries="US, GB", extra="", **US
    ),
    B: POLICY.format(site=B, emergency='["911"]', countries="US, FR", extra="", **US),
    C: POLICY.format(
        site=C,
        emergency='["999", "112"]',
        countries="US, GB",
        extra="",
        region="GB",
        tz="Europe/London",
    ),
}
PROVIDER_POLICY = POLICY.format(
    site=PROVIDER, emergency='["911"]', countries="US", extra="site_limits: {concurrent_calls: 1}\n",
    **US,
)  # fmt: skip
LONDON, PARIS = "011442079460000", "01133142685300"


@dataclass
class Rig(Serving):
    root: Path

    def cli(self, *args: str, site: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "callgate.cli", *args, "--redis", self.redis_url, "--site", site],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def push(self, site: str, policy: str) -> None:
        path = self.root / f"{site.replace('/', '_')}.yaml"
        path.write_text(policy, encoding="utf-8")
        self.cli("policy", "push", str(path), site=site)

    def logged(self, text: str) -> bool:
        return text in self.gate.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("tenants"))
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=shipped_configs
        ) as ast,
    ):
        env = callgate_env(
            ast, redis_url, root / "unused.yaml",
            CALLGATE_POLICY_SOURCE="redis", CALLGATE_POLICY_FILE="",
            CALLGATE_POLICY_SITE=PROVIDER, CALLGATE_POLICY_TENANTS=TENANTS,
            CALLGATE_AGI_LISTEN=f"127.0.0.1:{AGI_PORT}",
        )  # fmt: skip
        rig = Rig(ast, Callgate(env, root / "callgate.log"), redis_url, root)
        for site, policy in POLICIES.items():
            rig.push(site, policy)
        rig.gate.start()
        try:
            ready = [f"emergency numbers published to Asterisk for {site}" for site in POLICIES]
            if not wait_until(
                lambda: app_registered(ast) and all(rig.logged(r) for r in ready), 30
            ):
                pytest.fail(f"callgate did not serve its tenants\n{rig.gate.tail()}")
            yield rig
        finally:
            rig.gate.stop()


async def dial(watch: Watch, tenant: str, ext: str, number: str, *, hold: int = 1) -> None:
    """A call from extension ``ext`` of a tenant's phones (its context) dialling ``number``."""
    await watch.place(
        f"Local/{number}@{tenant}/n",
        caller_id=f'"Ext {ext}" <{ext}>',
        variables=f"__HOLD={hold},CALLGATE_EXTENSION={ext}",
    )


async def audited(rig: Rig, site: str) -> list[dict[str, str]]:
    """The entries of a site's audit stream in Redis."""
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        entries = await client.xrange(site_prefix(site) + AUDIT)
    finally:
        await client.aclose()
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in entries or []]


@pytest.mark.parametrize("door", ["tenant", "agi"])  # the contexts through Stasis, through AGI()
async def test_each_tenants_policy_applies_only_to_its_calls(
    rig: Rig, watch: Watch, door: str
) -> None:
    """London: acme/a allows GB and its call reaches the trunk; acme/b does not (country_not_allowed).
    Each decision is in its own tenant's audit stream, and in no other; through either door."""
    before = len(rig.decisions())
    await dial(watch, f"{door}-a", "1001", LONDON)
    allowed = await rig.decision(LONDON, before)
    assert allowed["verdict"] == "ALLOW", allowed
    assert await watch.wait(reached("+442079460000"), 10)
    before = len(rig.decisions())
    await dial(watch, f"{door}-b", "1001", LONDON)
    refused = await rig.decision(LONDON, before)
    assert refused["reason"] == "country_not_allowed", refused
    await asyncio.sleep(1.5)  # the audit writer's batch
    a, b = await audited(rig, A), await audited(rig, B)
    assert allowed["reservation"] in [e["reservation"] for e in a]
    assert refused["channel"] in [e["channel"] for e in b if e["dialled"] == LONDON]
    assert refused["channel"] not in [e["channel"] for e in a]
    assert [e for e in await audited(rig, C) if e["dialled"] == LONDON] == []


async def test_a_cap_used_up_by_one_tenant_does_not_refuse_another(rig: Rig, watch: Watch) -> None:
    """2000 may have one call at a time: acme/a's 2000 holds one, its second is refused; 2000 of
    acme/b (the same extension name, another tenant) still gets its call."""
    first, second, other = "2125550171", "2125550172", "2125550173"
    before = len(rig.decisions())
    await dial(watch, "tenant-a", "2000", first, hold=6)
    assert (await rig.decision(first, before))["verdict"] == "ALLOW"
    assert await watch.wait(reached("+1" + first), 10)
    await dial(watch, "tenant-a", "2000", second)
    assert (await rig.decision(second, before))["reason"] == "concurrent_calls"
    await dial(watch, "tenant-b", "2000", other)
    assert (await rig.decision(other, before))["verdict"] == "ALLOW"
    assert await watch.wait(reached("+1" + other), 10)


async def test_one_tenants_panic_does_not_touch_another(rig: Rig, watch: Watch) -> None:
    """acme/b panics: its call to Paris is refused with site_panic; acme/a's London goes through."""
    rig.cli("panic", site=B)
    try:
        await asyncio.sleep(1.0)  # each tenant's panic watch reads its own flag
        before = len(rig.decisions())
        await dial(watch, "tenant-b", "1002", PARIS)
        assert (await rig.decision(PARIS, before))["reason"] == "site_panic"
        london = trunk_numbers(watch).count("442079460000")
        await dial(watch, "tenant-a", "1002", LONDON)
        assert (await rig.decision(LONDON, before))["verdict"] == "ALLOW"
        assert await watch.wait(lambda m: len(watch.find(reached("+442079460000"))) > london, 10)
    finally:
        rig.cli("calm", site=B)
    await watch.caught_up()
    assert "33142685300" not in trunk_numbers(watch)


async def test_a_lock_in_one_tenant_does_not_lock_the_same_extension_in_another(
    rig: Rig, watch: Watch
) -> None:
    """1003 locked (every call) in acme/a: refused there; 1003 of acme/b calls on."""
    rig.cli("lock", "1003", "--all", site=A)
    try:
        locked, free = "2125550181", "2125550182"
        before = len(rig.decisions())
        await dial(watch, "tenant-a", "1003", locked)
        assert (await rig.decision(locked, before))["reason"] == "extension_locked"
        await dial(watch, "tenant-b", "1003", free)
        assert (await rig.decision(free, before))["verdict"] == "ALLOW"
        assert await watch.wait(reached("+1" + free), 10)
    finally:
        rig.cli("unlock", "1003", site=A)
    await watch.caught_up()
    assert locked not in trunk_numbers(watch)


@pytest.mark.parametrize(
    ("tenant", "number"),
    [("phones", "2125550191"), ("tenant-x", "2125550192"), ("tenant-d", "2125550193")],
)
async def test_a_call_of_no_tenant_served_is_refused(
    rig: Rig, watch: Watch, tenant: str, number: str
) -> None:
    """A context that sets no site, one naming a site not served, and a tenant listed without a
    pushed policy: refused (unknown_site) before any trunk, and decided by no tenant."""
    before = len(rig.decisions())
    await dial(watch, tenant, "1001", number)
    hangup = await watch.wait(
        lambda m: m.event == "Hangup" and m.get("Channel").startswith(f"Local/{number}@{tenant}-"),
        10,
    )
    assert hangup is not None
    await asyncio.sleep(0.5)
    await watch.caught_up()
    assert number not in trunk_numbers(watch)
    assert [d for d in rig.decisions()[before:] if d["dialled"] == number] == []
    assert wait_until(lambda: rig.logged("refused (unknown_site)"), 5)


async def test_the_refused_calls_are_counted(rig: Rig) -> None:
    """The three refusals above, in /metrics as decisions denied with unknown_site."""
    url = f"http://127.0.0.1:{rig.gate.env['CALLGATE_METRICS_PORT']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        text = await reply.text()
    counted = [
        float(x.split()[-1])
        for x in text.splitlines()
        if x.startswith("callgate_decisions_total{")
        and 'reason="unknown_site"' in x
        and 'verdict="DENY"' in x
    ]
    assert counted == [3.0], text
    per_tenant = {
        line.partition("{")[2].partition("}")[0]
        for line in text.splitlines()
        if line.startswith("callgate_tenant_decisions_total{")
    }
    sites = {part.split("=")[1].strip('"') for lab in per_tenant for part in lab.split(",")
             if part.startswith("site=")}  # fmt: skip
    assert len(sites) >= 2, text  # the tenants that decided calls above, each on its own


async def test_each_tenant_has_its_own_emergency_numbers(rig: Rig, watch: Watch) -> None:
    """999 is an emergency number of globex (in GB) only: from acme/b (US) it is gated (and
    refused), from globex it goes straight to the trunk, undecided. Never the union of the tenants'
    lists."""
    before = len(rig.decisions())
    await dial(watch, "tenant-b", "1001", "999")
    assert (await rig.decision("999", before))["verdict"] == "DENY"
    await watch.caught_up()
    assert "999" not in trunk_numbers(watch)
    after_b = len(rig.decisions())
    await dial(watch, "tenant-c", "1001", "999")
    assert await watch.wait(reached("999"), 10)
    assert [d for d in rig.decisions()[after_b:] if d["dialled"] == "999"] == []


async def test_a_tenant_cannot_call_a_number_an_emergency_one(rig: Rig, watch: Watch) -> None:
    """The attack: acme/a's pushed policy lists 999 (no emergency number in the US) and a premium
    number as emergency numbers, to send them around the gate and its provider's caps. Both are
    decided like any other number (audited), and the log names them."""
    assert rig.logged("tenant 'acme/a': emergency numbers 999, 19005550100 are no emergency")
    before = len(rig.decisions())
    for number in ("999", "19005550100"):
        await dial(watch, "tenant-a", "1001", number)
        decided = await rig.decision(number, before)
        assert decided["reason"] != "emergency", decided


async def test_settlement_finds_the_tenant(rig: Rig, watch: Watch) -> None:
    """The channel carries ``acme/a~<reservation>`` into its CDR; the spend feed settles the
    reservation in acme/a's keys, and acme/b's hold nothing of it."""
    number = "2125550199"
    before = len(rig.decisions())
    await dial(watch, "tenant-a", "1004", number)
    decided = await rig.decision(number, before)
    carried = f"{A}~{decided['reservation']}"
    cdr = await watch.wait(lambda m: m.event == "Cdr" and m.get("CallgateCall") == carried, 15)
    assert cdr is not None
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        key = settled_key(decided["reservation"])
        deadline = time.monotonic() + 10
        while not await client.exists(site_prefix(A) + key):
            assert time.monotonic() < deadline, rig.gate.tail()
            await asyncio.sleep(0.2)
        assert not await client.exists(site_prefix(B) + key)
    finally:
        await client.aclose()


async def test_a_tenants_quick_redial_finds_its_slot_free(rig: Rig, watch: Watch) -> None:
    """acme/b's 2000 (one call at a time) hangs up and dials again at once: the spend feed hands the
    gated channel's Hangup to acme/b's gate, which frees the slot before the CDR settles the money."""
    first, again = "2125550211", "2125550212"
    before = len(rig.decisions())
    await dial(watch, "tenant-b", "2000", first)
    decided = await rig.decision(first, before)
    assert decided["verdict"] == "ALLOW"
    slots = site_prefix(B) + slots_key("ext:2000")
    held = site_prefix(B) + reservation_key(decided["reservation"])
    client = aioredis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 15
        while True:  # the call ends after its second; the release follows its Hangup at once
            async with client.pipeline(transaction=True) as pipe:
                pipe.zcard(slots)
                pipe.exists(held)
                count, exists = await pipe.execute()
            if count == 0:
                break
            assert time.monotonic() < deadline, rig.gate.tail()
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    assert exists == 1, rig.gate.tail()  # freed by the Hangup, not by the settlement
    await dial(watch, "tenant-b", "2000", again)
    assert (await rig.decision(again, before))["verdict"] == "ALLOW", rig.gate.tail()


async def test_the_fastagi_door_refuses_a_site_not_served(rig: Rig, watch: Watch) -> None:
    """Through AGI(), a call whose site= is no tenant served here is refused unknown_site."""
    said = "site 'initech' is no tenant served here"
    before = rig.gate.log.read_text(encoding="utf-8").count(said)
    await dial(watch, "agi-x", "1001", "2125550174")
    assert wait_until(lambda: rig.gate.log.read_text(encoding="utf-8").count(said) > before, 10)
    await asyncio.sleep(0.5)
    assert "12125550174" not in trunk_numbers(watch)  # the carrier's numbers: the digits


async def test_a_provider_cap_stops_all_its_tenants_together(rig: Rig, watch: Watch) -> None:
    """acme's policy (pushed now) allows one call at a time over all its tenants: acme/a's call holds
    it, so acme/b's is refused (provider_limit); globex, no tenant of acme, calls on."""

    async def idle() -> bool:
        return (await rig.gate.health()).get("live_calls") == 0

    deadline = time.monotonic() + 20
    while not await idle():  # the calls of the tests before have ended and settled
        assert time.monotonic() < deadline, await rig.gate.health()
        await asyncio.sleep(0.2)
    rig.push(PROVIDER, PROVIDER_POLICY)
    assert wait_until(lambda: rig.logged(f"provider {PROVIDER!r}: policy"), 10), rig.gate.tail()
    held, refused, other = "2125550201", "2125550202", "0012125550203"  # globex dials from GB
    before = len(rig.decisions())
    await dial(watch, "tenant-a", "1005", held, hold=6)
    assert (await rig.decision(held, before))["verdict"] == "ALLOW"
    await dial(watch, "tenant-b", "1005", refused)
    decided = await rig.decision(refused, before)
    assert decided["reason"] == "provider_limit", decided
    await dial(watch, "tenant-c", "1005", other)
    assert (await rig.decision(other, before))["verdict"] == "ALLOW"
    await watch.caught_up()
    assert refused not in trunk_numbers(watch)


async def test_a_tenant_without_a_policy_still_reaches_999(rig: Rig, watch: Watch) -> None:
    """acme/d is listed but has no policy: its context reads no emergency globals of its own, so
    its 999 reaches callgate, which places it (999 is globex's emergency number, in the safety
    net); any other number of acme/d is refused unknown_site."""
    before = len(rig.decisions())
    await dial(watch, "tenant-d", "1001", "999")
    assert await watch.wait(reached("999"), 10), rig.gate.tail()
    assert rig.logged("emergency number 999 of site 'acme/d' (not served here) placed")
    assert [d for d in rig.decisions()[before:] if d["dialled"] == "999"] == []
