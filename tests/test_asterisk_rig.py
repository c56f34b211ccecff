"""The real-Asterisk rig: it starts, ARI and AMI answer, the needed modules run, calls run the dialplan."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix, sip_endpoint, sipp_call

pytestmark = pytest.mark.asterisk

DIALPLAN = """\
[test]
exten => 100,1,NoOp(callgate rig smoke)
 same => n,Set(CDR(userfield)=rig-smoke)
 same => n,UserEvent(CallgateRig,Stage: dialplan)
 same => n,Answer()
 same => n,Wait(0.2)
 same => n,Hangup()

exten => 200,1,Wait(2)
 same => n,Hangup()

exten => 300,1,Set(CDR(userfield)=sipp-in)
 same => n,Answer()
 same => n,Wait(5)
 same => n,Hangup()
"""

NEEDED_MODULES = (
    "res_agi",
    "app_stasis",
    "res_ari_channels",
    "res_stasis",
    "res_http_websocket",
    "cdr_manager",
    "cdr_csv",
    "chan_pjsip",
    "res_pjsip_session",
    "pbx_config",
    "func_timeout",
)


@pytest.fixture(scope="module")
def ast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsteriskInstance]:
    """One Asterisk for this module: under a second to start (the first build takes minutes)."""
    workdir = Path(tmp_path_factory.mktemp("asterisk"))
    configs = {"pjsip_custom.conf": sip_endpoint("sipp", context="test")}
    with asterisk(asterisk_prefix(), workdir, dialplan=DIALPLAN, configs=configs) as instance:
        yield instance


def _wait_for(
    predicate: Callable[[], bool], seconds: float, what: str, ast: AsteriskInstance
) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds}s\n{ast.log_tail()}")
        time.sleep(0.05)


def test_cli_reports_the_version(ast: AsteriskInstance) -> None:
    """`asterisk -rx` reaches the instance through its own control socket."""
    assert ast.rx("core show version").startswith(f"Asterisk {ast.prefix.name} ")


def test_ari_answers_with_basic_auth(ast: AsteriskInstance) -> None:
    """ARI /asterisk/info answers 200 with the configured user, 401 without."""
    status, info = ast.ari("GET", "/asterisk/info")
    assert status == 200
    assert isinstance(info, dict)
    assert "system" in info
    bad = dataclasses.replace(ast, ari_password="wrong")
    assert bad.ari("GET", "/asterisk/info")[0] == 401


@pytest.mark.parametrize("module", NEEDED_MODULES)
def test_module_is_running(ast: AsteriskInstance, module: str) -> None:
    """Each module callgate relies on is loaded and running."""
    out = ast.rx(f"module show like {module}")
    line = next((ln for ln in out.splitlines() if ln.startswith(f"{module}.so")), "")
    assert "Running" in line, out


def test_refusal_announcement_is_installed(ast: AsteriskInstance) -> None:
    """`sound:ss-noservice` exists (Debian's asterisk-core-sounds-en-wav, linked into the prefix)."""
    status, sound = ast.ari("GET", "/sounds/ss-noservice")
    assert status == 200
    assert isinstance(sound, dict)
    assert any(f["language"] == "en" for f in sound["formats"]), sound


def test_ari_originate_runs_the_dialplan(ast: AsteriskInstance) -> None:
    """A Local channel originated over ARI runs extension 100 and leaves a CDR in Master.csv."""
    status, channel = ast.ari(
        "POST",
        "/channels",
        {"endpoint": "Local/100@test", "context": "test", "extension": "200", "priority": "1"},
    )
    assert status == 200, channel
    assert isinstance(channel, dict)
    _wait_for(
        lambda: ast.cdr_csv.exists() and "rig-smoke" in ast.cdr_csv.read_text(),
        10,
        "a CDR row with userfield rig-smoke",
        ast,
    )
    assert "callgate rig smoke" in ast.log_path.read_text()


def test_ami_originate_raises_a_cdr_event_with_linkedid(ast: AsteriskInstance) -> None:
    """AMI logs in with the rig's user, originates, and cdr_manager sends Cdr with LinkedID."""
    with socket.create_connection(("127.0.0.1", ast.ami_port), timeout=10) as sock:
        reader = sock.makefile("r", encoding="utf-8", newline="\r\n")
        assert reader.readline().startswith("Asterisk Call Manager/")

        def send(**fields: str) -> None:
            text = "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
            sock.sendall(text.encode())

        def read_message() -> dict[str, str]:
            message: dict[str, str] = {}
            for line in iter(reader.readline, ""):
                if line in ("\r\n", "\n"):
                    return message
                key, _, value = line.rstrip("\r\n").partition(": ")
                message[key] = value
            raise ConnectionError("AMI closed the connection")

        send(Action="Login", Username=ast.ami_user, Secret=ast.ami_secret, ActionID="login")
        login = read_message()
        assert login.get("Response") == "Success", login

        send(
            Action="Originate",
            Channel="Local/100@test",
            Context="test",
            Exten="200",
            Priority="1",
            Async="true",
            ActionID="call",
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = read_message()
            if message.get("Event") == "Cdr" and message.get("UserField") == "rig-smoke":
                assert message.get("LinkedID"), message
                assert message["Destination"] == "100"
                return
        pytest.fail(f"no Cdr event within 15s\n{ast.log_tail()}")


def test_sip_transport_listens_on_the_chosen_port(ast: AsteriskInstance) -> None:
    """The PJSIP UDP transport is bound to 127.0.0.1 on the port the rig picked."""
    assert f"127.0.0.1:{ast.sip_port}" in ast.rx("pjsip show transports")


def test_inbound_sip_call_reaches_the_dialplan(ast: AsteriskInstance) -> None:
    """A SIPp call from 127.0.0.1 is matched to the `sipp` endpoint, answered, and leaves a CDR."""
    done = sipp_call(ast, "300", timeout=15)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    _wait_for(
        lambda: "sipp-in" in ast.cdr_csv.read_text() if ast.cdr_csv.exists() else False,
        10,
        "a CDR row with userfield sipp-in",
        ast,
    )
    rows = [row for row in ast.cdr_csv.read_text().splitlines() if "sipp-in" in row]
    assert '"PJSIP/sipp-' in rows[0]
    assert '"ANSWERED"' in rows[0]
