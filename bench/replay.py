"""Replay rows per second: ``python -P -m bench.replay ROWS`` prints one line and its figures as JSON.

Run by ``make bench`` twice in one run, in a fresh process each: with callgate as pure Python (the
source tree) and with the core compiled by mypyc (``build/compiled``, see setup.py), so the two
figures and their ratio come from the same machine at the same time.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import callgate.core.engine
from bench.gen_cdr import write_rows
from callgate.core.policyfile import load_policy
from callgate.offline.cdr import in_start_order, read_cdr
from callgate.offline.replay import Totals, fewer_collections, replay


def main() -> int:
    rows = int(sys.argv[1])
    text = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    policy = load_policy(text, "default")
    path = Path(tempfile.gettempdir()) / f"callgate-bench-{rows}.csv"
    if not path.exists():
        write_rows(path, rows)
    build = "compiled" if callgate.core.engine.__file__.endswith(".so") else "pure Python"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    totals = Totals()
    start = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as f, fewer_collections():  # as `callgate replay`
        for r in replay(policy, in_start_order(read_cdr(f, tz=policy.site.timezone))):
            totals.add(r)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"replay   {build:<12}{totals.rows:,} rows ({totals.calls:,} outbound) "
        f"{totals.rows / elapsed:>10,.0f}/s  {elapsed:.1f} s, peak RSS {peak / 1024:.0f} MiB "
        f"(+{(peak - before) / 1024:.0f} MiB)"
    )
    print(json.dumps({"build": build, "rows": totals.rows, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
