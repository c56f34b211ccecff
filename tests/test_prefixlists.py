"""Range lists: the file format, the shipped starter list, and lists read by a policy from files or text."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.core import prefixlists
from callgate.core.memo import Memo
from callgate.core.plan import prepare
from callgate.core.policy import Destinations, PrefixList, PrefixTable
from callgate.core.policyfile import load_policy, load_policy_file
from callgate.core.policysummary import describe
from callgate.core.prefixlists import (
    MAX_PROBLEMS,
    ListFiles,
    ListSource,
    builtin_names,
    read_builtin,
    read_prefix_list,
)
from callgate.core.rules import CallAttempt
from callgate.errors import PolicyError, Problem

GOOD = """\
# source: Example Carrier IRSF advisory, 2026-11
# expires: 2027-11-30
+88213          # a comment after a prefix
+2392

# a comment line
+979
+2392
"""

# Line numbers below are counted in this text; line 8 is the {file: ...} entry.
POLICY = """\
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05}
profiles:
  p:
    destinations:
      deny_prefixes: ["+1900", {file: lists/carrier.txt}]
extensions:
  - {match: "*", profile: p}
"""
DENY = "profiles.p.destinations.deny_prefixes"


def problems_of(text: str, read_list: ListSource) -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "redis:v3", read_list=read_list)
    return caught.value.problems


def test_a_list_is_read() -> None:
    """Prefixes keep file order, each once, without "+"; the header gives source and expiry."""
    found, problems = read_prefix_list(GOOD, "lists/carrier.txt")
    assert problems == []
    assert found == PrefixList(
        "lists/carrier.txt",
        "Example Carrier IRSF advisory, 2026-11",
        ("88213", "2392", "979"),
        date(2027, 11, 30),
        hashlib.sha256(GOOD.encode()).hexdigest(),
    )


def test_header_details() -> None:
    """A BOM and CRLF are fine; several source lines are joined; no expiry is allowed; keys ignore case."""
    text = (
        "\ufeff# Source: A\r\n# source: B\r\n# note: free text\r\n+1\r\n# source: not a header\r\n"
    )
    found, problems = read_prefix_list(text, "x")
    assert problems == []
    assert found is not None
    assert (found.source, found.expires, found.prefixes) == ("A; B", None, ("1",))


# One row per kind of mistake: (the list text, [(line, part of the message)]).
LIST_CASES: list[tuple[str, str, list[tuple[int, str]]]] = [
    ("no source", "# expires: 2027-01-01\n+1\n", [(0, "no '# source: ...' line")]),
    ("source after prefixes", "+1\n# source: late\n", [(0, "no '# source: ...' line")]),
    (
        "source after a bad line",
        "oops\n# source: late\n+1\n",
        [(1, "got 'oops'"), (0, "no '# source: ...' line")],
    ),
    ("empty source", "# source:\n# source: x\n+1\n", [(1, "the source is empty")]),
    ("no prefixes", "# source: x\n# only comments\n", [(0, "no prefixes")]),
    ("empty file", "", [(0, "no '# source"), (0, "no prefixes")]),
    (
        "bad line",
        "# source: x\n+1\n44 20 7946\n+1-900\n",
        [(3, "got '44 20 7946'"), (4, "got '+1-900'")],
    ),
    ("too long", "# source: x\n+1234567890123456\n", [(2, '"+" then digits')]),
    ("bad expiry", "# source: x\n# expires: next year\n+1\n", [(2, "expected a date YYYY-MM-DD")]),
    ("impossible expiry", "# source: x\n# expires: 2027-02-30\n+1\n", [(2, "expected a date")]),
    (
        "second expiry",
        "# source: x\n# expires: 2027-01-01\n# expires: 2028-01-01\n+1\n",
        [(3, "a second expires line (first at line 2)")],
    ),
    ("typo in header", "# source: x\n# expiry: 2027-01-01\n+1\n", [(2, "did you mean 'expires'?")]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES]
)
def test_list_problem(text: str, expected: list[tuple[int, str]]) -> None:
    """A broken list is refused; each problem names its line (0: the list as a whole)."""
    found, problems = read_prefix_list(text, "x")
    assert found is None
    assert [line for line, _ in problems] == [line for line, _ in expected], problems
    for (_, message), (_, part) in zip(problems, expected, strict=True):
        assert part in message, message


def test_a_wrong_file_is_named_not_listed() -> None:
    """A file that is not a list at all (a CSV) gives a bounded number of problems."""
    text = "# source: x\n" + "".join(f"{n},+44,0.02\n" for n in range(500))
    found, problems = read_prefix_list(text, "x")
    assert found is None
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == (0, f"{500 - MAX_PROBLEMS} more lines that are not prefixes")


def test_the_starter_list_ships_and_is_sourced() -> None:
    """callgate:irsf-starter is package data: it loads, cites its sources and expires within 2 years."""
    assert "callgate:irsf-starter" in builtin_names()
    text = read_builtin("callgate:irsf-starter")
    found, problems = read_prefix_list(text, "callgate:irsf-starter")
    assert problems == []
    assert found is not None
    assert {"979", "881", "882", "883", "870"} <= set(found.prefixes)
    assert found.expires is not None
    assert date(2026, 11, 1) < found.expires < date(2028, 12, 1)
    assert text.count("https://") >= 4  # each block cites a public source
    assert 5 <= len(found.prefixes) <= 50  # a starter, not a complete list


def test_unknown_builtin() -> None:
    """A name callgate does not ship, or one that tries to leave the folder, names the shipped lists."""
    for name in ("callgate:nope", "callgate:../default-policy", "callgate:"):
        with pytest.raises(FileNotFoundError, match="it ships: callgate:irsf-starter"):
            read_builtin(name)


def test_list_files(tmp_path: Path) -> None:
    """Relative names resolve against the base; only regular UTF-8 files are read."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.txt").write_text(GOOD, encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"# source: x\n+1\n\xff\n")
    files = ListFiles(tmp_path)
    assert files("lists/a.txt") == GOOD
    assert files(str(tmp_path / "lists" / "a.txt")) == GOOD
    assert files.where("lists/a.txt") == str(tmp_path / "lists" / "a.txt")
    assert files.where("callgate:irsf-starter") == "callgate:irsf-starter"
    assert files("callgate:irsf-starter").startswith("# callgate starter list")
    with pytest.raises(FileNotFoundError, match="no such file"):
        files("lists/b.txt")
    with pytest.raises(ValueError, match="not a regular file"):
        files("lists")
    with pytest.raises(ValueError, match=r"not UTF-8 text \(line 3\)"):
        files("bad.txt")
    assert ListFiles().where("lists/a.txt") == "lists/a.txt"


def test_list_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file larger than MAX_BYTES is refused before it is read."""
    (tmp_path / "big.txt").write_text(GOOD, encoding="utf-8")
    monkeypatch.setattr(prefixlists, "MAX_BYTES", 10)
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        ListFiles(tmp_path)("big.txt")


def test_policy_reads_lists_beside_its_file(tmp_path: Path) -> None:
    """load_policy_file reads a relative list from the policy's directory, and the shipped list by name."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "carrier.txt").write_text(GOOD, encoding="utf-8")
    text = POLICY.replace('"+1900", ', '"+1900", {file: callgate:irsf-starter}, ')
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    policy = load_policy_file(tmp_path / "policy.yaml")
    d = policy.profiles["p"].destinations
    assert d.deny_prefixes[0] == "1900"
    assert {"88213", "2392", "979", "881"} <= set(d.deny_prefixes)
    assert len(d.deny_prefixes) == len(set(d.deny_prefixes))  # 979 is in both lists: once
    assert "1900" not in d.prefix_lists
    assert d.prefix_lists["88213"] == "lists/carrier.txt"
    assert d.prefix_lists["979"] == "callgate:irsf-starter"  # the first list that names it
    assert [found.name for found in policy.lists] == ["callgate:irsf-starter", "lists/carrier.txt"]


def test_lists_given_as_text() -> None:
    """A policy stored with its lists reads them from a mapping, never from disk."""
    policy = load_policy(POLICY, "redis:v3", read_list={"lists/carrier.txt": GOOD})
    assert policy.profiles["p"].destinations.deny_prefixes == ("1900", "88213", "2392", "979")
    found = problems_of(POLICY, read_list={})
    assert found == (
        Problem(
            "redis:v3",
            8,
            f"{DENY}[1].file",
            "cannot read the list 'lists/carrier.txt': it is not among the lists given",
        ),
    )


def test_lists_from_a_function() -> None:
    """Any function of name to text may give the lists; what it raises becomes a problem."""

    def read(name: str) -> str:
        if name == "lists/carrier.txt":
            return GOOD
        raise OSError(13, "Permission denied", name)

    assert load_policy(POLICY, "p", read_list=read).lists[0].name == "lists/carrier.txt"
    text = POLICY.replace("lists/carrier.txt", "lists/secret.txt")
    (problem,) = problems_of(text, read_list=read)
    assert (
        problem.message
        == "cannot read the list 'lists/secret.txt': Permission denied: lists/secret.txt"
    )


def test_list_problems_name_the_list_file_and_line(tmp_path: Path) -> None:
    """A bad line names the list file and its line, and the key that reads it, beside policy problems."""
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "carrier.txt"
    listed.write_text("+1\n0044\n", encoding="utf-8")
    text = POLICY.replace("region: US", "region: USA")
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(tmp_path / "policy.yaml")
    found = [(p.source, p.line, p.path) for p in caught.value.problems]
    policy_file = str(tmp_path / "policy.yaml")
    assert sorted(found) == sorted(
        [
            (policy_file, 2, "site.region"),
            (str(listed), 0, f"{DENY}[1].file"),  # no source
            (str(listed), 2, f"{DENY}[1].file"),  # 0044
        ]
    )
    assert str(caught.value).count(f"{listed}:2: {DENY}[1].file: expected an E.164 prefix") == 1


def test_a_missing_list_is_a_problem(tmp_path: Path) -> None:
    """A list file that is not there names the path it looked for, at the policy's line."""
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(tmp_path / "policy.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (8, f"{DENY}[1].file")
    assert f"no such file: {tmp_path / 'lists' / 'carrier.txt'}" in problem.message


def test_a_broken_list_used_twice_is_reported_once() -> None:
    """Two profiles naming one list read it once; its problems are listed once."""
    text = POLICY.replace(
        "extensions:",
        "  q:\n    destinations: {allow_prefixes: [{file: lists/carrier.txt}]}\nextensions:",
    )
    assert len(problems_of(text, read_list={"lists/carrier.txt": "+1\n"})) == 1
    policy = load_policy(text, "p", read_list={"lists/carrier.txt": GOOD})
    assert policy.profiles["q"].destinations.allow_prefixes == ("88213", "2392", "979")
    assert len(policy.lists) == 1


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ("{file: }", f"{DENY}[1].file", "expected text, got nothing"),
        ("{files: a.txt}", f"{DENY}[1].files", "did you mean 'file'?"),
        ("{}", f"{DENY}[1].file", "missing; expected the name of a list file"),
        ("[+1]", f"{DENY}[1]", '"+" then digits, such as "+1900", or {file: NAME}'),
    ],
)
def test_bad_file_entries(entry: str, path: str, message: str) -> None:
    """A {file: ...} entry is checked like every other mapping of the policy."""
    text = POLICY.replace("{file: lists/carrier.txt}", entry)
    found = problems_of(text, read_list={})
    assert path in {p.path for p in found}, found
    assert any(message in p.message for p in found), found


def test_digest_covers_the_lists() -> None:
    """Changing a list changes the policy's digest; without lists the digest is the text's sha256."""
    one = load_policy(POLICY, "p", read_list={"lists/carrier.txt": GOOD})
    two = load_policy(POLICY, "p", read_list={"lists/carrier.txt": GOOD + "+881\n"})
    assert one.digest != two.digest
    plain = POLICY.replace(", {file: lists/carrier.txt}", "")
    assert load_policy(plain, "p").digest == hashlib.sha256(plain.encode()).hexdigest()
    assert one.digest != hashlib.sha256(POLICY.encode()).hexdigest()


def test_expired_lists_are_enforced_and_reported() -> None:
    """An expired list still denies; expired_lists and describe(today=...) name it and its date."""
    policy = load_policy(POLICY, "p", read_list={"lists/carrier.txt": GOOD})
    assert "88213" in policy.profiles["p"].destinations.deny_prefixes
    assert policy.expired_lists(date(2027, 11, 30)) == ()
    (expired,) = policy.expired_lists(date(2027, 12, 1))
    assert expired.name == "lists/carrier.txt"
    text = "\n".join(describe(policy))
    assert "not +1900, list lists/carrier.txt (3)" in text
    assert "range list lists/carrier.txt: 3 prefixes, expires 2027-11-30; source: Example" in text
    assert "warning" not in text
    late = "\n".join(describe(policy, today=date(2028, 1, 1)))
    assert (
        "warning: range list lists/carrier.txt expired on 2027-11-30; it is still enforced" in late
    )
    undated = GOOD.replace("# expires: 2027-11-30\n", "")
    policy = load_policy(POLICY, "p", read_list={"lists/carrier.txt": undated})
    assert policy.expired_lists(date(2100, 1, 1)) == ()
    assert "no expiry date" in "\n".join(describe(policy, today=date(2100, 1, 1)))


# --- reading a long list quickly, looking prefixes up in constant time --------------------------

_LINES = st.one_of(
    st.sampled_from(
        [
            "# source: x",
            "#source:y",
            "# expires: 2027-01-01",
            "# expiry: 2027-01-01",
            "",
            "  ",
            "# a comment",
            "+1",
            "+1",
            "+44 # a comment",
            " +979\t",
            "+1234567890123456",
            "+12 34",
            "+",
            "\t# tab",
            "oops",
        ]
    ),
    st.from_regex(r"\+[0-9]{1,16}", fullmatch=True),
    st.text(alphabet="+0123456789 #\t\r\x0b\x1f\x85\u2028\u00a0x:s", max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=12),
    end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    last=st.booleans(),
)
def test_quick_reading_agrees_with_reading_line_by_line(
    lines: list[str], end: str, bom: bool, last: bool
) -> None:
    """Whatever the text, the quick reading of a list finds what the line-by-line one finds."""
    text = "\ufeff" * bom + end.join(lines) + end * last
    quick = read_prefix_list(text, "x")
    with mock.patch.object(prefixlists, "_quick", return_value=None):
        assert read_prefix_list(text, "x") == quick


def test_an_ordinary_list_is_read_the_quick_way() -> None:
    """The usual list (a header, then prefixes and comments, LF or CRLF) takes the quick reading."""
    assert prefixlists._quick(GOOD) == (
        "# source: Example Carrier IRSF advisory, 2026-11\n# expires: 2027-11-30\n",
        ["88213", "2392", "979", "2392"],
    )
    assert prefixlists._quick(GOOD.replace("\n", "\r\n")) is not None
    assert prefixlists._quick(GOOD + "+1 2\n") is None  # a bad line: read line by line, and named


@settings(max_examples=300, deadline=None)
@given(
    prefixes=st.lists(st.from_regex(r"[0-9]{1,15}", fullmatch=True), max_size=30),
    digits=st.from_regex(r"[0-9]{0,16}", fullmatch=True),
)
def test_lookup_is_the_longest_prefix(prefixes: list[str], digits: str) -> None:
    """denied and allowed give what a scan of the list would, the longest entry that matches."""
    prefixes += [digits[:n] for n in (1, 3) if len(digits) >= n]  # some that do match
    listed = tuple(dict.fromkeys(prefixes))
    d = Destinations(deny_prefixes=listed, allow_prefixes=listed)
    longest = max((p for p in listed if digits.startswith(p)), key=len, default=None)
    assert d.denied(digits) == d.allowed(digits) == longest
    assert len(PrefixTable.of(listed).lengths) <= 15  # at most 15 probes, whatever the size


CARRIER = "# source: Example Carrier\n+1900555\n+19005\n"
LISTED = """\
version: 1
site: {name: t, region: US, timezone: America/New_York, currency: USD}
emergency: ["911"]
rates: {default: 0.05}
profiles:
  p:
    destinations:
      deny_prefixes: {value: ["+1900", {file: lists/carrier.txt}], mode: MODE}
      allow_prefixes: ["+19005550100"]
extensions:
  - {match: "*", profile: p}
"""


@pytest.mark.parametrize(
    ("mode", "dialled", "outcome", "detail"),
    [
        ("enforce", "19005550199", "deny", "+1900555 is in deny_prefixes (list lists/carrier.txt)"),
        (
            "report",
            "19005550199",
            "report",
            "+1900555 is in deny_prefixes (list lists/carrier.txt) (mode: report)",
        ),
        ("enforce", "19004550199", "deny", "+1900 is in deny_prefixes"),
        ("enforce", "19005550100", "pass", "+19005550100 is in allow_prefixes"),
        ("enforce", "12125550123", "pass", "no deny_prefixes entry matches"),
    ],
)
def test_a_denied_number_names_the_list_it_is_on(
    mode: str, dialled: str, outcome: str, detail: str
) -> None:
    """The longest matching entry decides and is named with its list; report mode still reports."""
    policy = load_policy(
        LISTED.replace("MODE", mode), "p", read_list={"lists/carrier.txt": CARRIER}
    )
    at = datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    prepared = prepare(Memo(policy), CallAttempt("c", "1001", dialled), at)
    (result,) = (r for r in prepared.results if r.rule == "destinations.prefixes")
    assert (result.outcome, result.detail) == (outcome, detail)
