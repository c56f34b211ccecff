"""The AMI reader against a scripted AMI server on 127.0.0.1 (the real Asterisk is in test_e2e), and
the spend feed that turns Cdr events into settlements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callgate.asterisk.ami import AmiConnection, Message, parse_message
from callgate.asterisk.spend import SpendFeed, billable, call_id
from callgate.errors import AmiUnavailable
from callgate.store.protocol import Settlement, SettleStatus
from tests.servers import eventually

CDR = (
    "Event: Cdr\r\nAccountCode: \r\nSource: 1001\r\nDestination: 2125550123\r\n"
    'CallerID: "Jos\u00e9 M\u00fcller" <1001>\r\nDisposition: ANSWERED\r\nBillableSeconds: 42\r\n'
    "UniqueID: 1732.1\r\nLinkedID: 1732.0\r\nCallgateCall: 1732.0\r\n\r\n"
).encode()

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _login(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, accept: bool = True
) -> None:
    writer.write(b"Asterisk Call Manager/9.0.0\r\n")
    login = parse_message(await reader.readuntil(b"\r\n\r\n"))
    response = "Success" if accept and login.get("Secret") == "s3cret" else "Error"
    writer.write(f"Response: {response}\r\nActionID: login\r\nMessage: x\r\n\r\n".encode())
    await writer.drain()


@pytest.fixture
async def ami_server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start scripted AMI servers on 127.0.0.1; every connection is closed at the end of the test."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_events_arrive_whole_even_when_split_mid_character(
    ami_server: Callable[[Handler], Awaitable[int]],
) -> None:
    """A Cdr event sent one byte at a time keeps its UTF-8 names and every header."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _login(reader, writer)
        for i in range(len(CDR)):
            writer.write(CDR[i : i + 1])
            await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    port = await ami_server(handler)
    conn = await AmiConnection.open("127.0.0.1", port, "cg", "s3cret")
    events = conn.events(ping_every=5)
    message = await anext(events)
    assert message.event == "Cdr"
    assert message.get("CallerID") == '"Jos\u00e9 M\u00fcller" <1001>'
    assert (call_id(message), billable(message)) == ("1732.0", 42)
    await events.aclose()
    await conn.close()


async def test_login_refused(ami_server: Callable[[Handler], Awaitable[int]]) -> None:
    """A wrong secret is a clear AmiUnavailable, not a hang."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _login(reader, writer, accept=False)

    port = await ami_server(handler)
    with pytest.raises(AmiUnavailable, match="refused"):
        await AmiConnection.open("127.0.0.1", port, "cg", "wrong")


async def test_nobody_listening() -> None:
    """A closed port is AmiUnavailable."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(AmiUnavailable):
        await AmiConnection.open("127.0.0.1", port, "cg", "s3cret", timeout=1)


async def test_frozen_peer_is_detected_by_the_ping_watchdog(
    ami_server: Callable[[Handler], Awaitable[int]],
) -> None:
    """The TCP link stays open but nothing answers: the reader gives up after one ping interval."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _login(reader, writer)
        await asyncio.Event().wait()  # frozen: reads nothing, answers nothing, until the test ends

    port = await ami_server(handler)
    conn = await AmiConnection.open("127.0.0.1", port, "cg", "s3cret")

    async def drain() -> None:
        async with asyncio.timeout(3):
            async for _ in conn.events(ping_every=0.2):
                pass

    with pytest.raises(AmiUnavailable):
        await drain()
    await conn.close()


async def test_ping_answers_keep_the_link(ami_server: Callable[[Handler], Awaitable[int]]) -> None:
    """Pings that are answered keep the reader going; a closed link then ends it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _login(reader, writer)
        for _ in range(3):
            ping = parse_message(await reader.readuntil(b"\r\n\r\n"))
            writer.write(
                f"Response: Success\r\nActionID: {ping.get('ActionID')}\r\nPing: Pong\r\n\r\n".encode()
            )
            writer.write(CDR)
        writer.close()

    port = await ami_server(handler)
    conn = await AmiConnection.open("127.0.0.1", port, "cg", "s3cret")
    seen: list[str] = []

    async def drain() -> None:
        async for message in conn.events(ping_every=0.1):
            seen.append(message.event)

    with pytest.raises(AmiUnavailable):
        await drain()
    assert seen == ["Cdr"] * 3
    await conn.close()


@given(st.binary(max_size=300))
def test_parse_never_raises(block: bytes) -> None:
    """Any bytes parse into some message."""
    assert isinstance(parse_message(block), Message)


def test_repeated_headers_are_kept() -> None:
    """Every value of a repeated header is kept in order, and values() gives one or many alike."""
    message = parse_message(b"Event: Hangup\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n\r\n")
    assert message.repeated["ChanVariable"] == ["A=1", "B=2"]
    assert message.values("ChanVariable") == ["A=1", "B=2"]
    assert message.values("Event") == ["Hangup"]
    assert message.values("Missing") == []


DIAL_END = (
    b"Event: DialEnd\r\nPrivilege: call,all\r\nChannel: PJSIP/1001-00000001\r\nChannelState: 4\r\n"
    b"Uniqueid: 1732.1\r\nLinkedid: 1732.0\r\nChanVariable: OTHER=x=y\r\n"
    b"ChanVariable: CALLGATE_CALL=1732.0:0123456789abcdef\r\n"
    b"DestChannel: PJSIP/trunk-00000002\r\nDestUniqueid: 1732.2\r\nDestChanVariable: OTHER=\r\n"
    b"DestChanVariable: CALLGATE_CALL=\r\nDialStatus: ANSWER\r\n\r\n"
)


@pytest.mark.parametrize(
    ("name", "prefix", "value"),
    [
        ("CALLGATE_CALL", "", "1732.0:0123456789abcdef"),
        ("OTHER", "", "x=y"),  # split at the first '=' only
        ("CALLGATE_CALL", "Dest", ""),  # listed by channelvars, unset on that channel
        ("OTHER", "Dest", ""),
        ("callgate_call", "", ""),  # names are matched exactly
        ("NOT_LISTED", "", ""),
    ],
)
def test_channel_variables_of_an_event(name: str, prefix: str, value: str) -> None:
    """manager.conf channelvars puts each listed variable in every channel event as a repeated
    ChanVariable header (DestChanVariable for the dialled channel of DialBegin/DialEnd)."""
    assert parse_message(DIAL_END).variable(name, prefix=prefix) == value


def cdr(linked: str, disposition: str, billsec: str) -> Message:
    return parse_message(
        f"Event: Cdr\r\nUniqueID: u\r\nCallgateCall: {linked}\r\nDisposition: {disposition}\r\n"
        f"BillableSeconds: {billsec}\r\n\r\n".encode()
    )


async def test_spend_feed_settles_once_per_call_with_the_answered_seconds() -> None:
    """A failover call (one unanswered and one answered Cdr) settles once, with the answered seconds;
    an answered record that cannot be read charges its call in full (None), never 0 s."""
    settled: list[tuple[str, int | None]] = []

    async def settle(cid: str, billsec: int | None) -> Settlement:
        settled.append((cid, billsec))
        return Settlement(SettleStatus.SETTLED)

    feed = SpendFeed(settle, quiet=0.05)
    feed.on_event(cdr("L1", "NO ANSWER", "0"))
    feed.on_event(cdr("L1", "ANSWERED", "75"))
    feed.on_event(cdr("L2", "BUSY", "0"))
    feed.on_event(cdr("L3", "ANSWERED", "junk"))
    feed.on_event(parse_message(b"Event: Hangup\r\nUniqueid: x\r\n\r\n"))
    feed.on_event(
        parse_message(
            b"Event: Cdr\r\nLinkedID: L1\r\nDisposition: ANSWERED\r\nBillableSeconds: 9\r\n\r\n"
        )
    )
    await eventually(lambda: len(settled) == 3, "each call settled after its quiet time")
    await feed.flush()
    assert sorted(settled, key=lambda s: s[0]) == [("L1", 75), ("L2", 0), ("L3", None)]
