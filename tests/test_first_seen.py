"""Issue 10: a leg that no phone dialled (a forward, a transfer, DISA...) never reaches a country the
site has never called. The site learns a country when an answered call to it settles; its own country
and ``site.known_countries`` are known from the start; an origin's ``new_countries: allow`` lifts the
rule. The store judges it in the same atomic admission, so each case runs on the in-process store and
on the Lua scripts of a real redis-server, and the two must agree."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callgate.cli import main
from callgate.core import keys
from callgate.core.admission import (
    Admission,
    CountryCheck,
    Outcome,
    Refusal,
    barred,
    unknown_country,
)
from callgate.core.decision import Decision
from callgate.core.engine import conclude, on_store_failure, peeked
from callgate.core.memo import Memo
from callgate.core.origins import NARROWED, Origin
from callgate.core.plan import RESERVATION_HOLD, prepare
from callgate.core.policy import FailMode, LockScope, NewCountries, Policy, safe_origin_block
from callgate.core.policyfile import load_policy
from callgate.core.policysummary import describe
from callgate.core.reasons import Reason, Verdict
from callgate.core.rules import ASK, DENY, PASS, REPORT, RULES, SKIP, CallAttempt
from callgate.errors import PolicyError
from callgate.offline.cdr import in_start_order, read_cdr
from callgate.offline.replay import Filter, replay
from callgate.store.memory import MemoryStore
from callgate.store.protocol import Store
from callgate.store.redis import RedisStore
from tests.test_cdr import NY, cdr_line

TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
SITE = "fs"
TEXT = """\
version: 1
site: {name: fs, region: US, timezone: America/New_York, currency: USD, known_countries: [CA]}
emergency: ["911"]
rates: {default: "0.05", prefixes: {"1": "0.01", "44": "0.02", "49": "0.03"}}
profiles:
  wide:                                   # may call almost anywhere: the origins narrow it
    destinations: {deny_countries: [KP]}
extensions:
  - {match: "1001", profile: wide}
origins:
  forward: {allow_countries: [US, CA, DE, GB, FR]}   # new_countries: deny, the default
  transfer: {new_countries: allow}
  disa: {}
  ivr: {new_countries: {value: deny, mode: report}}
  originate: {allow_prefixes: ["+4930"]}
# voicemail is not written: the default, US only (and no new country)
"""
POLICY = load_policy(TEXT, "first-seen.yaml")

US, CANADA, JAMAICA = "2125550123", "16135550123", "18765550123"
BERLIN, MUNICH = "01149301234567", "011498912345678"  # DE
LONDON, PARIS = "011442079460000", "01133123456789"  # GB, FR
SATELLITE = "0118816123456789"  # +881: no country


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each test runs against both stores (only the in-process one in ``make fast``)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    s = RedisStore.from_url(request.getfixturevalue("redis_url"), timeout=5)
    await s.client.flushdb()
    yield s
    await s.aclose()


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Site:
    """One site's calls on one store: each call a new call id and channel."""

    def __init__(self, store: Store, policy: Policy = POLICY) -> None:
        self.store, self.memo, self.calls = store, Memo(policy), 0

    async def call(
        self, origin: Origin, dialled: str, at: datetime = TUE, extension: str = "1001"
    ) -> Decision:
        self.calls += 1
        attempt = CallAttempt(
            f"L{self.calls}", extension, dialled, leg=f"ch{self.calls}", origin=origin
        )
        p = prepare(self.memo, attempt, at)
        return conclude(p, await self.store.admit(p.admission) if p.admission else None)

    async def end(self, d: Decision, billsec: int | None, at: datetime) -> None:
        await self.store.settle(self.memo.policy.site.name, d.reservation, billsec, ms(at))

    async def countries(self, at: datetime = TUE) -> dict[str, int]:
        key = keys.site_prefix(self.memo.policy.site.name) + keys.COUNTRIES
        if isinstance(self.store, RedisStore):
            held = await self.store.client.hgetall(key)
            return {str(k): int(v) for k, v in held.items()}
        assert isinstance(self.store, MemoryStore)
        return self.store.countries(self.memo.policy.site.name, ms(at))

    async def holds(self, d: Decision) -> bool:
        key = keys.site_prefix(self.memo.policy.site.name) + keys.reservation_key(d.reservation)
        if isinstance(self.store, RedisStore):
            return bool(await self.store.client.exists(key))
        assert isinstance(self.store, MemoryStore)
        return bool(self.store.reservation(self.memo.policy.site.name, d.reservation, ms(TUE)))


def rule(d: Decision, name: str = "new_country") -> tuple[str, str]:
    (found,) = (r for r in d.rules if r.rule == name)
    return found.outcome, found.detail


# --- the rule on a site that has called nowhere yet ----------------------------------------------

FRESH = [
    # (origin, dialled, reason, the rule that gave it, the new_country rule's outcome)
    (Origin.FORWARD, BERLIN, Reason.FORWARD_NOT_ALLOWED, "new_country", DENY),
    (Origin.FORWARD, LONDON, Reason.FORWARD_NOT_ALLOWED, "new_country", DENY),
    (Origin.FORWARD, CANADA, Reason.ALLOWED, "", PASS),  # site.known_countries
    (Origin.FORWARD, US, Reason.ALLOWED, "", PASS),  # the site's own country
    (Origin.FORWARD, JAMAICA, Reason.FORWARD_NOT_ALLOWED, "origin", DENY),  # the block first
    (Origin.FORWARD, "911", Reason.EMERGENCY, "emergency", None),
    (Origin.DISA, CANADA, Reason.ALLOWED, "", PASS),  # an empty block: known countries only
    (Origin.DISA, BERLIN, Reason.DISA_NOT_ALLOWED, "new_country", DENY),
    (Origin.DISA, SATELLITE, Reason.DISA_NOT_ALLOWED, "new_country", DENY),  # no country to know
    (Origin.TRANSFER, BERLIN, Reason.ALLOWED, "", PASS),  # new_countries: allow
    (Origin.TRANSFER, SATELLITE, Reason.ALLOWED, "", PASS),
    (Origin.ORIGINATE, BERLIN, Reason.ALLOWED, "", PASS),  # its allow_prefixes +4930
    (Origin.ORIGINATE, MUNICH, Reason.ORIGINATE_NOT_ALLOWED, "new_country", DENY),
    (Origin.IVR, BERLIN, Reason.ALLOWED, "", REPORT),  # mode: report
    (Origin.VOICEMAIL, BERLIN, Reason.VOICEMAIL_NOT_ALLOWED, "origin", DENY),  # the default block
    (Origin.VOICEMAIL, CANADA, Reason.VOICEMAIL_NOT_ALLOWED, "origin", PASS),
    (Origin.DIALLED, BERLIN, Reason.ALLOWED, "", SKIP),  # a phone's own call: never this rule
    (Origin.DIALLED, SATELLITE, Reason.ALLOWED, "", SKIP),
]


@pytest.mark.parametrize(("origin", "dialled", "reason", "by", "outcome"), FRESH)
async def test_a_new_site_knows_its_own_country_and_known_countries_only(
    store: Store, *, origin: Origin, dialled: str, reason: Reason, by: str, outcome: str | None
) -> None:
    """On a store that has settled no call: a leg no phone dialled reaches the site's own country and
    known_countries, any country with new_countries: allow (or its block's allow_prefixes), never a
    first-seen one; a dialled call and an emergency number are never judged by the rule."""
    d = await Site(store).call(origin, dialled)
    assert (d.reason, d.rule) == (reason, by), [r for r in d.rules if r.outcome == DENY]
    names = [r.rule for r in d.rules]
    assert names == sorted(names, key=RULES.index)
    assert ASK not in {r.outcome for r in d.rules}
    if outcome is None:
        assert "new_country" not in names
        return
    assert names[names.index("origin") + 1] == "new_country"
    assert rule(d)[0] == outcome
    if outcome == REPORT:
        assert [(r.rule, r.reason) for r in d.reported] == [("new_country", Reason.IVR_NOT_ALLOWED)]
    assert d.allowed is (reason in (Reason.ALLOWED, Reason.EMERGENCY))


async def test_the_refusal_says_why_and_reserves_nothing(store: Store) -> None:
    """A forward to Germany: refused with forward_not_allowed by new_country, which names the country
    and the key; nothing is reserved, so nothing is counted or charged."""
    site = Site(store)
    d = await site.call(Origin.FORWARD, BERLIN)
    assert (d.verdict, d.reason, d.rule, d.allowed_seconds) == (
        Verdict.DENY,
        Reason.FORWARD_NOT_ALLOWED,
        "new_country",
        0,
    )
    assert rule(d) == (
        DENY,
        "forward: DE is a new country: no answered call from this site has reached it; "
        "origins.forward.new_countries: deny",
    )
    assert not await site.holds(d)
    assert await site.countries() == {}
    sat = await site.call(Origin.DISA, SATELLITE)
    assert "+8816123456789 is non-geographic" in rule(sat)[1]


# --- learning --------------------------------------------------------------------------------------


async def test_an_answered_call_teaches_the_site_its_country(store: Store) -> None:
    """A dialled call to Germany, answered and settled: Germany is known from then on, for every
    origin and every German number; London, never answered, is still new."""
    site = Site(store)
    first = await site.call(Origin.DIALLED, BERLIN)
    assert first.allowed
    assert await site.countries() == {}  # admitted is not answered: nothing learned yet
    ended = TUE + timedelta(minutes=2)
    await site.end(first, 90, ended)
    assert await site.countries() == {"DE": ms(ended) // 1000}
    later = ended + timedelta(minutes=1)
    forward = await site.call(Origin.FORWARD, MUNICH, later)
    assert (forward.reason, rule(forward)) == (
        Reason.ALLOWED,
        (PASS, "DE: called before (an answered call settled)"),
    )
    assert (await site.call(Origin.DISA, BERLIN, later)).allowed
    ivr = await site.call(Origin.IVR, BERLIN, later)
    assert ivr.reported == ()  # report mode: nothing to report any more
    assert (await site.call(Origin.FORWARD, LONDON, later)).reason is Reason.FORWARD_NOT_ALLOWED


@pytest.mark.parametrize(
    ("billsec", "why"),
    [
        (0, "not answered"),
        (None, "answered, but its seconds cannot be known: charged in full, learns nothing"),
        (-5, "a negative count is taken as unknown"),
    ],
)
async def test_a_call_that_was_not_answered_teaches_nothing(
    store: Store, billsec: int | None, why: str
) -> None:
    """Only a settled call with billable seconds teaches the site a country."""
    site = Site(store)
    first = await site.call(Origin.DIALLED, BERLIN)
    await site.end(first, billsec, TUE + timedelta(seconds=40))
    assert await site.countries() == {}, why
    forward = await site.call(Origin.FORWARD, BERLIN, TUE + timedelta(minutes=1))
    assert forward.reason is Reason.FORWARD_NOT_ALLOWED, why


async def test_an_unsettled_call_teaches_nothing(store: Store) -> None:
    """A reservation that expires unsettled (its Cdr was lost) is charged in full and teaches
    nothing; a second settle of an answered call teaches nothing more."""
    site = Site(store)
    lost = await site.call(Origin.DIALLED, BERLIN)
    expired = TUE + timedelta(seconds=lost.allowed_seconds + RESERVATION_HOLD + 1)
    await site.end(lost, 60, expired)
    assert await site.countries(expired) == {}
    answered = await site.call(Origin.DIALLED, PARIS, expired)
    await site.end(answered, 60, expired + timedelta(minutes=1))
    await site.end(answered, 60, expired + timedelta(minutes=5))  # already settled: a no-op
    assert await site.countries(expired) == {"FR": ms(expired + timedelta(minutes=1)) // 1000}


async def test_a_leg_no_phone_dialled_teaches_nothing(store: Store) -> None:
    """Only a phone's own answered call teaches (the attack review): a transfer to Germany let
    through by its block (new_countries: allow) and answered must not open Germany to the forwards,
    which an outside caller may set off."""
    site = Site(store)
    transfer = await site.call(Origin.TRANSFER, BERLIN)
    assert transfer.allowed
    await site.end(transfer, 30, TUE + timedelta(minutes=1))
    later = await site.call(Origin.FORWARD, BERLIN, TUE + timedelta(minutes=2))
    assert (later.reason, later.rule) == (Reason.FORWARD_NOT_ALLOWED, "new_country")


async def test_a_country_counts_for_the_ttl_after_its_own_last_answered_call(store: Store) -> None:
    """Each country has its own clock: Germany answered once, then only France for a year and more,
    keeps the hash alive but not Germany (the attack review: one fraud answered must not open a
    country for as long as the site makes any call)."""
    site = Site(store)
    seed = await site.call(Origin.DIALLED, BERLIN)
    await site.end(seed, 30, TUE + timedelta(minutes=1))
    assert (await site.call(Origin.FORWARD, BERLIN, TUE + timedelta(days=399))).allowed
    paris = "0033142345678"
    for day in range(100, 501, 100):  # France answered every 100 days: the hash lives on
        at = TUE + timedelta(days=day)
        call = await site.call(Origin.DIALLED, paris, at)
        await site.end(call, 30, at + timedelta(minutes=1))
    late = await site.call(Origin.FORWARD, BERLIN, TUE + timedelta(days=401))
    assert (late.reason, late.rule) == (Reason.FORWARD_NOT_ALLOWED, "new_country")


async def test_each_site_learns_its_own_countries(store: Store) -> None:
    """Germany answered at one site is still new at another sharing the Redis (its own hash tag)."""
    other = dataclasses.replace(POLICY, site=dataclasses.replace(POLICY.site, name="fs-2"))
    here, there = Site(store), Site(store, other)
    answered = await here.call(Origin.DIALLED, BERLIN)
    await here.end(answered, 60, TUE + timedelta(minutes=1))
    later = TUE + timedelta(minutes=2)
    assert (await here.call(Origin.FORWARD, BERLIN, later)).allowed
    assert (await there.call(Origin.FORWARD, BERLIN, later)).reason is Reason.FORWARD_NOT_ALLOWED


async def test_the_learned_countries_expire_with_their_key() -> None:
    """The countries hash lives COUNTRIES_TTL after the last answered call (in-process store: time
    is the calls')."""
    site = Site(MemoryStore())
    answered = await site.call(Origin.DIALLED, BERLIN)
    await site.end(answered, 60, TUE + timedelta(minutes=1))
    gone = TUE + timedelta(minutes=1, seconds=keys.COUNTRIES_TTL + 1)
    assert (await site.call(Origin.FORWARD, BERLIN, gone - timedelta(seconds=2))).allowed
    assert (await site.call(Origin.FORWARD, BERLIN, gone)).reason is Reason.FORWARD_NOT_ALLOWED


async def test_the_countries_key_has_a_ttl(redis_store: RedisStore) -> None:
    """Every key has a TTL: the countries hash too, renewed by each answered call."""
    site = Site(redis_store)
    await redis_store.client.flushdb()
    answered = await site.call(Origin.DIALLED, BERLIN)
    await site.end(answered, 60, TUE + timedelta(minutes=1))
    ttl = await redis_store.client.ttl(keys.site_prefix(SITE) + keys.COUNTRIES)
    assert keys.COUNTRIES_TTL - 60 < ttl <= keys.COUNTRIES_TTL


# --- the store's judgement: Lua and Python agree ---------------------------------------------------


async def test_the_lock_and_panic_come_before_the_new_country(store: Store) -> None:
    """The rules' order: a locked extension's forward to a new country is refused for the lock (both
    rules deny), the panic switch likewise; the lock set after Germany is learned still holds."""
    site = Site(store)
    await store.set_lock(SITE, "1001", "international")
    locked = await site.call(Origin.FORWARD, BERLIN)
    assert (locked.reason, locked.rule, rule(locked)[0]) == (
        Reason.EXTENSION_LOCKED,
        "lock",
        DENY,
    )
    await store.set_lock(SITE, "1001", None)
    await store.set_panic(SITE, True)
    panic = await site.call(Origin.FORWARD, BERLIN)
    assert (panic.reason, rule(panic)[0]) == (Reason.SITE_PANIC, DENY)


def admission(check: CountryCheck, country: str = "DE", **kw: object) -> Admission:
    base = Admission(
        site=SITE, call_id="a", at_ms=ms(TUE), checks=(), rate=30_000, increment=1, max_seconds=600,
        hold=600, extension="1001", international=True, reserve=True, number="+49301234567",
        origin=Origin.FORWARD, country=country, country_check=check,
    )  # fmt: skip
    return base._replace(**kw)  # type: ignore[arg-type]


JUDGED = [
    # (lock, panic, check, country learned, country asked)
    (lock, panic, check, learned, country)
    for lock in ("", "international", "all")
    for panic in (False, True)
    for check in CountryCheck
    for learned in (False, True)
    for country in ("DE", "")
]


async def seed(store: Store, lock: str, panic: bool, learned: bool) -> None:
    if learned:  # an answered call to Germany, settled
        await store.admit(admission(CountryCheck.NONE, call_id="seed", origin=Origin.DIALLED))
        await store.settle(SITE, "seed", 60, ms(TUE) + 60_000)
    await store.set_lock(SITE, "1001", lock or None)
    await store.set_panic(SITE, panic)


@pytest.mark.parametrize(("lock", "panic", "check", "learned", "country"), JUDGED)
async def test_the_store_judges_as_barred_says(
    store: Store, *, lock: str, panic: bool, check: CountryCheck, learned: bool, country: str
) -> None:
    """admit.lua and MemoryStore look the country up only when asked (HEXISTS), refuse by
    admission.barred in its order (lock, panic, new country), and explain's peek agrees."""
    await seed(store, lock, panic, learned)
    a = admission(check, country, at_ms=ms(TUE) + 120_000)
    seen = await store.peek(a)
    outcome = await store.admit(a)
    knows = learned and country == "DE" and check is not CountryCheck.NONE
    refused = barred(LockScope(lock) if lock else None, panic, True, unknown_country(a, knows))
    for got in (seen, outcome):
        assert (got.refused, got.learned) == (refused, knows)
    assert outcome.admitted is (refused is None)
    if check is CountryCheck.DENY and not knows and not lock and not panic:
        assert refused is Refusal.NEW_COUNTRY


async def test_both_stores_agree_call_by_call(redis_store: RedisStore) -> None:
    """One history on both stores: every outcome, every reservation hash (with its origin and
    country) and the learned countries are the same."""
    await redis_store.client.flushdb()
    memory = MemoryStore()
    sites = [Site(memory), Site(redis_store)]
    steps: list[tuple[Origin, str, int | None]] = [  # (origin, number, billsec it settles with)
        (Origin.FORWARD, BERLIN, None),
        (Origin.DIALLED, BERLIN, 45),
        (Origin.FORWARD, BERLIN, 10),
        (Origin.DIALLED, LONDON, 0),
        (Origin.IVR, LONDON, None),
        (Origin.TRANSFER, PARIS, 20),
        (Origin.DISA, PARIS, None),
        (Origin.DISA, SATELLITE, None),
    ]
    at = TUE
    for origin, dialled, billsec in steps:
        at += timedelta(minutes=1)
        decided = [await s.call(origin, dialled, at) for s in sites]
        assert decided[0] == decided[1], (origin, dialled)
        rkey = keys.site_prefix(SITE) + keys.reservation_key(decided[1].reservation)
        stored = await redis_store.client.hgetall(rkey)
        held = memory.reservation(SITE, decided[0].reservation, ms(at))
        assert held == {str(k): str(v) for k, v in stored.items()}
        if held:
            assert (held["origin"], held["country"]) == (origin.value, decided[0].number.country)
        if billsec is not None and decided[0].allowed:
            for s, d in zip(sites, decided, strict=True):
                await s.end(d, billsec, at + timedelta(seconds=30))
    assert await sites[0].countries(at) == await sites[1].countries(at) != {}
    assert set(await sites[0].countries(at)) == {"DE"}  # the transfer to Paris teaches nothing


# --- explain, the store down, replay ---------------------------------------------------------------


def test_on_store_error_decides_when_the_countries_cannot_be_read() -> None:
    """The store down: the rule cannot be judged (skip) and on_store_error decides in its place, as
    for the lock and the counters: deny_international, the default, refuses such a leg anyway."""
    p = prepare(
        Memo(POLICY), CallAttempt("c", "1001", BERLIN, leg="ch", origin=Origin.FORWARD), TUE
    )
    for mode in FailMode:
        d = on_store_failure(p, mode)
        assert rule(d)[0] == SKIP
        assert "store cannot be reached" in rule(d)[1]
        assert d.allowed is (mode is FailMode.ALLOW)
        assert [r.rule for r in d.rules] == sorted((r.rule for r in d.rules), key=RULES.index)


def test_explain_without_redis_knows_no_learned_country(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    """explain runs the engine on an empty in-process store: a forward to a country the policy does
    not know is shown as new (with --redis it reads the site's countries)."""
    path = f"{tmp_path}/p.yaml"
    with open(path, "w", encoding="utf-8") as f:
        f.write(TEXT)
    args = ["explain", "--policy", path, "--from", "1001", "--at", "2026-11-17T10:00"]
    assert main([*args, "--origin", "forward", BERLIN]) == 1
    text = capsys.readouterr().out
    assert text.startswith("DENY forward_not_allowed  (rule new_country)")
    assert "DE is a new country" in text
    assert main([*args, "--origin", "forward", CANADA]) == 0
    assert "CA is in site.known_countries" in capsys.readouterr().out


def test_explain_peeks_at_the_learned_countries() -> None:
    """peek reads the countries without writing: what explain --redis shows."""
    store = MemoryStore()
    memo = Memo(POLICY)
    dialled = prepare(memo, CallAttempt("d", "1001", BERLIN, leg="c1"), TUE)
    assert dialled.admission is not None
    store.admit_now(dialled.admission)
    store.settle_now(SITE, dialled.admission.call_id, 60, ms(TUE) + 60_000)
    later = TUE + timedelta(minutes=2)
    forward = prepare(
        memo, CallAttempt("f", "1001", BERLIN, leg="c2", origin=Origin.FORWARD), later
    )
    assert forward.admission is not None
    assert forward.admission.country_check is CountryCheck.DENY
    seen = store.read_now(forward.admission)
    assert peeked(forward, seen).allowed
    assert peeked(forward, seen._replace(learned=False)).reason is Reason.FORWARD_NOT_ALLOWED
    assert store.reservations(SITE) == 0


def cdr(second: int, channel: str, dst: str, *, context: str, billsec: int) -> str:
    """A row that starts ``second`` s after Tuesday 17 November 2026 14:00, to the trunk voipco."""

    def stamp(at: int) -> str:
        at += 14 * 3600
        return f"2026-11-17 {at // 3600:02d}:{at // 60 % 60:02d}:{at % 60:02d}"

    return cdr_line(
        (f"1794949200.{second}", ""), src="1001", dst=dst, dcontext=context, channel=channel,
        dstchannel=f"PJSIP/voipco-{second:08x}", lastdata=f"PJSIP/{dst}@voipco,300,T",
        start=stamp(second), answer=stamp(second + 2) if billsec else "",
        end=stamp(second + 2 + billsec), duration=2 + billsec, billsec=billsec,
        disposition="ANSWERED" if billsec else "NO ANSWER",
    )  # fmt: skip


def test_replay_learns_from_the_replayed_history() -> None:
    """replay runs the same engine on the in-process store: a forward to Germany is refused until a
    replayed call to Germany was answered, then allowed; an unanswered call to France teaches
    nothing."""
    lines = [
        cdr(0, "PJSIP/1001-00000001", BERLIN, context="my-forward", billsec=30),
        cdr(100, "PJSIP/1001-00000002", BERLIN, context="from-internal", billsec=60),
        cdr(300, "PJSIP/1001-00000003", MUNICH, context="my-forward", billsec=30),
        cdr(400, "PJSIP/1001-00000004", PARIS, context="from-internal", billsec=0),
        cdr(500, "PJSIP/1001-00000005", PARIS, context="my-forward", billsec=30),
    ]
    rows = in_start_order(read_cdr(io.StringIO("".join(lines), newline=""), tz=NY))
    only = Filter(forward=frozenset({"my-forward"}))
    seen = [(r.origin, r.dst, r.reason) for r in replay(POLICY, rows, only=only)]
    assert seen == [
        ("forward", BERLIN, "forward_not_allowed"),
        ("dialled", BERLIN, "allowed"),
        ("forward", MUNICH, "allowed"),
        ("dialled", PARIS, "allowed"),
        ("forward", PARIS, "forward_not_allowed"),
    ]


# --- the policy file ---------------------------------------------------------------------------------


def test_the_policy_reads_known_countries_and_new_countries() -> None:
    """known_countries is a set of ISO codes; each origin's block has its new_countries (deny by
    default, the unwritten ones too), report mode named in the block's report."""
    assert POLICY.site.known_countries == frozenset({"CA"})
    assert POLICY.origins[Origin.FORWARD].new_countries is NewCountries.DENY
    assert POLICY.origins[Origin.TRANSFER].new_countries is NewCountries.ALLOW
    assert POLICY.origins[Origin.IVR].report == {"new_countries"}
    for origin in NARROWED:
        block, written = POLICY.origin_block(origin)
        assert written or block == safe_origin_block("US")
    assert safe_origin_block("US").new_countries is NewCountries.DENY
    plain = load_policy(TEXT.split("origins:", maxsplit=1)[0], "plain.yaml")
    assert all(plain.origin_block(o)[0].new_countries is NewCountries.DENY for o in NARROWED)


def test_policy_check_describes_them() -> None:
    """policy check says which countries the site knows and what each origin does with a new one."""
    text = "\n".join(describe(POLICY))
    assert (
        "countries the site knows (legs no phone dialled may reach them): US (its own), CA, and "
        "each that an answered call reached" in text
    )
    assert "  forward: countries CA, DE, FR, GB, US; new countries: deny" in text
    assert "  transfer: any; new countries: allow" in text
    assert "origins.ivr.new_countries" in text


SITE_LINE = TEXT.splitlines()[1]
BAD = [
    # (what replaces what in TEXT, the line, the key path, words of the message)
    ((SITE_LINE, SITE_LINE.replace("[CA]", "[XX]")), 2, "site.known_countries[0]", "unknown country 'XX'"),
    ((SITE_LINE, SITE_LINE.replace("[CA]", "[ca]")), 2, "site.known_countries[0]", "write 'CA'"),
    ((SITE_LINE, SITE_LINE.replace("[CA]", "CA")), 2, "site.known_countries", "[CA, GB]"),
    (("{new_countries: allow}", "{new_countries: maybe}"), 12, "origins.transfer.new_countries",
     "unknown value 'maybe'"),
    (("{new_countries: allow}", "{new_countries: [allow]}"), 12, "origins.transfer.new_countries",
     "deny"),
    (("mode: report}", "mode: sometimes}"), 14, "origins.ivr.new_countries.mode", "'sometimes'"),
    (("{deny_countries: [KP]}", "{deny_countries: [KP], new_countries: allow}"), 7,
     "profiles.wide.destinations.new_countries", "belongs in a block of origins"),
    (("extensions:\n", "known_countries: [GB]\nextensions:\n"), 8, "known_countries",
     "belongs in site"),
    (("  disa: {}", "  disa: {known_countries: [GB]}"), 13, "origins.disa.known_countries",
     "belongs in site"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "line", "path", "words"), BAD)
def test_mistakes_are_named_by_file_line_and_key(
    edit: tuple[str, str], line: int, path: str, words: str
) -> None:
    """A wrong known_countries or new_countries names the file, the line and the key path."""
    assert edit[0] in TEXT
    with pytest.raises(PolicyError) as caught:
        load_policy(TEXT.replace(edit[0], edit[1], 1), "bad.yaml")
    found = [p for p in caught.value.problems if p.path == path]
    assert found, caught.value.problems
    assert (found[0].source, found[0].line) == ("bad.yaml", line)
    assert words in found[0].message, found[0].message


def test_outcome_learned_defaults_to_false() -> None:
    """A store that was not asked (no country check) says nothing was learned."""
    assert Outcome(()).learned is False


@pytest.mark.redis
def test_the_admin_lists_teaches_and_forgets_countries(
    redis_url: str, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    """`callgate countries` on a real Redis: what the site learned, --learn (as if a call to it was
    just answered) and --forget; explain --redis then judges a forward to Germany by it. A code that is
    not one is refused with the fix, and nothing is written."""
    site = f"cc{id(capsys) % 10**6}"
    common = ["--redis", redis_url, "--site", site]
    assert main(["countries", *common]) == 0
    assert "no country learned yet" in capsys.readouterr().out
    assert main(["countries", *common, "--learn", "de"]) == 2
    assert "write 'DE'" in capsys.readouterr().err
    assert main(["countries", *common, "--learn", "DE", "FR"]) == 0
    assert "learned DE, FR" in capsys.readouterr().out
    assert main(["countries", *common]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("DE\tlast answered 20")
    assert "\nFR\tlast answered" in listed
    path = f"{tmp_path}/p.yaml"
    with open(path, "w", encoding="utf-8") as f:
        f.write(TEXT.replace(f"name: {SITE}", f"name: {site}"))
    explain = ["explain", "--policy", path, "--redis", redis_url, "--from", "1001"]
    explain += ["--at", "2026-11-17T10:00", "--origin", "forward", BERLIN]
    assert main(explain) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main(["countries", *common, "--forget", "DE"]) == 0
    assert "forgot DE" in capsys.readouterr().out
    assert main(explain) == 1
    assert "DE is a new country" in capsys.readouterr().out
