"""A large synthetic cdr_csv ``Master.csv`` for ``make bench``: ``write_rows(path, n_rows)``.

The traffic of a busy site of the default policy (America/New_York): office extensions 1001-1020
and 2000, lobby phones 3001-3040; outbound domestic and international calls, inbound calls from
the trunk, internal calls, with unanswered, busy and failed ones among them; busy in office hours
on weekdays, quiet at night. Rows are in end order, as Asterisk writes them (a row is written when
its call ends), in local wall-clock time (so the autumn hour appears twice, as in a real file), with
the 18 fields of ``loguniqueid=yes`` and ``loguserfield=yes``.

Speed matters more than finesse: the generator walks the end times forward and puts each start
before its end, so no call has to wait in memory for the calls around it; times are formatted
from two small tables. A million rows take a few seconds and a few MB of memory.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime
from math import log
from pathlib import Path
from zoneinfo import ZoneInfo

__all__ = ["write_rows"]

SITE_TZ = ZoneInfo("America/New_York")
START = int(datetime(2026, 1, 5, tzinfo=SITE_TZ).timestamp())  # a Monday
DID = "2125550100"
OFFICE = [f"{n}" for n in range(1001, 1021)] + ["2000"]
LOBBY = [f"{n}" for n in range(3001, 3041)]
DOMESTIC = (  # as dialled: with and without the outside line, 10 and 11 digits
    [f"9{n}" for n in ("212", "646", "718", "917", "201", "973", "516", "914")]
    + [f"91{n}" for n in ("312", "415", "617", "202", "305", "404")]
    + [f"1{n}" for n in ("800", "888", "213", "512")]
)
INTERNATIONAL = [  # 9 011, a country code, and all but the last four digits of a valid number
    "901144207946",  # London
    "9011493012",  # Berlin
    "90113319900",  # Paris
    "901152551234",  # Mexico City
    "90116129999",  # Sydney
]
DISPOSITIONS = ("ANSWERED",) * 14 + ("NO ANSWER", "NO ANSWER", "BUSY", "FAILED")


def write_rows(path: Path | str, n_rows: int, seed: int = 1) -> None:
    """Write ``n_rows`` cdr_csv rows to ``path``; the same arguments give the same file."""
    rng = random.Random(seed)
    rand = rng.random  # int(rand() * n) is three times faster than randrange(n)
    # A PBX dials the same numbers again and again: pools of the numbers this site calls.
    domestic = [f"{rng.choice(DOMESTIC)}{rng.randrange(2000000, 10000000)}" for _ in range(4000)]
    foreign = [f"{rng.choice(INTERNATIONAL)}{rng.randrange(10000):04d}" for _ in range(300)]
    areas = ("212", "718", "917", "646", "347", "516")
    callers = [f"{rng.choice(areas)}{rng.randrange(2000000, 10000000)}" for _ in range(3000)]
    mmss = [f":{s // 60:02d}:{s % 60:02d}" for s in range(3600)]
    # UTC hour -> (local "YYYY-MM-DD HH", office hours?); New York's offsets are whole hours.
    hours: dict[int, tuple[str, bool]] = {}

    def hour(h: int) -> tuple[str, bool]:
        local = datetime.fromtimestamp(h * 3600, UTC).astimezone(SITE_TZ)
        hours[h] = entry = (
            local.strftime("%Y-%m-%d %H"),
            local.weekday() < 5 and 8 <= local.hour < 18,
        )
        return entry

    def stamp(t: int) -> str:
        return (hours.get(t // 3600) or hour(t // 3600))[0] + mmss[t % 3600]

    n_office, n_lobby, n_disp = len(OFFICE), len(LOBBY), len(DISPOSITIONS)
    n_dom, n_for, n_callers = len(domestic), len(foreign), len(callers)
    out: list[str] = []
    end = START
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        for seq in range(n_rows):
            busy = (hours.get(end // 3600) or hour(end // 3600))[1]
            end += int(rand() * 12) if busy else 30 + int(rand() * 570)
            kind = rand()
            ring = 2 + int(rand() * 23)
            disposition = DISPOSITIONS[int(rand() * n_disp)]
            talk = 1 + int(-180 * log(1.0 - rand())) if disposition == "ANSWERED" else 0
            ext = OFFICE[int(rand() * n_office)]
            chan = f"{seq:07x}"
            if kind < 0.50:  # outbound
                if kind < 0.08:
                    ext = LOBBY[int(rand() * n_lobby)]
                dst = foreign[int(rand() * n_for)] if kind < 0.05 else domestic[int(rand() * n_dom)]
                head = (
                    f'"","{ext}","{dst}","from-internal","""Ext {ext}"" <{ext}>","PJSIP/{ext}-{chan}0",'
                    f'"PJSIP/trunk-{chan}1","Dial","PJSIP/{dst.removeprefix("9")}@trunk,300,T",'
                )
            elif kind < 0.80:  # inbound, to the DID
                caller = callers[int(rand() * n_callers)]
                head = (
                    f'"","{caller}","{DID}","from-trunk","""{caller}"" <{caller}>",'
                    f'"PJSIP/trunk-{chan}0","PJSIP/{ext}-{chan}1","Dial","PJSIP/{ext},20,tr",'
                )
            else:  # internal
                other = OFFICE[int(rand() * n_office)]
                talk = (talk + 1) // 2  # still 0 when nobody answered
                head = (
                    f'"","{ext}","{other}","from-internal","""Ext {ext}"" <{ext}>","PJSIP/{ext}-{chan}0",'
                    f'"PJSIP/{other}-{chan}1","Dial","PJSIP/{other},20,tr",'
                )
            start = end - ring - talk
            answer = (
                f'"{stamp(start + ring)}"' if talk else ""
            )  # unanswered: an empty, unquoted field
            out.append(
                f'{head}"{stamp(start)}",{answer},"{stamp(end)}",{ring + talk},{talk},'
                f'"{disposition}","DOCUMENTATION","{start}.{seq}",""\n'
            )
            if len(out) == 8192:
                f.writelines(out)
                out.clear()
        f.writelines(out)


if __name__ == "__main__":
    write_rows(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
