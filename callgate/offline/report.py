"""Text for people: ``explain`` and ``replay`` output. No decisions are made here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from shutil import copyfileobj
from tempfile import SpooledTemporaryFile
from typing import TextIO

from callgate.core.admission import from_micro
from callgate.core.decision import Decision
from callgate.core.origins import Origin
from callgate.core.policy import Policy
from callgate.offline.replay import Replayed
from callgate.offline.summary import CALLS, COST, Summary

_ORIGIN_ORDER = [origin.value for origin in Origin]
_MARK = {"pass": "ok   ", "deny": "DENY ", "skip": "-    ", "report": "WOULD"}


# A spend rule's detail as the engine writes it (exact, six decimals: the audit and --json keep it), and
# the words a person reads instead: "27.70 USD left today of 40.00 (12.30 committed)".
_SPENT = re.compile(r"(-?\d+\.\d{6}) of (\d+\.\d{6}) committed(.*)", re.DOTALL)
_PERIOD_WORDS = {"hour": "this hour", "day": "today", "month": "this month"}
_CENT = Decimal("0.01")


# A CDR's strings on a terminal: control characters (an escape sequence can rewrite the screen or the
# window's title) and the bidirectional overrides (which can reorder what a line shows) as \xNN, \uNNNN.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))} | {
    c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def plain(text: str) -> str:
    """``text`` (from a CDR file) safe to print on a terminal."""
    return text.translate(_UNPRINTABLE) if not text.isprintable() else text


def money(amount: Decimal, currency: str = "", *, grouped: bool = False) -> str:
    """Money as a person reads it: two decimals (more only where the amount has them), and the
    currency when given: ``12.30 USD``, ``0.001234 USD``; ``grouped``: thousands apart, for totals
    (``35,112.10 USD``)."""
    comma = "," if grouped else ""
    exact = amount == amount.quantize(_CENT)
    text = f"{amount:{comma}.2f}" if exact else f"{amount.normalize():{comma}f}"
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


def header(currency: str) -> str:
    """The heading of the per-call lines (--calls, --all): the money columns name their currency."""
    return (
        f"{'uniqueid':<18} {'ext':<6} {'origin':<9} {'dst':<16} {'country':<7} {'verdict':<5} "
        f"{'reason':<28} {'billsec':>7} {'allowed':>7} {'cost ' + currency:>10} {'kept ' + currency:>10}"
    )


def replay_table(
    rows: Iterable[Replayed],
    out: TextIO,
    summary: Summary,
    *,
    calls: bool,
    every: bool,
    source: str,
) -> Summary:
    """Add every row to ``summary``, then write the summary (:func:`summary_text`); with ``calls``,
    then one line per denied or cut call (every call with ``every``), kept meanwhile in a temporary
    file (memory stays bounded).

    ``ext`` is the extension the leg is charged to (``?`` when the CDR cannot tell), ``origin`` who
    caused it (dialled: the phone itself); ``cost`` and ``kept`` are in the policy's currency."""
    add = summary.add
    if not (calls or every):
        for r in rows:
            add(r)
        out.write(summary_text(summary, source) + "\n")
        return summary
    with SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8") as listed:
        write = listed.write
        for r in rows:
            add(r)
            if r.verdict == "skip" or not (
                every or r.verdict == "deny" or r.allowed_seconds < r.billsec
            ):
                continue
            write(
                f"{plain(r.uniqueid):<18} {plain(r.extension or '?'):<6} {r.origin:<9} {plain(r.dst):<16} {r.country or '-':<7} {r.verdict:<5} {r.reason:<28} "
                f"{r.billsec:>7} {r.allowed_seconds:>7} {money(r.cost):>10} {money(r.allowed_cost):>10}\n"
            )
        out.write(f"{summary_text(summary, source)}\n\n{header(summary.currency)}\n")
        listed.seek(0)
        copyfileobj(listed, out)
    return summary


def summary_text(s: Summary, source: str) -> str:
    """What the replay found, for a person: what the policy would have saved, then the denied calls
    grouped (by reason; by extension, reason and country), the tuning list and the calls cut short."""
    t, currency = s.totals, s.currency

    def cash(micro: int) -> str:
        return money(from_micro(micro), currency, grouped=True)

    saved = t.cost - t.allowed_cost
    share = f" ({100 * saved / t.cost:.1f}%)" if t.cost else ""
    when = (
        f"{_at(s.first_ms, s)} to {_at(s.last_ms, s)} ({s.tz})" if t.calls else "no outbound calls"
    )
    lines = [
        f"replay of {source}: {when}",
        f"the policy would have saved {cash(saved)} of the {cash(t.cost)} the calls cost{share};"
        f" under the policy they cost {cash(t.allowed_cost)}",
        "",
        f"rows {t.rows}, outbound calls {t.calls}: allowed {t.allowed} ({t.cut} cut short), denied {t.denied}",
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
    denials = s.denials()
    if denials:
        lines += ["", f"{'denied, by reason':<34} {'calls':>7} {'cost in the CDR':>18}"]
        lines += [f"  {r:<32} {n:>7} {cash(c):>18}" for r, (n, c) in denials]
    if t.by_report:
        lines += ["", "would deny (rules in mode: report)"]
        lines += [f"  {r:<32} {n:>7}" for r, n in t.by_report.most_common()]
    groups = s.groups.top(s.top)
    if groups:
        lines += [
            "",
            f"denied, by extension, reason and country (the costliest {len(groups)} groups)",
        ]
        lines += [
            f"  {plain(ext):<8} {reason:<30} {country:<7} {v[CALLS]:>7} {cash(v[COST]):>18}"
            for (ext, reason, country), v in groups
        ]
        rest = len(s.groups.rows) - len(groups)
        if rest > 0:
            calls = t.denied - sum(v[CALLS] for _, v in groups)
            lines.append(f"  and {rest} more groups, {calls} calls")
    tuning = s.tuning.result()
    lines += [
        "",
        f"the tuning list: {tuning.count} denied calls look legitimate ({cash(tuning.micro)}): a phone's"
        " own calls, refused for where, when or how often, from extensions never locked nor refused"
        f" {s.burst.count} times within {s.burst.within // 60} minutes",
    ]
    lines += [_call(w, r, s) for w, r in tuning.calls()]
    lines += ["", f"cut short: {s.cut.count} allowed calls, saving {cash(s.cut.micro)}"]
    lines += [_call(w, r, s) for w, r in s.cut.calls()[:5]]
    lines += [
        "",
        "each call: --calls (denied and cut short), --all (every call), --format jsonl;"
        " a report to look at: --html FILE",
    ]
    return "\n".join(lines)


def _at(ms: int, s: Summary) -> str:
    return datetime.fromtimestamp(ms / 1000, s.tz).strftime("%Y-%m-%d %H:%M")


def _call(weight: int, r: Replayed, s: Summary) -> str:
    why = r.reason if r.verdict == "deny" else f"{r.billsec}s cut to {r.allowed_seconds}s"
    return (
        f"  {_at(r.start_ms, s)}  {plain(r.extension or '?'):<6} -> {plain(r.dst)} ({r.country or '-'})  {why}"
        f"  {money(from_micro(weight), s.currency, grouped=True)}"
    )
