"""The Redis key layout has one home (callgate/core/keys.py): every key it builds parses back, the periods and
windows are the policy's, and the layout table in docs/design.md is its LAYOUT."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.crc import key_slot

from callgate.core import keys
from callgate.core.keys import Key
from callgate.core.policy import Limits, Spend
from callgate.core.policyfile import load_policy
from callgate.errors import PolicyError

SITE = "acme-nyc"
P = keys.site_prefix(SITE)
NY = ZoneInfo("America/New_York")
DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"


SHAPES = [
    (keys.spend_key("ext:1001", "2026-11-17T10"), Key(keys.SPEND, "ext:1001", "2026-11-17T10")),
    (keys.spend_key("site", "2026-11"), Key(keys.SPEND, "site", "2026-11")),
    (keys.window_key("prof:office", "cpm"), Key(keys.WINDOW, "prof:office", "cpm")),
    (keys.window_key("ext:n", "iph"), Key(keys.WINDOW, "ext:n", "iph")),  # extension "n"
    (keys.same_number_key("ext:1001", "+1212"), Key(keys.SAME_NUMBER, "ext:1001", "+1212")),
    (keys.same_number_key("ext:n", "+1212"), Key(keys.SAME_NUMBER, "ext:n", "+1212")),
    (keys.distinct_key("site"), Key(keys.DISTINCT, "site")),
    (keys.slots_key("ext:1001"), Key(keys.SLOTS, "ext:1001")),
    (keys.reservation_key("L1:ab12"), Key(keys.RESERVATION, "", "L1:ab12")),
    (keys.settled_key("L1:ab12"), Key(keys.SETTLED, "", "L1:ab12")),
    (keys.burst_key("1001", "denied"), Key(keys.BURST, "ext:1001", "denied")),
    (keys.lock_key("1001"), Key(keys.LOCK, "ext:1001", "1001")),
    (keys.PANIC, Key(keys.PANIC)),
    (keys.AUDIT, Key(keys.AUDIT)),
    (keys.COUNTRIES, Key(keys.COUNTRIES)),
    (keys.policy_key("active"), Key(keys.POLICY, "", "active")),
]


@pytest.mark.parametrize(("key", "shape"), SHAPES)
def test_every_key_parses_back(key: str, shape: Key) -> None:
    """What a builder spells, parse reads back: its kind, scope and last part."""
    assert keys.parse(SITE, P + key) == shape


@pytest.mark.parametrize(
    "key",
    [
        keys.site_prefix("other") + keys.PANIC,  # another site
        "cg:acme-nyc:panic",  # no hash tag
        P + "live",  # a shape no callgate writes any more
        P + "live:L1",
        P + "w:ext:1001:cpx",  # no such window
        P + "w:team:1001:cpm",  # no such scope
        P + "s:ext:1001:",  # no bucket
        P + "c:nobody",
        P + "x:ext:1001:other",
        P + "policy:other",
        P + "r:",
    ],
)
def test_unknown_shapes_are_none(key: str) -> None:
    """A key of another site or of a shape not in the layout parses as None (status leaves it out)."""
    assert keys.parse(SITE, key) is None


@pytest.mark.parametrize(
    ("local", "buckets", "ttls"),
    [
        (
            datetime(2026, 11, 17, 10, 0, tzinfo=NY),
            ("2026-11-17T10", "2026-11-17", "2026-11"),
            (3600 + 86400, 14 * 3600 + 2 * 86400, 14 * 86400 - 10 * 3600 + 7 * 86400),
        ),
        (
            datetime(2028, 2, 29, 23, 59, 59, 1, tzinfo=NY),  # leap day, last started second
            ("2028-02-29T23", "2028-02-29", "2028-02"),
            (86400, 2 * 86400, 7 * 86400),
        ),
    ],
)
def test_spend_periods(local: datetime, buckets: tuple[str, ...], ttls: tuple[int, ...]) -> None:
    """Each period's bucket is named by the local time, and its key lives to the period's end plus a
    margin (a started second counts as gone)."""
    periods = keys.spend_periods(local)
    assert tuple(periods) == keys.PERIODS
    assert tuple(name for name, _ in periods.values()) == buckets
    assert tuple(ttl for _, ttl in periods.values()) == ttls


def test_periods_and_windows_are_the_policys() -> None:
    """The spend periods are the fields of a policy's spend caps, the windows count policy limits."""
    assert tuple(f.name for f in fields(Spend)) == keys.PERIODS
    limits = {f.name for f in fields(Limits)}
    assert {w.limit for w in keys.WINDOWS} <= limits
    assert [w.name for w in keys.WINDOWS] == list(keys.WINDOW_BY_NAME)


def test_the_design_doc_shows_the_layout() -> None:
    """docs/design.md's key table is keys.LAYOUT, row for row."""
    lines = DESIGN.read_text(encoding="utf-8").splitlines()
    start = lines.index("  | key | type | what | TTL |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("  | "):
            break
        rows.append(tuple(cell.strip() for cell in line.strip().strip("|").split(" | ")))
    assert rows == list(keys.LAYOUT)


# --- a provider's tenants: P/T -------------------------------------------------------------------

TENANT_POLICY = """
version: 1
site: {{name: {name}, region: US, timezone: America/New_York, currency: USD}}
emergency: ["911"]
rates: {{default: "0.10"}}
profiles: {{p: {{}}}}
extensions: [{{match: "1*", profile: p}}]
"""


@pytest.mark.parametrize(
    ("site", "prefix"),
    [
        ("acme-nyc", "cg:{acme-nyc}:"),  # a site of its own: as it always was
        ("hosted", "cg:{hosted}:"),  # a provider is a site like any other
        ("hosted/acme", "cg:{hosted}/acme:"),  # its tenant: the provider's hash tag
        ("h.1/a_b-c.2", "cg:{h.1}/a_b-c.2:"),
    ],
)
def test_a_tenant_shares_its_providers_hash_tag(site: str, prefix: str) -> None:
    """A tenant P/T's keys start cg:{P}/T:, so they hash with P's (one Redis Cluster slot), and
    site_of reads the site back from any of its keys."""
    assert keys.site_prefix(site) == prefix
    provider = site.partition("/")[0]
    assert key_slot(prefix.encode()) == key_slot(keys.site_prefix(provider).encode())
    assert keys.provider_of(site) == (provider if "/" in site else None)
    for key in (keys.PANIC, keys.spend_key("site", "2026-11"), keys.reservation_key("L1:ab")):
        assert keys.site_of(prefix + key) == site


@pytest.mark.parametrize(
    "key",
    ["cg:{}:panic", "cg:{P}/:panic", "cg:{P}x:panic", "cg:{P}/T", "cg:{P}", "cg:P:panic", "other"],
)
def test_keys_of_no_site(key: str) -> None:
    """A key that is no site's (nor a tenant's) has no site."""
    assert keys.site_of(key) is None


@pytest.mark.parametrize(("key", "shape"), SHAPES)
def test_every_tenant_key_parses_back(key: str, shape: Key) -> None:
    """A tenant's keys parse back under its name, and under neither its provider's nor a sibling's:
    their status and locks never mix."""
    tenant = "hosted/acme"
    assert keys.parse(tenant, keys.site_prefix(tenant) + key) == shape
    assert keys.parse("hosted", keys.site_prefix(tenant) + key) is None
    assert keys.parse("hosted/other", keys.site_prefix(tenant) + key) is None
    assert keys.parse(tenant, keys.site_prefix("hosted") + key) is None


@pytest.mark.parametrize(
    "name", ["acme-nyc", "hosted/acme", "h.1/a_b-c.2", f"{'p' * 64}/{'t' * 64}"]
)
def test_the_policy_takes_a_tenant_name(name: str) -> None:
    """site.name may be a provider's tenant, P/T."""
    assert load_policy(TENANT_POLICY.format(name=name), "t.yaml").site.name == name


@pytest.mark.parametrize(
    "name", ["hosted/acme/x", "/acme", "hosted/", "hosted//acme", "hosted/-acme", f"h/{'t' * 65}"]
)
def test_the_policy_refuses_other_slashes(name: str) -> None:
    """Any other '/' in site.name is refused, by file, line and key."""
    with pytest.raises(PolicyError) as caught:
        load_policy(TENANT_POLICY.format(name=f'"{name}"'), "t.yaml")
    (problem,) = caught.value.problems
    assert (problem.source, problem.line, problem.path) == ("t.yaml", 3, "site.name")
    assert "PROVIDER/TENANT" in problem.message
