"""The end-to-end rig: a real Asterisk with the shipped dialplan, a real redis-server, and `callgate serve`
as its own process, all on 127.0.0.1 ports chosen here.

Calls are Local channels originated over AMI into the `[phones]` context, which includes the shipped
`[callgate-outbound]`. The "carrier" is the `[pstn]` context: it raises a `PstnReached` user event,
answers, and stays up for `${HOLD}` seconds (set on the originated call, inherited).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callgate.asterisk.ami import AmiConnection, Message
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.servers import free_port, redis_server

ROOT = Path(__file__).resolve().parent.parent
DIALPLAN = ROOT / "dialplan"
TEST_AMI_USER, TEST_AMI_SECRET = "tester", "tester-secret"
CALLGATE_AMI_SECRET = "e2e-ami-secret"

# The stand-in carrier ([pstn]: reached numbers are UserEvent PstnReached, held HOLD seconds) and a
# parking place for the other half of an originated call; every real-Asterisk rig's dialplan ends with it.
STAND_INS = """\
[pstn]
exten => _+X.,1,Goto(pstn,${EXTEN:1},1)
exten => _X.,1,UserEvent(PstnReached,Number: ${EXTEN})
 same => n,Answer()
 same => n,Wait(${IF($["${HOLD}" = ""]?1:${HOLD})})
 same => n,Hangup()

[park]
exten => s,1,Wait(120)
 same => n,Hangup()
"""

# The shipped include, dialling the stand-in carrier: how every plain-Asterisk rig's dialplan begins.
SHIPPED = f"""\
[globals]
CALLGATE_TRUNK=Local
CALLGATE_TRUNK_SUFFIX=@pstn

#include "{DIALPLAN / "extensions_callgate.conf"}"
"""

EXTENSIONS = f"""\
{SHIPPED}
[phones]
include => callgate-outbound

{STAND_INS}"""

POLICY = """\
version: 1
site: {name: e2e, region: US, timezone: America/New_York, currency: USD, outside_line: ["9"],
       on_store_error: deny_international}
emergency: ["911", "933"]
rates: {default: "0.05", increment: 1, prefixes: {"1": "0.01", "44": "0.60", "53": "1.10"}}
profiles:
  office:
    destinations: {allow_countries: [US, CA, GB], deny_number_types: [premium_rate]}
    limits: {calls_per_minute: 500, concurrent_calls: 200, max_call_duration: 1h, spend: {day: "50.00"}}
  short:
    destinations: {allow_countries: [US]}
    limits: {max_call_duration: 3s}
  capped:
    destinations: {allow_countries: [GB]}
    limits: {calls_per_minute: 500, concurrent_calls: 200, max_call_duration: 60s, spend: {day: "3.00"}}
  single:
    destinations: {allow_countries: [US]}
    limits: {concurrent_calls: 1, max_call_duration: 10m}
extensions:
  - {match: "1001-1020", profile: office}
  - {match: "3000", profile: short}
  - {match: "4000", profile: capped}
  - {match: "5000", profile: single}
"""


def shipped_configs(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped sample configs, with this instance's ports and secrets, plus a test AMI user."""

    def read(name: str) -> str:
        return (DIALPLAN / name).read_text(encoding="utf-8")

    http = read("http.conf").replace("bindport=8088", f"bindport={ast.http_port}")
    ari = read("ari.conf").replace("[callgate]", f"[{ast.ari_user}]")
    ari = ari.replace("password=change-me-ari", f"password={ast.ari_password}")
    manager = read("manager.conf").replace("port=5038", f"port={ast.ami_port}")
    manager = manager.replace("secret=change-me-ami", f"secret={CALLGATE_AMI_SECRET}")
    manager += (
        f"\n[{TEST_AMI_USER}]\nsecret={TEST_AMI_SECRET}\ndeny=0.0.0.0/0.0.0.0\n"
        "permit=127.0.0.1/255.255.255.255\nread=all\nwrite=all\n"
    )
    return {
        "http.conf": http,
        "ari.conf": ari,
        "manager.conf": manager,
        "cdr.conf": read("cdr.conf"),
        "cdr_manager.conf": read("cdr_manager.conf"),
    }


@dataclass
class Callgate:
    """`callgate serve` as a child process; start, stop (SIGTERM) or kill (SIGKILL) it."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ("serve",)  # the command line after `callgate`

    @contextlib.contextmanager
    def running(self, ast: AsteriskInstance) -> Iterator[None]:
        """Started, and its Stasis app registered in ``ast`` (else the test fails with its log);
        stopped on the way out, whatever happened."""
        self.start()
        try:
            if not wait_until(lambda: app_registered(ast), 20):
                pytest.fail(f"callgate did not register its Stasis app\n{self.tail()}")
            yield
        finally:
            self.stop()

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callgate.cli", *self.args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        out.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def health(self) -> dict[str, Any]:
        """Its /health body (``links``, ``policy_version``...); {} while nothing answers."""
        url = f"http://127.0.0.1:{self.env['CALLGATE_METRICS_PORT']}/health"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
                http.get(url) as reply,
            ):
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        return dict(body) if isinstance(body, dict) else {}


def callgate_env(
    ast: AsteriskInstance, redis_url: str, policy: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env |= {
        "CALLGATE_ARI_URL": ast.ari_url,
        "CALLGATE_ARI_USER": ast.ari_user,
        "CALLGATE_ARI_PASSWORD": ast.ari_password,
        "CALLGATE_AMI_PORT": str(ast.ami_port),
        "CALLGATE_AMI_USER": "callgate",
        "CALLGATE_AMI_SECRET": CALLGATE_AMI_SECRET,
        "CALLGATE_REDIS_URL": redis_url,
        "CALLGATE_POLICY_FILE": str(policy),
        "CALLGATE_LOG_FORMAT": "json",
        "CALLGATE_METRICS_PORT": str(free_port()),
        **extra,
    }
    return env


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def app_registered(ast: AsteriskInstance, app: str = "callgate") -> bool:
    status, apps = ast.ari("GET", "/applications")
    return status == 200 and isinstance(apps, list) and any(a.get("name") == app for a in apps)


def in_stasis(ast: AsteriskInstance) -> list[str]:
    status, channels = ast.ari("GET", "/channels")
    assert status == 200
    assert isinstance(channels, list)
    return [c["id"] for c in channels if c.get("dialplan", {}).get("app_name") == "Stasis"]


@dataclass
class Watch:
    """Every AMI event Asterisk raises, collected by the test's own AMI user."""

    conn: AmiConnection
    messages: list[Message] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @classmethod
    async def open(cls, ast: AsteriskInstance) -> Watch:
        conn = await AmiConnection.open("127.0.0.1", ast.ami_port, TEST_AMI_USER, TEST_AMI_SECRET)
        watch = cls(conn)
        watch.task = asyncio.create_task(watch._read())
        return watch

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.conn.events(ping_every=30):
                self.messages.append(message)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.conn.close()

    async def originate(
        self, ext: str, number: str, *, hold: int = 1, caller_id: str = "", variables: str = ""
    ) -> None:
        """A call from extension `ext` dialling `number` into the phones' context.

        A Local channel is no PJSIP endpoint, so the extension travels the way the shipped include
        reads it for such channels: ``CALLGATE_EXTENSION`` (a plain variable, which the Local channel
        copies to its ;2 half). The caller id is the phone's own claim (``caller_id``, default ``ext``).
        """
        extension = f",CALLGATE_EXTENSION={ext}" if ext else ""
        await self.place(
            f"Local/{number}@phones/n",
            caller_id=f'"Ext {ext}" <{caller_id or ext}>',
            variables=f"__HOLD={hold}{extension}{variables}",
        )

    async def place(
        self,
        channel: str,
        *,
        context: str = "park",
        exten: str = "s",
        caller_id: str = "",
        variables: str = "",
    ) -> None:
        """AMI Originate of ``channel`` (usually a Local channel that runs the call's dialplan), its
        other side placed at ``exten@context`` (default: the stand-ins' ``park``, which holds the line
        for ``HOLD`` seconds); asynchronous, so it returns once Asterisk accepted the request."""
        reply = await self.conn.send(
            "Originate",
            Channel=channel,
            Context=context,
            Exten=exten,
            Priority="1",
            CallerID=caller_id,
            Variable=variables,
            Async="true",
            Timeout="30000",
        )
        assert reply.get("Response") == "Success", reply.headers

    def find(self, predicate: Callable[[Message], bool]) -> list[Message]:
        return [m for m in self.messages if predicate(m)]

    async def caught_up(self) -> None:
        """Every event Asterisk raised before now has been read: the answer to a Ping comes after
        them on the same connection."""
        await self.conn.send("Ping")

    async def wait(
        self, predicate: Callable[[Message], bool], seconds: float = 10
    ) -> Message | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.find(predicate)
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        return None


def reached(number: str) -> Callable[[Message], bool]:
    digits = number.lstrip("+")
    return lambda m: (
        m.event == "UserEvent" and m.get("UserEvent") == "PstnReached" and m.get("Number") == digits
    )


def caller_leg_hangup(number: str) -> Callable[[Message], bool]:
    """The Hangup of the channel that ran [phones] for `number` (the Local channel's ;2 half)."""
    return lambda m: (
        m.event == "Hangup"
        and m.get("Channel").startswith(f"Local/{number}@phones-")
        and m.get("Channel").endswith(";2")
    )


def cdr_of(number: str) -> Callable[[Message], bool]:
    return lambda m: m.event == "Cdr" and m.get("Destination") == number


def gated_cdr_of(number: str) -> Callable[[Message], bool]:
    """The record of the channel that ran [phones] for `number` (the Local channel's ;2 half, the one
    the gate decided): the other half's record has the same Destination and may come first."""
    return lambda m: cdr_of(number)(m) and m.get("Channel").endswith(";2")


@dataclass
class Serving:
    """A real Redis, a real Asterisk and `callgate serve` on them, for one test module."""

    ast: AsteriskInstance
    gate: Callgate
    redis_url: str

    def decisions(self) -> list[dict[str, str]]:
        """The audit entries `callgate serve` logged so far (JSON log format), oldest first."""
        text = self.gate.log.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if '"event": "decision"' in line]

    def start_gate(self) -> None:
        """Start `callgate serve` again and wait until it is ready for calls: connected to ARI and
        reconciling. (ARI lists the app while no client holds it, so the listing alone says nothing
        after a restart.)"""
        ready = self._connections()
        self.gate.start()
        assert wait_until(lambda: self._connections() > ready, 20), self.gate.tail()

    def _connections(self) -> int:
        text = self.gate.log.read_text(encoding="utf-8", errors="replace")
        return text.count("emergency numbers published")  # logged by Router.reconcile on connect

    async def decision(self, dialled: str, since: int, seconds: float = 10) -> dict[str, str]:
        """The first decision on `dialled` logged after the first `since` ones (waits for it)."""
        deadline = time.monotonic() + seconds
        while True:
            found = [d for d in self.decisions()[since:] if d["dialled"] == dialled]
            if found or time.monotonic() > deadline:
                assert found, f"no decision on {dialled!r}\n{self.gate.tail()}"
                return found[0]
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def serving(
    root: Path,
    dialplan: str,
    policy: str,
    configs: Callable[[AsteriskInstance], dict[str, str]] = shipped_configs,
) -> Iterator[Serving]:
    """Start Redis, Asterisk with `dialplan` and `configs`, and `callgate serve` with `policy`; wait
    until the Stasis app is registered; stop them all afterwards."""
    (root / "policy.yaml").write_text(policy, encoding="utf-8")
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(asterisk_prefix(), root / "ast", dialplan=dialplan, configs=configs) as ast,
    ):
        gate = Callgate(callgate_env(ast, redis_url, root / "policy.yaml"), root / "callgate.log")
        with gate.running(ast):
            yield Serving(ast, gate, redis_url)


def trunk_numbers(watch: Watch) -> list[str]:
    """Every number that reached the stand-in trunk (`PstnReached` user events) so far."""
    return [
        m.get("Number")
        for m in watch.messages
        if m.event == "UserEvent" and m.get("UserEvent") == "PstnReached"
    ]
