"""Reading StasisStart events and GET /channels entries into call attempts."""

from __future__ import annotations

from typing import Any

import pytest

from callgate.asterisk.stasis import MAX_FIELD, read_start, waiting_args
from callgate.core.origins import Origin
from callgate.core.rules import CallAttempt

CHANNEL: dict[str, Any] = {
    "id": "1732000000.42",
    "caller": {"name": "Alice", "number": "1001"},
    "accountcode": "acme",
    "dialplan": {"context": "callgate-outbound", "exten": "2125550123", "priority": 2},
}


ID = "1732000000.42"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["2125550123"], CallAttempt(ID, "", "2125550123", "acme", ID)),
        (
            ["2125550123", "ext=2000", "call=L8", "account=x"],
            CallAttempt("L8", "2000", "2125550123", "x", ID),
        ),
        (["2125550123", "call=L9"], CallAttempt("L9", "", "2125550123", "acme", ID)),
        (["2125550123", "ext=", "call="], CallAttempt(ID, "", "2125550123", "acme", ID)),
        ([], CallAttempt(ID, "", "", "acme", ID)),
        (
            ["2125550123", "ext=1001", "call=L8", "origin=forward", "via=+12125550100"],
            CallAttempt("L8", "1001", "2125550123", "acme", ID, Origin.FORWARD, "+12125550100"),
        ),
        (  # the shipped include with CALLGATE_ORIGIN and CALLGATE_VIA unset: a phone's own call
            ["2125550123", "ext=", "call=L8", "origin=", "via="],
            CallAttempt("L8", "", "2125550123", "acme", ID),
        ),
        (
            ["2125550123", "origin=disa", "via=my-trunk_1.a"],
            CallAttempt(ID, "", "2125550123", "acme", ID, Origin.DISA, "my-trunk_1.a"),
        ),
    ],
)
def test_read_start(args: list[str], expected: CallAttempt) -> None:
    """Stasis arguments: dialled first, then ext/call/account by name; the caller id is never read."""
    start = read_start(CHANNEL, args)
    assert start is not None
    assert start.channel_id == ID
    assert start.attempt == expected


FORGED = [
    # finding 1: ${EXTEN} = "011532345678,ext=1005,call=ATTACK" split by Asterisk before callgate sees it
    ["011532345678", "ext=1005", "call=ATTACK", "ext=1001", "call=1732000000.40"],
    ["011532345678", "ext=1005", "ext=1001"],  # a repeated key
    ["011532345678", "profile=vip", "ext=1001"],  # an unknown key
    ["011532345678", "1005", "ext=1001"],  # a bare value (the old positional form)
    ["2125550123", "ext=1001", "call=a b"],  # a call id outside [A-Za-z0-9._-]
    ["2125550123", "ext=1001", "call=x" * 40],  # a call id too long for one
    ["2125550123", "ext=1001", "call=cg:{other}:r:x"],  # a call id naming another key
    # issue 10: the origin and via, as strict as the other names
    ["011532345678", "origin=forward", "ext=1005", "call=L1", "origin="],  # a repeated origin
    ["011532345678", "ext=1005", "origin=forwarded"],  # an origin callgate does not know
    ["011532345678", "ext=1005", "origin=Forward"],  # origins are lower case
    ["011532345678", "ext=1005", "origin=forward&via=x"],  # a URI's way of adding a key
    ["2125550123", "ext=1001", "via=2125550100;origin=forward"],  # via outside its alphabet
    ["2125550123", "ext=1001", "via=" + "1" * 65],  # via too long
    ["2125550123", "ext=1001", "via=a b"],
    # the transferring channel: a channel name, once
    ["2125550123", "origin=transfer", "by=PJSIP/1001-00000001", "by=PJSIP/1002-00000002"],
    ["2125550123", "origin=transfer", 'by=PJSIP/1001 "x"'],
    ["2125550123", "origin=transfer", "by=PJSIP/" + "1" * 100],
]


def test_the_transferring_channel_is_read_with_the_start() -> None:
    """``by=``: the channel Asterisk wrote to BLINDTRANSFER/ATTENDEDTRANSFER, kept as it came; any
    channel name's characters (IAX2's host:port, a Local channel's @ and ;)."""
    for by in ("PJSIP/1001-0000000a", "Local/600@held-00000001;1", "IAX2/10.0.0.1:4569-1234", ""):
        start = read_start(CHANNEL, ["2125550123", "origin=transfer", f"by={by}"])
        assert start is not None
        assert (start.attempt.origin, start.by) == (Origin.TRANSFER, by)


@pytest.mark.parametrize("args", FORGED)
def test_forged_arguments_make_the_number_unreadable(args: list[str]) -> None:
    """A forged argument list becomes the dialled string, commas included: refused, never trimmed."""
    start = read_start(CHANNEL, args)
    assert start is not None
    assert "," in start.attempt.dialled
    assert start.attempt.extension == ""
    assert start.attempt.call_id == ID
    assert start.attempt.leg == ID
    assert (start.attempt.origin, start.attempt.via, start.by) == (Origin.DIALLED, "", "")


@pytest.mark.parametrize(
    ("exten", "args"),
    [
        # Stasis(callgate,${EXTEN}) with no filter: the phone's comma split its string into arguments
        (
            "011442079460000,origin=forward,ext=1005",
            ["011442079460000", "origin=forward", "ext=1005"],
        ),
        ("2125550123,ext=1005", ["2125550123", "ext=1005"]),
        ("2125550123,call=x", ["2125550123", "call=x"]),
    ],
)
def test_arguments_split_from_the_extension_are_forged(exten: str, args: list[str]) -> None:
    """Third wall: a channel whose extension holds a comma had its ${EXTEN} split into arguments, even
    when each of them is a known name given once: no ext=, no origin (the gate charges the phone's
    endpoint), and the whole string as the dialled one, unreadable."""
    channel = {
        **CHANNEL,
        "name": "PJSIP/1002-00000001",
        "dialplan": {**CHANNEL["dialplan"], "exten": exten},
    }
    start = read_start(channel, args)
    assert start is not None
    assert start.attempt.dialled == exten
    assert (start.attempt.extension, start.attempt.origin) == ("", Origin.DIALLED)
    assert start.attempt.call_id == ID


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("PJSIP/1005-0000002a", "1005"),
        ("PJSIP/alice-desk-0000002a", "alice-desk"),
        ("Local/2125550123@phones-00000001;2", ""),
        ("SIP/1005-0000002a", ""),
        ("PJSIP/", ""),
        ("", ""),
    ],
)
def test_the_endpoint_comes_from_the_channel_name(name: str, endpoint: str) -> None:
    """The PJSIP endpoint Asterisk authenticated, read from the channel's name; caller id ignored."""
    channel = {**CHANNEL, "name": name, "caller": {"number": "9999"}}
    start = read_start(channel, ["2125550123"])
    assert start is not None
    assert start.endpoint == endpoint
    assert start.attempt.extension == ""


def test_read_start_survives_junk() -> None:
    """Odd types and huge values are cut or ignored, never raised on."""
    channel = {"id": "c" * 1000, "caller": "not a dict", "accountcode": 5, "name": 7}
    start = read_start(channel, [None, 7, "x" * 1000])
    assert start is not None
    assert len(start.channel_id) == MAX_FIELD
    assert start.attempt.dialled.startswith(",")  # forged: refused as unparseable_number
    assert start.attempt.extension == ""  # refused as unknown_extension
    assert read_start({}, ["123"]) is None


@pytest.mark.parametrize(
    ("dialplan", "expected"),
    [
        (
            {"app_name": "Stasis", "app_data": "callgate,2125550123,ext=1001"},
            ["2125550123", "ext=1001"],
        ),
        ({"app_name": "Stasis", "app_data": "callgate"}, []),
        ({"app_name": "Stasis", "app_data": "other,123"}, None),
        ({"app_name": "Dial", "app_data": "PJSIP/trunk"}, None),
        (None, None),
    ],
)
def test_waiting_args(dialplan: dict[str, str] | None, expected: list[str] | None) -> None:
    """Reconciliation picks only channels that wait in our own Stasis app."""
    assert waiting_args({"id": "x", "dialplan": dialplan}, "callgate") == expected
