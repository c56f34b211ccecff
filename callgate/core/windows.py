"""The small grammars inside a policy: weekly time windows, durations and dates.

A window is one or more spans separated by ``,``; a span is days then times::

    mon-fri 08:00-18:00, sat 09:00-13:00

Days are ``mon`` .. ``sun`` or a range of them (``fri-mon`` wraps over the weekend). Times are ``HH:MM``
from ``00:00`` to ``24:00`` (``24:00`` only as an end); the end must be after the start, so a window
that crosses midnight is written as two spans. A duration is a whole number with an optional unit:
``15s``, ``10m``, ``1h``, ``1d``, or plain seconds (``90``). A date is ISO ``YYYY-MM-DD`` (holidays, a
range list's ``expires``).

Every parser raises :class:`ValueError` with a message that says what was expected.
"""

from __future__ import annotations

import re
from datetime import date

from callgate.core.policy import WEEKDAYS, Span, Window

_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})", re.ASCII)
_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)", re.ASCII)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_EXAMPLE = "such as 'mon-fri 08:00-18:00'"
_MIDNIGHT = (
    "split a window that crosses midnight into two spans, "
    "e.g. 'mon-fri 22:00-24:00, tue-sat 00:00-06:00'"
)


def _day(name: str) -> int:
    try:
        return WEEKDAYS.index(name.lower())
    except ValueError:
        raise ValueError(
            f"unknown day {name!r}; expected one of {', '.join(WEEKDAYS)} or a range such as mon-fri"
        ) from None


def _days(text: str) -> frozenset[int]:
    first, sep, last = text.partition("-")
    start = _day(first)
    if not sep:
        return frozenset({start})
    end = _day(last)
    return frozenset((start + n) % 7 for n in range((end - start) % 7 + 1))


def _minute(text: str, *, end: bool) -> int:
    found = _TIME.fullmatch(text)
    if not found:
        raise ValueError(f"{text!r} is not a time; expected HH:MM such as 08:00")
    hour, minute = int(found[1]), int(found[2])
    if minute > 59:
        raise ValueError(f"{text!r}: minutes must be 00 to 59")
    if hour == 24 and minute == 0:
        if not end:
            raise ValueError(f"{text!r}: 24:00 can only end a span; start at 00:00")
        return 1440
    if hour > 23:
        raise ValueError(f"{text!r}: hours must be 00 to 23 (or 24:00 as an end)")
    return hour * 60 + minute


def parse_span(text: str) -> Span:
    """One span such as ``mon-fri 08:00-18:00``."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a span; expected days then times, {_EXAMPLE}")
    days, times = parts
    first, sep, last = times.partition("-")
    if not sep:
        raise ValueError(f"{times!r} is not a time range; expected HH:MM-HH:MM such as 08:00-18:00")
    start, end = _minute(first, end=False), _minute(last, end=True)
    if end <= start:
        raise ValueError(f"{times!r}: end must be after start; {_MIDNIGHT}")
    return Span(_days(days), start, end)


def parse_window(text: str) -> Window:
    """A window: spans separated by ``,`` (``mon-fri 08:00-18:00, sat 09:00-13:00``)."""
    pieces = [piece.strip() for piece in text.split(",")]
    if not any(pieces):
        raise ValueError(f"expected a time window {_EXAMPLE}")
    return Window(", ".join(pieces), tuple(parse_span(piece) for piece in pieces))


def parse_duration(text: str) -> int:
    """Seconds in ``15s``, ``10m``, ``1h``, ``1d`` or ``90`` (plain seconds)."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise ValueError(
            f"{text!r} is not a duration; expected a whole number with an optional unit "
            "s, m, h or d, such as 15s, 10m, 1h, 1d or 90"
        )
    return int(found[1]) * _UNITS[found[2]]


def parse_date(text: str) -> date:
    """An ISO date, ``YYYY-MM-DD`` and nothing else (``date.fromisoformat`` alone takes ``20261225``)."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date; expected YYYY-MM-DD such as 2026-12-25")
    return date.fromisoformat(text)


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: ``10m``, ``2h``, ``1d``, ``90s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
