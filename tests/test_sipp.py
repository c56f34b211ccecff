"""A real phone's path: a PJSIP extension registers with digest auth (SIPp), then places calls that go
through the shipped dialplan and `callgate serve`. An allowed call is answered by the carrier; a refused
one gets 403 (cause 21) and never reaches it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    EXTENSIONS,
    POLICY,
    Callgate,
    Watch,
    callgate_env,
    reached,
    shipped_configs,
)
from tests.servers import free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]  # the rig starts a redis-server too

SCENARIOS = Path(__file__).parent / "sipp"
REGISTER = Path(__file__).parent.parent / "docker" / "sipp" / "register.xml"  # the docker rig's own
SECRET = "sipp-secret-1001"
PHONE = f"""\
[1001]
type = endpoint
context = phones
disallow = all
allow = ulaw
auth = 1001
aors = 1001
callerid = "Ext 1001" <1001>
transport = transport-udp

[1001]
type = auth
auth_type = userpass
username = 1001
password = {SECRET}

[1001]
type = aor
max_contacts = 1
remove_existing = yes
"""


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: docker/build-asterisk.sh installs Debian's sip-tester")
    root = Path(tmp_path_factory.mktemp("sipp"))
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")

    def configs(ast: AsteriskInstance) -> dict[str, str]:
        return {**shipped_configs(ast), "pjsip_custom.conf": PHONE}

    with (
        redis_server(root / "redis") as redis_url,
        asterisk(asterisk_prefix(), root / "ast", dialplan=EXTENSIONS, configs=configs) as ast,
    ):
        gate = Callgate(callgate_env(ast, redis_url, root / "policy.yaml"), root / "callgate.log")
        with gate.running(ast):
            yield Rig(ast, gate)


def sipp(rig: Rig, scenario: str, *sets: str) -> subprocess.CompletedProcess[str]:
    """One run of a scenario as extension 1001; exit status 0 means it went as the scenario says."""
    path = REGISTER if scenario == "register.xml" else SCENARIOS / scenario
    args = ["sipp", "-sf", str(path), f"127.0.0.1:{rig.ast.sip_port}"]
    args += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1"]
    args += ["-set", "user", "1001", "-au", "1001", "-ap", SECRET, "-nostdin"]
    args += ["-timeout", "20s", "-timeout_error", "-trace_err"]
    for pair in sets:
        name, value = pair.split("=", 1)
        args += ["-set", name, value]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=40, cwd=rig.ast.workdir, check=False
    )


def failure(done: subprocess.CompletedProcess[str], rig: Rig) -> str:
    errors = sorted(rig.ast.workdir.glob("*_errors.log"))
    text = errors[-1].read_text(errors="replace")[-3000:] if errors else ""
    return f"sipp exit {done.returncode}\n{done.stderr[-2000:]}\n{text}\n{rig.gate.tail()}"


def test_extension_registers_with_digest_auth(rig: Rig) -> None:
    """REGISTER is challenged (401) and accepted with the password; Asterisk lists the contact."""
    done = sipp(rig, "register.xml")
    assert done.returncode == 0, failure(done, rig)
    assert "1001/sip:1001@127.0.0.1" in rig.ast.rx("pjsip show contacts")


async def test_registered_phone_allowed_call_is_answered(rig: Rig, watch: Watch) -> None:
    """An allowed number: callgate continues the call, the carrier answers (200), then hangs up."""
    assert sipp(rig, "register.xml").returncode == 0
    done = sipp(rig, "call-answered.xml", "number=2125550142")
    assert done.returncode == 0, failure(done, rig)
    assert await watch.wait(reached("+12125550142"), 5)


async def test_registered_phone_refused_call_gets_403(rig: Rig, watch: Watch) -> None:
    """A refused number (Cuba): 403 Forbidden from cause 21, and the carrier never sees it."""
    done = sipp(rig, "call-refused.xml", "number=011532345699")
    assert done.returncode == 0, failure(done, rig)
    assert not watch.find(lambda m: m.get("UserEvent") == "PstnReached")
