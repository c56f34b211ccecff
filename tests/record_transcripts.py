"""Record ARI and AMI transcripts from the real test Asterisk, as fixtures for fast unit tests.

    .venv/bin/python -m tests.record_transcripts            # rewrites tests/fixtures/transcripts/*.json

It starts the test Asterisk (tests/asterisk_rig.py) with the shipped dialplan and configs
(tests/e2e.py: ``EXTENSIONS``, ``shipped_configs``) and plays the Stasis app itself, in this process:
a raw ARI events websocket for the app ``callgate`` whose every frame is written down before callgate's
own :class:`~callgate.asterisk.stasis.Router` (a real :class:`~callgate.asterisk.gate.Gate` with a real
:class:`~callgate.asterisk.ari.AriClient`, and a :class:`~callgate.store.memory.MemoryStore` instead of Redis) acts
on it. Beside it, the AMI user ``callgate`` of the shipped manager.conf, with its event filter, is read
block by block: those are the very events the spend feed gets. The calls are driven by the tests' own
AMI user (:class:`tests.e2e.Watch`), whose events are not recorded.

Each scenario (``SCENARIOS``) gets one file: ``{"header": {...}, "events": [...]}``, the events of both
links in the order they reached this process, each with ``at``, seconds since the scenario began::

    {"source": "ari", "at": 0.012, "event": {...the JSON frame, as sent...}}
    {"source": "ami", "at": 2.104, "lines": ["Event: Hangup", "Privilege: call,all", ...]}

An AMI event is kept as its lines (without the ``\\r\\n``), in order, repeated headers included, so a
test rebuilds the exact block for :func:`callgate.asterisk.ami.parse_message`. The header says which Asterisk,
when, how to regenerate, what the driver did and what the gate decided. Nothing is scrubbed: the
recorder refuses to write a file that holds one of the rig's passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from callgate.asterisk.ami import TERMINATOR
from callgate.asterisk.ari import AriClient
from callgate.asterisk.gate import Gate
from callgate.asterisk.stasis import Router
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.store.memory import MemoryStore
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    CALLGATE_AMI_SECRET,
    EXTENSIONS,
    POLICY,
    TEST_AMI_SECRET,
    Watch,
    reached,
    shipped_configs,
)
from tests.fakes import FakeAudit

OUT = Path(__file__).resolve().parent / "fixtures" / "transcripts"
REGENERATE = ".venv/bin/python -m tests.record_transcripts"
APP = "callgate"
QUIET = 2.0  # seconds without an event (and without a channel) that end a scenario

# The e2e dialplan, plus where a phone blind-transfers a call (test_attacks) and a busy carrier number.
DIALPLAN = f"""{EXTENSIONS}
[pstn]
exten => 12125550199,1,Wait(1)
 same => n,Busy(1)

[colleague]
exten => s,1,Dial(Local/s@colleague-phone)
 same => n,Hangup()
[colleague-phone]
exten => s,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()
"""


@dataclass
class Tape:
    """The events of the running scenario, both links, in arrival order."""

    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)

    def add(self, entry: dict[str, Any]) -> None:
        self.last = time.monotonic()
        self.events.append({"at": round(self.last - self.started, 3), **entry})

    def rewind(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        self.started = self.last = time.monotonic()
        return events


async def read_ari(ast: AsteriskInstance, tape: Tape, router: Router, ready: asyncio.Event) -> None:
    """The app's events websocket, raw: each frame is taped as sent, then routed as serve routes it."""
    headers = {"Authorization": ast.ari_authorization}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.ws_connect(f"{ast.ari_url}/events", params={"app": APP}) as ws,
    ):
        ready.set()
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(frame.data)
            tape.add({"source": "ari", "event": event})
            router.dispatch(event)


async def read_ami(ast: AsteriskInstance, tape: Tape, ready: asyncio.Event) -> None:
    """The shipped AMI user ``callgate`` (its read= and eventfilter), block by block."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ast.ami_port)
    try:
        await reader.readline()  # "Asterisk Call Manager/x.y.z"
        login = f"Action: Login\r\nUsername: callgate\r\nSecret: {CALLGATE_AMI_SECRET}\r\n"
        writer.write((login + "Events: on\r\n\r\n").encode())
        reply = (await reader.readuntil(TERMINATOR)).decode()
        if "Response: Success" not in reply:
            raise RuntimeError(f"AMI login refused: {reply!r}")
        ready.set()
        while True:
            block = await reader.readuntil(TERMINATOR)
            lines = block.decode("utf-8", "replace").removesuffix("\r\n\r\n").split("\r\n")
            tape.add({"source": "ami", "lines": lines})
    finally:
        writer.close()


async def quiet(ast: AsteriskInstance, tape: Tape) -> None:
    """Until no channel is left and nothing has arrived for ``QUIET`` seconds (the Cdr come last)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, channels = await asyncio.to_thread(ast.ari, "GET", "/channels")
        if status == 200 and channels == [] and time.monotonic() - tape.last > QUIET:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the scenario did not end within 60 s")


# -- the scenarios: each drives calls through the Watch and returns the steps it took -------------------


async def allowed(watch: Watch) -> list[str]:
    await watch.originate("1001", "2125550123", hold=2)
    if await watch.wait(reached("+12125550123")) is None:
        raise RuntimeError("the allowed call never reached the trunk")
    return [
        "extension 1001 (profile office) dials 2125550123 (a Local channel into [phones])",
        "callgate allows it; the dialplan dials Local/+12125550123@pstn",
        "the stand-in carrier answers and hangs up after 2 s",
    ]


async def denied(watch: Watch) -> list[str]:
    await watch.originate("1001", "011532345678")
    return [
        "extension 1001 (profile office: US, CA, GB) dials 011532345678 (Cuba)",
        "callgate refuses it (country_not_allowed) and hangs the channel up with cause 21",
    ]


async def unanswered(watch: Watch) -> list[str]:
    await watch.originate("1002", "2125550199")
    return [
        "extension 1002 dials 2125550199; callgate allows it",
        "the stand-in carrier never answers: Busy() after 1 s",
    ]


async def transfer(watch: Watch) -> list[str]:
    number = "2125550172"
    await watch.originate("3000", number, hold=60)
    if await watch.wait(reached("+1" + number)) is None:
        raise RuntimeError("the transferred call never reached the trunk")
    phone = await watch.wait(
        lambda m: m.event == "DialEnd" and m.get("Channel").startswith(f"Local/{number}@phones-"), 5
    )
    if phone is None:
        raise RuntimeError("no DialEnd of the gated channel")
    await asyncio.sleep(0.5)
    reply = await watch.conn.send(
        "BlindTransfer", Channel=phone.get("Channel"), Context="colleague", Exten="s"
    )
    if reply.get("Response") != "Success":
        raise RuntimeError(f"BlindTransfer failed: {reply.headers}")
    return [
        f"extension 3000 (profile short: 3 s) dials {number}; callgate allows it for 3 s",
        "the carrier answers and would hold the call for 60 s",
        f"0.5 s after the answer, AMI BlindTransfer of the gated channel ({phone.get('Channel')}) "
        "to [colleague] s: the trunk channel leaves the phone's bridge for a colleague's, and the "
        "gated channel hangs up",
        "the trunk channel is hung up by its TIMEOUT(absolute) from [callgate-limit], 3 s after "
        "its answer",
    ]


SCENARIOS: dict[str, Callable[[Watch], Awaitable[list[str]]]] = {
    "allowed": allowed,
    "denied": denied,
    "unanswered": unanswered,
    "transfer": transfer,
}


def _decision(audit: FakeAudit, index: int) -> dict[str, object]:
    decision, channel_id = audit.decisions[index]
    return {
        "channel": channel_id,
        "verdict": decision.verdict.value,
        "reason": decision.reason.value,
        "extension": decision.extension,
        "call_id": decision.call_id,
        "reservation": decision.reservation,
        "number": decision.number.e164,
        "allowed_seconds": decision.allowed_seconds,
    }


def check_no_secret(text: str, ast: AsteriskInstance) -> None:
    for secret in (ast.ari_password, ast.ami_secret, CALLGATE_AMI_SECRET, TEST_AMI_SECRET):
        if secret in text:
            raise RuntimeError(f"a password of the rig ({secret[:3]}...) is in a transcript")


async def record(ast: AsteriskInstance, out: Path, names: list[str]) -> list[Path]:
    status, info = await asyncio.to_thread(ast.ari, "GET", "/asterisk/info")
    if status != 200 or not isinstance(info, dict):
        raise RuntimeError(f"GET /asterisk/info: {status} {info}")
    version = str(info["system"]["version"])
    tape = Tape()
    audit = FakeAudit()
    policy = load_policy(POLICY, "tests/e2e.py POLICY")
    ari = AriClient(ast.ari_url, ast.ari_user, ast.ari_password, APP)
    memo = Memo(policy)
    router = Router(Gate(lambda: memo, MemoryStore(), ari, audit), ari)
    ari_ready, ami_ready = asyncio.Event(), asyncio.Event()
    readers = [
        asyncio.create_task(read_ari(ast, tape, router, ari_ready)),
        asyncio.create_task(read_ami(ast, tape, ami_ready)),
    ]
    watch = await Watch.open(ast)
    written = []
    try:
        try:
            async with asyncio.timeout(10):
                await ari_ready.wait()
                await ami_ready.wait()
        except TimeoutError:
            for task in readers:
                if task.done():
                    task.result()  # the reader's own error says why
            raise
        await router.reconcile()  # as serve does on connect: publishes the emergency numbers
        await quiet(ast, tape)
        tape.rewind()
        for name in names:
            seen = len(audit.decisions)
            steps = await SCENARIOS[name](watch)
            await quiet(ast, tape)
            await router.drain()
            events = tape.rewind()
            if len(audit.decisions) != seen + 1:
                raise RuntimeError(f"{name}: the gate made {len(audit.decisions) - seen} decisions")
            header = {
                "scenario": name,
                "asterisk": version,
                "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
                "regenerate": f"{REGENERATE} (see the docstring of tests/record_transcripts.py)",
                "dialplan": "tests/e2e.py EXTENSIONS (dialplan/extensions_callgate.conf) + "
                "tests/record_transcripts.py DIALPLAN",
                "ari": f"events websocket of the Stasis app {APP!r}, every frame",
                "ami": "the AMI user 'callgate' of dialplan/manager.conf (its read= and "
                "eventfilter), every event; cdr_manager.conf maps CDR(callgate) to CallgateCall",
                "policy": "tests/e2e.py POLICY",
                "steps": steps,
                "gate": [_decision(audit, i) for i in range(seen, len(audit.decisions))],
            }
            text = json.dumps({"header": header, "events": events}, indent=1, ensure_ascii=False)
            check_no_secret(text, ast)
            path = out / f"{name}.json"
            path.write_text(text + "\n", encoding="utf-8")
            written.append(path)
            print(f"{path}: {len(events)} events", flush=True)
    finally:
        await watch.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await router.drain()
        await ari.aclose()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.record_transcripts", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON files go")
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names: list[str] = args.scenarios or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"no scenario named {', '.join(sorted(unknown))}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="callgate-transcripts-") as root,
        asterisk(asterisk_prefix(), Path(root), dialplan=DIALPLAN, configs=shipped_configs) as ast,
    ):
        asyncio.run(record(ast, out, names))


if __name__ == "__main__":
    main()
