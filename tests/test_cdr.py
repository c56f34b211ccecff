"""callgate.offline.cdr: reading cdr_csv Master.csv rows, and putting them in start order."""

from __future__ import annotations

import csv
import importlib.util
import io
import itertools
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callgate.core.numbers import read_number
from callgate.offline.cdr import CdrError, CdrRow, in_start_order, read_cdr

NY = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)

BASE: dict[str, str | int] = {
    "accountcode": "",
    "src": "1001",
    "dst": "912125550123",
    "dcontext": "from-internal",
    "clid": '"Alice" <1001>',
    "channel": "PJSIP/1001-0000001a",
    "dstchannel": "PJSIP/trunk-0000001b",
    "lastapp": "Dial",
    "lastdata": "PJSIP/12125550123@trunk,300,T",
    "start": "2026-11-17 10:00:00",
    "answer": "2026-11-17 10:00:07",
    "end": "2026-11-17 10:02:07",
    "duration": 127,
    "billsec": 120,
    "disposition": "ANSWERED",
    "amaflags": "DOCUMENTATION",
}
ORDER = list(BASE)


def cdr_line(extra: tuple[str, ...] = ("1794927600.26", ""), **changes: str | int) -> str:
    """One line as cdr_csv writes it: strings quoted with quotes doubled, integers and an empty
    date bare; ``extra`` are the uniqueid/userfield/newcdrcolumns fields."""
    values = {**BASE, **changes}
    out = []
    for name in ORDER:
        value = values[name]
        if isinstance(value, int) or (name in ("start", "answer", "end") and not value):
            out.append(str(value))
        else:
            out.append('"' + str(value).replace('"', '""') + '"')
    out += ['"' + x.replace('"', '""') + '"' if not x.isdigit() else x for x in extra]
    return ",".join(out) + "\n"


def read(text: str, tz: tzinfo = NY) -> tuple[list[CdrRow], list[CdrError]]:
    """The rows of ``text`` and the errors reported on the way."""
    errors: list[CdrError] = []
    rows = list(read_cdr(io.StringIO(text, newline=""), tz=tz, on_error=errors.append))
    return rows, errors


@pytest.mark.parametrize(
    ("extra", "uniqueid", "userfield", "linkedid"),
    [
        ((), None, None, None),
        (("1794927600.26",), "1794927600.26", None, None),
        (("1794927600.26", "vip"), "1794927600.26", "vip", None),
        (("", "1794927600.20", "3"), None, None, "1794927600.20"),  # peeraccount, linkedid, sequence
        (("1794927600.26", "", "1794927600.20", "3"), "1794927600.26", None, "1794927600.20"),
        (("1794927600.26", "vip", "", "1794927600.20", "3"), "1794927600.26", "vip", "1794927600.20"),
    ],
)  # fmt: skip
def test_field_counts(
    extra: tuple[str, ...], uniqueid: str | None, userfield: str | None, linkedid: str | None
) -> None:
    """16, 17 and 18 fields (loguniqueid, loguserfield), and the three newcdrcolumns after them (of
    which linkedid is kept)."""
    rows, errors = read(cdr_line(extra))
    assert errors == []
    [row] = rows
    assert (row.uniqueid, row.userfield, row.linkedid) == (uniqueid, userfield, linkedid)
    assert (row.line, row.src, row.dst, row.dcontext, row.clid) == (
        1, "1001", "912125550123", "from-internal", '"Alice" <1001>',
    )  # fmt: skip
    assert (row.lastapp, row.lastdata, row.disposition, row.amaflags) == (
        "Dial", "PJSIP/12125550123@trunk,300,T", "ANSWERED", "DOCUMENTATION",
    )  # fmt: skip
    assert row.start == datetime(2026, 11, 17, 10, 0, 0, tzinfo=NY)
    assert row.answer == datetime(2026, 11, 17, 10, 0, 7, tzinfo=NY)
    assert row.end == datetime(2026, 11, 17, 10, 2, 7, tzinfo=NY)
    assert (row.duration, row.billsec) == (127, 120)


def test_header_and_blank_lines_are_skipped() -> None:
    """A first line naming the columns (even after a byte-order mark) and blank lines are no rows;
    line numbers still count them."""
    header = "\ufeffaccountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags,uniqueid,userfield\n"
    rows, errors = read(header + cdr_line() + "\n" + cdr_line(src="1002"))
    assert errors == []
    assert [(r.line, r.src) for r in rows] == [(2, "1001"), (4, "1002")]


def test_a_header_later_in_the_file_is_a_bad_row() -> None:
    """Only the first line may be a header; a byte-order mark on a data row is dropped."""
    rows, errors = read("\ufeff" + cdr_line(accountcode="acme") + "accountcode,src,dst\n")
    assert [r.accountcode for r in rows] == ["acme"]
    assert [(e.line, e.reason) for e in errors] == [(2, "expected 16 to 21 fields, found 3")]


def test_quoted_fields_with_commas_quotes_and_line_breaks() -> None:
    """Quotes are doubled, commas and line breaks stay inside the field, and the rows after a
    multi-line row keep their true line numbers."""
    clid, lastdata = '"Smith, Jr." <1001>', 'PJSIP/2125550123@trunk,30,"M(a,b)"\nc\r\nd'
    tricky = cdr_line(clid=clid, lastdata=lastdata)
    text = cdr_line(src="1000") + tricky + cdr_line(src="1002") + cdr_line(start="bad") + cdr_line()
    rows, errors = read(text)
    assert [(r.line, r.src) for r in rows] == [(1, "1000"), (2, "1001"), (5, "1002"), (7, "1001")]
    assert (rows[1].clid, rows[1].lastdata) == (clid, lastdata)
    assert [e.line for e in errors] == [6]


def test_unanswered_call() -> None:
    """An unanswered call has no answer time, bare (as cdr_csv writes it) or quoted."""
    bare = cdr_line(answer="", billsec=0, disposition="NO ANSWER")
    quoted = bare.replace(',,"2026-11-17 10:02:07"', ',"","2026-11-17 10:02:07"')
    assert ',,"2026' in bare
    assert ',"","2026' in quoted
    rows, errors = read(bare + quoted)
    assert errors == []
    assert [(r.answer, r.billsec, r.disposition) for r in rows] == [(None, 0, "NO ANSWER")] * 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('"1001","2125550123"\n', "expected 16 to 21 fields, found 2"),
        (cdr_line(("a", "b", "c", "d", "e", "f")), "expected 16 to 21 fields, found 22"),
        (cdr_line(("a", "b", "c")), "expected 16 to 21 fields, found 19"),  # no sequence last
        (cdr_line(start="2026-11-17T10:00:00"),
         "start time '2026-11-17T10:00:00' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(start="2026-11-17 10:00"), "start time '2026-11-17 10:00' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(answer="2026-02-30 10:00:07"),
         "answer time '2026-02-30 10:00:07' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(end="2026-11-17 24:00:00"), "end time '2026-11-17 24:00:00' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(end="2026-11-17 10:60:00"), "end time '2026-11-17 10:60:00' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(end="２０２６-11-17 10:02:07"),
         "end time '２０２６-11-17 10:02:07' is not YYYY-MM-DD HH:MM:SS"),
        (cdr_line(duration=-3), "duration -3 is negative"),
        (cdr_line(billsec=-1), "billsec -1 is negative"),
        (cdr_line(billsec="12.5"), "billsec '12.5' is not a whole number of seconds"),
        (cdr_line(duration=""), "duration '' is not a whole number of seconds"),
    ],
)  # fmt: skip
def test_bad_rows_are_reported_and_skipped(line: str, reason: str) -> None:
    """A bad row goes to on_error with the file, its line and why; the next rows are still read."""
    rows, errors = read(cdr_line(src="1000") + line + cdr_line(src="1002"))
    assert [r.src for r in rows] == ["1000", "1002"]
    [error] = errors
    assert (error.source, error.line, error.reason) == ("Master.csv", 2, reason)
    assert str(error) == f"Master.csv:2: {reason}"


def test_a_bad_row_raises_without_on_error() -> None:
    """Without on_error the first bad row stops reading with a CdrError (a ValueError too)."""
    rows = read_cdr(
        io.StringIO(cdr_line() + cdr_line(duration="x")), tz=NY, source="cdr/Master.csv"
    )
    assert next(rows).line == 1
    with pytest.raises(CdrError, match=r"^cdr/Master.csv:2: duration 'x' is not a whole"):
        next(rows)
    assert issubclass(CdrError, ValueError)


def test_a_field_over_the_csv_limit_is_a_bad_row() -> None:
    """The csv module's own errors are reported like the others, and reading goes on."""
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(1000)
        rows, errors = read(cdr_line(lastdata="x" * 2000) + cdr_line(src="1002"))
    finally:
        csv.field_size_limit(limit)
    assert [r.src for r in rows] == ["1002"]
    assert [(e.line, e.reason) for e in errors] == [(1, "field larger than field limit (1000)")]


def test_times_are_read_in_the_given_zone() -> None:
    """Local time (the default) is read in the site's zone; usegmtime=yes files are read as UTC."""
    line = cdr_line(
        start="2026-07-01 12:00:00", answer="2026-07-01 12:00:05", end="2026-07-01 12:01:05"
    )
    [local], _ = read(line, NY)
    [utc], _ = read(line, UTC)
    assert local.start.utcoffset() == timedelta(hours=-4)
    assert local.start.astimezone(UTC) == datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    assert utc.start == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert utc.start.tzinfo is UTC
    assert local.start - utc.start == timedelta(hours=4)


def test_many_hours_and_many_times() -> None:
    """Times are right across days, hours and the cache of hours being emptied (4096 hours)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(seconds=s) for s in range(0, 5000 * 3600, 3599)]
    text = "".join(
        cdr_line(start=f"{t:%Y-%m-%d %H:%M:%S}", answer="", end=f"{t:%Y-%m-%d %H:%M:%S}")
        for t in times
    )
    rows, errors = read(text, UTC)
    assert errors == []
    assert [r.start for r in rows] == times
    assert [r.end for r in rows] == times


def test_dst_fall_back_hour_reads_as_its_first_occurrence() -> None:
    """America/New_York, 2026-11-01: 01:00-01:59 happens twice. cdr_csv writes no offset, so the
    reader takes the first occurrence (fold=0, EDT); the hours around it are unambiguous."""
    rows, errors = read(
        cdr_line(
            start="2026-11-01 00:59:59", answer="2026-11-01 01:00:00", end="2026-11-01 01:30:00"
        )
        + cdr_line(start="2026-11-01 01:59:59", answer="", end="2026-11-01 02:00:00")
    )
    assert errors == []
    first, second = rows
    assert first.start.utcoffset() == timedelta(hours=-4)
    assert first.end.fold == 0
    assert first.end.utcoffset() == timedelta(hours=-4)
    assert first.end.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert second.start.astimezone(UTC) == datetime(2026, 11, 1, 5, 59, 59, tzinfo=UTC)
    assert second.end.utcoffset() == timedelta(hours=-5)
    assert second.end.astimezone(UTC) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def test_dst_spring_forward() -> None:
    """2026-03-08 02:00-02:59 does not exist in New York; the times around the gap are exact."""
    [row], _ = read(cdr_line(start="2026-03-08 01:59:30", answer="", end="2026-03-08 03:00:30"))
    assert (row.end.astimezone(UTC) - row.start.astimezone(UTC)) == timedelta(seconds=60)


# -- in_start_order ------------------------------------------------------------------------------


def call(line: int, start: int, seconds: int) -> CdrRow:
    """A row for a call starting ``start`` minutes after 09:00 and lasting ``seconds``."""
    t = datetime(2026, 11, 17, 9, 0, tzinfo=NY) + timedelta(minutes=start)
    return CdrRow(line, "", "1001", "2125550123", "from-internal", "", "", "", "", "",
                  t, None, t + timedelta(seconds=seconds), seconds, 0, "NO ANSWER", "", None, None)  # fmt: skip


def by_end(rows: list[CdrRow]) -> list[CdrRow]:
    return sorted(rows, key=lambda r: (r.end, r.line))


def test_in_start_order_reorders_end_ordered_rows() -> None:
    """Long calls written late come out in start order; equal starts keep file order."""
    calls = [(0, 3600), (1, 30), (2, 10), (2, 7200), (5, 5), (5, 60), (61, 1), (200, 40)]
    rows = [r._replace(line=n) for n, r in enumerate(by_end([call(0, *c) for c in calls]), 1)]
    out = list(in_start_order(rows, horizon=timedelta(hours=3)))
    nine = datetime(2026, 11, 17, 9, 0, tzinfo=NY)
    assert [(r.start, r.duration) for r in out] == [
        (nine + timedelta(minutes=minutes), seconds) for minutes, seconds in calls
    ]
    assert [r.line for r in out] == [5, 1, 2, 7, 3, 4, 6, 8]  # the 2 h call ended after 9:02:10


def test_in_start_order_empty_and_single() -> None:
    """No rows give no rows; one row gives itself."""
    assert list(in_start_order([])) == []
    one = call(1, 0, 10)
    assert list(in_start_order([one])) == [one]


def test_in_start_order_streams_within_the_horizon() -> None:
    """Rows come out while rows are still going in: with a one-hour horizon, a day of calls (one a
    minute, each under an hour) is yielded having read little more than a day and two hours."""
    taken = 0

    def endless() -> Iterator[CdrRow]:
        nonlocal taken
        for i in itertools.count():
            taken += 1
            yield call(i, i, (i * 37) % 3500)

    out = list(itertools.islice(in_start_order(by_end_stream(endless()), horizon=HOUR), 1440))
    assert [r.line for r in out] == list(range(1440))
    assert taken < 1440 + 60 + 15 + 60 + 5  # the horizon, a batch step, by_end_stream's hour


def by_end_stream(rows: Iterator[CdrRow]) -> Iterator[CdrRow]:
    """End order of an endless start-ordered stream whose calls last under an hour."""
    pending: list[CdrRow] = []
    for row in rows:
        pending.append(row)
        pending.sort(key=lambda r: r.end)
        while pending and pending[0].end <= row.start:
            yield pending.pop(0)


def test_a_call_longer_than_the_horizon_comes_late() -> None:
    """A row that breaks the horizon's promise is not lost: it comes with the next batch."""
    long = call(0, 0, 5 * 3600)
    rows = by_end([long, *(call(i, i * 10, 60) for i in range(1, 40))])
    out = list(in_start_order(rows, horizon=HOUR))
    assert sorted(out) == sorted(rows)
    assert out.index(long) > 20
    rest = [r.start for r in out if r is not long]
    assert rest == sorted(rest)


# -- whole files -----------------------------------------------------------------------------


def test_generated_bench_file_reads_cleanly(tmp_path: Path) -> None:
    """The bench generator writes what the reader reads, in end order, without a bad row."""
    from bench.gen_cdr import write_rows

    path = tmp_path / "Master.csv"
    write_rows(path, 3000, seed=7)
    errors: list[CdrError] = []
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(read_cdr(f, tz=NY, on_error=errors.append))
    assert errors == []
    assert len(rows) == 3000
    assert [r.end for r in rows] == sorted(r.end for r in rows)
    ordered = list(in_start_order(rows))
    assert [r.start for r in ordered] == sorted(r.start for r in rows)
    assert {r.dcontext for r in rows} == {"from-internal", "from-trunk"}
    assert all(r.billsec <= r.duration for r in rows)
    assert all((r.answer is None) == (r.billsec == 0) for r in rows)


def test_example_master_csv_is_what_its_generator_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/Master.csv reads without a bad row, in end order, and is exactly what
    examples/make_master_csv.py writes (so the committed demo cannot drift from its script)."""
    examples = Path(__file__).parent.parent / "examples"
    spec = importlib.util.spec_from_file_location(
        "make_master_csv", examples / "make_master_csv.py"
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generator)  # for its dataclass
    spec.loader.exec_module(generator)
    text = (examples / "Master.csv").read_text(encoding="utf-8")
    assert "".join(generator.rows(generator.calls_of())) == text

    rows, errors = read(text)
    assert errors == []
    assert [r.end for r in rows] == sorted(r.end for r in rows)
    assert all(r.uniqueid and r.userfield == "" for r in rows)
    outbound = [r.dst for r in rows if r.dcontext == "from-internal" and len(r.dst) > 5]
    unreadable = [
        dst
        for dst in outbound
        if not read_number(dst, region="US", outside_line=("9",), emergency=("911", "933")).readable
    ]
    assert unreadable == []


def test_a_file_that_jumps_back_in_time_is_refused_with_its_line() -> None:
    """Issue 12: rotated files concatenated in the wrong order (or one appended twice) cannot be put
    in order in bounded memory: the first row that ends more than a horizon before one already read
    is named, with how to fix the file; a long call (it ends late) is no such row."""
    week = by_end([call(i, i * 600, 60) for i in range(1, 200)])  # 33 hours of calls
    twice = [*week, *(r._replace(line=r.line + 1000) for r in week)]
    with pytest.raises(CdrError) as refused:
        list(in_start_order(twice, horizon=HOUR, source="Master.csv"))
    text = str(refused.value)
    assert text.startswith(f"Master.csv:{week[0].line + 1000}: this call ended")
    assert "jumps back in time" in text
    assert "oldest first" in text


def test_replay_of_a_file_appended_twice_stops_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command: exit 2 and the message on stderr, instead of a replay of weeks out of order
    (a 300,000-row fortnight repeated peaked near 400 MB)."""
    from callgate.cli import main

    example = (Path(__file__).resolve().parent.parent / "examples" / "Master.csv").read_text(
        "utf-8"
    )
    doubled = tmp_path / "Master.csv"
    doubled.write_text(example + example, encoding="utf-8")
    assert main(["replay", str(doubled)]) == 2
    err = capsys.readouterr().err
    lines = example.count("\n")
    assert f"Master.csv:{lines + 1}:" in err
    assert "jumps back in time" in err
