"""Many tenants behind one gate, without Asterisk: reading ``site=``, routing each call to its
tenant's gate, refusing a call no tenant decides, each tenant's emergency globals, the reservation id a
tenant's channel carries and the settlement that finds its tenant again, and the settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import pytest

from callgate.asterisk.ari import AriClient
from callgate.asterisk.events import Events, Unrouted
from callgate.asterisk.gate import (
    Gate,
    GateSettings,
    carried,
    site_suffix,
    split_carried,
    stricter,
)
from callgate.asterisk.stasis import IN_FLIGHT, TENANT_IN_FLIGHT, Router, read_start
from callgate.core.decision import RESERVATION_VARIABLE
from callgate.core.memo import Memo
from callgate.core.policy import FailMode
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.errors import PolicyError, SettingsError, StoreUnavailable
from callgate.ops.livepolicy import RedisPolicy
from callgate.ops.policystore import PolicyStore, StoredPolicy
from callgate.settings import load_settings
from callgate.store.memory import MemoryStore
from callgate.tenants import vet
from tests.fakes import FakeAudit, FakeChannels

CHANNEL: dict[str, Any] = {"id": "1732000000.42", "dialplan": {"exten": "2125550123"}}


def policy_of(site: str, countries: str, emergency: str = '["911"]', region: str = "US") -> str:
    return f"""\
version: 1
site: {{name: "{site}", region: {region}, timezone: America/New_York, currency: USD}}
emergency: {emergency}
rates: {{default: "0.05", prefixes: {{"1": "0.01", "44": "0.10"}}}}
profiles:
  office: {{destinations: {{allow_countries: [{countries}]}}, limits: {{concurrent_calls: 5}}}}
extensions: [{{match: "1001", profile: office}}]
"""


@pytest.mark.parametrize(
    ("args", "site"),
    [
        (["2125550123", "ext=1001", "site="], ""),
        (["2125550123", "ext=1001"], ""),
        (["2125550123", "site=acme"], "acme"),
        (["2125550123", "site=acme/east-1"], "acme/east-1"),
        (["2125550123", "ext=1001", "site=a.b_c"], "a.b_c"),
    ],
)
def test_the_site_is_read_from_the_stasis_arguments(args: list[str], site: str) -> None:
    """``site=`` is read by name; empty or absent: no site said."""
    start = read_start(CHANNEL, args)
    assert start is not None
    assert (start.site, start.attempt.dialled) == (site, "2125550123")


@pytest.mark.parametrize(
    "args",
    [
        ["2125550123", "site=a", "site=b"],  # twice
        ["2125550123", "site=a/b/c"],  # two slashes
        ["2125550123", "site=/a"],
        ["2125550123", "site=a b"],
        ["2125550123", "site=a;b"],
        ["2125550123", "site=" + "a" * 65],
        ["2125550123", "site=-a"],  # a name starts with a letter or digit
    ],
)
def test_a_forged_site_names_none(args: list[str]) -> None:
    """A site outside its alphabet, or given twice, forges the whole list: unreadable, no site."""
    start = read_start(CHANNEL, args)
    assert start is not None
    assert start.site == ""
    assert "," in start.attempt.dialled


def test_a_dialled_string_cannot_add_a_site() -> None:
    """Asterisk split ``${EXTEN}`` = ``2125550123,site=b`` into arguments: the third wall."""
    channel = {"id": "1.1", "dialplan": {"exten": "2125550123,site=b"}}
    start = read_start(channel, ["2125550123", "site=b", "ext=", "site="])
    assert start is not None
    assert start.site == ""


@dataclass
class Ari(FakeChannels):
    app: str = "callgate"
    globals: dict[str, str] = field(default_factory=dict)

    async def set_global(self, variable: str, value: str) -> None:
        self.globals[variable] = value

    async def channels(self) -> list[dict[str, Any]]:
        return []


def gate_of(site: str, countries: str, ari: Ari, store: MemoryStore, **kw: Any) -> Gate:
    memo = Memo(load_policy(policy_of(site, countries, **kw), site))
    return Gate(lambda: memo, store, ari, FakeAudit(), tenant=site)


async def settled(router: Router) -> None:
    while router.tasks:
        await asyncio.wait(set(router.tasks), timeout=2)


@pytest.fixture
def tenants() -> tuple[Router, dict[str, Gate], Ari, Events]:
    ari, store = Ari(), MemoryStore()
    gates = {
        "acme/east": gate_of("acme/east", "US, GB", ari, store, emergency='["911", "999"]'),
        "globex": gate_of("globex", "US", ari, store),
    }
    unrouted = Events()
    router = Router.tenants(gates, cast(AriClient, ari), GateSettings(), unrouted)
    return router, gates, ari, unrouted


async def call(router: Router, channel: str, *args: str) -> None:
    router.start(read_start({"id": channel}, ["011442079460000", "ext=1001", *args]))
    await settled(router)


async def test_each_call_goes_to_the_gate_of_its_site(
    tenants: tuple[Router, dict[str, Gate], Ari, Events],
) -> None:
    """London: acme/east's policy allows GB, globex's does not; each call is decided by its own."""
    router, gates, ari, _ = tenants
    await call(router, "c1", "site=acme/east")
    await call(router, "c2", "site=globex")
    assert ari.variables("c1")["CALLGATE_VERDICT"] == "ALLOW"
    assert ari.variables("c2")["CALLGATE_REASON"] == "country_not_allowed"
    east, globex = (cast(FakeAudit, gates[s].events) for s in ("acme/east", "globex"))
    assert [channel for _, channel in east.decisions] == ["c1"]
    assert [channel for _, channel in globex.decisions] == ["c2"]


@pytest.mark.parametrize("site", [None, "site=", "site=initech", "site=acme", "site=a b"])
async def test_a_call_of_no_tenant_is_refused_as_unknown_site(
    tenants: tuple[Router, dict[str, Gate], Ari, Events], site: str | None
) -> None:
    """No site, a site that is no tenant, a provider (no tenant itself) or a forged one: refused
    with unknown_site, hung up with the deny cause, told as Unrouted; no tenant decided it."""
    router, gates, ari, unrouted = tenants
    seen: list[object] = []
    unrouted.subscribe(seen.append)
    await call(router, "c9", *([site] if site else []))
    variables = ari.variables("c9")
    assert (variables["CALLGATE_VERDICT"], variables["CALLGATE_REASON"]) == ("DENY", "unknown_site")
    assert variables["CDR(userfield)"] == "callgate:unknown_site"
    assert RESERVATION_VARIABLE not in variables
    assert ari.actions("c9") == [("hangup", "c9", "21")]
    assert [type(e) for e in seen] == [Unrouted]
    assert all(not cast(FakeAudit, g.events).decisions for g in gates.values())


async def test_a_tenant_served_later_is_routed_from_then_on(
    tenants: tuple[Router, dict[str, Gate], Ari, Events],
) -> None:
    """The router reads the live map: a tenant whose policy appears later is served from then on."""
    router, gates, ari, _ = tenants
    await call(router, "c1", "site=initech")
    assert ari.variables("c1")["CALLGATE_REASON"] == "unknown_site"
    gates["initech"] = gate_of("initech", "GB", ari, MemoryStore())
    await call(router, "c2", "site=initech")
    assert ari.variables("c2")["CALLGATE_VERDICT"] == "ALLOW"


async def test_one_site_refuses_a_call_naming_another() -> None:
    """A single-site callgate takes ``site=`` empty or its own name; another site is refused."""
    ari = Ari()
    router = Router(gate_of("acme", "US, GB", ari, MemoryStore()), cast(AriClient, ari))
    for channel, site in (("c1", "site="), ("c2", "site=acme"), ("c3", "site=globex")):
        await call(router, channel, site)
    assert [ari.variables(c)["CALLGATE_REASON"] for c in ("c1", "c2", "c3")] == [
        "allowed",
        "allowed",
        "unknown_site",
    ]


async def test_each_tenant_publishes_its_own_emergency_numbers(
    tenants: tuple[Router, dict[str, Gate], Ari, Events],
) -> None:
    """Never a union: each tenant's list in its own globals (the plain pair, for a call of no site,
    holds only numbers libphonenumber knows as emergency ones: 999 is none in the US); a single site
    keeps the plain names."""
    router, _, ari, _ = tenants
    await router.publish_emergency()
    assert ari.globals == {
        "CALLGATE_EMERGENCY_NUMBERS_acme_east": "911-999",
        "CALLGATE_EMERGENCY_DIALS_acme_east": "911-999",
        "CALLGATE_EMERGENCY_NUMBERS_globex": "911",
        "CALLGATE_EMERGENCY_DIALS_globex": "911",
        "CALLGATE_EMERGENCY_NUMBERS": "911",
        "CALLGATE_EMERGENCY_DIALS": "911",
    }
    single = Ari()
    await Router(gate_of("acme", "US", single, MemoryStore()), cast(AriClient, single)).reconcile()
    assert single.globals == {
        "CALLGATE_EMERGENCY_NUMBERS": "911",
        "CALLGATE_EMERGENCY_DIALS": "911",
    }


def uk_and_us(ari: Ari) -> dict[str, Gate]:
    """A UK tenant whose policy (unvetted) also calls a 900 number an emergency one, and a US one."""
    return {
        "uk": gate_of("uk", "GB", ari, MemoryStore(), emergency='["999", "19005550199"]',
                      region="GB"),
        "us": gate_of("us", "US", ari, MemoryStore()),
    }  # fmt: skip


async def test_a_call_of_no_site_still_reaches_each_tenants_real_emergency_numbers() -> None:
    """A tenant context that forgot CALLGATE_SITE reads the plain pair: a UK tenant's 999 is in it,
    the 900 number its policy also calls an emergency one is not (it would go around every gate)."""
    ari = Ari()
    router = Router.tenants(uk_and_us(ari), cast(AriClient, ari), GateSettings(), Events())
    await router.publish_emergency()
    assert ari.globals["CALLGATE_EMERGENCY_NUMBERS"] == "911-999"
    assert ari.globals["CALLGATE_EMERGENCY_DIALS"] == "911-999"


def test_a_tenants_policy_keeps_only_real_emergency_numbers_of_its_region() -> None:
    """The attack review: a tenant's emergency list goes around its provider's gate and caps, so a
    tenant calling a premium number (or another country's short code) an emergency number would
    open it. Each tenant's policy is vetted as it loads: only what libphonenumber knows as an
    emergency number of its own region is kept; the rest is decided like any number."""
    uk = load_policy(policy_of("uk", "GB", '["999", "112", "19005550199", "911"]', "GB"), "uk")
    assert vet("uk", uk).emergency == ("999", "112")
    us = load_policy(policy_of("us", "US", '["911", "999"]'), "us")
    assert vet("us", us).emergency == ("911",)
    same = load_policy(policy_of("us", "US"), "us")
    assert vet("us", same) is same


def test_a_tenants_policy_naming_another_site_is_refused() -> None:
    """Vetted at every load, also a reload: a version stored for acme/a naming globex never runs."""
    other = load_policy(policy_of("globex", "US"), "globex")
    with pytest.raises(PolicyError, match="policy of site 'globex'"):
        vet("acme/a", other)


class _Stored:
    """What RedisPolicy.check reads of a PolicyStore: one stored version, pushed for acme/a."""

    site = "acme/a"

    def __init__(self, text: str) -> None:
        self.stored = StoredPolicy(2, "", "a", "t", "acme-a.yaml", text)

    async def active_version(self) -> int:
        return 2

    async def get(self, version: int | None = None) -> StoredPolicy:
        return self.stored


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (policy_of("globex", "US"), False),  # another site: refused, the running one kept
        (policy_of("acme/a", "GB", '["911", "19005550199"]'), True),  # taken, vetted
    ],
)
async def test_a_tenants_reload_is_vetted(text: str, kept: bool) -> None:
    running = load_policy(policy_of("acme/a", "US"), "acme/a")
    holder = RedisPolicy(cast(PolicyStore, _Stored(text)), running, partial(vet, "acme/a"))
    refused: list[str] = []
    holder.refusals.append(lambda what, why: refused.append(why))
    await holder.check()
    if kept:
        assert (holder().revision, holder().emergency) == (2, ("911",))
        assert holder().profiles["office"].destinations.allow_countries == frozenset({"GB"})
    else:
        assert holder() is running
        assert "policy of site 'globex'" in refused[0]


@pytest.mark.parametrize("site", ["site=initech", "site=uk/later", None])
async def test_an_unserved_sites_emergency_call_is_placed(site: str | None) -> None:
    """A tenant listed but with no policy yet (or a context naming a site served nowhere) reads no
    globals of its own, so its 999 reaches callgate: a number of the safety net is placed as an
    emergency call; any other number is refused unknown_site."""
    ari = Ari()
    router = Router.tenants(uk_and_us(ari), cast(AriClient, ari), GateSettings(), Events())
    extra = [site] if site else []
    router.start(read_start({"id": "c1"}, ["999", "ext=1001", *extra]))
    router.start(read_start({"id": "c2"}, ["19005550199", "ext=1001", *extra]))
    await settled(router)
    assert ari.variables("c1")["CALLGATE_REASON"] == "emergency"
    assert ari.variables("c1")["CALLGATE_NUMBER"] == "999"
    assert [a[0] for a in ari.actions("c1")] == ["continue"]
    assert ari.variables("c2")["CALLGATE_REASON"] == "unknown_site"


class Down(MemoryStore):
    """A store that is down: every admission fails."""

    async def admit(self, admission: Any) -> Any:
        raise StoreUnavailable("down")


def failing(site: str, mode: str, above: str | None, region: str = "US") -> Gate:
    """A gate of tenant ``site`` (on_store_error ``mode``) on a store that is down, under provider
    ``hosted`` whose policy's on_store_error is ``above`` (None: no provider policy)."""

    def with_mode(text: str, fail: str) -> str:
        return text.replace("currency: USD}", f"currency: USD, on_store_error: {fail}}}")

    memo = Memo(load_policy(with_mode(policy_of(site, region, region=region), mode), site))
    provider = (
        Memo(load_policy(with_mode(policy_of("hosted", "US"), above), "hosted")) if above else None
    )
    return Gate(lambda: memo, Down(), Ari(), FakeAudit(), tenant=site,
                above=(lambda: provider) if provider is not None else None)  # fmt: skip


async def test_a_tenant_cannot_loosen_its_providers_on_store_error() -> None:
    """A tenant pushing on_store_error: allow under a provider whose policy says deny: with the
    store down, the stricter (deny) applies to its counted calls."""
    gate = failing("hosted/lax", "allow", "deny")
    decision = await gate.decide(CallAttempt("c1", "1001", "2125550142", leg="ch1"))
    assert (decision.verdict.value, decision.reason.value) == ("DENY", "store_unavailable")
    alone = failing("hosted/lax", "allow", None)
    assert (await alone.decide(CallAttempt("c2", "1001", "2125550142", leg="ch2"))).allowed


@pytest.mark.parametrize(("one", "other", "strict"), [
    ("allow", "deny", "deny"), ("deny_international", "allow", "deny_international"),
    ("deny_international", "deny", "deny"), ("allow", "allow", "allow"),
])  # fmt: skip
def test_stricter(one: str, other: str, strict: str) -> None:
    assert stricter(FailMode(one), FailMode(other)) is FailMode(strict)
    assert stricter(FailMode(other), FailMode(one)) is FailMode(strict)


async def test_one_tenants_flood_does_not_hold_the_others_calls() -> None:
    """Each tenant waits for its own share of the in-flight slots first: acme's 80 calls stuck on
    a store that does not answer hold TENANT_IN_FLIGHT slots, not all of them, and globex's call is
    decided meanwhile (before the share, 64 of acme's held every slot)."""
    release = asyncio.Event()

    class Stuck(MemoryStore):
        async def admit(self, admission: Any) -> Any:
            await release.wait()
            return await super().admit(admission)

    ari = Ari()
    slow = GateSettings(deadline=60)
    gates = {
        "acme": Gate(lambda: Memo(load_policy(policy_of("acme", "US"), "acme")), Stuck(), ari,
                     FakeAudit(), settings=slow, tenant="acme"),
        "globex": gate_of("globex", "US", ari, MemoryStore()),
    }  # fmt: skip
    router = Router.tenants(gates, cast(AriClient, ari), slow, Events())
    for n in range(80):
        router.start(read_start({"id": f"a{n}"}, ["2125550123", "ext=1001", "site=acme"]))
    router.start(read_start({"id": "g1"}, ["2125550123", "ext=1001", "site=globex"]))
    for _ in range(50):
        await asyncio.sleep(0)
    assert ari.variables("g1")["CALLGATE_VERDICT"] == "ALLOW"
    assert not any(ari.variables(f"a{n}") for n in range(80))
    assert TENANT_IN_FLIGHT < IN_FLIGHT
    release.set()
    await settled(router)
    assert all(ari.variables(f"a{n}")["CALLGATE_VERDICT"] for n in range(80))


@pytest.mark.parametrize(
    ("site", "suffix"), [("", ""), ("globex", "_globex"), ("acme/east-1.b", "_acme_east_1_b")]
)
def test_site_suffix(site: str, suffix: str) -> None:
    """What the dialplan's REPLACE(CALLGATE_SITE,/.-,_) makes of a site name."""
    assert site_suffix(site) == suffix


async def test_a_tenants_channel_carries_its_site_and_settles_there(
    tenants: tuple[Router, dict[str, Gate], Ari, Events],
) -> None:
    """CALLGATE_CALL and CDR(callgate) are ``<site>~<reservation>``: split, it names the tenant and
    the reservation its gate settles."""
    router, gates, ari, _ = tenants
    await call(router, "c1", "site=acme/east")
    variables = ari.variables("c1")
    value = variables[RESERVATION_VARIABLE]
    assert variables["CDR(callgate)"] == value
    site, reservation = split_carried(value)
    assert (site, carried(site, reservation)) == ("acme/east", value)
    assert reservation in gates["acme/east"].live
    result = await gates["acme/east"].settle(reservation, 30)
    assert result.status == "settled"
    assert split_carried("L1.2:00ff") == ("", "L1.2:00ff")


BASE = {
    "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
    "CALLGATE_ARI_USER": "callgate",
    "CALLGATE_ARI_PASSWORD": "x",
    "CALLGATE_AMI_USER": "callgate",
    "CALLGATE_AMI_SECRET": "y",
    "CALLGATE_POLICY_SOURCE": "redis",
}


def test_tenants_settings() -> None:
    """A list of sites; the provider site is then optional; single-site mode is unchanged."""
    s = load_settings(None, {**BASE, "CALLGATE_POLICY_TENANTS": " acme/east, acme/west ,globex"})
    assert (s.tenants, s.policy_site) == (("acme/east", "acme/west", "globex"), "")
    s = load_settings(None, {**BASE, "CALLGATE_POLICY_SITE": "acme"})
    assert s.tenants == ()
    s = load_settings(None, {**BASE, "CALLGATE_POLICY_TENANTS": "acme/east:US, globex : GB, x"})
    assert s.tenants == ("acme/east", "globex", "x")
    assert [s.tenant_region(t) for t in s.tenants] == ["US", "GB", ""]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"CALLGATE_POLICY_TENANTS": "a, a"}, "a site is listed twice"),
        ({"CALLGATE_POLICY_TENANTS": "a/b/c"}, "'a/b/c' is no site name"),
        ({"CALLGATE_POLICY_TENANTS": "a.b, a_b"}, "would share Asterisk globals"),
        ({"CALLGATE_POLICY_TENANTS": "a:usa"}, "'usa' is no region"),
        (
            {"CALLGATE_POLICY_TENANTS": "a", "CALLGATE_POLICY_SOURCE": "file"},
            'needs [policy] source = "redis"',
        ),
        (
            {"CALLGATE_POLICY_TENANTS": "acme/a, acme", "CALLGATE_POLICY_SITE": "acme"},
            "cannot be one of the tenants",
        ),
        ({}, '[policy] site: required while [policy] source = "redis" and [policy] tenants'),
    ],
)
def test_tenants_settings_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {**BASE, "CALLGATE_POLICY_FILE": "/p.yaml", **env})
    assert problem in str(caught.value)


async def test_a_tenant_in_another_currency_than_its_provider_is_refused() -> None:
    """The attack review: a tenant whose pushed policy the provider's caps cannot count (EUR under a
    USD provider) and whose own on_store_error is allow got every call through, uncounted. Now
    every counted call is refused, whatever the tenant's on_store_error."""
    text = policy_of("hosted/evil", "US").replace(
        "currency: USD}", "currency: EUR, on_store_error: allow}"
    )
    provider = Memo(load_policy(policy_of("hosted", "US"), "hosted"))
    memo = Memo(load_policy(text, "hosted/evil"))
    gate = Gate(lambda: memo, MemoryStore(), Ari(), FakeAudit(), tenant="hosted/evil",
                above=lambda: provider)  # fmt: skip
    decision = await gate.decide(CallAttempt("c1", "1001", "2125550142", leg="ch1"))
    assert not decision.allowed


async def test_a_channel_control_that_never_answers_holds_no_slot() -> None:
    """The attack review (F3): FastAGI peers that take a decision and never answer its SET VARIABLE
    held the in-flight slots until their reply timeout, so every other call went past its deadline
    and got on_store_error (allow: uncounted). The slots are held while a call is decided, not while
    its answer is carried out: a real call is still decided by its counters."""
    never = asyncio.Event()

    class Stalled(Ari):
        async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
            await never.wait()
            return False

    ari, stalled = Ari(), Stalled()
    router = Router(gate_of("acme", "US", ari, MemoryStore()), cast(AriClient, ari))
    for n in range(IN_FLIGHT + 16):
        router.start(read_start({"id": f"s{n}"}, ["2125550123", "ext=1001"]), stalled)
    router.start(read_start({"id": "real"}, ["2125550123", "ext=1001"]))
    for _ in range(100):
        await asyncio.sleep(0)
        if ari.variables("real"):
            break
    # counted (the stalled calls that were admitted hold 1001's five concurrent calls), not late
    assert ari.variables("real")["CALLGATE_REASON"] == "concurrent_calls"
    never.set()
    await settled(router)


async def test_an_empty_number_is_no_emergency_number() -> None:
    """The attack review (F5): with no tenant listing a real emergency number the safety net is
    empty, and "" was found in "".split("-"): a call with an empty number from an unserved site
    was answered ALLOW/emergency. Refused unknown_site now."""
    ari = Ari()
    gates = {"us": gate_of("us", "US", ari, MemoryStore(), emergency="[]")}
    router = Router.tenants(gates, cast(AriClient, ari), GateSettings(), Events())
    router.start(read_start({"id": "c1"}, ["", "site=initech"]))
    await settled(router)
    assert ari.variables("c1")["CALLGATE_REASON"] == "unknown_site"


def test_a_pinned_tenant_cannot_choose_its_region() -> None:
    """The attack review (F4): a tenant of a UK box pushing region TR kept 155 (BT's international
    operator in the UK, an emergency number in Turkey) as an emergency number, dialled around the
    gate. With its region pinned ([policy] tenants "uk:GB"), a policy of another region is refused;
    in its own region only that country's numbers stay."""
    turkish = load_policy(policy_of("uk", "GB", '["155", "112"]', "TR"), "uk")
    assert vet("uk", turkish).emergency == ("155", "112")  # unpinned: its own region decides
    with pytest.raises(PolicyError, match="pins 'uk' to GB"):
        vet("uk", turkish, region="GB")
    british = load_policy(policy_of("uk", "GB", '["155", "112", "999"]', "GB"), "uk")
    assert vet("uk", british, region="GB").emergency == ("112", "999")


async def test_the_providers_deny_international_is_judged_in_its_country() -> None:
    """The attack review (F4): a tenant declaring region CU made Cuba domestic for the provider's
    deny_international when the store was down: the call was allowed, uncounted. The provider's
    mode is judged by the provider's country."""
    gate = failing("hosted/cu", "allow", "deny_international", region="CU")
    decision = await gate.decide(CallAttempt("c1", "1001", "72345678", leg="ch1"))
    assert decision.number.international is False  # domestic for the tenant's own reading
    assert (decision.verdict.value, decision.reason.value) == ("DENY", "store_unavailable")


class Slow(MemoryStore):
    """A store whose admissions wait for ``go``."""

    def __init__(self, go: asyncio.Event) -> None:
        super().__init__()
        self.go = go

    async def admit(self, admission: Any) -> Any:
        await self.go.wait()
        return await super().admit(admission)


async def test_a_channel_that_comes_back_is_decided_again_after_its_first_decision() -> None:
    """A FreePBX trunk failover sends the same channel into Stasis again, and its StasisStart could
    arrive before the answer to the first decision's continue: it was dropped as "busy" and the call
    waited in Stasis (seen once in CI). Now it is decided once the first decision is done; the same
    entry seen twice (reconcile and its own StasisStart, no StasisEnd between) is still decided once."""
    release = asyncio.Event()

    ari = Ari()
    memo = Memo(load_policy(policy_of("acme", "US"), "acme"))
    audit = FakeAudit()
    router = Router(Gate(lambda: memo, Slow(release), ari, audit, settings=GateSettings(deadline=60)),
                    cast(AriClient, ari))  # fmt: skip
    entry = {"type": "StasisStart", "channel": {"id": "c1"}, "args": ["2125550123", "ext=1001"]}
    router.dispatch(entry)
    await asyncio.sleep(0)
    router.dispatch(entry)  # the same entry again: dropped
    router.dispatch({"type": "StasisEnd", "channel": {"id": "c1"}})
    router.dispatch(entry)  # it came back: decided after the first
    assert router.busy == {"c1"}
    release.set()
    await settled(router)
    assert [channel for _, channel in audit.decisions] == ["c1", "c1"]
    assert router.busy == set()
    assert router.current == {}
    assert router.left == set()


async def test_a_second_fastagi_session_of_a_busy_channel_waits_for_the_first() -> None:
    """Through FastAGI a channel runs AGI() again only after its first session ended: a session of a
    busy channel is always a new entry, decided once the first decision is done (never dropped:
    a dropped session is a refused call)."""
    ari, session = Ari(), Ari()
    release = asyncio.Event()

    memo = Memo(load_policy(policy_of("acme", "US"), "acme"))
    audit = FakeAudit()
    router = Router(Gate(lambda: memo, Slow(release), ari, audit, settings=GateSettings(deadline=60)),
                    cast(AriClient, ari))  # fmt: skip
    first = router.start(read_start({"id": "c1"}, ["2125550123", "ext=1001"]), session)
    second = router.start(read_start({"id": "c1"}, ["2125550123", "ext=1001"]), session)
    assert first is not None
    assert second is not None
    release.set()
    await settled(router)
    assert len(audit.decisions) == 2
