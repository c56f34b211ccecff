"""The report's charts, as inline SVG written here: no script, no library, nothing fetched.

Every string placed in a chart goes through :func:`html.escape` (a CDR's fields are hostile); numbers
are formatted here. The charts scale with the page (a ``viewBox``, CSS width 100%).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from html import escape
from typing import NamedTuple

from callgate.core.admission import from_micro


class Size(NamedTuple):
    """A chart's drawing box (its ``viewBox``), the room kept for the axes' labels, their size and
    how many dates the bottom axis shows."""

    width: int
    height: int
    left: int
    font: int
    dates: int
    right: int = 12
    top: int = 14


# the page holds both and shows one by its width (CSS): text in an SVG scales with it, so one chart
# drawn for a desktop has unreadable labels on a phone
WIDE = Size(720, 280, 84, 14, 6)
NARROW = Size(360, 260, 70, 12, 3)


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 3, 4, 5, 6 or 8 times a power of ten (and at least 1, so even) that is at least
    ``value``: the chart's top, whose half is a round amount too."""
    step = 1
    while True:
        for m in (1, 2, 3, 4, 5, 6, 8):
            if m * step >= value:
                return max(m * step, 2)
        step *= 10


def spend_chart(
    series: Sequence[tuple[int, int, int]],
    tz: tzinfo,
    label: Callable[[Decimal], str],
    width_ms: int,
    size: Size = WIDE,
) -> str:
    """Spend per bucket as the CDR has it (a filled area) and under the policy (a line): ``series`` is
    (bucket start ms, cost, cost under the policy) in micro-units; ``label`` writes an amount."""
    if not series:
        return '<p class="note">No outbound calls.</p>'
    top = nice_ceiling(max(max(cost, kept) for _, cost, kept in series))
    width, height, left, font = size.width, size.height, size.left, size.font
    plot_w, plot_h = width - left - size.right, height - size.top - 2.5 * font
    n = len(series)

    def x(i: int) -> float:
        return left + plot_w * i / n

    def y(micro: int) -> float:
        return size.top + plot_h * (1 - micro / top)

    def steps(column: int) -> str:  # a step line: each bucket is flat over its own width
        points = []
        for i, row in enumerate(series):
            points += [f"{x(i):.1f},{y(row[column]):.1f}", f"{x(i + 1):.1f},{y(row[column]):.1f}"]
        return " ".join(points)

    base = f"{x(n):.1f},{y(0):.1f} {x(0):.1f},{y(0):.1f}"
    name = "wide" if size is WIDE else "narrow"
    parts = [
        f'<svg class="chart {name}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="spend-{name}"><title id="spend-{name}">'
        "Spend over time, without and with the policy</title>",
    ]
    for fraction in (0, 0.5, 1):  # the grid and the amounts on the left
        at = y(int(top * fraction))
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - size.right}" y1="{at:.1f}" y2="{at:.1f}"/>'
            f'<text x="{left - 6}" y="{at + font / 3:.1f}" font-size="{font}" text-anchor="end">'
            f"{escape(label(from_micro(int(top * fraction))))}</text>"
        )
    for i in _ticks(n, size.dates):  # dates along the bottom
        when = datetime.fromtimestamp(series[i][0] / 1000, tz)
        text = when.strftime("%b %d %H:%M" if width_ms < 24 * 3600 * 1000 else "%b %d %Y")
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - font / 2:.1f}" font-size="{font}">{escape(text)}</text>'
        )
    parts += [
        f'<polygon class="without" points="{steps(1)} {base}"/>',
        f'<polyline class="with" points="{steps(2)}"/>',
        "</svg>",
    ]
    return "".join(parts)


def _ticks(n: int, most: int) -> list[int]:
    """At most ``most`` evenly spaced bucket indexes, the first one included; none near the right end
    (its label would run off the chart)."""
    every = max(1, -(-n // most))
    return [i for i in range(0, n, every) if i == 0 or n - i > every // 2]


class Markup(str):
    """Markup written here, to be placed as it is; any other ``str`` is text, escaped where placed."""

    __slots__ = ()


def bar(value: int, most: int) -> Markup:
    """A bar of ``value`` against ``most``, as wide as its cell."""
    width = 100 * value / most if most > 0 else 0
    return Markup(
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect width="{width:.2f}" height="10"/></svg>'
    )
