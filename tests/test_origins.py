"""Legs that no phone dialled (core.origins): the policy's ``origins:``, the origin rule, and the
property that an origin only narrows what its extension may call."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.asterisk.events import Decided, Locked
from callgate.asterisk.gate import Gate
from callgate.asterisk.identity import caller_extension
from callgate.cli import main
from callgate.core.bursts import lockdown_rule, short_call_rule
from callgate.core.decision import Decision
from callgate.core.engine import peeked
from callgate.core.memo import Memo
from callgate.core.numbers import NumberType
from callgate.core.origins import NARROWED, SAFE_DENIED_TYPES, Origin
from callgate.core.plan import prepare, reservation_id
from callgate.core.policy import Destinations, NewCountries, Policy, safe_origin_block
from callgate.core.policyfile import load_policy
from callgate.core.policysummary import describe
from callgate.core.reasons import Reason, Verdict, origin_reason
from callgate.core.rules import DENY, REPORT, RULES, SKIP, CallAttempt
from callgate.errors import PolicyError
from callgate.ops.audit import entry
from callgate.store.memory import MemoryStore
from tests.fakes import FakeAudit, FakeChannels

TUE = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
BASE = """\
version: 1
site: {name: o, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"], known_countries: [CA, FR, GB]}
emergency: ["911"]
rates: {default: "0.05", prefixes: {"1": "0.01", "44": "0.02", "53": "1.10", "1876": "0.45"}}
profiles:
  wide:                                 # may call almost anywhere: the origins narrow it
    destinations: {deny_countries: [KP]}
  home:
    destinations: {allow_countries: [US]}
extensions:
  - {match: "1001", profile: wide}
  - {match: "1002", profile: home}
lockdown:
  after_denied: {calls: 5, within: 10m}
"""
ORIGINS = """\
origins:
  forward: {allow_countries: [US, CA], deny_number_types: [premium_rate, personal_number]}
  disa: {deny_countries: [GB, CU]}
  transfer: {allow_countries: [US], max_rate: "0.01"}
  originate: {}
  ivr: {allow_countries: {value: [US], mode: report}}
"""
POLICY = load_policy(BASE + ORIGINS, "origins.yaml")

US, US_PREMIUM, US_PERSONAL = "2125550123", "19005550199", "15002345678"
GB, GB_PREMIUM, CANADA, CUBA = "011442079460000", "011449065551234", "16135550123", "011532345678"
JAMAICA, FRANCE, GERMANY = "18765550123", "01133123456789", "01149301234567"


def decide(
    policy: Policy, origin: Origin, extension: str, dialled: str, memo: Memo | None = None
) -> Decision:
    attempt = CallAttempt("c", extension, dialled, leg="ch", origin=origin)
    p = prepare(memo if memo is not None else Memo(policy), attempt, TUE)
    return peeked(p, MemoryStore().read_now(p.admission) if p.admission is not None else None)


# --- the policy file ---------------------------------------------------------------------------


def test_origins_are_read_as_destinations_blocks() -> None:
    """Each named origin is a destinations block, report mode too; an unnamed one gets the default."""
    forward, written = POLICY.origin_block(Origin.FORWARD)
    assert written
    assert forward.allow_countries == frozenset({"US", "CA"})
    assert forward.deny_number_types == {NumberType.PREMIUM_RATE, NumberType.PERSONAL_NUMBER}
    assert POLICY.origins[Origin.ORIGINATE] == Destinations()
    assert POLICY.origins[Origin.IVR].report == {"allow_countries"}
    voicemail, written = POLICY.origin_block(Origin.VOICEMAIL)
    assert not written
    assert voicemail == safe_origin_block("US")
    assert voicemail.allow_countries == frozenset({"US"})
    assert voicemail.deny_number_types == SAFE_DENIED_TYPES


@pytest.mark.parametrize(
    ("origins", "line", "path", "words"),
    [
        ("origins:\n  dialled: {}\n", 16, "origins.dialled", "not an origin to narrow"),
        ("origins:\n  forwad: {}\n", 16, "origins.forwad", "did you mean 'forward'"),
        ("origins:\n  forward: {}\n  forward: {}\n", 17, "origins.forward", "duplicate key"),
        (
            "origins:\n  disa:\n    allow_countries: [US]\n    deny_countries: [CU]\n",
            18,
            "origins.disa.deny_countries",
            "cannot both be set",
        ),
        (
            "origins:\n  disa: {allow_countries: [XX]}\n",
            16,
            "origins.disa.allow_countries[0]",
            "XX",
        ),
        (
            "origins:\n  ivr: {deny_number_types: [premium]}\n",
            16,
            "origins.ivr.deny_number_types[0]",
            "premium",
        ),
        ("origins:\n  ivr: {max_rate: -1}\n", 16, "origins.ivr.max_rate", "negative"),
        ("origins:\n  ivr: {mode: report}\n", 16, "origins.ivr.mode", "one rule"),
        ("origins:\n  transfer:\n", 16, "origins.transfer", "expected a mapping"),
        ("origins: [forward]\n", 15, "origins", "expected a mapping of origins"),
        (
            "origins:\n  voicemail: {deny_prefixes: [{file: callgate:nope}]}\n",
            16,
            "origins.voicemail.deny_prefixes[0].file",
            "callgate:nope",
        ),
    ],
)
def test_bad_origins_are_named_by_file_line_and_key(
    origins: str, line: int, path: str, words: str
) -> None:
    """A mistake in origins: names the file, the line and the key path, and says what is expected."""
    with pytest.raises(PolicyError) as caught:
        load_policy(BASE + origins, "bad.yaml")
    found = [p for p in caught.value.problems if p.path == path]
    assert found, caught.value.problems
    assert (found[0].source, found[0].line) == ("bad.yaml", line)
    assert words in found[0].message


def test_describe_shows_each_origin() -> None:
    """policy check says what each origin may reach, which are the default, and the report-only keys."""
    text = "\n".join(describe(POLICY))
    forward = (
        "  forward: countries CA, US; not types personal_number, premium_rate; new countries: deny"
    )
    assert forward + "\n" in text + "\n"
    assert "  originate: any; new countries: deny" in text
    assert (
        "  voicemail: countries US; not types personal_number, premium_rate, shared_cost, uan; "
        "new countries: deny (the default)" in text
    )
    assert "origins.ivr.allow_countries" in text
    plain = "\n".join(describe(load_policy(BASE, "plain.yaml")))
    assert all(f"  {o}: countries US; not types " in plain for o in NARROWED)


# --- the origin rule -----------------------------------------------------------------------------

CASES = [
    # (origin, extension, dialled, reason, the rule that gave it)
    (Origin.DIALLED, "1001", GB, Reason.ALLOWED, ""),
    (Origin.FORWARD, "1001", GB, Reason.FORWARD_NOT_ALLOWED, "origin"),
    (Origin.FORWARD, "1001", CANADA, Reason.ALLOWED, ""),
    (Origin.FORWARD, "1001", US, Reason.ALLOWED, ""),
    (Origin.FORWARD, "1001", US_PREMIUM, Reason.FORWARD_NOT_ALLOWED, "origin"),
    (Origin.FORWARD, "1001", US_PERSONAL, Reason.FORWARD_NOT_ALLOWED, "origin"),
    # the profile is judged first: its own reason
    (Origin.FORWARD, "1002", CANADA, Reason.COUNTRY_NOT_ALLOWED, "destinations.countries"),
    (Origin.DISA, "1001", GB, Reason.DISA_NOT_ALLOWED, "origin"),
    (Origin.DISA, "1001", CUBA, Reason.DISA_NOT_ALLOWED, "origin"),
    (Origin.DISA, "1001", FRANCE, Reason.ALLOWED, ""),  # site.known_countries
    # a country the site neither knows nor has called: new_countries: deny, the default
    (Origin.DISA, "1001", GERMANY, Reason.DISA_NOT_ALLOWED, "new_country"),
    (Origin.ORIGINATE, "1001", GERMANY, Reason.ORIGINATE_NOT_ALLOWED, "new_country"),
    (Origin.DIALLED, "1001", GERMANY, Reason.ALLOWED, ""),
    (Origin.TRANSFER, "1001", JAMAICA, Reason.TRANSFER_NOT_ALLOWED, "origin"),  # NANP, not US
    (Origin.TRANSFER, "1001", US, Reason.ALLOWED, ""),  # 0.01/min: not above max_rate
    (Origin.ORIGINATE, "1001", GB_PREMIUM, Reason.ALLOWED, ""),  # {}: the profile alone
    (Origin.IVR, "1001", GB, Reason.ALLOWED, ""),  # mode: report
    (Origin.VOICEMAIL, "1001", US, Reason.ALLOWED, ""),  # the default: domestic...
    (Origin.VOICEMAIL, "1001", GB, Reason.VOICEMAIL_NOT_ALLOWED, "origin"),
    (
        Origin.VOICEMAIL,
        "1001",
        US_PREMIUM,
        Reason.VOICEMAIL_NOT_ALLOWED,
        "origin",
    ),  # ... no premium
    (Origin.VOICEMAIL, "1001", US_PERSONAL, Reason.VOICEMAIL_NOT_ALLOWED, "origin"),
    (Origin.VOICEMAIL, "1001", "18005550199", Reason.ALLOWED, ""),  # toll free
    (Origin.FORWARD, "1001", "911", Reason.EMERGENCY, "emergency"),
    (Origin.FORWARD, "1001", "abc", Reason.UNPARSEABLE_NUMBER, "number"),
    (Origin.FORWARD, "", US, Reason.UNKNOWN_EXTENSION, "extension"),
]


@pytest.mark.parametrize(("origin", "extension", "dialled", "reason", "rule"), CASES)
def test_the_origin_rule(
    origin: Origin, extension: str, dialled: str, reason: Reason, rule: str
) -> None:
    """A leg is judged by its extension's profile first, then by its origin's block; the block's
    refusal has the origin's own reason."""
    d = decide(POLICY, origin, extension, dialled)
    assert (d.reason, d.rule) == (reason, rule), [r for r in d.rules if r.outcome == DENY]
    assert d.origin is origin
    names = [r.rule for r in d.rules]
    assert names == sorted(names, key=RULES.index)
    if reason is not Reason.EMERGENCY:
        (judged,) = (r for r in d.rules if r.rule == "origin")
        assert (judged.outcome == SKIP) == (origin is Origin.DIALLED or dialled == "abc")


def test_report_mode_of_an_origin_reports_with_its_reason() -> None:
    """ivr's allow_countries in mode: report: the call goes on, the decision says what it would deny."""
    d = decide(POLICY, Origin.IVR, "1001", GB)
    assert d.verdict is Verdict.ALLOW
    assert [(r.rule, r.reason) for r in d.reported] == [("origin", Reason.IVR_NOT_ALLOWED)]
    assert "(mode: report)" in d.reported[0].detail


def test_the_memo_keeps_origins_apart() -> None:
    """One memo: the same number dialled, then forwarded, then dialled again: each judged as itself."""
    memo = Memo(POLICY)
    assert decide(POLICY, Origin.DIALLED, "1001", GB, memo).allowed
    assert decide(POLICY, Origin.FORWARD, "1001", GB, memo).reason is Reason.FORWARD_NOT_ALLOWED
    assert decide(POLICY, Origin.DISA, "1001", GB, memo).reason is Reason.DISA_NOT_ALLOWED
    assert decide(POLICY, Origin.DIALLED, "1001", GB, memo).allowed
    assert set(memo.origins) == {(Origin.FORWARD, GB), (Origin.DISA, GB)}


def test_every_origin_but_dialled_has_a_reason_of_its_own() -> None:
    """forward_not_allowed, transfer_not_allowed, ...: one per origin, none for dialled."""
    assert [origin_reason(o).value for o in NARROWED] == [f"{o}_not_allowed" for o in NARROWED]
    with pytest.raises(ValueError, match="profile"):
        origin_reason(Origin.DIALLED)


# --- the narrowing property ----------------------------------------------------------------------


def _examples() -> list[str]:
    """libphonenumber's example number of every type in a spread of regions, as dialled with +."""
    found = []
    for region in ("US", "CA", "JM", "GB", "DE", "FR", "IT", "CU", "AU", "001"):
        for kind in range(12):
            example = (
                phonenumbers.example_number_for_non_geo_entity(881)
                if region == "001"
                else phonenumbers.example_number_for_type(region, kind)
            )
            if example is not None:
                found.append(
                    phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
                )
    return [*sorted(set(found)), US, US_PREMIUM, US_PERSONAL, GB, GB_PREMIUM, CANADA, CUBA, JAMAICA]


EXAMPLES = _examples()


@pytest.mark.parametrize("origin", NARROWED)
@pytest.mark.parametrize("extension", ["1001", "1002"])
def test_an_origin_only_narrows(origin: Origin, extension: str) -> None:
    """For every origin and number: a leg allowed for that origin is allowed when its extension dials
    it, for as long; with the policy's blocks and with the defaults."""
    for policy in (POLICY, load_policy(BASE, "defaults.yaml")):
        for dialled in EXAMPLES:
            leg = decide(policy, origin, extension, dialled)
            own = decide(policy, Origin.DIALLED, extension, dialled)
            if leg.allowed:
                assert own.allowed, (origin, dialled)
                assert leg.allowed_seconds <= own.allowed_seconds


_COUNTRIES = st.frozensets(
    st.sampled_from(["US", "CA", "GB", "FR", "DE", "CU", "JM", "AU"]), max_size=4
)
_TYPES = st.frozensets(st.sampled_from(list(NumberType)), max_size=4)
BLOCKS = st.builds(
    Destinations,
    allow_countries=st.none() | _COUNTRIES,
    deny_countries=_COUNTRIES,
    allow_number_types=st.none() | _TYPES,
    deny_number_types=_TYPES,
    deny_prefixes=st.lists(st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True), max_size=3).map(
        tuple
    ),
    allow_prefixes=st.lists(st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True), max_size=2).map(
        tuple
    ),
    max_rate=st.none() | st.sampled_from([Decimal("0"), Decimal("0.01"), Decimal("0.5")]),
    new_countries=st.sampled_from(NewCountries),
    report=st.frozensets(
        st.sampled_from(["allow_countries", "deny_number_types", "max_rate", "new_countries"])
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    origin=st.sampled_from(NARROWED),
    block=BLOCKS,
    extension=st.sampled_from(["1001", "1002"]),
    dialled=st.sampled_from(EXAMPLES) | st.from_regex(r"(\+|011|9)?[0-9]{6,15}", fullmatch=True),
)
def test_no_block_widens(origin: Origin, block: Destinations, extension: str, dialled: str) -> None:
    """Whatever a block says (allow lists, allow_prefixes, report mode, nothing at all), a leg it lets
    through is one its extension may dial itself."""
    policy = dataclasses.replace(POLICY, origins={origin: block})
    leg = decide(policy, origin, extension, dialled)
    if leg.allowed:
        own = decide(policy, Origin.DIALLED, extension, dialled)
        assert own.allowed
        assert leg.allowed_seconds <= own.allowed_seconds


# --- what a non-dialled leg is bound to and counted toward ---------------------------------------


def test_the_reservation_is_bound_to_the_origin() -> None:
    """A dialled call's reservation id is as it always was; the same leg as a forward has its own, so
    a channel admitted as its phone's call is never handed that decision as a forward."""
    dialled = CallAttempt("L1", "1001", US, leg="ch1")
    bound = "\x1f".join(("L1", "ch1", "1001", "+12125550123", "10000", "0"))
    old = hashlib.blake2b(bound.encode(), digest_size=8).hexdigest()
    assert reservation_id(dialled, "+12125550123", 10000, False) == f"L1:{old}"
    forward = dataclasses.replace(dialled, origin=Origin.FORWARD)
    assert reservation_id(forward, "+12125550123", 10000, False) != f"L1:{old}"


@pytest.mark.parametrize("origin", list(Origin))
def test_only_an_extensions_own_calls_count_toward_its_locks(origin: Origin) -> None:
    """lockdown and short_calls: an outside caller setting off forwards cannot lock the extension."""
    memo = Memo(POLICY)
    dialled = origin is Origin.DIALLED
    assert (lockdown_rule(memo, Reason.FORWARD_NOT_ALLOWED, origin) is not None) == dialled
    short = load_policy(
        BASE.replace(
            "{deny_countries: [KP]}",
            "{deny_countries: [KP]}\n    limits: {short_calls: {calls: 2, shorter_than: 10s, within: 1m}}",
        ),
        "short.yaml",
    )
    assert (short_call_rule(Memo(short), "1001", 3, origin) is not None) == dialled


@pytest.mark.parametrize(
    ("endpoint", "ext", "origin", "charged"),
    [
        ("1002", "", Origin.DIALLED, "1002"),  # a phone's own call: its endpoint
        ("1002", "1005", Origin.DIALLED, ""),  # disagreeing: nobody
        ("carrier", "1001", Origin.DIALLED, ""),  # a trunk's channel is no extension
        ("carrier", "1001", Origin.FORWARD, "1001"),  # a forward of 1001 on the trunk's channel
        ("1002", "1001", Origin.FORWARD, "1001"),  # 1002 called 1001, whose forward sent it out
        ("", "1001", Origin.DISA, "1001"),  # a Local channel
        (
            "carrier",
            "",
            Origin.FORWARD,
            "",
        ),  # a forward must name its extension: the trunk is nobody
        ("1002", "", Origin.TRANSFER, ""),  # and so must a transfer: never the channel's phone
    ],
)
def test_a_leg_no_phone_dialled_is_charged_to_its_ext(
    endpoint: str, ext: str, origin: Origin, charged: str
) -> None:
    """The dialplan's ext= names the causing extension; the channel's endpoint need not agree."""
    assert caller_extension({}, endpoint, ext, origin) == charged


# --- explain and the audit -----------------------------------------------------------------------


def test_explain_shows_the_origin(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    """explain --origin forward judges the leg as a forward, in its text and its JSON."""
    path = f"{tmp_path}/p.yaml"
    with open(path, "w", encoding="utf-8") as f:
        f.write(BASE + ORIGINS)
    args = ["explain", "--policy", path, "--from", "1001", "--at", "2026-11-17T10:00", GB]
    assert main([*args, "--origin", "forward", "--via", "2125550100"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("DENY forward_not_allowed  (rule origin)")
    assert "  origin    forward via 2125550100 (caused by 1001)" in text
    assert main([*args, "--origin", "forward", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert (found["origin"], found["via"], found["reason"]) == (
        "forward",
        "",
        "forward_not_allowed",
    )
    assert main(args) == 0
    assert "  origin    dialled\n" in capsys.readouterr().out


def test_the_audit_entry_records_origin_via_and_endpoint() -> None:
    """The audit says whom the leg is charged to, who caused it, how it came in, on which endpoint."""
    attempt = CallAttempt("c", "1001", CANADA, leg="ch", origin=Origin.FORWARD, via="2125550100")
    p = prepare(Memo(POLICY), attempt, TUE)
    assert p.admission is not None
    fields = entry(peeked(p, MemoryStore().read_now(p.admission)), "ch", 1.0, "carrier")
    assert {k: fields[k] for k in ("extension", "origin", "via", "endpoint", "verdict")} == {
        "extension": "1001",
        "origin": "forward",
        "via": "2125550100",
        "endpoint": "carrier",
        "verdict": "ALLOW",
    }
    report = [r for r in decide(POLICY, Origin.IVR, "1001", GB).rules if r.outcome == REPORT]
    assert [r.rule for r in report] == ["origin"]


# --- the gate ------------------------------------------------------------------------------------


def _gate() -> tuple[Gate, FakeAudit]:
    memo, events = Memo(POLICY), FakeAudit()
    return Gate(lambda: memo, MemoryStore(), FakeChannels(), events, clock=lambda: TUE), events


async def test_the_gate_charges_a_forward_to_its_extension_on_the_trunks_channel() -> None:
    """A forward of 1001 arriving on the inbound trunk's channel is 1001's; the endpoint is recorded.
    The same channel without the origin is nobody's (a trunk is no extension)."""
    g, events = _gate()
    attempt = CallAttempt("L1", "1001", CANADA, leg="ch1", origin=Origin.FORWARD, via="2125550100")
    forward = await g.handle("ch1", attempt, endpoint="carrier")
    assert (forward.verdict, forward.extension, forward.origin) == (
        Verdict.ALLOW,
        "1001",
        Origin.FORWARD,
    )
    assert [e.endpoint for e in events.seen if isinstance(e, Decided)] == ["carrier"]
    own = await g.handle("ch2", CallAttempt("L2", "1001", CANADA, leg="ch2"), endpoint="carrier")
    assert own.reason is Reason.UNKNOWN_EXTENSION


async def test_refused_forwards_do_not_lock_the_extension() -> None:
    """Six forwards refused in a minute lock nothing (an outside caller sets them off); five refusals
    of the extension's own calls do (lockdown.after_denied: 5 within 10m)."""
    g, events = _gate()
    for n in range(6):
        leg = CallAttempt(f"F{n}", "1002", GB, leg=f"f{n}", origin=Origin.FORWARD)
        assert not (await g.handle(f"f{n}", leg)).allowed
    assert not [e for e in events.seen if isinstance(e, Locked)]
    for n in range(5):
        assert not (await g.handle(f"d{n}", CallAttempt(f"D{n}", "1002", GB, leg=f"d{n}"))).allowed
    assert [e.extension for e in events.seen if isinstance(e, Locked)] == ["1002"]


def test_a_blocks_allow_prefixes_win_over_its_lists_not_its_max_rate() -> None:
    """As in a profile: an origin's allow_prefixes except a number from that block's countries, types
    and deny_prefixes, never from its max_rate (and never from the profile's own rules)."""
    block = Destinations(
        allow_countries=frozenset({"US"}), allow_prefixes=("44207",), max_rate=Decimal("0.01")
    )
    policy = dataclasses.replace(POLICY, origins={Origin.FORWARD: block})
    d = decide(policy, Origin.FORWARD, "1001", GB)  # 0.02/min
    assert (d.reason, d.rules[RULES.index("origin")].detail) == (
        Reason.FORWARD_NOT_ALLOWED,
        "forward: 0.02/min is above origins.forward.max_rate",
    )
    cheap = dataclasses.replace(block, max_rate=None)
    d = decide(
        dataclasses.replace(POLICY, origins={Origin.FORWARD: cheap}), Origin.FORWARD, "1001", GB
    )
    assert d.allowed
    assert "forward: +44207 is in origins.forward.allow_prefixes" in [r.detail for r in d.rules]
