"""The FastAGI door: ``AGI(agi://127.0.0.1:573/callgate,<the Stasis door's arguments>)`` reaches the
same gate as ``Stasis(callgate,...)``, for an Asterisk without ARI (docs/install.md).

Per connection, Asterisk (res/res_agi.c: ``launch_netscript``, then ``setup_env``) writes its
environment, one ``agi_<key>: <value>`` line each, in a fixed order (:data:`KEYS`), then one
``agi_arg_<n>: <value>`` line per argument and a blank line; then it reads commands and answers each
with one ``200 result=...`` line (``HANGUP`` lines come in between once the channel hangs up). This
module reads the environment into the channel and arguments the Stasis door reads
(:func:`callgate.asterisk.stasis.read_start`, the same walls), hands the call to the same
:class:`~callgate.asterisk.stasis.Router` (site routing, ``unknown_site``, the in-flight slots, the
deadline, the audit and the metrics), and controls the channel through the session
(:class:`AgiSession`, a :class:`~callgate.asterisk.gate.ChannelControl`): ``SET VARIABLE`` with the
very ``ARRAY()`` assignment the gate builds; then an allowed call's session simply ends, so the dialplan
goes on; a refused one is hung up (``EXEC Hangup <deny_cause>``) or sent on (``EXEC Goto`` to
``deny_context``/``deny_label``), as the Stasis door does.

A caller writes some of the environment: the caller id number and name, the DNID, the RDNIS, and the
dialled extension (in ``agi_extension`` and, for a Local channel, in ``agi_channel``). Asterisk writes
each value as it is (``ast_agi_send(fd, chan, "agi_calleridname: %s\\n", ...)``, no escaping), so a
caller id name holding a newline writes lines of its own: keys that Asterisk sends later, arguments,
even the blank line that ends the environment, after which Asterisk's real lines would be read as
answers. None of those values is ever read here (the caller is the PJSIP endpoint, as for Stasis),
and the environment is believed only when:

* every line is ``agi_<key>: <value>``, no key is given twice (Asterisk sends its own keys after the
  caller's value, so a key a value forged comes twice), the arguments come last, numbered 1, 2, 3...
  in order, and the environment holds the keys Asterisk always sends up to ``agi_threadid``;
* nothing follows it: before anything is done to the channel, the session asks Asterisk to echo a
  random word (``GET FULL VARIABLE <nonce>``), and any line read before that echo is the rest of an
  environment that a value ended early. No caller can write the echo: the word is drawn per session.

A session that breaks either rule is decided as a forged argument list (refused, as
``unparseable_number``; logged and audited). Lines are at most :data:`MAX_LINE` bytes, an environment
at most :data:`MAX_LINES` lines and :data:`ENV_TIMEOUT` seconds, each answer :data:`REPLY_TIMEOUT`
seconds, and :data:`MAX_SESSIONS` sessions are served at once; past any bound the session is closed
unanswered, and the shipped dialplan, which clears the ``CALLGATE_*`` answers before ``AGI()``,
refuses the call. So does it when callgate is stopped (``AGISTATUS`` FAILURE) or stops while deciding
(the session closes before an answer): a FastAGI call never waits anywhere for a callgate to come
back, and there is nothing to reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

from callgate.asterisk.stasis import Router, read_start

log = logging.getLogger("callgate.agi")

SCRIPT = "callgate"  # agi://host:port/callgate: Asterisk sends it as agi_network_script
MAX_LINE = 2048  # bytes of one line (res_agi's own command buffer, AGI_BUF_LEN, is 2048)
MAX_LINES = 64  # lines of one environment: Asterisk 22 sends 22, and one per argument
MAX_SESSIONS = 256  # sessions served at once; the gate decides IN_FLIGHT of them at a time
ENV_TIMEOUT = 2.0  # seconds for the whole environment
REPLY_TIMEOUT = 5.0  # seconds for Asterisk's answer to one command

# The keys Asterisk 22 sends, in its order (res/res_agi.c, launch_netscript and setup_env).
KEYS = (
    "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
    "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname", "agi_callingpres",
    "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context",
    "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid",
)  # fmt: skip
UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,150}", re.ASCII)
NEEDED = ("agi_network_script", "agi_channel", "agi_uniqueid", "agi_threadid")
ARG = "agi_arg_"


class Env(NamedTuple):
    """An AGI environment as read: each key's value, the arguments in order, and why it cannot be
    believed ("" when it can)."""

    values: dict[str, str]
    args: tuple[str, ...]
    problem: str


def parse_env(lines: Sequence[str]) -> Env:
    """Read an environment's lines (without the blank line that ends it). Never raises."""
    values: dict[str, str] = {}
    args: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith("agi_"):
            problems.append(f"line {number} is no 'agi_<key>: <value>'")
            continue
        if key in values:
            problems.append(f"{key} is given twice")
            continue
        values[key] = value
        if key.startswith(ARG):
            if key != f"{ARG}{len(args) + 1}":
                problems.append(f"{key} is out of order")
            args.append(value)
        elif args:
            problems.append(f"{key} follows the arguments")
    missing = [key for key in NEEDED if key not in values]
    if missing:
        problems.append(f"no {', '.join(missing)}")
    return Env(values, tuple(args), "; ".join(problems))


def channel_of(env: Env) -> dict[str, Any]:
    """The environment as the channel :func:`~callgate.asterisk.stasis.read_start` reads (ARI's
    shape): its unique id, its name, its account code, where it runs in the dialplan."""
    v = env.values
    return {
        "id": v.get("agi_uniqueid", ""),
        "name": v.get("agi_channel", ""),
        "accountcode": v.get("agi_accountcode", ""),
        "dialplan": {"context": v.get("agi_context", ""), "exten": v.get("agi_extension", "")},
    }


class Unreadable(Exception):
    """The peer sent what no Asterisk sends (too long, too many lines) or closed the session."""


async def read_line(reader: asyncio.StreamReader) -> str:
    """One line without its newline; :class:`Unreadable` past :data:`MAX_LINE` or at the end."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise Unreadable(f"a line longer than {MAX_LINE} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        raise Unreadable("the session closed") from exc
    return raw[:-1].decode("utf-8", "replace")


async def read_env(reader: asyncio.StreamReader) -> list[str]:
    """The environment's lines, up to the blank line that ends it."""
    lines: list[str] = []
    while line := await read_line(reader):
        lines.append(line)
        if len(lines) > MAX_LINES:
            raise Unreadable(f"an environment of more than {MAX_LINES} lines")
    return lines


def _quoted(text: str) -> str:
    """One AGI command argument (res_agi's parse_args: double quotes, backslash escapes)."""
    if any(c in text for c in "\r\n\0"):
        raise ValueError("an AGI argument cannot hold a line break")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgiSession:
    """One FastAGI session: the channel control of its one call. A session that broke (closed, an
    answer late or unreadable) answers False, as ARI does for a channel that is gone."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        channel_id: str,
        *,
        timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.channel_id = channel_id
        self.timeout = timeout
        self.hung_up = False  # Asterisk said HANGUP: the caller left
        self.broken = ""  # why the session cannot be used any more

    async def command(self, text: str) -> str | None:
        """Send one command and return Asterisk's answer line (``200 result=...``, or an error
        code's last line); None once the session broke."""
        if self.broken:
            return None
        try:
            self.writer.write(text.encode() + b"\n")
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
                return await self._answer()
        except (OSError, TimeoutError, Unreadable) as exc:
            self.broken = str(exc) or type(exc).__name__
            log.warning("channel %s: AGI session lost: %s", self.channel_id, self.broken)
            return None

    async def _answer(self) -> str:
        while True:
            line = await read_line(self.reader)
            if line == "HANGUP":
                self.hung_up = True
            elif line[:3].isdigit() and line[3:4] == "-":  # 520-...: usage lines, then "520 ..."
                continue
            else:
                return line

    async def sync(self) -> int | None:
        """Have Asterisk echo a word drawn for this session; how many lines came before the echo
        (0: the environment ended where Asterisk ended it), or None when the session broke."""
        nonce = "callgate-" + secrets.token_hex(16)
        echo = f"200 result=1 ({nonce})"
        try:
            self.writer.write(f"GET FULL VARIABLE {nonce}\n".encode())
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
                extra = 0
                while (line := await read_line(self.reader)) != echo:
                    if line == "HANGUP":
                        self.hung_up = True
                        continue
                    extra += 1
                    if extra > MAX_LINES:
                        raise Unreadable(f"more than {MAX_LINES} lines before the echo")
                return extra
        except (OSError, TimeoutError, Unreadable) as exc:
            self.broken = str(exc) or type(exc).__name__
            return None

    # -- ChannelControl -------------------------------------------------------------------------

    async def set_variable(self, channel_id: str, variable: str, value: str) -> bool:
        reply = await self.command(f"SET VARIABLE {_quoted(variable)} {_quoted(value)}")
        return reply is not None and reply.startswith("200 ") and not self.hung_up

    async def continue_in_dialplan(
        self, channel_id: str, *, context: str = "", extension: str = "", label: str = ""
    ) -> bool:
        """Nothing given: the dialplan goes on once the session ends. Else ``Goto`` there, read as
        ARI reads it (a context without an extension: ``s``; neither: the current one)."""
        if not (context or extension or label):
            return not self.broken and not self.hung_up
        if context:
            target = f"{context},{extension or 's'},{label or 1}"
        elif extension:
            target = f"{extension},{label or 1}"
        else:
            target = label
        reply = await self.command(f"EXEC Goto {_quoted(target)}")
        return reply is not None and reply.startswith("200 ")

    async def hangup(self, channel_id: str, *, cause: int) -> bool:
        reply = await self.command(f"EXEC Hangup {int(cause)}")
        return reply is not None and reply.startswith("200 ")


class AgiServer:
    """The FastAGI listener: one :class:`AgiSession` per connection, each call decided by
    ``router``."""

    def __init__(
        self, router: Router, host: str, port: int, *, sessions: int = MAX_SESSIONS
    ) -> None:
        self.router = router
        self.host = host
        self.port = port
        self.sessions = sessions
        self.open = 0
        self.refused = 0  # sessions closed unanswered because too many were open
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_LINE, reuse_address=True
        )
        if self.port == 0:  # tests: the port the system chose
            self.port = int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Accept no more sessions (those open go on until their calls are decided)."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.sessions:
            self.refused += 1
            log.warning("FastAGI: %d sessions open already; one closed unanswered", self.open)
            writer.close()
            return
        self.open += 1
        try:
            await self._session(reader, writer)
        except Exception:  # a bug must not kill the listener; the dialplan refuses the call
            log.exception("FastAGI session failed")
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(ENV_TIMEOUT):
                lines = await read_env(reader)
        except (OSError, TimeoutError, Unreadable) as exc:
            log.warning("FastAGI: environment unreadable (%s); session closed", exc or "timeout")
            return
        env = parse_env(lines)
        script = env.values.get("agi_network_script")
        if script != SCRIPT:  # Asterisk's second line, before any value a caller writes
            log.warning("FastAGI: script %r is not %r; session closed", script, SCRIPT)
            return
        channel_id = env.values.get("agi_uniqueid", "")
        if not UNIQUEID.fullmatch(channel_id):
            # Asterisk's uniqueid (1732000000.42, or an id an originate chose); anything else is no
            # channel of Asterisk's, and the gate names channels by it (AMI Hangup reads a Channel
            # that starts with "/" as a regular expression over every channel)
            log.warning(
                "FastAGI: channel id %r is no Asterisk uniqueid; session closed", channel_id[:64]
            )
            return
        session = AgiSession(reader, writer, channel_id)
        extra = await session.sync()
        if extra is None:
            log.warning("channel %s: AGI session lost: %s", channel_id, session.broken)
            return
        after = f"{extra} line(s) of environment after its blank line" if extra else ""
        problem = "; ".join(p for p in (env.problem, after) if p)
        if problem:
            log.warning("channel %s: AGI environment refused: %s", channel_id, problem)
        start = read_start(channel_of(env), env.args, forged=bool(problem))
        task = self.router.start(start, control=session)
        if task is not None:
            await asyncio.wait({task})  # not cancelled with this session's own task
