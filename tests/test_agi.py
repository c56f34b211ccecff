"""The FastAGI door with in-memory seams: reading Asterisk's AGI environment, and a fake Asterisk that
writes it as res_agi does (each value as it is, newlines included) and answers commands as res_agi
does. (The same paths run against a real Asterisk in tests/test_agi_e2e.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest

from callgate.asterisk.agi import KEYS, MAX_LINE, AgiServer, parse_env
from callgate.asterisk.ami import AmiControl
from callgate.asterisk.gate import Gate, GateSettings
from callgate.asterisk.stasis import Router
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.store.memory import MemoryStore
from tests.fakes import FakeAudit, FakeChannels

POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text(encoding="utf-8"),
    "example",
)
UNIQUEID = "1732000000.42"
ALLOWED, REFUSED = "2125550123", "011532345678"  # New York; Cuba (no allowed country)


def environment(args: Sequence[str], **values: str) -> list[tuple[str, str]]:
    """What Asterisk 22 sends (res_agi.c launch_netscript, setup_env), in its order."""
    env = dict.fromkeys(KEYS, "")
    env |= {
        "agi_network": "yes", "agi_network_script": "callgate",
        "agi_request": "agi://127.0.0.1:4573/callgate", "agi_channel": "PJSIP/1001-00000001",
        "agi_language": "en", "agi_type": "PJSIP", "agi_uniqueid": UNIQUEID,
        "agi_version": "22.10.1", "agi_callerid": "1001", "agi_calleridname": "Alice",
        "agi_callingpres": "0", "agi_callingani2": "0", "agi_callington": "0",
        "agi_callingtns": "0", "agi_dnid": "unknown", "agi_rdnis": "unknown",
        "agi_context": "callgate-outbound", "agi_extension": args[0] if args else "",
        "agi_priority": "24", "agi_enhanced": "0.0", "agi_accountcode": "",
        "agi_threadid": "140000000000000",
    }  # fmt: skip
    env |= values
    return [*env.items(), *((f"agi_arg_{n}", a) for n, a in enumerate(args, 1))]


def args_of(number: str, ext: str = "") -> list[str]:
    """The shipped include's arguments (CALLGATE_ARGS) for a phone's own call."""
    return [number, f"ext={ext}", "call=L1", "origin=", "via=", "by=", "site="]


def agi_words(text: str) -> list[str]:
    """An AGI command split as res_agi's parse_args splits it: spaces, double quotes, backslashes."""
    words: list[str] = []
    word, quoted, escaped, started = "", False, False, False
    for c in text:
        if escaped:
            word, escaped, started = word + c, False, True
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + c, True
    return [*words, word] if started else words


@dataclass
class FakeAsterisk:
    """One AGI() of a channel: connects, writes the environment raw, answers each command."""

    lines: list[tuple[str, str]]
    commands: list[list[str]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    closed_unanswered: bool = False

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"".join(f"{k}: {v}\n".encode() for k, v in self.lines) + b"\n")
            await writer.drain()
            while line := await reader.readline():
                words = agi_words(line.decode().rstrip("\n"))
                self.commands.append(words)
                writer.write(self.answer(words).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass  # callgate closed the session: Asterisk's AGI() ends there too
        finally:
            self.closed_unanswered = not self.commands
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, words: list[str]) -> str:
        match words:
            case ["GET", "FULL", "VARIABLE", expression]:
                return f"200 result=1 ({expression})"
            case ["SET", "VARIABLE", name, value]:
                if name.startswith("ARRAY(") and name.endswith(")"):
                    self.variables |= zip(name[6:-1].split(","), value.split(","), strict=True)
                else:
                    self.variables[name] = value
                return "200 result=1"
            case ["EXEC", "Hangup", _]:
                return "200 result=-1"
            case ["EXEC", _, _]:
                return "200 result=0"
            case _:
                return "510 Invalid or unknown command"

    def actions(self) -> list[list[str]]:
        return [c for c in self.commands if c[0] == "EXEC"]


class FakePbx(FakeChannels):
    """The router's way to Asterisk outside a call; every channel action lands in ``calls``."""

    app = "callgate"

    async def set_global(self, variable: str, value: str) -> None:
        self.calls.append(("global", variable, value))

    async def channels(self) -> list[dict[str, Any]]:
        return []


@dataclass
class Door:
    server: AgiServer
    pbx: FakePbx
    audit: FakeAudit

    async def call(self, lines: list[tuple[str, str]]) -> FakeAsterisk:
        asterisk = FakeAsterisk(lines)
        await asyncio.wait_for(asterisk.run(self.server.port), 10)
        return asterisk


@contextlib.asynccontextmanager
async def door(settings: GateSettings | None = None) -> AsyncIterator[Door]:
    memo, pbx, audit = Memo(POLICY), FakePbx(), FakeAudit()
    gate = Gate(lambda: memo, MemoryStore(), pbx, audit, settings=settings or GateSettings())
    server = AgiServer(Router(gate, pbx), "127.0.0.1", 0)
    await server.start()
    try:
        yield Door(server, pbx, audit)
    finally:
        await server.close()


# -- the environment ------------------------------------------------------------------------------


def lines_of(pairs: list[tuple[str, str]]) -> list[str]:
    return "".join(f"{k}: {v}\n" for k, v in pairs).splitlines()


def test_asterisk_environment_is_read() -> None:
    """What Asterisk sends is read in full: its keys and the arguments in order."""
    env = parse_env(lines_of(environment(args_of(ALLOWED, "1001"))))
    assert env.problem == ""
    assert env.args == tuple(args_of(ALLOWED, "1001"))
    assert env.values["agi_uniqueid"] == UNIQUEID


BROKEN = [
    ("a key given twice", [*environment([ALLOWED]), ("agi_channel", "PJSIP/1002-1")], "twice"),
    ("arguments out of order", [*environment([]), ("agi_arg_2", "x")], "out of order"),
    ("a key after the arguments", [*environment([ALLOWED]), ("agi_other", "1")], "follows"),
    ("cut before agi_threadid", environment([ALLOWED])[:10], "no agi_threadid"),
    ("a line of no key", [*environment([ALLOWED]), ("ext=1001", "")], "agi_<key>"),
]


@pytest.mark.parametrize(
    ("pairs", "why"), [(p, w) for _, p, w in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_environment_asterisk_never_sends_is_not_believed(
    pairs: list[tuple[str, str]], why: str
) -> None:
    """Each shape no Asterisk writes by itself is named as a problem."""
    assert why in parse_env(lines_of(pairs)).problem


# -- a session ------------------------------------------------------------------------------------


async def test_allowed_call_gets_the_gates_assignment_and_the_session_ends() -> None:
    """An allowed call: one SET VARIABLE with the gate's ARRAY() assignment, then nothing: the
    session ends and the dialplan goes on. ARI is never asked."""
    async with door() as d:
        asterisk = await d.call(environment(args_of(ALLOWED, "1001")))
    assert asterisk.variables["CALLGATE_VERDICT"] == "ALLOW"
    assert asterisk.variables["CALLGATE_NUMBER"] == "+12125550123"
    assert asterisk.variables["CDR(callgate)"] == asterisk.variables["CALLGATE_CALL"]
    assert [c[:2] for c in asterisk.commands] == [["GET", "FULL"], ["SET", "VARIABLE"]]
    assert [c for c in d.pbx.calls if c[0] != "global"] == []
    ((decision, channel),) = d.audit.decisions
    assert channel == UNIQUEID
    assert decision.extension == "1001"  # PJSIP/1001: the endpoint, as through Stasis


async def test_denied_call_is_hung_up_with_the_deny_cause() -> None:
    async with door() as d:
        asterisk = await d.call(environment(args_of(REFUSED, "1001")))
    assert asterisk.variables["CALLGATE_VERDICT"] == "DENY"
    assert asterisk.variables["CALLGATE_REASON"] == "country_not_allowed"
    assert asterisk.actions() == [["EXEC", "Hangup", "21"]]


async def test_deny_label_sends_the_call_there_as_ari_does() -> None:
    """deny_context and deny_label: Goto there (a context without an extension: s), no hang-up."""
    settings = GateSettings(deny_context="callgate-refused", deny_label="refuse")
    async with door(settings) as d:
        asterisk = await d.call(environment(args_of(REFUSED, "1001")))
    assert asterisk.actions() == [["EXEC", "Goto", "callgate-refused,s,refuse"]]


async def test_an_unknown_site_is_refused_through_the_session() -> None:
    async with door() as d:
        asterisk = await d.call(environment([*args_of(ALLOWED, "1001")[:-1], "site=initech"]))
    assert asterisk.variables["CALLGATE_REASON"] == "unknown_site"
    assert asterisk.actions() == [["EXEC", "Hangup", "21"]]
    assert [c for c in d.pbx.calls if c[0] != "global"] == []


# -- hostile values -------------------------------------------------------------------------------

# What a caller id name set to these writes into the environment (Asterisk sends it as it is). The
# forged arguments would charge the call to extension 1001 as a forward it may make, from a Local
# channel that is no PJSIP endpoint (so ext= decides), and name a site.
TAIL = "".join(
    f"\n{k}: {v}"
    for k, v in environment(["011442079460000", "ext=1001", "call=X", "origin=forward"])[10:]
)
INJECTIONS = [
    ("the rest of the environment and its end", "Mallory" + TAIL + "\n"),
    ("the rest, its end and a forged answer", "Mallory" + TAIL + "\n\n200 result=1 (x)"),
    ("an argument of its own", "Mallory\nagi_arg_9: origin=forward"),
    ("an argument Asterisk sends again", "Mallory\nagi_arg_2: ext=1001"),
    ("a blank line alone", "Mallory\n"),
]


@pytest.mark.parametrize("name", [i[1] for i in INJECTIONS], ids=[i[0] for i in INJECTIONS])
async def test_a_caller_id_name_cannot_write_the_environment(name: str) -> None:
    """A caller id name with newlines never adds keys or arguments: the call (New York, which
    extension 1001 may call) is refused as a forged argument list, whose call id is the channel's
    and whose extension is nobody's, never decided on the forged arguments."""
    env = environment(args_of(ALLOWED, "1001"), agi_channel="Local/2125550123@phones-0000001;2")
    env = [(k, name if k == "agi_calleridname" else v) for k, v in env]
    async with door() as d:
        asterisk = await d.call(env)
    assert asterisk.variables.get("CALLGATE_VERDICT") == "DENY"
    assert asterisk.variables.get("CALLGATE_REASON") == "unknown_extension"
    ((decision, _),) = d.audit.decisions
    assert (decision.call_id, decision.extension, decision.origin) == (UNIQUEID, "", "dialled")


async def test_a_dialled_string_with_commas_is_a_forged_list() -> None:
    """The third wall of the Stasis door holds here too: an extension that AGI() split."""
    env = environment(["2125550123", "ext=1001", "call=A"], agi_extension="2125550123,ext=1001")
    async with door() as d:
        asterisk = await d.call(env)
    assert asterisk.variables["CALLGATE_REASON"] == "unparseable_number"  # PJSIP/1001's own call


async def test_another_script_is_closed_unanswered() -> None:
    async with door() as d:
        asterisk = await d.call(environment([ALLOWED], agi_network_script="other"))
    assert asterisk.closed_unanswered
    assert d.audit.decisions == []


async def test_a_line_too_long_closes_the_session_unanswered() -> None:
    async with door() as d:
        asterisk = await d.call(environment([ALLOWED], agi_calleridname="x" * MAX_LINE))
    assert asterisk.closed_unanswered


async def test_sessions_past_the_bound_are_closed_unanswered() -> None:
    """A peer that opens sessions and sends nothing holds at most ``sessions`` of them."""
    async with door() as d:
        d.server.sessions = 2
        idle = [await asyncio.open_connection("127.0.0.1", d.server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        asterisk = await d.call(environment(args_of(ALLOWED, "1001")))
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()
    assert asterisk.closed_unanswered
    assert d.server.refused == 1


async def test_an_answer_that_is_not_one_ends_the_session() -> None:
    """A peer whose answers are no AGI answers: nothing is believed, the session just ends."""
    async with door() as d:

        async def peer() -> list[bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", d.server.port)
            env = environment(args_of(ALLOWED, "1001"))
            writer.write(b"".join(f"{k}: {v}\n".encode() for k, v in env) + b"\n")
            got = [await reader.readline()]
            writer.write(b"500 nonsense\n")  # not the echo of the word it was asked to echo
            writer.close()
            await writer.wait_closed()
            return got

        await asyncio.wait_for(peer(), 10)
        await asyncio.sleep(0.1)
    assert d.audit.decisions == []


@pytest.mark.parametrize("uniqueid", ["/.*/", "", "1732000000.42 x", "a" * 151, "id\\n"])
async def test_a_channel_id_asterisk_never_gives_closes_the_session(uniqueid: str) -> None:
    """The attack review (F2): a peer naming its channel ``/.*/`` got it into the gate's live calls,
    and panic then sent AMI ``Hangup Channel: /.*/``, which Asterisk reads as a pattern over every
    channel (911 calls too). A uniqueid outside Asterisk's alphabet closes the session, undecided."""
    async with door() as d:
        asterisk = await d.call(environment([ALLOWED], agi_uniqueid=uniqueid))
    assert asterisk.closed_unanswered
    assert d.audit.decisions == []


async def test_ami_never_acts_on_a_channel_pattern() -> None:
    """Defence in depth: AmiControl refuses (False, logged, nothing sent) any channel starting
    with "/" before it reaches AMI, whoever asks."""
    control = AmiControl()
    assert not await control.hangup("/.*/", cause=21)
    assert not await control.set_variable("/x/", "A", "1")
    assert not await control.continue_in_dialplan("/x/", context="c", label="l")
