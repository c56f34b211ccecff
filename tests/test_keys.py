"""The Redis key layout has one home (callgate/core/keys.py): every key it builds parses back, the periods and
windows are the policy's, and the layout table in docs/design.md is its LAYOUT."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callgate.core import keys
from callgate.core.keys import Key
from callgate.core.policy import Limits, Spend

SITE = "acme-nyc"
P = keys.site_prefix(SITE)
NY = ZoneInfo("America/New_York")
DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"


@pytest.mark.parametrize(
    ("key", "shape"),
    [
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
    ],
)
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
