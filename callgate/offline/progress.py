"""How far a long replay has got, on a terminal: one line on stderr, rewritten in place, then erased.

The caller decides whether there is a terminal (``replay`` shows it only when stderr is one, so a log
or a pipe never gets it). The clock is read once every :data:`CHECK` rows and the line rewritten at
most every ``every`` seconds, so the cost per row is a counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

CHECK = 1024  # rows between two looks at the clock
_T = TypeVar("_T")


class Progress:
    """``wrap(rows)`` yields ``rows`` and, now and then, writes how far ``position()`` (bytes read) is
    into ``size`` (0: unknown, as of a pipe) to ``out``."""

    def __init__(
        self,
        out: TextIO,
        size: int,
        position: Callable[[], int],
        *,
        every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.size, self.position = out, size, position
        self.every, self.clock = every, clock
        self.shown = 0  # lines written

    def wrap(self, rows: Iterable[_T]) -> Iterator[_T]:
        clock, every = self.clock, self.every
        began = clock()
        due = began + every
        n = 0
        try:
            for row in rows:
                n += 1
                if not n % CHECK and clock() >= due:
                    self._show(n, clock() - began)
                    due = clock() + every
                yield row
        finally:
            if self.shown:
                self.out.write("\r\x1b[K")  # back to the line's start, and erase it
                self.out.flush()

    def _show(self, rows: int, seconds: float) -> None:
        where = ""
        if self.size > 0:
            done = min(self.position(), self.size)
            where = f"{100 * done / self.size:3.0f}% of {self.size / 1e6:,.1f} MB, "
        self.out.write(f"\rcallgate replay: {where}{rows:,} rows, {seconds:.0f} s\x1b[K")
        self.out.flush()
        self.shown += 1
