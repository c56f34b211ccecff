"""Replay tells who caused each outbound leg of a Master.csv (issue 10, item 3): a phone's own call, a
forward, a follow-me leg through a Local channel, a transfer; judged with that origin and charged to
the causing extension, never to the outside caller's number."""

from __future__ import annotations

import io
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from callgate.core.policyfile import load_policy
from callgate.offline.cdr import in_start_order, read_cdr
from callgate.offline.replay import Filter, Replayed, dial_target, endpoint, replay
from tests.test_cdr import NY, cdr_line

POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8"),
    "default",
)
CALLER = "2125550199"  # the outside caller: never anybody's extension
LONDON = (
    "011442079460123"  # the office profile allows GB; a forward's or transfer's default does not
)
CUBA = "0115372123456"


def row(
    second: int,
    channel: str,
    dst: str,
    dstchannel: str,
    *,
    src: str = CALLER,
    dcontext: str = "from-internal",
    lastdata: str = "",
    billsec: int = 60,
    linked: str = "",
) -> str:
    """A row of a call that starts ``second`` s after Tuesday 17 November 2026 14:00 (office hours)."""
    start = 14 * 3600 + second
    stamp = f"2026-11-17 {start // 3600:02d}:{start // 60 % 60:02d}:{start % 60:02d}"
    end = start + 2 + billsec
    ended = f"2026-11-17 {end // 3600:02d}:{end // 60 % 60:02d}:{end % 60:02d}"
    answered = start + 2
    answer = f"2026-11-17 {answered // 3600:02d}:{answered // 60 % 60:02d}:{answered % 60:02d}"
    target = dstchannel.partition("/")[2].rpartition("-")[0]
    extra: tuple[str, ...] = (f"1794949200.{second}", "")
    if linked:
        extra = (*extra, "", linked, "1")
    return cdr_line(
        extra,
        src=src,
        dst=dst,
        dcontext=dcontext,
        clid=f'"{src}" <{src}>',
        channel=channel,
        dstchannel=dstchannel,
        lastdata=lastdata or f"PJSIP/{dst}@{target},300,T",
        start=stamp,
        answer=answer if billsec else "",
        end=ended,
        duration=2 + billsec,
        billsec=billsec,
        disposition="ANSWERED" if billsec else "NO ANSWER",
    )


def legs(lines: list[str], only: Filter) -> list[tuple[str, str | None, str, str, str]]:
    """(origin, extension, via, dst, reason) of every leg replay judges, in start order."""
    rows = in_start_order(read_cdr(io.StringIO("".join(lines), newline=""), tz=NY))
    return [
        (r.origin, r.extension, r.via, r.dst, r.reason)
        for r in replay(POLICY, rows, only=only)
        if r.verdict != "skip"
    ]


# An inbound call on the trunk voipco: its first row teaches replay that voipco is a trunk.
IN = "PJSIP/voipco-00000100"
LOCAL = "Local/19175550142@from-internal-00000102;"
TRUNK_OUT = "PJSIP/voipco-00000103"


SHAPES = [
    ("a phone's own call", [
        row(0, "PJSIP/1001-00000001", "912125550123", TRUNK_OUT, src="1001"),
    ], Filter(), [("dialled", "1001", "", "912125550123", "allowed")]),
    ("a trunk failover on the phone's channel is still its own call", [
        row(0, "PJSIP/1001-00000001", "912125550123", "PJSIP/carrier2-00000002", src="1001",
            billsec=0, lastdata="PJSIP/12125550123@carrier2,300,T"),
        row(3, "PJSIP/1001-00000001", "912125550123", TRUNK_OUT, src="1001"),
    ], Filter(), [("dialled", "1001", "", "912125550123", "allowed")] * 2),
    ("FreePBX call forward through a Local channel, to a US mobile", [
        row(0, IN, "1004", LOCAL + "1", dcontext="from-did-direct",
            lastdata="Local/19175550142@from-internal/n,,HhTtr"),
        row(1, LOCAL + "2", "19175550142", TRUNK_OUT),
    ], Filter(), [("forward", "1004", "voipco", "19175550142", "allowed")]),
    ("the same forward to London: the forward's default block is US only", [
        row(0, IN, "1004", LOCAL + "1", dcontext="from-did-direct"),
        row(1, LOCAL + "2", LONDON, TRUNK_OUT),
    ], Filter(), [("forward", "1004", "voipco", LONDON, "forward_not_allowed")]),
    ("follow-me: each external leg of ext-findmefollow", [
        row(0, IN, "1001", LOCAL + "1", dcontext="ext-findmefollow"),
        row(0, IN, "1001", "Local/12015550112@from-internal-00000104;1", dcontext="ext-findmefollow"),
        row(1, LOCAL + "2", "19175550142", TRUNK_OUT),
        row(1, "Local/12015550112@from-internal-00000104;2", "12015550112", "PJSIP/voipco-00000105",
            billsec=0),
    ], Filter(trunks=frozenset({"voipco"})),  # no row came in on voipco before: --trunk
     [("forward", "1001", "voipco", "19175550142", "allowed"),
      ("forward", "1001", "voipco", "12015550112", "allowed")]),
    ("the desk does not answer, the inbound context dials the mobile (dst is the DID)", [
        row(0, IN, "2125550120", "PJSIP/2000-00000101", dcontext="from-trunk", billsec=0,
            lastdata="PJSIP/2000,20,t"),
        row(20, IN, "2125550120", TRUNK_OUT, dcontext="from-trunk",
            lastdata="PJSIP/16465550120@voipco,300,t"),
    ], Filter(), [("forward", "2000", "2125550120", "16465550120", "allowed")]),
    ("the inbound context dials out at once: the DID's extension from --via", [
        row(0, IN, "2125550130", TRUNK_OUT, dcontext="from-trunk",
            lastdata="PJSIP/16465550130@voipco,300,t"),
    ], Filter(via=(("2125550130", "1005"),)),
     [("forward", "1005", "2125550130", "16465550130", "allowed")]),
    ("... and without --via the CDR cannot tell: refused, never charged to the caller", [
        row(0, IN, "2125550130", TRUNK_OUT, dcontext="from-trunk",
            lastdata="PJSIP/16465550130@voipco,300,t"),
    ], Filter(), [("forward", "", "2125550130", "16465550130", "unknown_extension")]),
    ("a forward by Goto on the trunk's own channel: the trunk's extension from --via", [
        row(0, IN, "19175550142", TRUNK_OUT),
    ], Filter(trunks=frozenset({"voipco"}), via=(("voipco", "1010"),)),
     [("forward", "1010", "voipco", "19175550142", "allowed")]),
    ("a Local leg with no row before it, whose caller looks like an extension", [
        row(1, LOCAL + "2", "19175550142", TRUNK_OUT, src="1001"),
    ], Filter(), [("forward", "", "", "19175550142", "unknown_extension")]),
    ("a Local leg tied to the inbound row by linkedid (newcdrcolumns)", [
        row(0, IN, "2125550130", "PJSIP/1005-00000101", dcontext="from-trunk", linked="1794949200.0",
            lastdata="PJSIP/1005,20,t", billsec=0),
        row(5, "Local/19175550142@from-internal-000001ff;2", "19175550142", TRUNK_OUT,
            linked="1794949200.0"),
    ], Filter(via=(("2125550130", "1005"),)),
     [("forward", "1005", "2125550130", "19175550142", "allowed")]),
    ("phone 1001 calls 1002, who does not answer; 1002's forward on the same channel", [
        row(0, "PJSIP/1001-00000001", "1002", "PJSIP/1002-00000002", src="1001", billsec=0,
            lastdata="PJSIP/1002,20,t"),
        row(20, "PJSIP/1001-00000001", "1002", TRUNK_OUT, src="1001",
            lastdata="PJSIP/19175550142@voipco,300,T"),
    ], Filter(), [("forward", "1002", "", "19175550142", "allowed")]),
    ("FreePBX blind transfer: the inbound caller's channel goes on in from-internal-xfer", [
        row(0, IN, "2125550119", "PJSIP/1019-00000101", dcontext="from-trunk",
            lastdata="PJSIP/1019,20,Ttr", billsec=12),
        row(15, IN, CUBA, TRUNK_OUT, dcontext="from-internal-xfer"),
        row(16, "PJSIP/voipco-00000200", "2125550119", "PJSIP/1019-00000201", dcontext="from-trunk",
            lastdata="PJSIP/1019,20,Ttr", billsec=12),
        row(31, "PJSIP/voipco-00000200", LONDON, "PJSIP/voipco-00000202",
            dcontext="from-internal-xfer"),
    ], Filter(), [("transfer", "1019", "2125550119", CUBA, "country_not_allowed"),
                  ("transfer", "1019", "2125550119", LONDON, "transfer_not_allowed")]),
    ("plain Asterisk blind transfer: the transferee in the transferer's context", [
        row(0, IN, "2125550119", "PJSIP/1019-00000101", dcontext="from-trunk", billsec=12,
            lastdata="PJSIP/1019,20,Ttr"),
        row(15, IN, "912125550123", TRUNK_OUT),
    ], Filter(), [("transfer", "1019", "2125550119", "912125550123", "allowed")]),
    ("the far end transfers the phone that answered it (Dial option T): nobody's, as live", [
        row(0, IN, "2125550100", "PJSIP/1010-00000101", dcontext="from-trunk", billsec=12,
            lastdata="PJSIP/1010,20,T"),
        row(15, "PJSIP/1010-00000101", "2125550100", TRUNK_OUT, src="1010", dcontext="from-trunk",
            lastdata=f"PJSIP/{LONDON}@voipco,300,T"),
    ], Filter(), [("transfer", "", "2125550100", LONDON, "unknown_extension")]),
    ("--transfer-context and --forward-context name the legs of a phone's channel", [
        row(0, "PJSIP/1003-00000001", "912125550123", TRUNK_OUT, src="1003", dcontext="my-xfer"),
        row(5, "PJSIP/1003-00000011", "912125550124", "PJSIP/voipco-00000012", src="1003",
            dcontext="my-forward"),
    ], Filter(transfer=frozenset({"my-xfer"}), forward=frozenset({"my-forward"})),
     [("transfer", "1003", "", "912125550123", "allowed"),
      ("forward", "1003", "", "912125550124", "allowed")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "only", "expected"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_each_shape_is_recognised_attributed_and_judged(
    lines: list[str], only: Filter, expected: list[tuple[str, str, str, str, str]]
) -> None:
    assert legs(lines, only) == expected


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("PJSIP/voipco-0000001a", ("PJSIP", "voipco")),
        ("PJSIP/my-trunk-0000001a", ("PJSIP", "my-trunk")),
        ("SIP/1001-00000abc", ("SIP", "1001")),
        ("Local/19175550142@from-internal-0000002b;2", ("Local", "19175550142@from-internal-0000002b")),
        ("Local/19175550142@from-internal-0000002b;1", ("Local", "19175550142@from-internal-0000002b")),
        ("", ("", "")),
    ],
)  # fmt: skip
def test_endpoint(channel: str, expected: tuple[str, str]) -> None:
    assert endpoint(channel) == expected


@pytest.mark.parametrize(
    ("lastdata", "trunk", "number"),
    [
        ("PJSIP/19175550142@voipco,300,T", "voipco", "19175550142"),
        ("PJSIP/1001&PJSIP/19175550142@voipco,20", "voipco", "19175550142"),
        ("SIP/voipco/19175550142,300", "voipco", "19175550142"),
        ("IAX2/voipco/19175550142", "voipco", "19175550142"),
        ("PJSIP/19175550142@other,300", "voipco", None),
        ("PJSIP/1001,20,Ttr", "1001", None),  # a phone, not a number at an endpoint
        ("", "voipco", None),
    ],
)
def test_dial_target(lastdata: str, trunk: str, number: str | None) -> None:
    assert dial_target(lastdata, trunk) == number


def test_the_example_allows_the_forwards_and_denies_the_transfer_attack() -> None:
    """examples/Master.csv: every forward and follow-me leg is allowed and charged to 1001, 1004 or
    2000; every leg of Friday night's transfer attack is denied and charged to 1019."""
    path = Path(__file__).resolve().parent.parent / "examples" / "Master.csv"
    with path.open(encoding="utf-8", newline="") as f:
        results: list[Replayed] = list(replay(POLICY, in_start_order(read_cdr(f, tz=NY))))
    seen = Counter((r.origin, r.extension, r.verdict) for r in results if r.origin != "dialled")
    assert seen == {
        ("forward", "1001", "allow"): 80,
        ("forward", "1004", "allow"): 24,
        ("forward", "2000", "allow"): 17,
        ("transfer", "1019", "deny"): 35,
    }
    reasons = Counter(r.reason for r in results if r.origin == "transfer")
    assert reasons == {
        "country_not_allowed": 19,
        "transfer_not_allowed": 9,
        "number_type_premium_rate": 7,
    }
    assert not any(r.extension and r.extension.startswith("44") for r in results)


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ((), ["?      forward", "1 legs no phone dialled have no extension in the CDR"]),
        (("--via", "2125550130=1005"), ["1005   forward", "of which forward legs 1: allowed 1"]),
        (("--via", "2125550130"), None),  # not DID=EXT: refused
    ],
)  # fmt: skip
def test_replay_command_shows_origins_and_takes_via(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: tuple[str, ...],
    shown: list[str] | None,
) -> None:
    """The table shows whom a leg is charged to and its origin, and says which option names an
    extension the CDR cannot tell."""
    from callgate.cli import main

    path = tmp_path / "Master.csv"
    path.write_text(
        row(0, IN, "2125550130", TRUNK_OUT, dcontext="from-trunk",
            lastdata="PJSIP/16465550130@voipco,300,t"),
        encoding="utf-8",
    )  # fmt: skip
    if shown is None:
        with pytest.raises(SystemExit, match="not DID=EXT"):
            main(["replay", *options, str(path)])
        return
    assert main(["replay", "--all", *options, str(path)]) == 0
    out = capsys.readouterr().out
    assert all(line in out for line in shown), out


@pytest.mark.parametrize(
    ("lastdata", "forwarder"),
    [
        ("PJSIP/1002,10", "1002"),
        ("PJSIP/1002/sip:1002@10.0.0.5:5060,20,Ttr", "1002"),  # FreePBX's contact form
        ("PJSIP/1002&PJSIP/1003,10", ""),  # which of them answered 302: the row does not say
        ("PJSIP/12125550142@voipco,300", ""),  # a trunk
        ("Local/1002@from-internal/n,20", ""),  # the Local channel is the Dial's own target
    ],
)
def test_the_forwarder_of_a_302_is_the_dials_one_phone(lastdata: str, forwarder: str) -> None:
    from callgate.offline.replay import _forwarder

    (row_,) = read_cdr(
        io.StringIO(
            row(0, IN, "2125550100", "Local/2125550142@phones-00000001;1", lastdata=lastdata)
        ),
        tz=NY,
    )
    assert _forwarder(row_) == forwarder
