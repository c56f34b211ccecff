"""No secret reaches a log line or an error message (issue 8, finding 10).

Each test runs something that fails with secrets in its settings (a settings file with mistakes, a
``callgate serve`` whose links are dead, an ARI that refuses the websocket upgrade, an AMI that refuses
the login, a Redis that refuses the password), captures everything printed and logged, and looks for
every secret in it, as written and as an ``Authorization: Basic`` header would carry it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest
from aiohttp import web

from callgate.cli import main
from callgate.errors import SettingsError
from callgate.ops.logs import SecretFilter
from callgate.serve import serve
from callgate.settings import Settings, load_settings, redact_url
from tests.servers import eventually, free_port

ROOT = Path(__file__).resolve().parents[1]
LINKS_DOWN = ("ARI link down", "AMI link down", "Redis link down")  # what serve logs, once each
ARI_USER, ARI_PASSWORD = "callgate", "Ari-Pa55word-1"
AMI_SECRET = "40917362"  # numeric: it must not be echoed as a number either
REDIS_PASSWORD = "R3dis-Secret"
SMTP_PASSWORD = "Smtp-Pa55-9"
SECRETS = (ARI_PASSWORD, AMI_SECRET, REDIS_PASSWORD, SMTP_PASSWORD)


def needles(*secrets: str, user: str = ARI_USER) -> list[str]:
    """Each secret as written, and as the base64 of an ``Authorization: Basic`` header."""
    found = list(secrets)
    for secret in secrets:
        found.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return found


def assert_clean(text: str, *secrets: str) -> None:
    for needle in needles(*secrets):
        assert needle not in text, f"{needle!r} printed:\n{text}"


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as a handler would print it: message, exception and stack."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records)


def policy_file(where: Path) -> str:
    path = where / "policy.yaml"
    text = resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8")
    path.write_text(text, encoding="utf-8")
    return str(path)


@contextlib.asynccontextmanager
async def fake_ari(*, accept: bool) -> AsyncIterator[str]:
    """An ARI stand-in on a loopback port; yields its URL. ``accept=False`` answers the websocket
    upgrade (and every REST call) with 401, as Asterisk does for a wrong password; ``accept=True`` holds
    the events websocket open and lists no channels."""

    async def events(request: web.Request) -> web.StreamResponse:
        if not accept:
            return web.json_response(
                {"message": "Authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Asterisk REST Interface"'},
            )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    async def channels(_: web.Request) -> web.StreamResponse:
        return web.json_response([] if accept else {"message": "no"}, status=200 if accept else 401)

    app = web.Application()
    app.router.add_get("/ari/events", events)
    app.router.add_get("/ari/channels", channels)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/ari"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def refusing_ami() -> AsyncIterator[int]:
    """An AMI stand-in that refuses every login, as Asterisk does for a wrong secret; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            writer.write(b"Asterisk Call Manager/9.0.0\r\n")
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"Response: Error\r\nActionID: login\r\nMessage: Authentication failed\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def serve_env(ari_url: str, ami_port: int, redis_url: str, policy: str) -> dict[str, str]:
    return {
        "CALLGATE_ARI_URL": ari_url,
        "CALLGATE_ARI_USER": ARI_USER,
        "CALLGATE_ARI_PASSWORD": ARI_PASSWORD,
        "CALLGATE_AMI_PORT": str(ami_port),
        "CALLGATE_AMI_USER": "callgate",
        "CALLGATE_AMI_SECRET": AMI_SECRET,
        "CALLGATE_REDIS_URL": redis_url,
        "CALLGATE_POLICY_FILE": policy,
        "CALLGATE_ALERTS_SMTP_PASSWORD": SMTP_PASSWORD,
        "CALLGATE_METRICS_PORT": str(free_port()),
        "CALLGATE_LOG_LEVEL": "debug",
    }


def dead_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


# -- settings --------------------------------------------------------------------------------------

GOOD_ENV = {
    "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
    "CALLGATE_ARI_USER": ARI_USER,
    "CALLGATE_ARI_PASSWORD": ARI_PASSWORD,
    "CALLGATE_AMI_USER": "callgate",
    "CALLGATE_AMI_SECRET": AMI_SECRET,
    "CALLGATE_POLICY_FILE": "/etc/callgate/policy.yaml",
}


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ("", {"CALLGATE_REDIS_URL": f"redis//:{REDIS_PASSWORD}@127.0.0.1:6379/0"}, "[redis] url"),
        ("", {"CALLGATE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:six/0"}, "[redis] url"),
        ("", {"CALLGATE_REDIS_URL": f"redis://127.0.0.1:{REDIS_PASSWORD}/0"}, "[redis] url"),
        (
            "",
            {"CALLGATE_REDIS_URL": f"redis://h/0?password={REDIS_PASSWORD}&socket_timeout=soon"},
            "[redis] url",
        ),
        ("", {"CALLGATE_REDIS_URL": f"rediss://[::1:{REDIS_PASSWORD}@h/0"}, "[redis] url"),
        (
            "",
            {"CALLGATE_ARI_URL": f"htp://{ARI_USER}:{ARI_PASSWORD}@127.0.0.1:8088/ari"},
            "[ari] url",
        ),
        (
            "",
            {"CALLGATE_ARI_URL": f"http://{ARI_USER}:{ARI_PASSWORD}@127.0.0.1:8088/ari"},
            "[ari] url",
        ),
        ("[ari]\npassword = 73519468\n", {"CALLGATE_ARI_PASSWORD": ""}, "[ari] password"),
        ("[ami]\nsecret = 40917362\n", {"CALLGATE_AMI_SECRET": ""}, "[ami] secret"),
        ("[alerts]\nsmtp_password = 1.5e3\n", {}, "[alerts] smtp_password"),
        ("[ami]\nsecret = true\n", {"CALLGATE_AMI_SECRET": ""}, "[ami] secret"),
        # a secret pasted into the wrong setting is not echoed from there either
        ("", {"CALLGATE_AMI_PORT": AMI_SECRET + "x"}, "[ami] port"),
        ("", {"CALLGATE_LOG_FORMAT": ARI_PASSWORD}, "[log] format"),
    ],
)
def test_settings_errors_name_the_setting_never_the_secret(
    tmp_path: Path, toml: str, env: dict[str, str], named: str
) -> None:
    """A settings error names the setting that is wrong and shows no secret: not a password in a
    URL (mistyped, malformed, in the query), not a password written as a number, not a secret that
    landed in another setting."""
    path = tmp_path / "callgate.toml"
    path.write_text(toml)
    environ = {**GOOD_ENV, **env}
    if environ.get("CALLGATE_ARI_PASSWORD") == "":
        del environ["CALLGATE_ARI_PASSWORD"]
    if environ.get("CALLGATE_AMI_SECRET") == "":
        del environ["CALLGATE_AMI_SECRET"]
    with pytest.raises(SettingsError) as caught:
        load_settings(str(path), environ)
    text = str(caught.value)
    assert named in text
    assert_clean(text, *SECRETS, "73519468", "1.5e3", "1500.0")


def test_serve_with_a_broken_config_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callgate serve --config` with every kind of mistake at once: a one-screen message, no secret."""
    path = tmp_path / "callgate.toml"
    path.write_text(
        f'[ari]\nurl = "htp://{ARI_USER}:{ARI_PASSWORD}@127.0.0.1:8088/ari"\nuser = "{ARI_USER}"\n'
        f'password = 73519468\n[ami]\nuser = "callgate"\nsecret = {AMI_SECRET}\n'
        f'[redis]\nurl = "redis//:{REDIS_PASSWORD}@127.0.0.1:6379/0"\n'
        f'[alerts]\nsmtp_password = "{SMTP_PASSWORD}"\n[policy]\nfile = "/nonexistent.yaml"\n'
    )
    for name in [n for n in os.environ if n.startswith("CALLGATE_")]:
        monkeypatch.delenv(name)
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "[ari] url" in err
    assert "[redis] url" in err
    assert "[ari] password" in err
    assert "[ami] secret" in err
    assert "Traceback" not in err
    assert_clean(out + err, *SECRETS, "73519468")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("redis://user:pw@h/1", "redis://***@h/1"),
        ("redis//:pw@h:6379/0", "redis//***@h:6379/0"),
        ("redis://:p@ss@h:6379/0", "redis://***@h:6379/0"),
        ("redis://h:pw/0", "redis://h:***/0"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=***"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        ("http://127.0.0.1:8088/ari", "http://127.0.0.1:8088/ari"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("http://[::1]:8088/ari", "http://[::1]:8088/ari"),
        ("http://u:pw@[::1]:8088/ari#pw", "http://***@[::1]:8088/ari#***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """What a URL looks like in a message: credentials, a non-numeric port, query values gone."""
    assert redact_url(url) == shown


def test_settings_repr_hides_secrets() -> None:
    """A Settings value printed whole (a debugger, a log line) shows none of its secrets."""
    env = {
        **GOOD_ENV,
        "CALLGATE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
        "CALLGATE_ALERTS_SMTP_PASSWORD": SMTP_PASSWORD,
    }
    settings = load_settings(None, env)
    assert isinstance(settings, Settings)
    assert_clean(repr(settings), *SECRETS)
    assert set(settings.secrets()) >= {ARI_PASSWORD, AMI_SECRET, REDIS_PASSWORD, SMTP_PASSWORD}


def test_log_filter_scrubs_what_a_library_might_log() -> None:
    """Defence in depth: a record carrying a secret (in its message, its arguments, its traceback)
    leaves serve's handler with the secret replaced, whoever logged it."""
    secrets = load_settings(None, GOOD_ENV).secrets()  # with the Basic token of the ARI user
    record = logging.LogRecord(
        "aiohttp.client", logging.ERROR, __file__, 1, "auth %s", (ARI_PASSWORD,), None
    )
    try:
        raise RuntimeError(f"Authorization: Basic {needles(ARI_PASSWORD)[1]} secret {AMI_SECRET}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert SecretFilter(secrets).filter(record)
    text = logging.Formatter().format(record)
    assert "auth ***" in text
    assert_clean(text, ARI_PASSWORD, AMI_SECRET)


# -- serve with failing links ----------------------------------------------------------------------


async def test_failing_links_log_no_secret(
    caplog: pytest.LogCaptureFixture, redis_url: str, tmp_path: Path
) -> None:
    """serve against an ARI that refuses the websocket upgrade (401), an AMI that refuses the login
    and a Redis that refuses the password, until each failure is logged: they are, at debug level
    too, and no log record holds a secret."""
    caplog.set_level(logging.DEBUG)
    wrong_redis = redis_url.replace("redis://", f"redis://callgate:{REDIS_PASSWORD}@")
    async with fake_ari(accept=False) as ari_url, refusing_ami() as ami_port:
        env = serve_env(ari_url, ami_port, wrong_redis, policy_file(tmp_path))
        settings = load_settings(None, env)
        stop = asyncio.Event()
        running = asyncio.create_task(serve(settings, stop=stop))
        try:
            await eventually(
                lambda: all(w in everything_logged(caplog) for w in (*LINKS_DOWN, "401")),
                lambda: f"every link down in the log\n{everything_logged(caplog)[-3000:]}",
            )
        finally:
            stop.set()
            await running
        gc.unfreeze()  # serve froze what it found alive, this test process with it
    text = everything_logged(caplog)
    assert "ARI link down" in text
    assert "401" in text
    assert "AMI link down" in text
    assert "Redis link down" in text
    assert_clean(text, *SECRETS)


async def _run_serve(env: dict[str, str], output: Path) -> str:
    """`callgate serve` in a process of its own until it has said that every link is down, then
    SIGTERM; its whole output (stdout and stderr)."""
    import subprocess

    keep = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callgate.cli", "serve"],
            env={**keep, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def said() -> str:
        return output.read_text(encoding="utf-8", errors="replace")

    try:
        await eventually(
            lambda: proc.poll() is not None or all(w in said() for w in LINKS_DOWN),
            lambda: f"every link down in serve's output\n{said()[-3000:]}",
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return said()


@pytest.mark.parametrize(
    ("links", "log_format"), [("dead", "text"), ("refusing", "text"), ("refusing", "json")]
)
async def test_serve_process_prints_no_secret(
    redis_url: str, tmp_path: Path, links: str, log_format: str
) -> None:
    """The real `callgate serve` process, with its own log handler and format, against dead ports or
    refusing servers: everything it prints to stdout and stderr is free of secrets."""
    policy = policy_file(tmp_path)
    if links == "dead":
        env = serve_env(
            f"http://127.0.0.1:{dead_port()}/ari",
            dead_port(),
            f"redis://:{REDIS_PASSWORD}@127.0.0.1:{dead_port()}/0",
            policy,
        )
        output = await _run_serve({**env, "CALLGATE_LOG_FORMAT": log_format}, tmp_path / "out")
    else:
        wrong_redis = redis_url.replace("redis://", f"redis://callgate:{REDIS_PASSWORD}@")
        async with fake_ari(accept=False) as ari_url, refusing_ami() as ami_port:
            env = serve_env(ari_url, ami_port, wrong_redis, policy)
            output = await _run_serve({**env, "CALLGATE_LOG_FORMAT": log_format}, tmp_path / "out")
    assert "ARI link down" in output
    assert "AMI link down" in output
    assert "Redis link down" in output
    assert "Traceback" not in output
    assert_clean(output, *SECRETS)
