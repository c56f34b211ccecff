"""A small AMI event reader: sans-I/O parsing plus one asyncio connection with a ping watchdog.

Why not panoramisk: it works on Python 3.11, but it never notices a frozen peer (its ping does not wait
for the answer), decodes each TCP chunk separately (a UTF-8 name split across two segments loses a
character) and has no action timeout; its last release is from 2021. callgate needs only a login, a
stream of events, a watchdog and reconnects, which is this module (docs/ari-client.md has the figures).

:func:`parse_message` turns one ``\\r\\n\\r\\n``-terminated block into a :class:`Message`;
:class:`AmiConnection` logs in, yields events and pings; :func:`AmiConnection.events` raises
:class:`~callgate.errors.AmiUnavailable` when the link dies, and the caller reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Self

from callgate.errors import AmiUnavailable

log = logging.getLogger("callgate.ami")

TERMINATOR = b"\r\n\r\n"
READ_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class Message:
    """One AMI message. Header names keep their case; repeated headers (ChanVariable) keep every value."""

    headers: dict[str, str]
    repeated: dict[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` in the order sent; [] when absent."""
        if name in self.repeated:
            return list(self.repeated[name])
        return [self.headers[name]] if name in self.headers else []

    def variable(self, name: str, *, prefix: str = "") -> str:
        """A channel variable that manager.conf ``channelvars`` lists: Asterisk writes one
        ``ChanVariable: NAME=value`` header per listed variable into every channel event, and
        ``DestChanVariable`` for the dialled channel of DialBegin/DialEnd (``prefix="Dest"``).
        The name is matched exactly; "" when absent or unset."""
        for item in self.values(f"{prefix}ChanVariable"):
            key, sep, value = item.partition("=")
            if sep and key == name:
                return value
        return ""

    @property
    def event(self) -> str:
        return self.headers.get("Event", "")


def parse_message(block: bytes) -> Message:
    """Parse one message (without or with its terminator). Never raises on odd input."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for raw in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        if name in headers:
            repeated.setdefault(name, [headers[name]]).append(value)
        else:
            headers[name] = value
    return Message(headers, repeated)


def action(name: str, action_id: str, **fields: str) -> bytes:
    lines = [f"Action: {name}", f"ActionID: {action_id}", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class AmiConnection:
    """One logged-in AMI session. Use :meth:`open`, then iterate :meth:`events`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Message]] = {}

    @classmethod
    async def open(
        cls, host: str, port: int, user: str, secret: str, *, timeout: float = 5.0
    ) -> Self:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
                await reader.readline()  # "Asterisk Call Manager/x.y.z"
                writer.write(action("Login", "login", Username=user, Secret=secret, Events="on"))
                reply = parse_message(await reader.readuntil(TERMINATOR))
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise AmiUnavailable(f"AMI {host}:{port}: {exc!r}") from exc
        if reply.get("Response") != "Success":
            writer.close()
            raise AmiUnavailable(f"AMI login as {user!r} refused: {reply.get('Message')}")
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def send(self, name: str, *, timeout: float = 5.0, **fields: str) -> Message:
        """Send an action and wait for its response (which :meth:`events` delivers)."""
        action_id = f"cg-{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            self._writer.write(action(name, action_id, **fields))
            async with asyncio.timeout(timeout):
                return await future
        except (OSError, TimeoutError) as exc:
            raise AmiUnavailable(f"AMI action {name}: no response ({exc!r})") from exc
        finally:
            self._pending.pop(action_id, None)

    async def events(self, *, ping_every: float = 5.0) -> AsyncGenerator[Message, None]:
        """Events until the link dies; a ping unanswered within ``ping_every`` counts as dead."""
        watchdog = asyncio.create_task(self._watchdog(ping_every))
        read: asyncio.Future[bytes] | None = None
        try:
            while True:
                read = asyncio.ensure_future(self._reader.readuntil(TERMINATOR))
                done, _ = await asyncio.wait({read, watchdog}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    watchdog.result()  # raises AmiUnavailable
                try:
                    message = parse_message(read.result())
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    raise AmiUnavailable(f"AMI link lost: {exc!r}") from exc
                answered = self._pending.get(message.get("ActionID"))
                if answered is not None and not answered.done() and "Response" in message.headers:
                    answered.set_result(message)
                elif message.event:
                    yield message
        finally:
            for task in (read, watchdog):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(
                *(t for t in (read, watchdog) if t is not None), return_exceptions=True
            )

    async def _watchdog(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.send("Ping", timeout=every)


def _pattern(channel_id: str) -> bool:
    """A channel "id" AMI would read as a regular expression over every channel's name (``/.*/``):
    never sent (no channel of Asterisk's has one; callgate.asterisk.agi refuses it too)."""
    if channel_id.startswith("/"):
        log.error(
            "refusing an AMI action on channel %r: AMI reads it as a pattern", channel_id[:64]
        )
        return True
    return False


class AmiControl:
    """Asterisk without ARI, through the AMI link of the spend feed (``serve`` sets :attr:`conn` while
    it is logged in): the global variables the dialplan reads (``Setvar`` without a channel), and the
    hang-ups of panic (``Hangup``, which takes a channel's name or its unique id, as the gate records
    it). A :class:`callgate.asterisk.gate.Pbx` with no Stasis app: no channel ever waits in one. The
    manager.conf user needs ``write=system,call``."""

    app = ""

    def __init__(self) -> None:
        self.conn: AmiConnection | None = None

    def _link(self, action_name: str) -> AmiConnection:
        if self.conn is None:
            raise AmiUnavailable(f"AMI action {action_name}: not connected")
        return self.conn

    async def set_global(self, variable: str, value: str) -> None:
        reply = await self._link("Setvar").send("Setvar", Variable=variable, Value=value)
        if reply.get("Response") != "Success":
            raise AmiUnavailable(f"AMI Setvar {variable}: {reply.get('Message')}")

    async def channels(self) -> list[dict[str, object]]:
        return []  # no Stasis app: nothing waits to be decided

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        if _pattern(channel_id):
            return False
        link = self._link("Setvar")
        reply = await link.send("Setvar", Channel=channel_id, Variable=variable, Value=value)
        return reply.get("Response") == "Success"

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool:
        """A channel in no Stasis app goes on by itself; with a target, ``Redirect`` there."""
        if _pattern(channel_id):
            return False
        if not context:
            return True
        reply = await self._link("Redirect").send(
            "Redirect", Channel=channel_id, Context=context, Exten=extension or "s",
            Priority=label or "1",
        )  # fmt: skip
        return reply.get("Response") == "Success"

    async def hangup(self, channel_id: str, *, cause: int) -> bool:
        """Hang up with a Q.850 cause; False when the channel is gone ("No such channel")."""
        if _pattern(channel_id):
            return False
        reply = await self._link("Hangup").send("Hangup", Channel=channel_id, Cause=str(cause))
        return reply.get("Response") == "Success"
