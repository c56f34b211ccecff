"""Reading StasisStart events and GET /channels entries into call attempts."""

from __future__ import annotations

from typing import Any

import pytest

from callgate.rules import CallAttempt
from callgate.stasis import MAX_FIELD, read_start, waiting_args

CHANNEL: dict[str, Any] = {
    "id": "1732000000.42",
    "caller": {"name": "Alice", "number": "1001"},
    "accountcode": "acme",
    "dialplan": {"context": "callgate-outbound", "exten": "2125550123", "priority": 2},
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["2125550123"], CallAttempt("1732000000.42", "1001", "2125550123", "acme")),
        (["2125550123", "1002"], CallAttempt("1732000000.42", "1002", "2125550123", "acme")),
        (["2125550123", "1002", "L7"], CallAttempt("L7", "1002", "2125550123", "acme")),
        (
            ["2125550123", "ext=2000", "call=L8", "account=x"],
            CallAttempt("L8", "2000", "2125550123", "x"),
        ),
        (["2125550123", "call=L9"], CallAttempt("L9", "1001", "2125550123", "acme")),
        (
            ["2125550123", "ext=", "call="],
            CallAttempt("1732000000.42", "1001", "2125550123", "acme"),
        ),
        ([], CallAttempt("1732000000.42", "1001", "", "acme")),
    ],
)
def test_read_start(args: list[str], expected: CallAttempt) -> None:
    """Stasis arguments: dialled first, then ext/call/account by name or position, with fallbacks."""
    start = read_start(CHANNEL, args)
    assert start is not None
    assert start.channel_id == "1732000000.42"
    assert start.attempt == expected


def test_read_start_survives_junk() -> None:
    """Odd types and huge values are cut or ignored, never raised on."""
    channel = {"id": "c" * 1000, "caller": "not a dict", "accountcode": 5}
    start = read_start(channel, [None, 7, "x" * 1000])
    assert start is not None
    assert len(start.channel_id) == MAX_FIELD
    assert start.attempt.dialled == ""
    assert start.attempt.extension == ""  # refused later as unknown_extension
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
