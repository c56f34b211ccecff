"""Range lists of a million prefixes: what one decision and one reload cost (``make bench``; alone,
``python -m bench.prefixes [RANGES]``).

* decision: ``prepare`` for dialled numbers the policy has not seen (its memo emptied before each pass;
  the numbers' parsing is warm, as on a PBX), with ``deny_prefixes`` of 10 ranges and of 1,000,000. The
  lookup probes one set per prefix length (``PrefixTable``), so both should cost the same; before, the
  list was scanned (132 ms a decision at 1M ranges).
* lookup: ``Destinations.denied`` alone, for the same two lists.
* reload: ``load_policy`` of the policy with its 1M-range list given as text, as a reload reads it after
  the files (best of 3; 3.9 s in issue 8). A running ``serve`` does it in a worker thread.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt

AT = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
POLICY = """\
version: 1
site: {name: bench, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05}
profiles:
  office:
    destinations:
      deny_prefixes: ["+1900", {file: ranges.txt}]
extensions:
  - {match: "*", profile: office}
"""
# Numbers that reach the prefix rule: national and international, none of them in a list below.
DIALLED = [f"212555{n:04d}" for n in range(0, 6000, 3)] + [
    f"01144207946{n:04d}" for n in range(0, 4000, 2)
]


def ranges(count: int, seed: int = 2026) -> str:
    """A provider's list: ``count`` distinct prefixes of 6 to 11 digits under one country code, +882
    (international networks), so that no number dialled above is on it. Every length is there in a
    list of any size, so the lookup probes as many lengths for 10 ranges as for a million."""
    rnd = random.Random(seed)
    picked = [rnd.randrange(10 ** (n - 1), 10**n) for n in range(3, 9)]  # one of each length
    picked += rnd.sample(range(10**7, 10**8), count - len(picked))
    return "# source: bench, generated\n" + "".join(f"+882{n}\n" for n in picked)


def decision_us(policy: Policy, rounds: int = 5) -> float:
    """Microseconds of one decision's rules for a number this policy has not decided yet (best of
    ``rounds`` passes: the two cores of a test box are shared)."""
    attempts = [CallAttempt(f"c{n}", "1001", d) for n, d in enumerate(DIALLED)]
    passes = []
    for _ in range(rounds):
        memo = Memo(policy)  # empty: every number is new to it
        start = time.perf_counter()
        for attempt in attempts:
            prepare(memo, attempt, AT)
        passes.append((time.perf_counter() - start) / len(attempts) * 1e6)
    return min(passes)


def lookup_ns(policy: Policy) -> float:
    """Nanoseconds of one deny_prefixes lookup, alone."""
    destinations = policy.profiles["office"].destinations
    digits = [d.removeprefix("011") if d.startswith("011") else "1" + d for d in DIALLED]
    start = time.perf_counter()
    for _ in range(50):
        for number in digits:
            destinations.denied(number)
    return (time.perf_counter() - start) / (50 * len(digits)) * 1e9


def bench_prefixes(count: int = 1_000_000) -> dict[str, float]:
    small = load_policy(POLICY, "small", read_list={"ranges.txt": ranges(9)})  # and +1900: 10
    text = ranges(count - 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reloads = []
    for _ in range(3):
        start = time.perf_counter()
        big = load_policy(POLICY, "big", read_list={"ranges.txt": text})
        reloads.append(time.perf_counter() - start)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(big.profiles["office"].destinations.deny_prefixes) == count
    decision_us(small, rounds=1)  # parse every dialled number once: the number cache is warm
    figures = {
        "decision_small_us": decision_us(small),
        "decision_big_us": decision_us(big),
        "lookup_small_ns": lookup_ns(small),
        "lookup_big_ns": lookup_ns(big),
        "reload_s": min(reloads),
    }
    label = f"{count:,} ranges"
    print(
        f"prefixes decision, number not seen, 10 ranges / {label}   "
        f"{figures['decision_small_us']:>8.1f} us / {figures['decision_big_us']:.1f} us "
        f"(x{figures['decision_big_us'] / figures['decision_small_us']:.2f})"
    )
    print(
        f"prefixes deny_prefixes lookup alone, 10 / {label}          "
        f"{figures['lookup_small_ns']:>8.0f} ns / {figures['lookup_big_ns']:.0f} ns"
    )
    print(
        f"prefixes reload of a policy with a {label} list      "
        f"{figures['reload_s']:>8.2f} s  (best of 3; peak RSS +{grown:.0f} MiB)"
    )
    return figures


if __name__ == "__main__":
    bench_prefixes(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
