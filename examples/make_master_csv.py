"""Write ``examples/Master.csv``: four weeks of a small New York office, its forwards, and two attacks.

The site is the one of callgate's default policy (acme-nyc, America/New_York, outside line 9):
twenty office extensions 1001-1020, the owner on 2000, a lobby phone on 3001, one main number
(212) 555-0100 on a SIP trunk called ``voipco``. The rows are what Asterisk's cdr_csv writes
(``loguniqueid=yes``, ``loguserfield=yes``: 18 fields), one per call, in the order the calls
ended, in local time:

* Monday 2 to Sunday 29 November 2026: calls out (dialled as people dial: ``9`` + 10 or 11
  digits, or without the ``9``; a few to London, Berlin, Paris, Mexico City and Toronto in office
  hours), calls in on the main number (``from-trunk``), calls between extensions, voicemail
  checks; unanswered, busy and failed calls among them. Thanksgiving week is quieter.
* A handful of calls the policy would stop although nobody meant harm: a call to London after
  18:00, a redial of a busy number a fourth time in ten minutes, the lobby phone calling Mexico.
* From Friday 20 November 23:10 to Sunday 22 November 19:40, extension 1007's SIP password is
  in someone else's hands: after a few test calls, a dialer keeps up to a dozen calls at a time
  going to revenue-share destinations (Iridium +881 and +882, Cuba, Sierra Leone, Jamaica dialled
  as 1-876 like a domestic call, UK +4470 personal numbers) and, for a while, to rural Iowa
  numbers (+1 712, access stimulation).
* Legs that no phone dialled (forwarded()): 1004 forwards to his mobile through a Local channel,
  2000's direct line rings her desk then her mobile from the inbound context, 1001's follow-me rings
  her mobile and home at once; all to US numbers, all legitimate.
* Friday 27 November 22:40 to 02:10 (transfer_attack()): calls to 1019's direct line, answered on its
  phished softphone, blind-transferred to premium numbers abroad (the trunk's channel goes on in
  ``from-internal-xfer``).

Deterministic: the same seed writes the same bytes. Standard library only.

    python examples/make_master_csv.py [OUT]     # default: Master.csv beside this script
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20261120
TZ = ZoneInfo("America/New_York")
FIRST_DAY = date(2026, 11, 2)  # a Monday
DAYS = 28
THANKSGIVING = date(2026, 11, 26)
TRUNK = "voipco"
MAIN_DID = "2125550100"
ATTACK_START = datetime(2026, 11, 20, 23, 10, tzinfo=TZ)
ATTACK_END = datetime(2026, 11, 22, 19, 40, tzinfo=TZ)
HIJACKED = "1007"

NAMES = {
    "1001": "Maria Lopez", "1002": "James Carter", "1003": "Priya Shah", "1004": "Tom Becker",
    "1005": "Sofia Reyes", "1006": "Lukas Weber", "1007": "Support Desk", "1008": "Kevin Murphy",
    "1009": "Aisha Bello", "1010": "Reception", "1011": "Daniel Kim", "1012": "Emily Chen",
    "1013": "Robert Novak", "1014": "Grace Park", "1015": "Facilities", "1016": "Nina Rossi",
    "1017": "Omar Haddad", "1018": "Laura Smith", "1019": "Ben Goldberg", "1020": "Accounts",
    "2000": "Dana Whitfield", "3001": "Lobby Phone",
}  # fmt: skip
OFFICE = [f"{n}" for n in range(1001, 1021)] + ["2000"]
SALES = ("1001", "1002", "1003", "1004")
PURCHASING = ("1005", "1006")
# How each person dials a US number: with the outside line and a 1, with the line only, bare.
HABITS = ("9+1", "9", "9+1", "bare", "1", "9")
US_AREAS = ("212", "646", "718", "917", "347", "201", "973", "516", "914", "203", "617", "312")
US_FAR = ("415", "305", "404", "713", "206", "303")


@dataclass(frozen=True, slots=True)
class Call:
    """One call before it is written as a row."""

    start: datetime
    ring: int  # seconds before it was answered (or given up)
    talk: int  # billable seconds; 0 when not answered
    disposition: str
    src: str
    dst: str
    dcontext: str
    clid: str
    caller_chan: str  # "1001" or the trunk
    callee_chan: str  # "" when no channel was created
    lastapp: str
    lastdata: str
    channel: str = (
        ""  # the whole channel name, when rows of one call share it (else from caller_chan)
    )
    dstchannel: str = ""  # likewise for the callee's channel


def us_number(rng: random.Random, areas: tuple[str, ...] = US_AREAS) -> str:
    """A US number in the 555-01XX range set aside for fiction."""
    return f"{rng.choice(areas)}55501{rng.randrange(100):02d}"


def dialled_us(number: str, habit: str) -> str:
    return {"9+1": f"91{number}", "9": f"9{number}", "bare": number, "1": f"1{number}"}[habit]


def foreign_number(rng: random.Random, country: str) -> str:
    """A number as dialled from the US with the outside line: 9 011 CC ..."""
    match country:
        case "GB":
            return f"901144207946{rng.randrange(1000):04d}"  # Ofcom's drama range
        case "DE":
            return f"90114930{rng.randrange(10**7, 10**8)}"
        case "FR":
            return f"90113319900{rng.randrange(10000):04d}"  # ARCEP's fiction range
        case "MX":
            return f"90115255{rng.randrange(10**7, 10**8)}"  # Mexico City, 55
        case _:  # Canada: NANP, 1 + area code, as a domestic-looking number
            return f"91{rng.choice(('416', '647', '604', '514'))}55501{rng.randrange(100):02d}"


def outcome(rng: random.Random, *, long: bool = False) -> tuple[int, int, str]:
    """Ring seconds, talk seconds and disposition of an outbound call."""
    r = rng.random()
    if r < 0.03:
        return rng.randrange(0, 3), 0, "FAILED"
    if r < 0.10:
        return rng.randrange(2, 8), 0, "BUSY"
    if r < 0.27:
        return rng.randrange(18, 40), 0, "NO ANSWER"
    ring = rng.randrange(4, 22)
    talk = int(rng.lognormvariate(5.0 if not long else 7.4, 0.9)) + 3  # median ~2.5 min (long ~27)
    return ring, min(talk, 95 * 60), "ANSWERED"


def out_call(
    rng: random.Random, start: datetime, ext: str, dst: str, *, long: bool = False
) -> Call:
    ring, talk, disposition = outcome(rng, long=long)
    callee = TRUNK if disposition != "FAILED" or rng.random() < 0.5 else ""
    trunk_dst = dst[1:] if dst.startswith("9") and len(dst) > 10 else dst
    return Call(start, ring, talk, disposition, ext, dst, "from-internal",
                f'"{NAMES[ext]}" <{ext}>', ext, callee, "Dial",
                f"PJSIP/{trunk_dst}@{TRUNK},300,T")  # fmt: skip


def person_day(rng: random.Random, ext: str, day: date, quiet: bool) -> list[Call]:
    """One working day of one extension: calls out, to colleagues, voicemail; one at a time."""
    if rng.random() < (0.5 if quiet else 0.06):  # away today
        return []
    arrive = datetime(day.year, day.month, day.day, 8, 20, tzinfo=TZ) + timedelta(
        minutes=rng.randrange(0, 70)
    )
    leave = datetime(day.year, day.month, day.day, 16, 50, tzinfo=TZ) + timedelta(
        minutes=rng.randrange(0, 60)
    )
    span = int((leave - arrive).total_seconds())
    habit = HABITS[int(ext) % len(HABITS)]
    contacts = random.Random(f"{SEED}-{ext}")  # the same people, week after week
    book = [us_number(contacts) for _ in range(25)] + [
        us_number(contacts, US_FAR) for _ in range(5)
    ]

    busy = 9 if ext in SALES else 5 if ext in (*PURCHASING, "2000") else 3
    plan: list[tuple[int, str]] = []
    for _ in range(rng.randrange(busy // 2, busy + 2) // (2 if quiet else 1)):
        plan.append((rng.randrange(span), "out"))
    for _ in range(rng.randrange(0, 5)):
        plan.append((rng.randrange(span), "internal"))
    if rng.random() < 0.4:
        plan.append((rng.randrange(span // 3), "voicemail"))
    abroad = {"2000": ("MX",), **dict.fromkeys(PURCHASING, ("MX", "DE")),
              **dict.fromkeys(SALES, ("GB", "DE", "FR", "CA"))}.get(ext)  # fmt: skip
    if abroad and rng.random() < (0.45 if ext != "2000" else 0.35) and not quiet:
        plan.append((rng.randrange(span - 3600), "abroad"))
    plan.sort()

    calls: list[Call] = []
    free = arrive
    for offset, kind in plan:
        start = max(
            arrive + timedelta(seconds=offset), free + timedelta(seconds=rng.randrange(90, 400))
        )
        if start > leave:
            break
        if kind == "out":
            number = book[min(int(rng.expovariate(1 / 6)), len(book) - 1)]
            call = out_call(rng, start, ext, dialled_us(number, habit))
        elif kind == "abroad":
            call = out_call(rng, start, ext, foreign_number(rng, rng.choice(abroad or ("GB",))),
                            long=ext == "2000")  # fmt: skip
        elif kind == "internal":
            other = rng.choice([e for e in OFFICE if e != ext])
            ring, talk, disposition = outcome(rng)
            call = Call(start, ring, talk // 2 + 1 if talk else 0, disposition, ext, other,
                        "from-internal", f'"{NAMES[ext]}" <{ext}>', ext, other, "Dial",
                        f"PJSIP/{other},20,Ttr")  # fmt: skip
        else:
            call = Call(start, 0, rng.randrange(15, 90), "ANSWERED", ext, "*97", "from-internal",
                        f'"{NAMES[ext]}" <{ext}>', ext, "", "VoiceMailMain", f"{ext}@default")  # fmt: skip
        calls.append(call)
        free = start + timedelta(seconds=call.ring + call.talk)
    return calls


def inbound_day(rng: random.Random, day: date, weekend: bool, quiet: bool) -> list[Call]:
    """Calls to the main number: answered at a desk, or left to voicemail."""
    count = (
        rng.randrange(2, 6)
        if weekend
        else rng.randrange(18, 30)
        if quiet
        else rng.randrange(35, 55)
    )
    calls = []
    for _ in range(count):
        hour = rng.uniform(0, 24) if weekend else rng.triangular(8.0, 18.5, 11.0)
        start = datetime(day.year, day.month, day.day, tzinfo=TZ) + timedelta(hours=hour)
        caller = us_number(rng, US_AREAS + US_FAR)
        open_ = not weekend and 8.5 <= hour < 17.5
        if open_ and rng.random() < 0.85:
            desk = "1010" if rng.random() < 0.5 else rng.choice(OFFICE)
            ring = rng.randrange(3, 20)
            talk = int(rng.lognormvariate(4.8, 0.9)) + 5
            calls.append(Call(start, ring, talk, "ANSWERED", caller, MAIN_DID, "from-trunk",
                              f'"{caller}" <{caller}>', TRUNK, desk, "Dial",
                              f"PJSIP/{desk},20,Ttr"))  # fmt: skip
        else:
            talk = rng.randrange(0, 45)
            calls.append(Call(start, 1, talk, "ANSWERED" if talk else "NO ANSWER", caller,
                              MAIN_DID, "from-pstn", f'"{caller}" <{caller}>', TRUNK, "",
                              "VoiceMail", "1010@default,u"))  # fmt: skip
    return calls


def lobby_day(rng: random.Random, day: date) -> list[Call]:
    """The lobby phone: a taxi, a delivery, now and then."""
    calls = []
    for _ in range(rng.randrange(0, 3)):
        start = datetime(day.year, day.month, day.day, tzinfo=TZ) + timedelta(
            hours=rng.uniform(9, 18)
        )
        calls.append(out_call(rng, start, "3001", f"9{us_number(rng)}"))
    return calls


def at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=TZ)


def honest_mistakes(rng: random.Random) -> list[Call]:
    """Calls a strict policy stops although nobody meant harm; the replay shows them too."""
    calls = [
        out_call(rng, at(10, 18, 24), "1002", "9011442079460417"),  # London after 18:00
        out_call(rng, at(17, 14, 5), "3001", "9011525512345678"),  # the lobby phone to Mexico
    ]
    # 1003 redials a busy customer: the fourth attempt within ten minutes is one too many.
    for n, minute in enumerate((2, 4, 7, 9)):
        calls.append(Call(at(12, 15, minute, 10 + n), 4, 0, "BUSY", "1003", "912125550187",
                          "from-internal", f'"{NAMES["1003"]}" <1003>', "1003", TRUNK, "Dial",
                          f"PJSIP/12125550187@{TRUNK},300,T"))  # fmt: skip
    # Facilities tests the E911 address with 933 (an emergency number: always allowed).
    calls.append(Call(at(4, 10, 31), 1, 42, "ANSWERED", "1015", "933", "from-internal",
                      f'"{NAMES["1015"]}" <1015>', "1015", TRUNK, "Dial", f"PJSIP/933@{TRUNK},300,T"))  # fmt: skip
    return calls


def attack(rng: random.Random) -> list[Call]:
    """Extension 1007 in a fraudster's dialer, Friday night to Sunday evening."""
    clid = f'"{NAMES[HIJACKED]}" <{HIJACKED}>'

    def premium() -> str:
        r = rng.random()
        if r < 0.20:
            return f"90118816{rng.randrange(10**7, 10**8)}"  # Iridium, +881 6
        if r < 0.27:
            return f"901188216{rng.randrange(10**7, 10**8)}"  # +882 16, Thuraya
        if r < 0.47:
            return f"90115372{rng.randrange(10**5, 10**6)}"  # Cuba, Havana
        if r < 0.64:
            return f"901123276{rng.randrange(10**5, 10**6)}"  # Sierra Leone mobile
        if r < 0.84:  # Jamaica, dialled as 1-876 like a domestic call
            exchange = rng.choice(("312", "357", "383", "441", "564", "805", "816", "843"))
            return f"91876{exchange}{rng.randrange(10**4):04d}"
        return f"90114470{rng.randrange(10**7, 10**8)}"  # UK personal numbers

    def call(start: datetime, dst: str, ring: int, talk: int, disposition: str) -> Call:
        trunk_dst = dst[1:]
        return Call(start, ring, talk, disposition, HIJACKED, dst, "from-internal", clid,
                    HIJACKED, TRUNK if disposition != "FAILED" else "", "Dial",
                    f"PJSIP/{trunk_dst}@{TRUNK},300,T")  # fmt: skip

    calls = []
    # 23:10 Friday: test calls, a few seconds each, to see which routes go through.
    t = ATTACK_START
    for _ in range(14):
        r = rng.random()
        if r < 0.3:
            calls.append(call(t, premium(), 0, 0, "FAILED"))
        elif r < 0.4:
            calls.append(call(t, premium(), 2, 0, "NO ANSWER"))
        else:
            calls.append(call(t, premium(), 2, rng.randrange(5, 40), "ANSWERED"))
        t += timedelta(seconds=rng.randrange(40, 180))

    # From 00:05 Saturday: a dialer keeps `lines` calls going, each a long revenue-share call.
    def lines(now: datetime) -> int:
        if now < at(21, 6, 0):
            return 6
        if now < at(22, 14, 0):
            return 10
        return 4

    slots = [at(21, 0, 5) + timedelta(seconds=rng.randrange(0, 600)) for _ in range(10)]
    iowa_until = at(21, 9, 30)
    while True:
        i = min(range(len(slots)), key=slots.__getitem__)
        now = slots[i]
        if now >= ATTACK_END:
            break
        if i >= lines(now):  # a line the dialer is not using right now
            slots[i] = now + timedelta(minutes=30)
            continue
        if at(21, 3, 0) <= now < iowa_until and i < 4:  # a detour through Iowa conference lines
            dst, ring = (
                f"91712{rng.choice(('262', '432', '775', '338'))}{rng.randrange(10**4):04d}",
                1,
            )
            talk = rng.randrange(2 * 3600, 3 * 3600)
            calls.append(call(now, dst, ring, talk, "ANSWERED"))
        elif rng.random() < 0.12:
            calls.append(call(now, premium(), 0, 0, rng.choice(("FAILED", "CONGESTION"))))
            ring, talk = 0, 0
        else:
            ring = rng.randrange(1, 4)
            talk = min(int(rng.lognormvariate(7.3, 0.5)), 3 * 3600)  # ~25 minutes
            calls.append(call(now, premium(), ring, talk, "ANSWERED"))
        slots[i] = now + timedelta(seconds=ring + talk + rng.randrange(3, 40))
    return calls


# Calls that went out again without a phone dialling them. Channel names are given whole, since the rows
# of one call share them: the trunk's channel of an inbound call, the two halves of a Local channel.
MOBILE_1004 = "19175550142"  # Tom Becker's mobile: his extension forwards there (FreePBX CF, Local)
MOBILE_2000 = "16465550120"  # Dana Whitfield's mobile: the dialplan tries her desk, then this
DID_2000 = "2125550120"
FOLLOW_ME_1001 = ("19175550111", "12015550112")  # Maria Lopez's follow-me: mobile, then home
DID_1019 = "2125550119"
XFER_START = datetime(2026, 11, 27, 22, 40, tzinfo=TZ)  # Friday night after Thanksgiving
XFER_END = datetime(2026, 11, 28, 2, 10, tzinfo=TZ)
XFER_BY = "1019"


class Channels:
    """Names of channels, numbered from far above the ones rows() numbers."""

    def __init__(self) -> None:
        self.n = 0x4000

    def trunk(self) -> str:
        self.n += 1
        return f"PJSIP/{TRUNK}-{self.n:08x}"

    def phone(self, ext: str) -> str:
        self.n += 1
        return f"PJSIP/{ext}-{self.n:08x}"

    def local(self, number: str) -> str:
        self.n += 1
        return f"Local/{number}@from-internal-{self.n:08x};"


def forwarded(rng: random.Random, names: Channels) -> list[Call]:
    """Legitimate legs no phone dialled: forwards to staff mobiles and follow-me, as Asterisk writes them.

    * 1004 forwards his extension to his mobile on Tuesday and Thursday afternoons (FreePBX's call
      forward with a ring time: the inbound channel dials ``Local/<mobile>@from-internal``, whose ``;2``
      half dials the trunk); callers reach him on ``from-did-direct``.
    * Calls to 2000's own number (DID 2125550120) ring her desk for 20 s, then her mobile: the inbound
      context's own ``Dial(PJSIP/<mobile>@voipco)`` on the same trunk channel (``dst`` is the DID).
    * 1001's follow-me rings her desk, mobile and home at once (``Local`` channels from
      ``ext-findmefollow``): each external leg is a row of its own.
    """
    calls: list[Call] = []
    for n in range(DAYS):
        day = FIRST_DAY + timedelta(days=n)
        if day.weekday() >= 5 or day in (THANKSGIVING, THANKSGIVING + timedelta(days=1)):
            continue
        noon = datetime(day.year, day.month, day.day, tzinfo=TZ)
        if day.weekday() in (1, 3):  # 1004 out at customers
            for _ in range(rng.randrange(2, 5)):
                start = noon + timedelta(hours=rng.uniform(13, 17.5))
                caller = us_number(rng, US_AREAS + US_FAR)
                inbound, local = names.trunk(), names.local(MOBILE_1004)
                ring, talk, disposition = outcome(rng)
                calls.append(Call(start, ring, talk, disposition, caller, "1004", "from-did-direct",
                                  f'"{caller}" <{caller}>', "", "", "Dial",
                                  f"Local/{MOBILE_1004}@from-internal/n,,HhTtr",
                                  inbound, local + "1"))  # fmt: skip
                calls.append(Call(start + timedelta(seconds=1), max(ring - 1, 0), talk, disposition,
                                  caller, MOBILE_1004, "from-internal", f'"{caller}" <{caller}>',
                                  "", "", "Dial", f"PJSIP/{MOBILE_1004}@{TRUNK},300,T",
                                  local + "2", names.trunk()))  # fmt: skip
        for _ in range(rng.randrange(0, 3)):  # 2000's direct line: desk, then mobile
            start = noon + timedelta(hours=rng.uniform(9, 18))
            caller = us_number(rng, US_AREAS + US_FAR)
            inbound = names.trunk()
            calls.append(Call(start, 20, 0, "NO ANSWER", caller, DID_2000, "from-trunk",
                              f'"{caller}" <{caller}>', "", "", "Dial", "PJSIP/2000,20,t",
                              inbound, names.phone("2000")))  # fmt: skip
            ring, talk, disposition = outcome(rng)
            calls.append(Call(start + timedelta(seconds=20), ring, talk, disposition, caller,
                              DID_2000, "from-trunk", f'"{caller}" <{caller}>', "", "", "Dial",
                              f"PJSIP/{MOBILE_2000}@{TRUNK},300,t", inbound, names.trunk()))  # fmt: skip
        for _ in range(rng.randrange(1, 4)):  # 1001's follow-me: desk, mobile and home at once
            start = noon + timedelta(hours=rng.uniform(8.5, 18))
            caller = us_number(rng, US_AREAS + US_FAR)
            clid = f'"{caller}" <{caller}>'
            inbound = names.trunk()
            ring = rng.randrange(6, 25)
            talk = int(rng.lognormvariate(4.8, 0.9)) + 5
            who = rng.choice(("desk", *FOLLOW_ME_1001))
            calls.append(Call(start, ring, talk if who == "desk" else 0,
                              "ANSWERED" if who == "desk" else "NO ANSWER", caller, "1001",
                              "ext-findmefollow", clid, "", "", "Dial", "PJSIP/1001,25,Ttr",
                              inbound, names.phone("1001")))  # fmt: skip
            for number in FOLLOW_ME_1001:
                local = names.local(number)
                answered = who == number
                calls.append(Call(start, ring, talk if answered else 0,
                                  "ANSWERED" if answered else "NO ANSWER", caller, "1001",
                                  "ext-findmefollow", clid, "", "", "Dial",
                                  f"Local/{number}@from-internal/n,25,Ttr",
                                  inbound, local + "1"))  # fmt: skip
                calls.append(Call(start + timedelta(seconds=1), ring - 1, talk if answered else 0,
                                  "ANSWERED" if answered else "NO ANSWER", caller, number,
                                  "from-internal", clid, "", "", "Dial",
                                  f"PJSIP/{number}@{TRUNK},300,T", local + "2", names.trunk()))  # fmt: skip
    return calls


def transfer_attack(rng: random.Random, names: Channels) -> list[Call]:
    """Friday 27 November, 22:40 to 02:10: the fraudster's own calls to 1019's direct line, answered by
    his softphone on 1019's phished password, each blind-transferred (FreePBX ``##``, so the caller's
    channel goes on in ``from-internal-xfer``) to premium numbers abroad: the trunk's channel of an
    inbound call places the outbound leg, which no phone dialled."""
    calls: list[Call] = []

    def abroad() -> str:
        r = rng.random()
        if r < 0.3:
            return f"011371900{rng.randrange(10**5):05d}"  # Latvia, premium 90x
        if r < 0.5:
            return f"0115372{rng.randrange(10**5, 10**6)}"  # Cuba, Havana
        if r < 0.7:
            return f"01144909{rng.randrange(10**6, 10**7)}"  # UK premium rate 09
        return f"01144207946{rng.randrange(1000):04d}"  # London: an office destination

    lines = [XFER_START + timedelta(seconds=rng.randrange(0, 900)) for _ in range(4)]
    while True:
        i = min(range(len(lines)), key=lines.__getitem__)
        start = lines[i]
        if start >= XFER_END:
            break
        caller = f"4420794{rng.randrange(10**5, 10**6)}"  # a London-looking CLI, as sent
        clid = f'"{caller}" <{caller}>'
        inbound = names.trunk()
        answer = rng.randrange(3, 8)
        held = rng.randrange(8, 20)  # answered, then transferred
        calls.append(Call(start, answer, held, "ANSWERED", caller, DID_1019, "from-trunk", clid,
                          "", "", "Dial", f"PJSIP/{XFER_BY},20,Ttr",
                          inbound, names.phone(XFER_BY)))  # fmt: skip
        number = abroad()
        ring = rng.randrange(2, 6)
        talk = min(int(rng.lognormvariate(7.2, 0.4)), 2 * 3600)  # ~22 minutes
        went = start + timedelta(seconds=answer + held)
        calls.append(Call(went, ring, talk, "ANSWERED", caller, number, "from-internal-xfer", clid,
                          "", "", "Dial", f"PJSIP/{number}@{TRUNK},300,T",
                          inbound, names.trunk()))  # fmt: skip
        lines[i] = went + timedelta(seconds=ring + talk + rng.randrange(5, 60))
    return calls


def calls_of(seed: int = SEED) -> list[Call]:
    rng = random.Random(seed)
    calls: list[Call] = []
    for n in range(DAYS):
        day = FIRST_DAY + timedelta(days=n)
        weekend = day.weekday() >= 5
        quiet = day in (THANKSGIVING, THANKSGIVING + timedelta(days=1))
        calls += inbound_day(rng, day, weekend, quiet)
        if weekend or day == THANKSGIVING:
            continue
        for ext in OFFICE:
            calls += person_day(rng, ext, day, quiet)
        calls += lobby_day(rng, day)
    calls += honest_mistakes(rng)
    calls += attack(rng)
    names = Channels()
    calls += forwarded(random.Random(f"{seed}-forwarded"), names)
    calls += transfer_attack(random.Random(f"{seed}-transfer"), names)
    return calls


def rows(calls: list[Call]) -> list[str]:
    """cdr_csv lines, in the order the calls ended; channel numbers in the order they began."""
    stamp = "%Y-%m-%d %H:%M:%S"
    seq = 0x1A
    written: list[tuple[datetime, int, str]] = []
    for call in sorted(calls, key=lambda c: (c.start, c.src)):
        end = call.start + timedelta(seconds=call.ring + call.talk)
        answer = f'"{(call.start + timedelta(seconds=call.ring)):{stamp}}"' if call.talk else ""
        callee = f"PJSIP/{call.callee_chan}-{seq + 1:08x}" if call.callee_chan else ""
        caller = call.channel or f"PJSIP/{call.caller_chan}-{seq:08x}"
        callee = call.dstchannel or callee
        clid = call.clid.replace('"', '""')
        written.append((end, seq, (
            f'"","{call.src}","{call.dst}","{call.dcontext}","{clid}",'
            f'"{caller}","{callee}","{call.lastapp}","{call.lastdata}",'
            f'"{call.start:{stamp}}",{answer},"{end:{stamp}}",{call.ring + call.talk},{call.talk},'
            f'"{call.disposition}","DOCUMENTATION","{int(call.start.timestamp())}.{seq}",""\n'
        )))  # fmt: skip
        seq += 2
    return [line for _, _, line in sorted(written)]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("Master.csv")
    lines = rows(calls_of())
    with out.open("w", encoding="utf-8", newline="") as f:
        f.writelines(lines)
    print(f"{out}: {len(lines)} rows, {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
