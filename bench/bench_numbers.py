"""How fast callgate reads dialled numbers: `python bench/bench_numbers.py`.

Three figures: the worker without the memo (every call parses), `read_number` on distinct
strings (every call misses the memo and fills it) and `read_number` on a warm memo (the steady
state of a PBX whose users dial the same numbers again and again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from callgate.core import numbers

OUTSIDE = ("9",)
EMERGENCY = ("911", "933")
MIX = (
    "2125550123",
    "912125550123",
    "9011442079460000",
    "+442079460000",
    "18765550123",
    "19005550199",
    "9175550123",
    "+881612345678",
    "9911",
    "1001'; DROP TABLE",
)


def _rate(label: str, calls: int, run: Callable[[], None]) -> None:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {calls / elapsed:>12,.0f} ops/s  {elapsed / calls * 1e6:8.2f} µs/op")


def main() -> None:
    """Print ops/s for the uncached worker, memo misses and memo hits."""
    rounds = 5_000
    calls = rounds * len(MIX)
    # Fresh US numbers (NXX-NXX-XXXX), all distinct and valid, to miss the memo every time.
    distinct = [f"212{n // 10000 + 200:03d}{n % 10000:04d}" for n in range(calls)]

    def uncached() -> None:
        for _ in range(rounds):
            for dialled in MIX:
                numbers._read_uncached(dialled, "US", OUTSIDE, EMERGENCY)

    def misses() -> None:
        for dialled in distinct:
            numbers.read_number(dialled, region="US", outside_line=OUTSIDE, emergency=EMERGENCY)

    def hits() -> None:
        for _ in range(rounds):
            for dialled in MIX:
                numbers.read_number(dialled, region="US", outside_line=OUTSIDE, emergency=EMERGENCY)

    for dialled in MIX:  # load the metadata of every region involved before timing
        numbers.read_number(dialled, region="US", outside_line=OUTSIDE, emergency=EMERGENCY)
    _rate("worker, no memo (mixed dialled strings)", calls, uncached)
    numbers._read.cache_clear()
    _rate("read_number, memo misses (distinct numbers)", len(distinct), misses)
    _rate("read_number, memo hits (mixed, warm)", calls, hits)
    print(f"memo: {numbers._read.cache_info()}")


if __name__ == "__main__":
    main()
