"""``callgate status`` as text: :func:`render_text` for people, :func:`as_json` for scripts; for every
site at once (``--all``), :func:`render_all` and :func:`all_json`.

Both take the :class:`~callgate.ops.statustree.Status` that :func:`~callgate.ops.status.read_status`
read, and print nothing. Money is shown exact, with at least two decimals (:func:`money`); the JSON
carries it both as that text and in micro-units.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from callgate.core.admission import money_text
from callgate.ops.status import MAX_KEYS
from callgate.ops.statusall import AllSites
from callgate.ops.statustree import Status


def money(micro: int) -> str:
    """Exact amount with at least two decimals: 12500000 -> 12.50, 1234 -> 0.001234."""
    return money_text(micro, short=True)


def _links_text(health: dict[str, Any]) -> str:
    links = health.get("links")
    parts = [f"{k} {v}" for k, v in links.items()] if isinstance(links, dict) else []
    more = [f"policy version {health['policy_version']}"] if "policy_version" in health else []
    if isinstance(health.get("uptime_s"), int | float):
        more.append(
            f"up {int(health['uptime_s']) // 3600}h{int(health['uptime_s']) % 3600 // 60:02d}m"
        )
    return f"{health.get('status', '?')}: {', '.join(parts) or 'no links'}" + (
        f" ({', '.join(more)})" if more else ""
    )


_PANIC = "ON: every international call is refused (`callgate calm` ends it)"
_SPEND_HEAD, _SPEND_W = ("scope", "period", "bucket", "spent", "cap", "used"), (
    "<6", "<13", ">12", ">12", ">7",
)  # fmt: skip
_COUNT_HEAD, _COUNT_W = ("scope", "/minute", "/hour", "intl/hour", "concurrent"), (
    ">8", ">8", ">10", ">11",
)  # fmt: skip


def _row(cells: tuple[str, ...], widths: tuple[str, ...]) -> str:
    first, *rest = cells
    return f"  {first:<16} " + " ".join(f"{c:{w}}" for c, w in zip(rest, widths, strict=True))


def render_text(s: Status) -> str:
    a = s.active
    lines = [f"site       {s.site} at {s.at.isoformat(timespec='seconds')}"]
    if a is None:
        lines.append("policy     no version active in Redis (file mode)")
    else:
        lines.append(f"policy     version {a.version} sha256:{a.digest[:12]}, pushed by "
                     f"{a.pushed_by} at {a.pushed_at}")  # fmt: skip
    if a is None or a.digest != s.caps_digest:
        lines.append(f"caps from  {s.caps_from} sha256:{s.caps_digest[:12]}")
    lines.append(f"panic      {_PANIC if s.panic else 'off'}")
    lines.append("locks      " + (", ".join(f"{e} ({scope})" for e, scope in s.locks) or "none"))
    if s.health is not None:
        lines.append(f"gate       {_links_text(s.health)}")
    lines.append(f"in flight  {s.reservations} admitted calls not yet settled, "
                 f"{money(s.reserved)} {s.currency} reserved")  # fmt: skip
    if s.live_calls:
        lines.append(f"live calls {s.live_calls}")
    for c in s.live:
        where = "international" if c.international else "domestic"
        if c.origin and c.origin != "dialled":  # a leg that no phone dialled says what caused it
            where += f", {c.origin}"
        on = f" on {c.instance}" if c.instance else ""
        lines.append(f"  {c.extension} -> {c.number} ({where}) since {c.admitted_at}, at most "
                     f"{c.allowed_seconds}s, channel {c.channel}{on}")  # fmt: skip
    if s.live_calls > len(s.live):
        lines.append(f"  ... and {s.live_calls - len(s.live)} more")
    lines.append(f"spend      settled + reserved, {s.currency}, against the caps")
    lines += (
        [_row(_SPEND_HEAD, _SPEND_W)]
        if s.spend
        else ["  no cap, nothing spent this hour, day or month"]
    )
    for x in s.spend:
        cap = money(x.cap) if x.cap is not None else "-"
        used = f"{x.percent}%" if x.percent is not None else ""
        row = _row((x.scope, x.period, x.bucket, money(x.spent), cap, used), _SPEND_W)
        lines.append(row + (" (mode: report)" if x.report else ""))
    lines.append("counters   calls in the last minute and hour, international in the hour, now")
    lines += (
        [_row(_COUNT_HEAD, _COUNT_W)] if s.counters else ["  no call in the last hour, none up now"]
    )
    for line in s.counters:
        cells = (
            f"{c.value}/{c.limit}" if c.limit is not None else str(c.value) for c in line.counts
        )
        lines.append(_row((line.scope, *cells), _COUNT_W))
    if s.truncated:
        lines.append(f"(more than {MAX_KEYS} keys: some extensions are not shown)")
    return "\n".join(lines)


def as_json(s: Status) -> str:
    """The status as one JSON object: money both exact (text) and in micro-units."""
    spend = [
        {"scope": x.scope, "period": x.period, "bucket": x.bucket, "spent": money(x.spent),
         "spent_micro": x.spent, "cap": None if x.cap is None else money(x.cap), "cap_micro": x.cap,
         "percent": None if x.percent is None else float(x.percent), "report": x.report}
        for x in s.spend
    ]  # fmt: skip
    counters = [
        {"scope": c.scope, **{n.name: {"value": n.value, "limit": n.limit} for n in c.counts}}
        for c in s.counters
    ]
    active = None if s.active is None else asdict(s.active)
    data = {
        "site": s.site, "at": s.at.isoformat(), "currency": s.currency,
        "policy": {"active": active, "caps_from": s.caps_from, "caps_digest": s.caps_digest},
        "panic": s.panic, "locks": dict(s.locks),
        "reservations": {"count": s.reservations, "reserved": money(s.reserved),
                         "reserved_micro": s.reserved},
        "live_calls": {"count": s.live_calls, "calls": [asdict(c) for c in s.live]},
        "spend": spend, "counters": counters, "truncated": s.truncated, "health": s.health,
    }  # fmt: skip
    return json.dumps(data, indent=2)


def render_all(a: AllSites) -> str:
    """``status --all``: one line per site, riskiest first (callgate.ops.statusall)."""
    head = f"{'site':<24} {'closest cap':<44} {'live':>5} {'locks':>5}  {'panic':<5}  policy"
    lines = [head]
    for r in a.sites:
        s, worst = r.status, r.worst
        if s is None:
            lines.append(f"{r.site:<24} {r.problem}")
            continue
        if worst is not None and worst.cap is not None:
            cap = (
                f"{worst.scope} {worst.period} {money(worst.spent)} of {money(worst.cap)} "
                f"{s.currency} ({worst.percent}%)"
            )
        else:
            cap = "no spend cap"
        version = f"v{s.policy_version}" if s.policy_version is not None else "-"
        panic = "ON" if s.panic else "-"
        lines.append(
            f"{r.site:<24} {cap:<44} {s.live_calls:>5} {len(s.locks):>5}  {panic:<5}  {version}"
        )
    lines.append(f"{len(a.sites)} sites, {a.keys} keys read in one pass")
    if a.truncated:
        lines.append("(the pass stopped at its key limit: some sites may be missing or partial)")
    return "\n".join(lines)


def all_json(a: AllSites) -> str:
    """``status --all --json``: the sites riskiest first, money exact (text) and in micro-units."""
    rows: list[dict[str, Any]] = []
    for r in a.sites:
        s, worst = r.status, r.worst
        row: dict[str, Any] = {"site": r.site, "problem": r.problem or None}
        if s is not None:
            row |= {
                "currency": s.currency,
                "panic": s.panic,
                "locks": len(s.locks),
                "live_calls": s.live_calls,
                "policy_version": s.policy_version,
                "closest_cap": None
                if worst is None or worst.cap is None
                else {
                    "scope": worst.scope,
                    "period": worst.period,
                    "spent": money(worst.spent),
                    "cap": money(worst.cap),
                    "percent": float(worst.percent) if worst.percent is not None else None,
                },
            }
        rows.append(row)
    return json.dumps({"sites": rows, "keys": a.keys, "truncated": a.truncated}, indent=2)
