"""The Stasis layer: read ARI events into call attempts and route them to the gate. No decisions here.

The dialplan passes what callgate needs as ``Stasis()`` arguments (docs/install.md)::

    Stasis(callgate,${EXTEN})                                   the dialled number only
    Stasis(callgate,${EXTEN},ext=${CALLERID(num)},call=${CHANNEL(linkedid)})
    Stasis(callgate,${OUTNUM},ext=${AMPUSER},call=${CHANNEL(linkedid)})    FreePBX predial hook

The first argument is the dialled string. Then ``ext=`` (the extension; default: the channel's caller id
number), ``call=`` (the call id that makes every trunk attempt of one call one decision; default: the
channel id) and ``account=`` (default: the channel's account code). A bare second and third argument are
read as ``ext`` and ``call``. Every value is cut to 128 characters; anything odd is left to the engine,
which refuses what it cannot read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callgate.ari import AriClient
from callgate.errors import AriUnavailable
from callgate.gate import Gate
from callgate.rules import CallAttempt

IN_FLIGHT = 64  # calls decided at once by one gate

log = logging.getLogger("callgate.stasis")

MAX_FIELD = 128
_POSITIONAL = ("ext", "call")


@dataclass(frozen=True, slots=True)
class Start:
    channel_id: str
    attempt: CallAttempt


def _text(value: object) -> str:
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def read_start(channel: Mapping[str, Any], args: Sequence[object]) -> Start | None:
    """The call attempt of a channel entering Stasis, or None when it has no channel id."""
    channel_id = _text(channel.get("id"))
    if not channel_id:
        return None
    named: dict[str, str] = {}
    for position, arg in enumerate(args[1:]):
        key, sep, value = _text(arg).partition("=")
        if sep:
            named.setdefault(key.strip().lower(), value.strip())
        elif position < len(_POSITIONAL):
            named.setdefault(_POSITIONAL[position], key.strip())
    caller = channel.get("caller")
    caller_number = _text(caller.get("number")) if isinstance(caller, Mapping) else ""
    dialled = _text(args[0]) if args else ""
    attempt = CallAttempt(
        call_id=named.get("call") or channel_id,
        extension=named.get("ext") or caller_number,
        dialled=dialled,
        account_code=named.get("account") or _text(channel.get("accountcode")),
    )
    return Start(channel_id, attempt)


def waiting_args(channel: Mapping[str, Any], app: str) -> list[str] | None:
    """For a channel listed by ``GET /channels``: its Stasis arguments if it waits in ``app``."""
    dialplan = channel.get("dialplan")
    if not isinstance(dialplan, Mapping) or dialplan.get("app_name") != "Stasis":
        return None
    name, *args = str(dialplan.get("app_data", "")).split(",")
    return args if name.strip() == app else None


class Router:
    """Routes events to the gate, one task per call; a channel is never handled twice at once."""

    def __init__(self, gate: Gate, ari: AriClient) -> None:
        self.gate = gate
        self.ari = ari
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # At most this many calls are decided at once; the others queue. A call that queued past the
        # gate's deadline gets the policy's on_store_error decision without asking the store, so an
        # overloaded gate sheds load instead of letting every call wait longer and longer.
        self.slots = asyncio.Semaphore(IN_FLIGHT)

    def dispatch(self, event: Mapping[str, Any]) -> None:
        match event:
            case {"type": "StasisStart", "channel": dict() as channel, "args": list() as args}:
                self.start(read_start(channel, args))
            case {"type": "ApplicationReplaced"}:
                log.error(
                    "another client took the Stasis app %r: run one app name per instance",
                    self.ari.app,
                )
            case _:
                pass

    def start(self, start: Start | None) -> None:
        if start is None or start.channel_id in self.busy:
            return
        self.busy.add(start.channel_id)
        task = asyncio.create_task(self._handle(start))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, start: Start) -> None:
        queued = time.monotonic()
        try:
            async with self.slots:
                late = time.monotonic() - queued > self.gate.settings.deadline
                await self.gate.handle(start.channel_id, start.attempt, late=late)
        except AriUnavailable as exc:
            log.warning(
                "channel %s: ARI failed while applying the decision: %s", start.channel_id, exc
            )
        except Exception:  # a bug must not kill the gate; the channel is refused by the dialplan
            log.exception("channel %s: unexpected error", start.channel_id)
            await self._refuse(start.channel_id)
        finally:
            self.busy.discard(start.channel_id)

    async def _refuse(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id, cause=self.gate.settings.deny_cause)
        except AriUnavailable:
            log.warning("channel %s: could not refuse it either", channel_id)

    async def reconcile(self) -> int:
        """Decide every channel left waiting in the app (after a reconnect or a restart)."""
        found = 0
        for channel in await self.ari.channels():
            args = waiting_args(channel, self.ari.app)
            if args is not None:
                found += 1
                self.start(read_start(channel, args))
        if found:
            log.info("found %d channel(s) waiting in Stasis app %r", found, self.ari.app)
        return found

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
