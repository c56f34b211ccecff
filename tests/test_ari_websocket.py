"""REST over the events websocket (callgate.asterisk.ari): which Asterisk takes it, and, on the real
test Asterisk, that requests go that way while the websocket is up and over HTTP otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.asterisk.ari import AriClient, takes_rest_over_websocket
from callgate.asterisk.gate import Then
from callgate.errors import AriUnavailable
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix


@pytest.mark.parametrize(
    ("version", "takes"),
    [
        ("22.10.1", True),
        ("22.4.0", True),
        ("22.3.0", False),
        ("21.9.0", True),
        ("21.8.2", False),
        ("20.14.1", True),
        ("20.13.0", False),
        ("23.0.0", True),
        ("18.26.4", False),
        ("certified-20.7-cert5", False),
        ("GIT-master-abc123", False),
        ("", False),
    ],
)
def test_which_asterisk_takes_rest_over_the_websocket(version: str, takes: bool) -> None:
    assert takes_rest_over_websocket(version) is takes


HOLD = "[hold]\nexten => s,1,Answer()\n same => n,Wait(30)\n"
# a channel that enters the app, and what it reads right after it leaves it
PROBE = (
    "[probe]\nexten => s,1,Stasis(wsprobe)\n same => n,Set(AFTER=${A}-${B})\n same => n,Wait(30)\n"
)


@pytest.fixture(scope="module")
def ast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsteriskInstance]:
    root = Path(tmp_path_factory.mktemp("ari-ws"))
    with asterisk(asterisk_prefix(), root / "ast", dialplan=HOLD + PROBE) as running:
        yield running


def client(ast: AsteriskInstance, **kw: bool) -> AriClient:
    return AriClient(ast.ari_url, ast.ari_user, ast.ari_password, "wsprobe", **kw)


@pytest.mark.asterisk
async def test_requests_go_over_the_websocket_while_it_is_up(ast: AsteriskInstance) -> None:
    """A channel in the app: its variable set and its continue over the websocket; a gone channel
    is False, as over HTTP; the global set there is read back over HTTP. Once the websocket is
    closed, requests go over HTTP again."""
    ari = client(ast)
    try:
        assert not ari.over_websocket
        async with ari.event_stream() as events:
            assert ari.over_websocket
            status, created = await ari._http(
                "POST", "/channels", {"endpoint": "Local/s@hold", "app": "wsprobe"}
            )
            assert status == 200
            channel = created["id"]
            started = await anext(e async for e in events if e.get("type") == "StasisStart")
            assert started["channel"]["id"] == channel
            assert await ari.set_variable(channel, "ARRAY(A,B)", "1,2")
            _, value = await ari._http("GET", f"/channels/{channel}/variable", {"variable": "B"})
            assert value == {"value": "2"}
            assert not await ari.set_variable("no-such-channel", "A", "1")
            await ari.set_global("CALLGATE_WS_PROBE", "yes")
            _, read = await ari._http(
                "GET", "/asterisk/variable", {"variable": "CALLGATE_WS_PROBE"}
            )
            assert read == {"value": "yes"}
            assert await ari.hangup(channel, cause=16)
        assert not ari.over_websocket
        await ari.set_global("CALLGATE_WS_PROBE", "http")  # over HTTP now
        _, read = await ari._http("GET", "/asterisk/variable", {"variable": "CALLGATE_WS_PROBE"})
        assert read == {"value": "http"}
    finally:
        await ari.aclose()


@pytest.mark.asterisk
async def test_rest_over_websocket_can_be_turned_off(ast: AsteriskInstance) -> None:
    ari = client(ast, rest_over_websocket=False)
    try:
        async with ari.event_stream():
            assert not ari.over_websocket
            await ari.set_global("CALLGATE_WS_PROBE", "off")
    finally:
        await ari.aclose()


@pytest.mark.asterisk
async def test_a_request_waiting_when_the_websocket_closes_fails_at_once(
    ast: AsteriskInstance,
) -> None:
    """Requests still waiting for their answer when the websocket goes are told so (AriUnavailable),
    not left to their timeout."""
    ari = client(ast)
    try:
        async with ari.event_stream():
            ws = ari._ws
            assert ws is not None
            pending = asyncio.get_running_loop().create_future()
            ari._waiting["999999"] = pending
            await ws.close()
            with pytest.raises(AriUnavailable):
                await asyncio.wait_for(pending, 5)
    finally:
        await ari.aclose()


@pytest.mark.asterisk
async def test_apply_sends_both_requests_at_once_and_asterisk_keeps_their_order(
    ast: AsteriskInstance,
) -> None:
    """The gate's variables and its continue, sent over the websocket without waiting for the first
    answer: the dialplan after Stasis() reads the variables (Asterisk ran the requests in order).
    A channel already gone: False, as over HTTP. A refusal: the channel hung up."""
    ari = client(ast)
    try:
        async with ari.event_stream() as events:
            assert ari.over_websocket
            for then, after in ((Then(), "1-2"), (Then(cause=21), None)):
                status, created = await ari._http(
                    "POST", "/channels",
                    {"endpoint": "Local/s@hold", "context": "probe", "extension": "s",
                     "priority": 1},
                )  # fmt: skip
                assert status == 200
                await asyncio.wait_for(
                    anext(e async for e in events if e.get("type") == "StasisStart"), 10
                )
                channel = created["id"]
                assert await ari.apply(channel, "ARRAY(A,B)", "1,2", then)
                if after is None:  # hung up, never continued
                    for _ in range(50):
                        status, _ = await ari._http("GET", f"/channels/{channel}")
                        if status == 404:
                            break
                        await asyncio.sleep(0.05)
                    assert status == 404
                    continue
                for _ in range(50):
                    _, read = await ari._http(
                        "GET", f"/channels/{channel}/variable", {"variable": "AFTER"}
                    )
                    if read == {"value": after}:
                        break
                    await asyncio.sleep(0.05)
                assert read == {"value": after}
                assert await ari.hangup(channel, cause=16)
            assert not await ari.apply("no-such-channel", "A", "1", Then())
    finally:
        await ari.aclose()
