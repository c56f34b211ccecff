"""Text for people: ``explain`` and ``replay`` output. No decisions are made here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import TextIO

from callgate.core.admission import from_micro
from callgate.core.decision import Decision
from callgate.core.origins import Origin
from callgate.core.policy import Policy
from callgate.offline.replay import Replayed, Totals

_ORIGIN_ORDER = [origin.value for origin in Origin]
_MARK = {"pass": "ok   ", "deny": "DENY ", "skip": "-    ", "report": "WOULD"}


# A spend rule's detail as the engine writes it (exact, six decimals: the audit and --json keep it), and
# the words a person reads instead: "27.70 USD left today of 40.00 (12.30 committed)".
_SPENT = re.compile(r"(-?\d+\.\d{6}) of (\d+\.\d{6}) committed(.*)", re.DOTALL)
_PERIOD_WORDS = {"hour": "this hour", "day": "today", "month": "this month"}
_CENT = Decimal("0.01")


def money(amount: Decimal, currency: str = "") -> str:
    """Money as a person reads it: two decimals (more only where the amount has them), and the
    currency when given: ``12.30 USD``, ``0.001234 USD``."""
    text = f"{amount:.2f}" if amount == amount.quantize(_CENT) else f"{amount.normalize():f}"
    return f"{text} {currency}" if currency else text


def _in_words(rule: str, detail: str, currency: str) -> str:
    """A spend rule's detail in words; any other detail as it is."""
    period = rule.rpartition(".")[2]
    found = _SPENT.fullmatch(detail)
    if found is None or period not in _PERIOD_WORDS:
        return detail
    used, cap, rest = Decimal(found[1]), Decimal(found[2]), found[3]
    left = max(cap - used, Decimal(0))
    return (
        f"{money(left, currency)} left {_PERIOD_WORDS[period]} of {money(cap)}"
        f" ({money(used)} committed){rest}"
    )


def explain_text(decision: Decision, policy: Policy) -> str:
    d, n = decision, decision.number
    where = n.country or ("non-geographic" if n.e164 else "-")
    lines = [
        f"{d.verdict.value} {d.reason.value}" + (f"  (rule {d.rule})" if d.rule else ""),
        f"  call      {d.extension} -> {n.dialled!r} = {n.e164 or 'unreadable'} ({where}"
        + (", international)" if n.international else ")"),
        f"  origin    {d.origin.value}"
        + (f" via {d.via}" if d.via else "")
        + ("" if d.origin is Origin.DIALLED else f" (caused by {d.extension or '-'})"),
        f"  at        {d.at.astimezone(policy.site.timezone).isoformat()} ({policy.site.timezone.key})",
        f"  profile   {d.profile or '-'}",
        f"  rate      {money(d.rate) if d.rate is not None else '-'} {policy.site.currency}/min",
        f"  allowed   {d.allowed_seconds}s, reserving {money(d.reserved, policy.site.currency)}",
        f"  policy    {policy.source} sha256:{policy.digest[:12]}",
        "  rules (in order; the first DENY decides):",
    ]
    width = max((len(r.rule) for r in d.rules), default=0)
    currency = policy.site.currency
    lines += [
        f"    {_MARK[r.outcome]} {r.rule:<{width}}  {_in_words(r.rule, r.detail, currency)}"
        for r in d.rules
    ]
    return "\n".join(lines)


def explain_json(decision: Decision) -> str:
    d = decision
    return json.dumps(
        {
            "verdict": d.verdict.value,
            "reason": d.reason.value,
            "rule": d.rule,
            "call_id": d.call_id,
            "extension": d.extension,
            "origin": d.origin.value,
            "via": d.via,
            "profile": d.profile,
            "dialled": d.number.dialled,
            "number": d.number.e164,
            "country": d.number.country,
            "international": d.number.international,
            "at": d.at.isoformat(),
            "allowed_seconds": d.allowed_seconds,
            "rate": None if d.rate is None else str(d.rate),
            "reserved": str(d.reserved),
            "variables": d.variables(),
            "policy": d.policy_digest,
            "rules": [{"rule": r.rule, "outcome": r.outcome, "detail": r.detail} for r in d.rules],
        },
        indent=2,
    )


def replay_table(rows: Iterable[Replayed], out: TextIO, *, every: bool, currency: str) -> Totals:
    """Write one line per denied or cut call (every call with ``every``); return the totals.

    ``ext`` is the extension the leg is charged to (``?`` when the CDR cannot tell), ``origin`` who
    caused it (dialled: the phone itself)."""
    totals = Totals()
    header = f"{'uniqueid':<18} {'ext':<6} {'origin':<9} {'dst':<16} {'country':<7} {'verdict':<5} {'reason':<28} {'billsec':>7} {'allowed':>7} {'cost':>9} {'kept':>9}"
    out.write(header + "\n")
    for r in rows:
        totals.add(r)
        if r.verdict == "skip" or not (
            every or r.verdict == "deny" or r.allowed_seconds < r.billsec
        ):
            continue
        out.write(
            f"{r.uniqueid:<18} {r.extension or '?':<6} {r.origin:<9} {r.dst:<16} {r.country or '-':<7} {r.verdict:<5} {r.reason:<28} "
            f"{r.billsec:>7} {r.allowed_seconds:>7} {r.cost:>9.2f} {r.allowed_cost:>9.2f}\n"
        )
    out.write(totals_text(totals, currency) + "\n")
    return totals


def totals_text(t: Totals, currency: str) -> str:
    cost, kept = from_micro(t.cost), from_micro(t.allowed_cost)
    lines = [
        "",
        f"rows {t.rows}, outbound calls {t.calls}: allowed {t.allowed} ({t.cut} cut short), denied {t.denied}",
    ]
    lines += [f"  denied {reason:<32} {count:>7}" for reason, count in t.by_reason.most_common()]
    lines += [
        f"  would deny (mode: report) {reason:<13} {count:>7}"
        for reason, count in t.by_report.most_common()
    ]
    origins = sorted({origin for origin, _ in t.by_origin}, key=_ORIGIN_ORDER.index)
    lines += [
        f"  of which {origin} legs {t.by_origin[origin, 'allow'] + t.by_origin[origin, 'deny']}:"
        f" allowed {t.by_origin[origin, 'allow']}, denied {t.by_origin[origin, 'deny']}"
        for origin in origins
    ]
    if t.unattributed:
        lines.append(
            f"  {t.unattributed} legs no phone dialled have no extension in the CDR (ext ?, refused"
            " unknown_extension): name it with --via DID=EXT or --via TRUNK=EXT"
        )
    lines += [
        f"cost in the CDR      {cost:>12,.2f} {currency}",
        f"cost under policy    {kept:>12,.2f} {currency}",
        f"the policy saves     {t.saved:>12,.2f} {currency}",
    ]
    return "\n".join(lines)
