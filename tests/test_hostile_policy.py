"""Hostile policy files (issue 8, finding 11): alias bombs, huge and endless files, foreign tags, floods
of problems, and reloads that neither stall the event loop nor stop the running policy."""

from __future__ import annotations

import asyncio
import difflib
import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest

from callgate import cli
from callgate.core import policyfile, policyprefixes, policyyaml, prefixlists
from callgate.core.policy import Policy
from callgate.core.policyfile import load_policy, load_policy_file
from callgate.core.policyyaml import MAX_BYTES, MAX_NODES, MAX_PROBLEMS
from callgate.errors import PolicyError, Problem
from callgate.ops import livepolicy
from callgate.ops.livepolicy import FilePolicy, RedisPolicy
from callgate.ops.policystore import PolicyStore, StoredPolicy
from tests.servers import eventually

HEAD = """\
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05}
"""
TAIL = 'extensions:\n  - {match: "*", profile: p0}\n'
DEFAULT = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")


def alias_bomb(profiles: int = 2000, codes: int = 20_000) -> str:
    """The finding's file: ``profiles`` profiles alias one node of ``codes`` country codes (84 KB).

    The codes are written "us": each is a problem of its own, so before the fix the reader made 40
    million of them (2.4 GB, then a MemoryError after 47 s)."""
    countries = ",".join(["us"] * codes)
    lines = [
        HEAD,
        "profiles:\n",
        f"  p0: &p {{destinations: {{allow_countries: [{countries}]}}}}\n",
    ]
    lines += [f"  p{n}: *p\n" for n in range(1, profiles)]
    return "".join(lines) + TAIL


def problems_of(text: str, source: str = "p.yaml") -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, source)
    return caught.value.problems


def problems_of_lists(text: str, lists: Callable[[str], str]) -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "p.yaml", read_list=lists)
    return caught.value.problems


def peak_bytes(run: Callable[[], object]) -> int:
    """The most memory Python held above what it held before ``run``."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- aliases ------------------------------------------------------------------------------------


def test_the_alias_bomb_is_refused_in_bounded_memory() -> None:
    """The 84 KB bomb is refused before anything is composed, in a few MB, naming the alias's line."""
    text = alias_bomb()
    assert 80_000 <= len(text) <= 90_000
    found: list[tuple[Problem, ...]] = []
    peak = peak_bytes(lambda: found.append(problems_of(text, "bomb.yaml")))
    assert peak < 8 * 2**20, f"{peak:,} bytes"
    (problem,) = found[0]
    profile = problem.path.split(".")[1]
    assert problem.source == "bomb.yaml"
    assert problem.path == f"profiles.{profile}"
    assert text.splitlines()[problem.line - 1] == f"  {profile}: *p"
    assert f"the alias *p repeats 20,005 nodes; a policy may hold {MAX_NODES:,}" in problem.message


def _max_rss(args: list[str]) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in KiB) of one child process, measured for that child alone."""
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    with child.stderr:
        err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, err, usage.ru_maxrss


def test_policy_check_of_the_bomb_in_a_real_process(tmp_path: Path) -> None:
    """`callgate policy check` on the bomb: a clear refusal, and a peak RSS within 40 MB of a good file's."""
    bomb, good = tmp_path / "bomb.yaml", tmp_path / "good.yaml"
    bomb.write_text(alias_bomb(), encoding="utf-8")
    good.write_text(DEFAULT, encoding="utf-8")
    command = [sys.executable, "-m", "callgate.cli", "policy", "check"]
    status, _, baseline = _max_rss([*command, str(good)])
    assert status == 0
    status, err, peak = _max_rss([*command, str(bomb)])
    assert status == 2
    assert "Traceback" not in err
    assert f"{bomb}:" in err
    assert "the alias *p repeats" in err
    assert peak - baseline < 40 * 1024, f"{peak} KiB against {baseline} KiB"


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    """A value that contains itself is named, not followed."""
    text = HEAD + "profiles:\n  p0: &x {destinations: {allow_countries: *x}}\n" + TAIL
    (problem,) = problems_of(text)
    assert (problem.line, problem.path) == (6, "profiles.p0.destinations.allow_countries")
    assert problem.message == "the alias *x is inside its own anchor &x"


def test_aliases_of_ordinary_size_still_load() -> None:
    """Reuse the way admins write it (a country list and a limits block, hundreds of times) loads."""
    countries = ", ".join(["US", "CA", "GB", "DE", "FR", "MX"] * 8)
    lines = [
        HEAD,
        "profiles:\n",
        f"  p0: &p {{destinations: {{allow_countries: [{countries}]}}, limits: {{calls_per_minute: 4}}}}\n",
        *(f"  p{n}: *p\n" for n in range(1, 300)),
        TAIL,
    ]
    policy = load_policy("".join(lines), "p.yaml")
    assert len(policy.profiles) == 300
    assert policy.profiles["p299"].destinations.allow_countries == frozenset(
        {"US", "CA", "GB", "DE", "FR", "MX"}
    )


def test_too_many_nodes_without_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain size counts too: a node past MAX_NODES is refused where it is, before composing."""
    monkeypatch.setattr(policyyaml, "MAX_NODES", 500)
    prefixes = ", ".join(f'"44{n}": 0.01' for n in range(300))
    (problem,) = problems_of(HEAD.replace("{default: 0.05}", f"{{prefixes: {{{prefixes}}}}}"))
    assert (problem.line, problem.path) == (4, "rates.prefixes.44240")  # node 501: its key
    assert problem.message.startswith("too many YAML nodes: a policy may hold 500")


def test_a_large_honest_policy_loads() -> None:
    """A rate deck of 20,000 prefixes written in the policy is well within the limits."""
    prefixes = "".join(f'    "{440000 + n}": 0.01\n' for n in range(20_000))
    policy = load_policy(
        HEAD.replace("{default: 0.05}", "\n  prefixes:\n" + prefixes)
        + "profiles:\n  p0: {}\n"
        + TAIL,
        "p.yaml",
    )
    assert len(policy.rates.prefixes) == 20_000


def test_a_megabyte_key_is_clipped_in_paths_and_problems() -> None:
    """A key may be a megabyte long (``? ...``): every path below it and every problem quoting it is
    clipped, so 80,000 items under it are not 80,000 copies of it."""
    name, codes = "p" * 1_000_000, ",".join(["us"] * 80_000)
    text = HEAD + f"profiles:\n  ? {name}\n  : {{destinations: {{allow_countries: [{codes}]}}}}\n"
    found = problems_of(text + 'extensions:\n  - {match: "*", profile: x}\n')
    assert len(found) == MAX_PROBLEMS + 1
    assert max(len(p.path) + len(p.message) for p in found) < 600
    assert found[1].path == f"profiles.{'p' * 61}..."


# --- size ---------------------------------------------------------------------------------------


def test_a_policy_file_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    """A file of MAX_BYTES + 1 bytes is refused by name, as a whole; one of MAX_BYTES is read."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.line, problem.path) == (str(path), 0, "")
    assert problem.message.startswith(f"larger than {MAX_BYTES:,} bytes")
    path.write_bytes(b"#" * MAX_BYTES)
    with pytest.raises(PolicyError, match="the file is empty"):
        load_policy_file(path)


def test_policy_check_of_dev_zero_ends(capsys: pytest.CaptureFixture[str]) -> None:
    """`callgate policy check /dev/zero` reads MAX_BYTES + 1 bytes and refuses: it does not read forever."""
    assert cli.main(["policy", "check", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert f"/dev/zero: larger than {MAX_BYTES:,} bytes" in err


def test_a_stored_policy_larger_than_the_limit_is_refused() -> None:
    """A version in Redis is held to the same limit, and named by its file and version."""
    stored = StoredPolicy(
        3, "", "alice", "2026-11-30T00:00:00+00:00", "p.yaml", "#" * (MAX_BYTES + 1)
    )
    with pytest.raises(PolicyError) as caught:
        stored.load()
    (problem,) = caught.value.problems
    assert problem.source == "p.yaml (v3)"
    assert "larger than" in problem.message


def test_stored_range_lists_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list given as text is held to the file limit; all lists together to MAX_LIST_BYTES, and a list
    past that total is not even read."""
    entries = "[{file: a.txt}, {file: b.txt}, {file: c.txt}]"
    text = HEAD + f"profiles:\n  p0:\n    destinations: {{deny_prefixes: {entries}}}\n" + TAIL
    listed = "# source: x\n" + "+1900\n" * 100
    read: list[str] = []

    def lists(name: str) -> str:
        read.append(name)
        return listed

    monkeypatch.setattr(prefixlists, "MAX_BYTES", len(listed) - 1)
    (problem,) = problems_of_lists(text.replace(", {file: b.txt}, {file: c.txt}", ""), lists)
    assert problem.message == f"cannot read the list 'a.txt': larger than {len(listed) - 1:,} bytes"
    monkeypatch.setattr(prefixlists, "MAX_BYTES", len(listed))
    monkeypatch.setattr(policyprefixes, "MAX_LIST_BYTES", len(listed) + 1)
    read.clear()
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "p.yaml", read_list=lists)
    assert read == ["a.txt", "b.txt"]  # c.txt: refused unread
    messages = [(p.path, p.message) for p in caught.value.problems]
    deny = "profiles.p0.destinations.deny_prefixes"
    together = "the range lists of one policy may hold"
    assert [path for path, _ in messages] == [f"{deny}[1].file", f"{deny}[2].file"]
    assert all(together in message for _, message in messages)


# --- tags ---------------------------------------------------------------------------------------

# (what, the line that replaces "rates: {default: 0.05}", the key path, the tag as the message shows it)
TAGS: list[tuple[str, str, str, str]] = [
    (
        "python object",
        'rates: !!python/object/apply:os.system ["touch /tmp/callgate-pwned"]',
        "rates",
        "!!python/object/apply:os.system",
    ),
    (
        "python name",
        "rates: {default: !!python/name:os.system }",
        "rates.default",
        "!!python/name:os.system",
    ),
    ("custom tag", "rates: {default: !money 0.05}", "rates.default", "!money"),
    ("binary", "rates: {default: !!binary MC4wNQ==}", "rates.default", "!!binary"),
    ("set", "rates: !!set {default: null}", "rates", "!!set"),
    (
        "verbatim",
        "rates: {default: !<tag:example.com,2026:x> 0.05}",
        "rates.default",
        "tag:example.com,2026:x",
    ),
    ("tagged key", "rates: {!!python/str default: 0.05}", "rates.default", "!!python/str"),
]


@pytest.mark.parametrize(("line", "path", "tag"), [t[1:] for t in TAGS], ids=[t[0] for t in TAGS])
def test_unsupported_tags_are_named(line: str, path: str, tag: str) -> None:
    """Any tag but YAML's own is a problem at its line and key, never a traceback or an object."""
    text = HEAD.replace("rates: {default: 0.05}", line) + "profiles:\n  p0: {}\n" + TAIL
    (problem,) = problems_of(text)
    assert (problem.line, problem.path) == (4, path)
    assert problem.message.startswith(f"unsupported tag {tag}: a policy is plain YAML")
    assert not Path("/tmp/callgate-pwned").exists()


def test_yaml_own_tags_are_read_as_written() -> None:
    """!!str, !!int and the other tags plain YAML resolves to are allowed, and change nothing."""
    text = HEAD.replace("{default: 0.05}", '{default: !!str 0.05, increment: !!int "60"}')
    policy = load_policy(
        text.replace('["911"]', "[!!str 911]") + "profiles:\n  p0: !!map {}\n" + TAIL, "p"
    )
    assert (str(policy.rates.default), policy.rates.increment, policy.emergency) == (
        "0.05",
        60,
        ("911",),
    )


def test_policy_check_names_a_python_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`policy check` prints the problem with file, line and key; no traceback."""
    path = tmp_path / "p.yaml"
    path.write_text(
        HEAD + "profiles:\n  p0: {limits: {calls_per_minute: !!python/object:os.system 4}}\n" + TAIL
    )
    assert cli.main(["policy", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}:6: profiles.p0.limits.calls_per_minute: unsupported tag !!python/object:os.system"
        in err
    )


# --- how many problems --------------------------------------------------------------------------


def test_the_problems_listed_are_bounded() -> None:
    """A thousand mistakes list MAX_PROBLEMS of them, and say how many more there are."""
    prefixes = ", ".join(f'"x{n}": 0.01' for n in range(1000))
    found = problems_of(
        HEAD.replace("{default: 0.05}", f"{{prefixes: {{{prefixes}}}}}")
        + "profiles:\n  p0: {}\n"
        + TAIL
    )
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0] == Problem(
        "p.yaml",
        0,
        "",
        f"{1000 - MAX_PROBLEMS:,} more problems not listed: only the first "
        f"{MAX_PROBLEMS} are; fix these first",
    )


def test_no_hints_are_worked_out_for_problems_not_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """'did you mean' compares names (difflib): past MAX_PROBLEMS it is not done at all, so 3,000
    entries naming unknown profiles among 1,000 cost 100 comparisons, not 3,000."""
    calls: list[str] = []
    real = difflib.get_close_matches

    def counted(word: str, *args: Any, **kwargs: Any) -> list[str]:
        calls.append(word)
        return real(word, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counted)
    profiles = "".join(f"  q{n}: {{}}\n" for n in range(1000))
    entries = "".join(f'  - {{match: "{n}", profile: x{n}}}\n' for n in range(3000))
    found = problems_of(HEAD + "profiles:\n" + profiles + "extensions:\n" + entries)
    assert len(found) == MAX_PROBLEMS + 1
    assert len(calls) <= MAX_PROBLEMS


# --- reloads off the event loop -----------------------------------------------------------------


class _Gate:
    """Holds a loader in a worker thread until the test lets it go; records the thread it ran on."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.threads: list[int] = []

    def hold(self) -> None:
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.release.wait(10), "never released"


async def _until(condition: Callable[[], bool]) -> None:
    await eventually(condition, "the new policy in force")


async def _loop_runs_while_held(gate: _Gate, holder: Callable[[], Policy], old: Policy) -> None:
    """While the loader is held: the event loop goes on (other tasks run) and the old policy serves."""
    await asyncio.to_thread(gate.started.wait, 10)
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5
    assert holder() is old
    assert gate.threads
    assert gate.threads[0] != threading.get_ident()
    gate.release.set()


@pytest.mark.parametrize("how", ["sighup", "watch"])
async def test_a_file_reload_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """SIGHUP (reload on the loop) and the file watch read the file in a worker thread; calls are
    decided by the old policy meanwhile; then the new one is active."""
    path = tmp_path / "p.yaml"
    path.write_text(DEFAULT, encoding="utf-8")
    holder = FilePolicy(str(path))
    old = holder()
    gate, real = _Gate(), policyfile.load_policy_file

    def held(where: str) -> Policy:
        gate.hold()
        return real(where)

    monkeypatch.setattr(livepolicy, "load_policy_file", held)
    path.write_text(DEFAULT.replace("calls_per_minute: 4", "calls_per_minute: 5"), encoding="utf-8")
    stop = asyncio.Event()
    watcher = asyncio.create_task(holder.watch(stop)) if how == "watch" else None
    if how == "sighup":
        holder.reload()  # what serve's SIGHUP handler calls: it returns at once
    await _loop_runs_while_held(gate, holder, old)
    await _until(lambda: holder() is not old)
    assert holder().profiles["office"].limits.calls_per_minute == 5
    stop.set()
    if watcher is not None:
        await watcher


async def test_a_broken_reload_keeps_the_running_policy(tmp_path: Path) -> None:
    """A reloaded file with a python tag is refused with file, line and key; the old policy runs on."""
    path = tmp_path / "p.yaml"
    path.write_text(DEFAULT, encoding="utf-8")
    holder = FilePolicy(str(path))
    old = holder()
    refused: list[str] = []
    holder.refusals.append(lambda what, why: refused.append(why))
    path.write_text(DEFAULT.replace("calls_per_minute: 4", "calls_per_minute: !!python/object:x 4"))
    await holder.refresh()
    line = DEFAULT.splitlines().index("      calls_per_minute: 4") + 1
    assert holder() is old
    assert refused[0].startswith(
        f"{path}:{line}: profiles.office.limits.calls_per_minute: unsupported tag"
    )


class _Versions:
    """The two calls RedisPolicy.check makes of a PolicyStore, over one stored version."""

    site = "acme-nyc"

    def __init__(self, stored: Any) -> None:
        self.stored = stored

    async def active_version(self) -> int:
        return int(self.stored.version)

    async def get(self, version: int | None = None) -> Any:
        return self.stored


async def test_a_redis_version_loads_off_the_event_loop() -> None:
    """A version followed from Redis is loaded in a worker thread while the old policy serves."""
    old = load_policy(DEFAULT, "p.yaml")
    text = DEFAULT.replace("calls_per_minute: 4", "calls_per_minute: 6")
    real = StoredPolicy(2, "", "a", "2026-11-30T00:00:00+00:00", "p.yaml", text)
    gate = _Gate()

    class Held:
        version = 2

        def load(self) -> Policy:
            gate.hold()
            return real.load()

    holder = RedisPolicy(cast(PolicyStore, _Versions(Held())), old)
    check = asyncio.create_task(holder.check())
    await _loop_runs_while_held(gate, holder, old)
    await check
    assert (holder().revision, holder().profiles["office"].limits.calls_per_minute) == (2, 6)


async def test_a_broken_redis_version_keeps_the_running_policy() -> None:
    """A stored version with a foreign tag is refused, named by its file, version, line and key."""
    old = load_policy(DEFAULT, "p.yaml")
    text = DEFAULT.replace("calls_per_minute: 4", "calls_per_minute: !!python/name:os.system 4")
    holder = RedisPolicy(
        cast(PolicyStore, _Versions(StoredPolicy(2, "", "a", "t", "p.yaml", text))), old
    )
    refused: list[tuple[str, str]] = []
    holder.refusals.append(lambda what, why: refused.append((what, why)))
    await holder.check()
    line = DEFAULT.splitlines().index("      calls_per_minute: 4") + 1
    assert holder() is old
    ((what, why),) = refused
    assert what == "version 2"
    assert why.startswith(
        f"p.yaml (v2):{line}: profiles.office.limits.calls_per_minute: unsupported tag"
    )
