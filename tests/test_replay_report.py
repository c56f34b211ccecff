"""replay for people (issue 13, part 2): the terminal summary, ``--html FILE`` and the progress line.

The page's figures equal the jsonl's totals; every CDR string on it is escaped and it refers to nothing
outside itself; what the summary keeps stays bounded however long the file; the progress line is shown
only on a terminal. The page in a real Chromium: tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callgate.cli import main
from callgate.core.admission import from_micro, money_text
from callgate.core.policy import Burst
from callgate.offline.html import report_html
from callgate.offline.progress import Progress
from callgate.offline.replay import Replayed
from callgate.offline.report import money, summary_text
from callgate.offline.summary import Summary, Tally, Timeline, Tuning

ROOT = Path(__file__).resolve().parent.parent
MASTER = str(ROOT / "examples" / "Master.csv")
NY = ZoneInfo("America/New_York")


def figures_of(page: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="callgate-figures">(.*?)</script>', page)
    assert found is not None
    return json.loads(found[1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, object]], str]:
    """The example's jsonl and its page, from one `replay --format jsonl --html` run."""
    page = tmp_path_factory.mktemp("report") / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "replay", "--format", "jsonl", "--html", str(page), MASTER],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert run.stderr == f"callgate: the report is in {page}\n"  # not a terminal: no progress line
    return [json.loads(line) for line in run.stdout.splitlines()], page.read_text("utf-8")


def test_html_leaves_the_jsonl_as_it_was(
    example: tuple[list[dict[str, object]], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--html beside --format jsonl changes no byte of the jsonl."""
    assert main(["replay", "--format", "jsonl", MASTER]) == 0
    rows, _ = example
    assert capsys.readouterr().out == "".join(
        json.dumps(r, separators=(",", ":")) + "\n" for r in rows
    )


def test_the_attack_is_the_charts_spike_and_the_policy_flattens_it(
    example: tuple[list[dict[str, object]], str],
) -> None:
    """The costliest two hours are the weekend attack's (examples/README.md): thousands without the
    policy, nothing with it."""
    _, page = example
    assert (
        "The costliest 2 hours: from 2026-11-22 04:00, 2,835.05 USD without the policy, 0.00 USD"
        in page
    )


def test_the_pages_figures_are_the_jsonl_totals(
    example: tuple[list[dict[str, object]], str],
) -> None:
    """Counts and money on the page (its JSON and the text a person reads) add up the jsonl's rows."""
    rows, page = example
    calls = [r for r in rows if r["verdict"] != "skip"]
    denied = [r for r in calls if r["verdict"] == "deny"]
    cut = [r for r in calls if r["verdict"] == "allow" and r["allowed_seconds"] < r["billsec"]]  # type: ignore[operator]

    def total(of: list[dict[str, object]], key: str) -> Decimal:
        return sum((Decimal(str(r[key])) for r in of), Decimal(0))

    cost, kept = total(calls, "cost"), total(calls, "allowed_cost")
    by_reason = Counter(str(r["reason"]) for r in denied)
    figures = figures_of(page)
    assert figures["rows"] == len(rows)
    assert (figures["calls"], figures["denied"], figures["cut"]) == (
        len(calls),
        len(denied),
        len(cut),
    )
    assert figures["allowed"] == len(calls) - len(denied)
    assert Decimal(str(figures["cost"])) == cost
    assert Decimal(str(figures["allowed_cost"])) == kept
    assert Decimal(str(figures["saved"])) == cost - kept
    assert {k: v["calls"] for k, v in figures["by_reason"].items()} == by_reason  # type: ignore[attr-defined]
    for reason, group in figures["by_reason"].items():  # type: ignore[attr-defined]
        assert Decimal(group["cost"]) == total([r for r in denied if r["reason"] == reason], "cost")
    assert figures["cut_short"] == {
        "calls": len(cut),
        "saved": money_text(int((total(cut, "cost") - total(cut, "allowed_cost")) * 10**6)),
    }
    assert not re.search(r"https?:|//|url\(|@import", page)  # nothing outside the file
    # what a person reads: the headline, and each reason's count and money in its table
    saved = money(cost - kept, "USD", grouped=True)
    assert f">{saved}</p>" in page
    assert saved == "35,112.10 USD"
    for reason, count in by_reason.items():
        money_of = money(
            total([r for r in denied if r["reason"] == reason], "cost"), "USD", grouped=True
        )
        shown = reason.replace("_", "_<wbr>")  # a phone may break the line after an underscore
        assert f'<td>{shown}</td><td class="n">{count:,}</td>' in page
        assert money_of in page


def test_the_tuning_list_is_the_examples_three_honest_refusals(
    example: tuple[list[dict[str, object]], str],
) -> None:
    """examples/README.md's three calls that a strict policy stops though nobody meant harm are the
    tuning list; the weekend attack (1007, locked) and the transfer legs (1019) are not on it."""
    _, page = example
    assert figures_of(page)["tuning"] == {"calls": 3, "cost": "0.320000"}
    flat = page.replace("<wbr>", "")
    listed = flat[flat.index("the tuning list") :]
    listed = listed[: listed.index("</table>")]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", listed)
    assert {(cells[i], cells[i + 2]) for i in range(0, len(cells), 10)} == {
        ("3001", "country_not_allowed"),
        ("1002", "outside_hours"),
        ("1003", "same_number"),
    }


def test_the_terminal_opens_with_the_summary_and_groups_the_denied_calls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No line per call unless asked (--calls); the saving first, as money; denied calls by group."""
    assert main(["replay", MASTER]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("the policy would have saved 35,112.10 USD of the 35,171.86 USD")
    assert "allowed 1439 (9 cut short), denied 886" in out
    assert re.search(r"^  1007 +extension_locked +CU +160 +4,987.40 USD$", out, re.MULTILINE)
    assert "uniqueid" not in out
    assert len(lines) < 80
    assert main(["replay", "--calls", MASTER]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(out.rstrip("\n"))  # the same summary first, then the calls
    assert len(listed.splitlines()) - len(lines) == 2 + 886 + 9  # a gap, the header, denied and cut


class Script(HTMLParser):
    """The page's elements and text, as a browser's parser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.urls += [f"{k}={v}" for k, v in attrs if k in ("src", "href", "xlink:href", "action")]
        self.urls += [f"{k}={v}" for k, v in attrs if v and re.search(r"https?:|//|url\(", v)]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "</svg><svg onload=alert(1)>",
           "'; }</style><a href=\"https://evil.example/\">", "&amp;<!--"]  # fmt: skip


def hostile_row(i: int, text: str) -> Replayed:
    return Replayed(
        f"{text}.{i}", text, f"9011{i}{text}", None, None, "deny", "country_not_allowed", 60, 0,
        1_000_000, 0, 1_795_000_000_000 + i * 60_000, (), "dialled", text, text,
    )  # fmt: skip


def test_every_cdr_string_is_escaped_and_nothing_is_fetched() -> None:
    """Extensions, numbers and uniqueids holding markup reach the page as text: one script element
    (the JSON, never run), no element of theirs, no URL at all; the file's name is escaped too."""
    summary = Summary(NY, "USD")
    for i, text in enumerate(HOSTILE):
        summary.add(hostile_row(i, text))
    from callgate.cli import _load

    page = report_html(summary, _load(None), '<b>"Master".csv</b>')
    parsed = Script()
    parsed.feed(page)
    assert parsed.tags["script"] == 1
    assert not parsed.tags["img"]
    assert not parsed.tags["a"]
    assert parsed.tags["b"] == 0
    assert parsed.tags["style"] == 1
    assert parsed.urls == []  # no attribute refers to anything
    style = page[page.index("<style>") : page.index("</style>")]
    assert not re.search(r"https?:|//|url\(|@import", style)
    assert "Content-Security-Policy\" content=\"default-src 'none'" in page
    text = "".join(parsed.text)
    assert all(t in text for t in HOSTILE)  # shown, as text
    assert figures_of(page)["denied"] == len(HOSTILE)


def test_cdr_strings_cannot_drive_the_terminal() -> None:
    """An escape sequence or a bidi override in a CDR field is printed as \\x1b, \\u202e."""
    summary = Summary(NY, "USD")
    for i, text in enumerate(["\x1b]0;pwned\x07", "\x1b[2J\u202e1001"]):
        summary.add(hostile_row(i, text))
    out = summary_text(summary, "Master.csv")
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\x1b]0;pwned\\x07" in out
    assert "\\u202e1001" in out


def test_a_cdr_field_of_128_kb_is_kept_as_64_characters() -> None:
    """What the summary keeps of a row's strings is bounded too: tallies' keys and listed calls."""
    summary = Summary(NY, "USD")
    for i in range(3):
        summary.add(hostile_row(i, str(i) * 131_072))
    kept = [*summary.extensions.rows, *summary.numbers.rows]
    kept += [r.dst for _, r in summary.tuning.result().calls()]
    assert len(kept) == 9
    assert all(len(text) == 64 and text.endswith("…") for text in kept)


def test_a_tally_keeps_its_largest_keys_when_full() -> None:
    tally: Tally[str] = Tally(cap=2)
    for key, cost in [("a", 9), ("b", 1), ("c", 5), ("d", 2), ("e", 7)]:
        tally.add(key, 0, cost, 0)
    assert [k for k, _ in tally.top(5)] == ["a", "e", "c"]
    assert tally.pruned == 1
    assert len(tally.rows) <= 4


def test_the_timeline_widens_and_stays_bounded() -> None:
    """A year of hourly calls is at most `buckets` buckets, their sums intact."""
    line = Timeline(buckets=50)
    hour = 3_600_000
    for i in range(24 * 365):
        line.add(1_790_000_000_000 + i * hour, 2, 1)
    series = line.series()
    assert len(series) <= 50
    assert len(line.buckets) <= 50
    assert sum(c for _, c, _ in series) == 2 * 24 * 365
    assert sum(k for _, _, k in series) == 24 * 365
    assert line.width_ms == 28 * 24 * hour


def test_an_extension_that_bursts_leaves_the_tuning_list() -> None:
    """Its earlier denials too; another extension's lone denials stay; extensions past the cap are
    counted, not kept."""
    tuning = Tuning(Burst(3, 600), n=5, cap=2)
    rows = [hostile_row(i, ext) for i, ext in enumerate(["1001", "1002", "1003", "1002", "1002"])]
    for r in rows:
        tuning.add(r)
    result = tuning.result()
    assert [r.extension for _, r in result.calls()] == ["1001"]
    assert tuning.burst == {"1002"}
    assert tuning.untracked == 1  # 1003: past the two extensions followed


def test_money_reads_as_money_grouped() -> None:
    assert money(Decimal("35112.1"), "USD", grouped=True) == "35,112.10 USD"
    assert money(from_micro(1_234_001_234), "EUR", grouped=True) == "1,234.001234 EUR"
    assert money(Decimal("3000")) == "3000.00"  # explain's words stay as they were


def test_progress_is_throttled_and_erased() -> None:
    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    for every, times in [(0, 5), (4, 1), (1000, 0)]:  # the clock ticks once a look
        out, ticks = Terminal(), map(float, range(10_000))
        shown = Progress(out, 10**6, lambda: 500_000, every=every, clock=ticks.__next__)
        assert sum(1 for _ in shown.wrap(range(5 * 1024))) == 5 * 1024
        text = out.getvalue()
        assert text.count("\rcallgate replay:  50% of 1.0 MB, ") == shown.shown == times
        assert text.endswith("\r\x1b[K") if times else text == ""  # erased; nothing if never shown


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    """With stderr a pty the line is shown and erased at the end; piped, stderr stays empty (above)."""
    leader, follower = pty.openpty()
    page = tmp_path / "r.html"
    run = subprocess.Popen(
        [sys.executable, "-m", "callgate.cli", "replay", "--progress-every", "0", "--html", str(page), MASTER],
        stdout=subprocess.PIPE, stderr=follower, text=True,
    )  # fmt: skip
    os.close(follower)
    out, _ = run.communicate(timeout=120)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child has closed its side
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert run.returncode == 0
    assert "the policy would have saved" in out
    text = seen.decode()
    assert re.search(r"\rcallgate replay: +\d+% of 1\.1 MB, [\d,]+ rows", text), text
    assert text.endswith(f"\r\x1b[Kcallgate: the report is in {page}\r\n")
