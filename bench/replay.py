"""Replay rows per second, against its floors: where a replay's time goes.

``python -P -m bench.replay ROWS [STAGE]`` runs one stage over the generated ``Master.csv`` of ROWS rows
(bench/gen_cdr.py) in this process and prints one line and its figures as JSON. The stages, each doing
what the one before it does and more:

- ``csv``: the csv module alone (``csv.reader`` over the file, each row touched);
- ``read``: :func:`read_cdr`, the rows parsed into ``CdrRow`` (times, seconds, checks);
- ``order``: and :func:`in_start_order`;
- ``link``: and :meth:`Linker.leg` over every row, which tells the outbound legs and whom they are
  charged to, with no engine;
- ``replay`` (the default): the whole of ``callgate replay``, engine and in-process store.

:func:`bench_stages` (alone: ``python -m bench.replay --all ROWS [COMPILED]``) runs every stage in a
fresh process, with callgate as pure Python (the source tree) and with the core compiled by mypyc
(``build/compiled``, see setup.py), so every figure and ratio comes from the same file, machine and
run, and returns what ``make bench`` needs of it: the replay's rows per second by build. The csv
module is C either way, so its floor is measured once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import callgate.core.engine
from bench import gen_cdr
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy
from callgate.offline.cdr import in_start_order, read_cdr
from callgate.offline.replay import (
    Filter,
    Linker,
    Totals,
    emergency_numbers,
    fewer_collections,
    replay,
)

ROOT = Path(__file__).resolve().parent.parent


def _csv(policy: Policy, f: TextIO) -> tuple[int, int]:
    rows = 0
    for fields in csv.reader(f, strict=True):  # as read_cdr reads
        rows += len(fields) > 0
    return rows, 0


def _read(policy: Policy, f: TextIO) -> tuple[int, int]:
    rows = 0
    for _ in read_cdr(f, tz=policy.site.timezone):
        rows += 1
    return rows, 0


def _order(policy: Policy, f: TextIO) -> tuple[int, int]:
    rows = 0
    for _ in in_start_order(read_cdr(f, tz=policy.site.timezone)):
        rows += 1
    return rows, 0


def _link(policy: Policy, f: TextIO) -> tuple[int, int]:
    linker = Linker(Filter(), policy.endpoints)  # as replay() builds it
    emergency = emergency_numbers(policy)
    leg = linker.leg
    rows = legs = 0
    for row in in_start_order(read_cdr(f, tz=policy.site.timezone)):
        rows += 1
        legs += leg(row, int(row.start.timestamp() * 1000), emergency) is not None
    return rows, legs


def _replay(policy: Policy, f: TextIO) -> tuple[int, int]:
    totals = Totals()
    for r in replay(policy, in_start_order(read_cdr(f, tz=policy.site.timezone))):
        totals.add(r)
    return totals.rows, totals.calls


# stage: (what it does, as printed; the work). Each does what the one before it does, and more.
STAGES: dict[str, tuple[str, Callable[[Policy, TextIO], tuple[int, int]]]] = {
    "csv": ("csv.reader alone", _csv),
    "read": ("read_cdr (rows into CdrRow)", _read),
    "order": ("+ in_start_order", _order),
    "link": ("+ Linker.leg, no engine", _link),
    "replay": ("the whole replay", _replay),
}


def cdr_file(rows: int) -> Path:
    """The generated file of ``rows`` rows, written once; named for the generator's source too, so
    that a changed generator never replays a file of the old one."""
    source = hashlib.sha256(Path(gen_cdr.__file__).read_bytes()).hexdigest()[:8]
    path = Path(tempfile.gettempdir()) / f"callgate-bench-{rows}-{source}.csv"
    if not path.exists():
        part = path.with_suffix(f".{os.getpid()}.part")
        gen_cdr.write_rows(part, rows)
        part.replace(path)  # never a half-written file under the final name
    return path


def peak_kib() -> int:
    """This process's peak resident memory in KiB. Not ``ru_maxrss``: Linux carries it over a fork and
    an exec, so a child of the ``make bench`` process (400 MiB by then) reported the parent's peak."""
    status = Path("/proc/self/status")
    for line in status.read_text("ascii").splitlines() if status.exists() else ():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def measure(rows: int, stage: str = "replay") -> dict[str, object]:
    """One stage over the file of ``rows`` rows, in this process: prints its line and returns its
    figures."""
    text = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    policy = load_policy(text, "default")
    path = cdr_file(rows)
    build = "compiled" if callgate.core.engine.__file__.endswith(".so") else "pure Python"
    what, work = STAGES[stage]
    before = peak_kib()
    start = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as f, fewer_collections():  # as `callgate replay`
        done, calls = work(policy, f)
    elapsed = time.perf_counter() - start
    peak = peak_kib()
    if stage == "replay":  # the line `make bench` has always printed
        print(
            f"replay   {build:<12}{done:,} rows ({calls:,} outbound) "
            f"{done / elapsed:>10,.0f}/s  {elapsed:.1f} s, peak RSS {peak / 1024:.0f} MiB "
            f"(+{(peak - before) / 1024:.0f} MiB)"
        )
    else:
        print(f"floor    {build:<12}{what:<32}{done / elapsed:>10,.0f}/s  {elapsed:.1f} s")
    return {"build": build, "stage": stage, "rows": done, "calls": calls, "seconds": elapsed,
            "peak_mib": round(peak / 1024), "added_mib": round((peak - before) / 1024)}  # fmt: skip


def _run(rows: int, stage: str, path: str) -> tuple[str, dict[str, Any]]:
    """``stage`` in a fresh process with ``path`` as its PYTHONPATH: its line and its figures."""
    env = {**os.environ, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-P", "-m", "bench.replay", str(rows), stage],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    line, figures = run.stdout.strip().splitlines()
    return line, json.loads(figures)


def bench_stages(rows: int, compiled: Path) -> dict[str, float]:
    """Every stage, pure and (when built) compiled, each in a fresh process; prints one line per stage
    with its share of that build's whole replay (and what the stage itself adds), then the replay's
    ratio to the csv floor. Returns the replay's rows per second by build, as
    ``make bench`` reports them."""
    builds = {"pure Python": str(ROOT)}
    if compiled.is_dir():
        builds["compiled"] = f"{compiled.resolve()}{os.pathsep}{ROOT}"
    else:
        print(f"replay   compiled: not built ({compiled}; `make bench` builds it)")
    cdr_file(rows)  # generated once, before any stage is timed
    _, floor = _run(rows, "csv", str(ROOT))  # C either way: one measure for both builds
    runs = {build: {s: _run(rows, s, path) for s in STAGES if s != "csv"}
            for build, path in builds.items()}  # fmt: skip
    shares = ", ".join(
        f"{floor['seconds'] / stages['replay'][1]['seconds']:.0%} of the {build} replay"
        for build, stages in runs.items()
    )
    what = STAGES["csv"][0]
    print(f"floor    {'':<12}{what:<32}{floor['rows'] / floor['seconds']:>10,.0f}/s  "
          f"{floor['seconds']:.1f} s = {shares}")  # fmt: skip
    speeds = {}
    for build, stages in runs.items():
        whole = stages["replay"][1]
        assert whole["build"] == build, whole
        assert all(f["rows"] == floor["rows"] for _, f in stages.values()), (floor, stages)
        assert stages["link"][1]["calls"] == whole["calls"], stages  # the very legs replay judges
        before = floor["seconds"]
        for stage, (line, measured) in stages.items():
            if stage == "replay":
                print(line)
                continue
            share, step = measured["seconds"] / whole["seconds"], measured["seconds"] - before
            print(f"{line} = {share:.0%} of the replay (this step {step / whole['seconds']:.0%})")
            before = measured["seconds"]
        speeds[build] = whole["rows"] / whole["seconds"]
    for build, stages in runs.items():
        ratio = stages["replay"][1]["seconds"] / floor["seconds"]
        print(f"ratio    replay / csv floor, {build:<26}{ratio:>12.1f}")
    return speeds


def main() -> int:
    if sys.argv[1] == "--all":
        compiled = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("CALLGATE_COMPILED", "")
        bench_stages(int(sys.argv[2]), Path(compiled or "build/compiled"))
        return 0
    figures = measure(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "replay")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
