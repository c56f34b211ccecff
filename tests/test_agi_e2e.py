"""The FastAGI door on a real Asterisk whose HTTP server (and so ARI) is off, as FreePBX ships: the
shipped include with ``CALLGATE_AGI`` set, a real Redis, and ``callgate serve`` with ``[ari] url``
empty and ``[agi] listen`` set. The emergency globals are published and panic hangs calls up through
AMI; a caller id name that writes lines into the AGI environment decides nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callgate.asterisk.agi import KEYS
from callgate.asterisk.ami import Message
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    DIALPLAN,
    POLICY,
    ROOT,
    STAND_INS,
    Callgate,
    Watch,
    caller_leg_hangup,
    callgate_env,
    cdr_of,
    gated_cdr_of,
    reached,
    shipped_configs,
    wait_until,
)
from tests.servers import free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

AGI_PORT = free_port()
LONDON, CUBA = "011442079460000", "011532345678"

# What a caller id name writes after its own line to forge the rest of the environment: London (which
# 1001 may call; the real call dials Cuba, which 1001 may not), and the blank line that ends an
# environment. Believed, it would be allowed and dialled (so it was, before the session's echo). URIDECODE() makes the newlines (%0A), as a trunk's or a phone's
# caller id name can hold them.
_FORGED = [
    *(f"{key}: 0" for key in KEYS[KEYS.index("agi_callingpres") : KEYS.index("agi_threadid") + 1]),
    *(
        f"agi_arg_{n}: {a}"
        for n, a in enumerate([LONDON, "ext=1001", "call=X", "origin=", "via=", "by=", "site="], 1)
    ),
]
# Asterisk trims a name's trailing newlines (so a name cannot end an environment alone); a word after
# the blank line keeps it.
INJECTED = "%0A".join(["Mallory", *(urllib.parse.quote(line) for line in _FORGED), "", "Mallory"])

EXTENSIONS = f"""\
[globals]
CALLGATE_TRUNK=Local
CALLGATE_TRUNK_SUFFIX=@pstn
CALLGATE_AGI=127.0.0.1:{AGI_PORT}

#include "{DIALPLAN / "extensions_callgate.conf"}"

[phones]
include => callgate-outbound

[inject]
exten => _X.,1,Set(CALLERID(name)=${{URIDECODE({INJECTED})}})
 same => n,Goto(phones,${{EXTEN}},1)

{STAND_INS}"""


def agi_only_configs(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped configs, but no HTTP server (no ARI); callgate's AMI user may also write the
    globals and hang up (write=system,call: dialplan/manager.conf)."""
    configs = shipped_configs(ast)
    configs["http.conf"] = "[general]\nenabled=no\n"
    configs["manager.conf"] = configs["manager.conf"].replace(
        "write=system\n", "write=system,call\n"
    )
    return configs


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str

    def logged(self, text: str) -> bool:
        return text in self.gate.log.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        published = self.gate.log.read_text().count("emergency numbers published") if (
            self.gate.log.exists()
        ) else 0  # fmt: skip
        self.gate.start()
        assert wait_until(
            lambda: self.gate.log.read_text().count("emergency numbers published") > published, 20
        ), self.gate.tail()

    def ensure(self) -> None:
        if self.gate.proc is None or self.gate.proc.poll() is not None:
            self.start()

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "callgate.cli", *args, "--redis", self.redis_url, "--site", "e2e"],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = Path(tmp_path_factory.mktemp("agi"))
    (root / "policy.yaml").write_text(POLICY)
    with (
        redis_server(root / "redis") as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=agi_only_configs,
            http=False,
        ) as ast,
    ):  # fmt: skip
        env = callgate_env(
            ast, redis_url, root / "policy.yaml", CALLGATE_ARI_URL="", CALLGATE_ARI_USER="",
            CALLGATE_ARI_PASSWORD="", CALLGATE_AGI_LISTEN=f"127.0.0.1:{AGI_PORT}",
        )  # fmt: skip
        rig = Rig(ast, Callgate(env, root / "callgate.log"), redis_url)
        rig.start()
        try:
            yield rig
        finally:
            rig.gate.stop()


async def test_serve_runs_without_ari(rig: Rig) -> None:
    """Asterisk has no HTTP server; callgate serves with the FastAGI door and AMI, healthy."""
    rig.ensure()
    health = await rig.gate.health()
    assert health["links"] == {"ami": "up", "redis": "up", "agi": "up"}, health
    assert health["status"] == "ok"
    assert rig.logged("FastAGI door listening on 127.0.0.1")


async def test_allowed_call_reaches_the_trunk_with_its_limit(rig: Rig, watch: Watch) -> None:
    """An allowed call goes on to the trunk, dialled to its E.164 number; 3000 may talk 3 s: a
    call the far end would hold 30 s ends after about 3 (Dial's L() from CALLGATE_MAX_SECONDS)."""
    rig.ensure()
    await watch.originate("3000", "2125550103", hold=30)
    assert await watch.wait(reached("+12125550103")), rig.gate.tail()
    cdr = await watch.wait(
        lambda m: gated_cdr_of("2125550103")(m) and m.get("Disposition") == "ANSWERED", 20
    )
    assert cdr is not None
    assert cdr.get("UserField") == "callgate:allowed"
    assert 2 <= int(cdr.get("BillableSeconds")) <= 4
    assert cdr.get("CallgateCall")  # the reservation id the spend feed settles


async def test_denied_call_is_refused_with_its_reason(rig: Rig, watch: Watch) -> None:
    rig.ensure()
    await watch.originate("1001", CUBA)
    hangup = await watch.wait(caller_leg_hangup(CUBA))
    assert hangup is not None, rig.gate.tail()
    assert hangup.get("Cause") == "21"
    cdr = await watch.wait(gated_cdr_of(CUBA), 15)
    assert cdr is not None
    assert cdr.get("UserField") == "callgate:country_not_allowed"
    assert not watch.find(reached("532345678"))


async def test_emergency_numbers_are_published_through_ami(rig: Rig, watch: Watch) -> None:
    """The policy's list, behind the outside-line 9, is in Asterisk's globals (written with AMI
    Setvar): 9911 goes around the gate to the trunk as 911."""
    rig.ensure()
    reply = await watch.conn.send("Getvar", Variable="CALLGATE_EMERGENCY_NUMBERS")
    assert "9911" in reply.get("Value").split("-"), reply.headers
    await watch.originate("1001", "9911")
    assert await watch.wait(reached("911")), rig.gate.tail()


async def test_a_caller_id_name_cannot_forge_the_agi_environment(rig: Rig, watch: Watch) -> None:
    """A caller id name holding newlines, the rest of an environment that asks for London, and the
    blank line that ends it: res_agi sends it as it is (callgate reads Asterisk's
    own lines after it), the call is refused and London is never dialled."""
    rig.ensure()
    await watch.place(
        f"Local/{CUBA}@inject/n", caller_id='"Ext 1001" <1001>',
        variables="__HOLD=1,CALLGATE_EXTENSION=1001",
    )  # fmt: skip
    hangup = await watch.wait(_hung_up(CUBA))
    assert hangup is not None, rig.gate.tail()
    assert wait_until(lambda: rig.logged("AGI environment refused"), 5), rig.gate.tail()
    await asyncio.sleep(0.5)
    assert not watch.find(reached("442079460000"))
    assert not watch.find(reached("532345678"))


def _hung_up(number: str) -> Callable[[Message], bool]:
    return lambda m: m.event == "Hangup" and m.get("Channel").startswith(f"Local/{number}@inject-")


async def test_panic_hangs_up_an_admitted_international_call_through_ami(
    rig: Rig, watch: Watch
) -> None:
    """panic: the call to London admitted a moment ago is hung up (AMI Hangup, cause 21) long
    before the 30 s the far end would hold it; calm lets the next one through."""
    rig.ensure()
    await watch.originate("1002", LONDON, hold=30)
    assert await watch.wait(reached("442079460000")), rig.gate.tail()
    rig.cli("panic")
    try:
        hangup = await watch.wait(caller_leg_hangup(LONDON), 10)
        assert hangup is not None, rig.gate.tail()
        assert hangup.get("Cause") == "21"
    finally:
        rig.cli("calm")


async def test_callgate_stopped_refuses_every_call_but_emergency(rig: Rig, watch: Watch) -> None:
    """No listener: AGI() fails (AGISTATUS=FAILURE), the call is refused; 911 still goes out."""
    rig.gate.stop()
    try:
        await watch.originate("1001", "2125550105")
        hangup = await watch.wait(caller_leg_hangup("2125550105"))
        assert hangup is not None
        assert hangup.get("Cause") == "21"
        # the gated channel's record (the originate's other Local half writes one without a field,
        # and either may come first)
        cdr = await watch.wait(lambda m: cdr_of("2125550105")(m) and bool(m.get("UserField")), 15)
        assert cdr is not None, rig.gate.tail()
        assert cdr.get("UserField") == "callgate:unavailable"
        assert not watch.find(reached("12125550105"))
        await watch.originate("1001", "911")
        assert await watch.wait(reached("911"))
    finally:
        rig.ensure()
