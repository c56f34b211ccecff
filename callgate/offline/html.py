"""``replay --html FILE``: the replay's report as one self-contained HTML page.

One file, nothing fetched: the style is inline, the charts are SVG written by callgate/offline/svg.py, and
there is no script to run (a Content-Security-Policy of ``default-src 'none'`` says so to the browser).
Every string that comes from the CDR file (numbers, extensions, uniqueids), the policy or the file's name
is escaped with :func:`html.escape`. The page carries its totals as JSON (``<script
type="application/json" id="callgate-figures">``, never run), for tests and tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from html import escape

from callgate.core.admission import from_micro
from callgate.core.policy import Policy
from callgate.offline.report import money
from callgate.offline.summary import CALLS, COST, DENIED, KEPT, Summary, Top
from callgate.offline.svg import NARROW, WIDE, Markup, bar, spend_chart

STYLE = """
:root { color-scheme: light; --without: #c0392b; --with: #1f4e99; --line: #d5d8dc; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1c2833; background: #f4f6f7; overflow-wrap: anywhere; }
main { max-width: 64rem; margin: 0 auto; padding: 1rem; }
section, header { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem; margin: 0 0 1rem; }
h1 { font-size: 1.1rem; margin: 0; color: #566573; font-weight: 600; }
h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.headline { font-size: 2.4rem; font-weight: 700; margin: .2rem 0; color: var(--with); }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr)); gap: .5rem;
  margin: .8rem 0 0; }
.facts div { background: #f4f6f7; border-radius: 6px; padding: .4rem .6rem; }
.facts dt { font-size: .8rem; color: #566573; }
.facts dd { margin: 0; font-weight: 600; }
.note { color: #566573; font-size: .9rem; margin: .4rem 0; }
.legend span { display: inline-block; margin-right: 1rem; }
.legend i { display: inline-block; width: .9rem; height: .9rem; vertical-align: -2px;
  margin-right: .3rem; border-radius: 2px; }
.chart { width: 100%; height: auto; display: block; }
.chart .grid { stroke: var(--line); }
.chart text { fill: #566573; }
.narrow { display: none; }
.chart .without { fill: var(--without); fill-opacity: .35; stroke: var(--without); stroke-width: 1; }
.chart .with { fill: none; stroke: var(--with); stroke-width: 2.5; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
td, th { overflow-wrap: normal; }
th { white-space: nowrap; }
th { font-weight: 600; color: #566573; }
td.n, th.n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.w { min-width: 5rem; width: 25%; }
.bar { width: 100%; height: .8rem; display: block; }
.bar rect { fill: var(--without); }
code { overflow-wrap: anywhere; }
footer { color: #566573; font-size: .85rem; padding: 0 .2rem 1rem; }
@media (max-width: 600px) { main { padding: .5rem; } .headline { font-size: 1.9rem; }
  section, header { padding: .75rem; } .wide, .o { display: none; } .narrow { display: block; }
  table { font-size: .85rem; } th, td { padding: .25rem .3rem; } }
"""

TABLE = 10  # rows of the top extensions, countries and numbers
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def report_html(summary: Summary, policy: Policy, source: str) -> str:
    """The whole page for ``summary``, the replay of the file named ``source`` through ``policy``."""
    s, t = summary, summary.totals
    saved = _cash(s.currency)(t.cost - t.allowed_cost)
    figures = json.dumps(s.figures(), sort_keys=True)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):  # inert in <script>
        figures = figures.replace(char, code)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>callgate replay: {escape(saved)} saved</title>"
        f"<style>{STYLE}</style></head>\n<body><main>"
        + _head(s, policy, source) + _chart(s) + _denials(s) + _tops(s) + _lists(s)
        + f"<footer>Written by callgate replay of {escape(source)}. Money is in "
        f"{escape(s.currency)}, as the policy's rates price each call.</footer>"
        f'<script type="application/json" id="callgate-figures">{figures}</script>'
        "</main></body></html>\n"
    )  # fmt: skip


def _head(s: Summary, policy: Policy, source: str) -> str:
    """The headline (what the policy would have saved) and the facts of the replay."""
    t, cash = s.totals, _cash(s.currency)
    share = f" ({100 * (t.cost - t.allowed_cost) / t.cost:.1f}%)" if t.cost else ""
    period = f"{_when(s.first_ms, s)[:10]} to {_when(s.last_ms, s)[:10]}" if t.calls else "-"
    facts = [
        ("period", period),
        ("CDR rows", f"{t.rows:,}"),
        ("outbound calls", f"{t.calls:,}"),
        ("allowed", f"{t.allowed:,} ({t.cut:,} cut short)"),
        ("denied", f"{t.denied:,}"),
        ("cost in the CDR", cash(t.cost)),
        ("cost under the policy", cash(t.allowed_cost)),
        ("policy", f"{policy.source} sha256:{policy.digest[:12]}"),
    ]
    return (
        "<header><h1>callgate replay: what the policy would have saved</h1>"
        f'<p class="headline" data-micro="{t.cost - t.allowed_cost}">'
        f"{escape(cash(t.cost - t.allowed_cost))}</p><p>of the {escape(cash(t.cost))} that the calls of "
        f"<code>{escape(source)}</code> cost{share}; under the policy they would have cost "
        f'{escape(cash(t.allowed_cost))}.</p><dl class="facts">'
        + "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
        + "</dl></header>"
    )


def _chart(s: Summary) -> str:
    """Spend over time, drawn for a desktop and for a phone (CSS shows one), and its peak in words."""
    series, cur, width = s.timeline.series(), s.currency, s.timeline.width_ms

    def axis(amount: Decimal) -> str:
        whole = amount == amount.to_integral_value()
        return f"{amount:,.0f} {cur}" if whole else money(amount, cur)

    return (
        "<section><h2>Spend over time</h2>"
        '<p class="legend"><span><i style="background:var(--without);opacity:.6"></i>without the policy'
        '</span><span><i style="background:var(--with)"></i>with the policy</span></p>'
        + "".join(spend_chart(series, s.tz, axis, width, size) for size in (WIDE, NARROW))
        + f'<p class="note">{escape(_peak(series, s))}Each call is counted at its start, in buckets of '
        f"{_hours(width)} ({escape(str(s.tz))}).</p></section>"
    )


def _denials(s: Summary) -> str:
    """The denied calls by reason; by extension, reason and country; the legs no phone dialled."""
    t, cash, denials = s.totals, _cash(s.currency), s.denials()
    most = max((cost for _, (_, cost) in denials), default=0)
    html = _section(
        "Denied, by reason",
        f"{t.denied:,} calls denied, which cost {cash(sum(c for _, (_, c) in denials))} in the CDR.",
        ("reason", "calls", "", "cost in the CDR"),
        [(r, f"{calls:,}", bar(cost, most), cash(cost)) for r, (calls, cost) in denials],
        numeric=(1, 3),
        optional=(2,),
    )
    groups = s.groups.top(s.top)
    rest = t.denied - sum(v[CALLS] for _, v in groups)
    html += _section(
        "Denied, by extension, reason and country",
        f"The costliest {len(groups)} groups"
        + (f"; {rest:,} more calls in smaller ones." if rest > 0 else ".")
        + _pruned(s.groups.pruned, "groups"),
        ("extension", "reason", "country", "calls", "cost in the CDR"),
        [(ext, why, cc, f"{v[CALLS]:,}", cash(v[COST])) for (ext, why, cc), v in groups],
        numeric=(3, 4),
    )
    origins = sorted({origin for origin, _ in t.by_origin})
    if origins:
        html += _section(
            "Legs no phone dialled",
            "Forwards, transfers and other legs, charged to the extension that caused them.",
            ("origin", "allowed", "denied"),
            [(o, f"{t.by_origin[o, 'allow']:,}", f"{t.by_origin[o, 'deny']:,}") for o in origins],
            numeric=(1, 2),
        )
    return html


def _tops(s: Summary) -> str:
    """The top extensions, countries and numbers, by what they cost in the CDR."""
    cash, html = _cash(s.currency), ""
    for title, tally, what, note in (
        ("Top extensions", s.extensions, "extension", ""),
        ("Top destinations, by country", s.countries, "country",
         " Country - is a number of no country (satellite, international networks) or none at all."),
        ("Top destinations, by number", s.numbers, "number", ""),
    ):  # fmt: skip
        html += _section(
            title,
            "The costliest in the CDR first." + note + _pruned(tally.pruned, f"{what} keys"),
            (what, "calls", "denied", "cost in the CDR", "under the policy"),
            [
                (k, f"{v[CALLS]:,}", f"{v[DENIED]:,}", cash(v[COST]), cash(v[KEPT]))
                for k, v in tally.top(TABLE)
            ],
            numeric=(1, 2, 3, 4),
        )
    return html


def _lists(s: Summary) -> str:
    """The tuning list, then the calls cut short."""
    cash, tuning = _cash(s.currency), s.tuning.result()
    untracked = s.tuning.untracked
    return _calls_section(
        "Legitimate-looking calls it would have refused: the tuning list",
        f"{tuning.count:,} calls, which cost {cash(tuning.micro)} in the CDR: a phone's own calls, "
        "refused by a rule about where, when or how often, from an extension that never behaved like an "
        "attacked one in this file (never refused extension_locked, never "
        f"{s.burst.count} such refusals within {s.burst.within // 60} minutes)."
        + (f" {untracked:,} refusals of extensions past the first {s.tuning.cap:,} were not followed."
           if untracked else ""),
        tuning,
        s,
        "cost",
    ) + _calls_section(
        "Calls the policy would have cut short",
        f"{s.cut.count:,} allowed calls would have been cut short (max_call_duration, a spend cap), "
        f"saving {cash(s.cut.micro)}.",
        s.cut,
        s,
        "saved",
    )  # fmt: skip


def _cash(currency: str) -> Callable[[int], str]:
    def cash(micro: int) -> str:
        return money(from_micro(micro), currency, grouped=True)

    return cash


def _when(ms: int, s: Summary) -> str:
    return datetime.fromtimestamp(ms / 1000, s.tz).strftime("%Y-%m-%d %H:%M")


def _peak(series: list[tuple[int, int, int]], s: Summary) -> str:
    """The costliest bucket in words (the spike of an attack), or nothing."""
    if not series:
        return ""
    start, cost, kept = max(series, key=lambda b: (b[1], -b[0]))
    cash, width = _cash(s.currency), s.timeline.width_ms
    when = _when(start, s)[: 10 if width >= 24 * 3_600_000 else 16]  # a day's: its date
    return (
        f"The costliest {_hours(width)}: from {when}, {cash(cost)} without the policy, {cash(kept)} "
        "with it. "
    )


def _hours(width_ms: int) -> str:
    hours = width_ms // 3_600_000
    if hours % 24:
        return f"{hours} hour{'s' * (hours != 1)}"
    return f"{hours // 24} day{'s' * (hours != 24)}"


def _pruned(pruned: int, what: str) -> str:
    if not pruned:
        return ""
    return (
        f" The file has so many {what} that the smaller ones were dropped as it was read: the figures "
        "of one seen again after that are at least what they say."
    )


def _section(
    title: str,
    note: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    optional: Sequence[int] = (),
) -> str:
    """A titled table; every cell is text, escaped here, except a :class:`Markup` (a bar, ours). The
    ``optional`` columns are not shown on a phone."""
    kinds = [" ".join(["n"] * (i in numeric) + ["o"] * (i in optional)) for i in range(len(header))]
    attrs = [f' class="{kind}"' if kind else "" for kind in kinds]
    cells = [
        "".join(
            f'<td class="w {kinds[i]}">{cell}</td>'
            if isinstance(cell, Markup)
            else f"<td{attrs[i]}>{escape(cell).replace('_', '_<wbr>')}</td>"
            for i, cell in enumerate(row)
        )
        for row in rows
    ]
    head = "".join(f"<th{attrs[i]}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(f"<tr>{row}</tr>" for row in cells) or (
        f'<tr><td colspan="{len(header)}">none</td></tr>'
    )
    return (
        f"<section><h2>{escape(title)}</h2>"
        + (f'<p class="note">{escape(note)}</p>' if note else "")
        + f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        "</section>"
    )


def _calls_section(title: str, note: str, top: Top, s: Summary, weight: str) -> str:
    """A list of calls, what a phone shows first (extension, number, reason, money) on the left."""
    cash = _cash(s.currency)
    calls = top.calls()
    rows = [
        (
            r.extension or "?",
            r.dst,
            r.reason if r.verdict == "deny" else "cut short",
            cash(w),
            _when(r.start_ms, s),
            r.country or "-",
            r.origin,
            f"{r.billsec:,}",
            f"{r.allowed_seconds:,}",
            r.uniqueid,
        )
        for w, r in calls
    ]
    rest = top.count - len(calls)
    if rest > 0:
        note += f" The {len(calls)} largest are listed; {rest:,} more, {cash(top.micro - sum(w for w, _ in calls))}."
    return _section(
        title,
        note,
        (
            "ext",
            "dialled",
            "reason",
            weight,
            "start",
            "country",
            "origin",
            "billsec",
            "allowed s",
            "uniqueid",
        ),
        rows,
        numeric=(3, 7, 8),
        optional=(6, 7, 8, 9),
    )
