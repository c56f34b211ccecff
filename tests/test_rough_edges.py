"""Rough edges that are now clear errors (issue 8, finding 13): a malformed ``--redis`` URL, CDR rows
with an unbalanced quote or odd seconds, replay and the live gate agreeing on what is an outbound
call, ``/health`` with AMI turned off, and the start-up warning when Redis keeps nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import redis.asyncio as aioredis

from callgate.asterisk.gate import Gate
from callgate.cli import main
from callgate.core.memo import Memo
from callgate.core.policyfile import load_policy
from callgate.core.rules import CallAttempt
from callgate.errors import SettingsError
from callgate.offline.replay import replay
from callgate.ops.admin import redis_url
from callgate.serve import serve
from callgate.settings import Settings, load_settings
from callgate.store.memory import MemoryStore
from tests.fakes import FakeAudit, FakeChannels
from tests.servers import free_port, redis_server
from tests.test_cdr import cdr_line, read
from tests.test_secrets import fake_ari, policy_file

NY = ZoneInfo("America/New_York")
POLICY = load_policy(
    resources.files("callgate").joinpath("data/default-policy.yaml").read_text("utf-8"), "example"
)
SECRET = "R3dis-Secret"

# -- a malformed --redis URL -------------------------------------------------------------------------

BAD_URLS = [
    f"redis//:{SECRET}@127.0.0.1:6379/0",  # the scheme mistyped
    f"redis://:{SECRET}@127.0.0.1:six/0",  # a port that is not a number
    f"redis://127.0.0.1:{SECRET}/0",  # the password where the port goes
    f"redis://:{SECRET}@127.0.0.1:6379/zero",  # a database that is not a number
    f"redis://127.0.0.1/0?password={SECRET}&socket_timeout=soon",  # a query option redis-py refuses
    f"http://:{SECRET}@127.0.0.1:6379/0",  # not Redis at all
]


@pytest.fixture
def no_callgate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CALLGATE_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_callgate_env")
@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(
    "command",
    [
        ["locks", "--site", "acme-nyc"],
        ["status", "--site", "acme-nyc"],
        ["policy", "history", "--site", "acme-nyc"],
        ["explain", "--from", "1001", "2125550123"],
    ],
)
def test_malformed_redis_option_is_one_line(
    capsys: pytest.CaptureFixture[str], url: str, command: list[str]
) -> None:
    """A Redis URL that cannot be used is one line on stderr that names --redis and says what is
    wrong, without the password: no traceback, exit status 2, nothing connected."""
    assert main([*command, "--redis", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("callgate: --redis: ")
    assert err.count("\n") == 1
    assert SECRET not in err


@pytest.mark.parametrize("url", BAD_URLS[:2])
def test_malformed_redis_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Without --redis, the admin commands read CALLGATE_REDIS_URL; a bad one is named as such."""
    monkeypatch.setenv("CALLGATE_REDIS_URL", url)
    assert main(["locks", "--site", "acme-nyc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("callgate: CALLGATE_REDIS_URL: ")
    assert err.count("\n") == 1
    assert SECRET not in err


@pytest.mark.parametrize(
    ("given", "environ", "expected"),
    [
        ("redis://a/1", {"CALLGATE_REDIS_URL": "redis://b/2"}, ("redis://a/1", "--redis")),
        ("", {"CALLGATE_REDIS_URL": "redis://b/2"}, ("", "--redis")),  # refused as malformed
        (None, {"CALLGATE_REDIS_URL": "redis://b/2"}, ("redis://b/2", "CALLGATE_REDIS_URL")),
        (
            None,
            {"CALLGATE_REDIS_URL": ""},
            ("redis://127.0.0.1:6379/0", "the default of [redis] url"),
        ),
        (None, {}, ("redis://127.0.0.1:6379/0", "the default of [redis] url")),
    ],
)
def test_one_resolver_of_the_redis_url(
    given: str | None, environ: dict[str, str], expected: tuple[str, str]
) -> None:
    """The Redis URL of the command line (the check of main, the admin commands): --redis, else
    CALLGATE_REDIS_URL when not empty, else the settings table's default; and where it came from."""
    assert redis_url(given, environ) == expected


def test_a_section_written_as_a_value_is_a_settings_error(tmp_path: Path) -> None:
    """`ari = "x"` where [ari] belongs is named, not a traceback."""
    path = tmp_path / "callgate.toml"
    path.write_text('ari = "http://127.0.0.1:8088/ari"\n')
    with pytest.raises(SettingsError, match=r"ari must be a section \(\[ari\]\), not a value"):
        load_settings(str(path), {})


# -- CDR rows with an unbalanced quote ---------------------------------------------------------------

GOOD = cdr_line()


@pytest.mark.parametrize(
    ("bad", "line", "words"),
    [
        # a quote inside clid that cdr_csv would have doubled: the fields after it would shift
        (GOOD.replace('"""Alice"" <1001>"', '""Alice" <1001>"'), 2, "quote"),
        # a quoted field that opens and swallows the comma after it
        (GOOD.replace('"912125550123",', '"912125550123,'), 2, "quote"),
        # a bare quote inside a field that is not quoted
        (GOOD.replace('"""Alice"" <1001>"', 'Alice" <1001>'), 2, "quote"),
        # the last field opened and never closed: it runs on over the next row
        (GOOD.replace(',""\n', ',"\n'), 2, "quote"),
    ],
)
def test_unbalanced_quote_is_a_bad_row_with_its_line(bad: str, line: int, words: str) -> None:
    """A row with an unbalanced quote is refused and reported with the line it starts on; it is
    never read with its fields shifted. Reading goes on after it."""
    assert bad != GOOD
    text = cdr_line(src="1000") + bad + cdr_line(src="1003") + cdr_line(src="1004")
    rows, errors = read(text)
    assert [e.line for e in errors] == [line]
    assert words in errors[0].reason
    assert "1000" in [r.src for r in rows]
    assert "1004" in [r.src for r in rows]
    assert all(r.src != "1001" for r in rows)  # the bad row is not read in any shape
    for r in rows:
        assert r.dst == "912125550123"
        assert r.dcontext == "from-internal"


@pytest.mark.parametrize(
    ("duration", "billsec", "reason"),
    [
        (127, "+10", "billsec '+10' is not a whole number of seconds"),
        (127, " 10", "billsec ' 10' is not a whole number of seconds"),
        (127, "10 ", "billsec '10 ' is not a whole number of seconds"),
        (127, "١٠", "billsec '١٠' is not a whole number of seconds"),
        (127, "1_0", "billsec '1_0' is not a whole number of seconds"),
        ("１２７", 10, "duration '１２７' is not a whole number of seconds"),
        ("+127", 10, "duration '+127' is not a whole number of seconds"),
        ("9" * 5000, 10, "duration 99999999999999999999... is not a call's length in seconds"),
        (60, 120, "billsec 120 is longer than duration 60"),
    ],
)
def test_seconds_are_ascii_digits_and_billsec_fits_duration(
    duration: str | int, billsec: str | int, reason: str
) -> None:
    """duration and billsec are ASCII digits only (no sign, space, underscore or other script, not
    a number too long for int()), and billsec is not longer than duration."""
    bad = cdr_line(duration=duration, billsec=billsec)
    rows, errors = read(cdr_line(src="1000") + bad + cdr_line(src="1002"))
    assert [r.src for r in rows] == ["1000", "1002"]
    assert [(e.line, e.reason) for e in errors] == [(2, reason)]


def test_billsec_one_second_over_duration_is_asterisks_rounding() -> None:
    """cdr.conf initiatedseconds=yes rounds billsec up while duration is truncated: one second more
    is what Asterisk writes, not a broken row."""
    rows, errors = read(cdr_line(duration=120, billsec=121))
    assert errors == []
    assert rows[0].billsec == 121


def test_replay_command_reports_the_bad_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`callgate replay` names the file and line of a row with an unbalanced quote and goes on."""
    path = tmp_path / "Master.csv"
    bad = GOOD.replace('"912125550123",', '"912125550123,')
    path.write_text(cdr_line(src="1000") + bad + cdr_line(src="1002"), encoding="utf-8")
    assert main(["replay", "--format", "jsonl", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}:2:" in err
    assert "1 unreadable rows skipped" in err
    assert len(out.splitlines()) == 2


# -- replay and the live gate agree on what is an outbound call --------------------------------------

TUE = "2026-11-17 10:00:00"


def replayed(dst: str, dcontext: str = "from-internal", *, phone: bool = False) -> tuple[str, str]:
    line = cdr_line(
        dst=dst,
        dcontext=dcontext,
        start=TUE,
        answer="",
        end="2026-11-17 10:00:30",
        dstchannel="PJSIP/1001-0000001b" if phone else "PJSIP/trunk-0000001b",
        lastdata="PJSIP/1001,20,Ttr" if phone else "PJSIP/12125550123@trunk,300,T",
    )
    line = line.replace(",127,120,", ",30,0,")
    rows, errors = read(line)
    assert errors == [], errors
    [result] = list(replay(POLICY, rows))
    return result.verdict, result.reason


async def live(dst: str) -> tuple[str, str]:
    memo = Memo(POLICY)
    gate = Gate(
        lambda: memo,
        MemoryStore(),
        FakeChannels(),
        FakeAudit(),
        clock=lambda: datetime(2026, 11, 17, 10, 0, tzinfo=NY),
    )
    decision = await gate.decide(CallAttempt("L1", "1001", dst))
    return decision.verdict.value.lower(), decision.reason.value


@pytest.mark.parametrize(
    "dst",
    [
        "sip:011532345678@trunk",  # a URI
        "sips:+12125550123",
        " 011532345678",  # a leading space
        "912125550123 ",  # a trailing space
        "9 1 212 555 0123",
        "212-555-0123",
        "011532345678,ext=1005",
        "١٠٠٥",  # Arabic-Indic digits: not an internal extension
        "１００５",  # fullwidth digits
        "91212555012３",
        "*011532345678",  # too long for a feature code
        "912125550123",  # plain numbers, for contrast
        "9011442079460123",
        "911",
        "9911",  # emergency behind the outside line: judged (and allowed), never skipped
    ],
)
async def test_replay_judges_what_the_live_gate_judges(dst: str) -> None:
    """A row whose dst the dialplan would hand to the gate is an outbound attempt in replay too, judged
    as written (never trimmed), with the verdict and reason the live gate gives the same string."""
    verdict, reason = replayed(dst)
    assert verdict != "skip"
    assert (verdict, reason) == await live(dst)


@pytest.mark.parametrize(
    ("dst", "dcontext"),
    [
        ("1001", "from-internal"),  # an internal extension
        ("*97", "from-internal"),  # a feature code
        ("#1", "from-internal"),
        ("s", "from-internal"),  # dialplan names
        ("h", "from-internal"),
        ("fax", "from-internal"),
        ("", "from-internal"),
        ("912125550123", "from-pstn"),  # an inbound call
    ],
)
def test_replay_still_skips_what_is_not_an_outbound_call(dst: str, dcontext: str) -> None:
    """Internal extensions, short feature codes, dialplan names and inbound rows stay skipped: rows that
    ring a phone, and the short codes and names of a phone's channel even when a trunk was dialled (an
    extension's or inbound context's Dial() to a trunk is a forward: tests/test_replay_origins.py)."""
    assert replayed(dst, dcontext) == ("skip", "not_outbound") or dst in ("1001", "912125550123")
    assert replayed(dst, dcontext, phone=True) == ("skip", "not_outbound")


# -- serve: /health with AMI turned off, and Redis that keeps nothing --------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(serve(settings, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await running
        gc.unfreeze()  # serve froze what it found alive, this test process with it


def settings_for(tmp_path: Path, ari_url: str, redis_url: str, **more: str) -> Settings:
    env = {
        "CALLGATE_ARI_URL": ari_url,
        "CALLGATE_ARI_USER": "callgate",
        "CALLGATE_ARI_PASSWORD": "Ari-Pa55word-1",
        "CALLGATE_AMI_ENABLED": "false",
        "CALLGATE_REDIS_URL": redis_url,
        "CALLGATE_POLICY_FILE": policy_file(tmp_path),
        "CALLGATE_METRICS_PORT": str(free_port()),
        **more,
    }
    return load_settings(None, env)


async def until(check: Any, seconds: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await check()
        if got or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


@pytest.mark.redis
async def test_health_is_ok_with_ami_disabled(tmp_path: Path) -> None:
    """serve with [ami] enabled = false, ARI and Redis up: /health is 200 "ok", not "degraded",
    and AMI is not listed as a link that is down."""
    with redis_server(tmp_path / "redis") as redis_url:
        async with fake_ari(accept=True) as ari_url:
            settings = settings_for(tmp_path, ari_url, redis_url)
            url = f"http://127.0.0.1:{settings.metrics_port}/health"
            async with serving(settings), aiohttp.ClientSession() as http:

                async def healthy() -> tuple[int, dict[str, Any]] | None:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url) as reply:
                            body = await reply.json()
                            return (reply.status, body) if body["status"] != "down" else None
                    return None

                got = await until(healthy)
    assert got is not None
    status, body = got
    assert (status, body["status"]) == (200, "ok")
    assert body["links"] == {"ari": "up", "redis": "up"}


@pytest.mark.redis
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("nothing", "Redis keeps nothing across a restart"),
        ("aof", "Redis keeps its data across a restart"),
        ("rdb", "Redis keeps its data across a restart"),
        ("refused", "could not check whether Redis keeps its data across a restart"),
    ],
)
async def test_start_up_says_when_redis_keeps_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, setup: str, expected: str
) -> None:
    """At start-up serve reads CONFIG GET appendonly and save: with neither it warns that the caps
    reset with Redis; when CONFIG is refused (an ACL, a managed Redis) it says it could not check."""
    caplog.set_level(logging.INFO, logger="callgate.serve")
    with redis_server(tmp_path / "redis") as plain_url:
        redis_url = plain_url
        admin = aioredis.Redis.from_url(redis_url)
        if setup == "aof":
            await admin.config_set("appendonly", "yes")
        elif setup == "rdb":
            await admin.config_set("save", "3600 1")
        elif setup == "refused":
            await admin.acl_setuser(
                "gate",
                enabled=True,
                passwords=["+Gate-Pa55"],
                keys=["*"],
                channels=["*"],
                commands=["+@all", "-config"],
            )
            redis_url = redis_url.replace("redis://", "redis://gate:Gate-Pa55@")
        await admin.aclose()
        settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}/ari", redis_url)
        async with serving(settings):

            async def said() -> bool:
                return any("across a restart" in r.getMessage() for r in caplog.records)

            assert await until(said)
    [record] = [r for r in caplog.records if "across a restart" in r.getMessage()]
    assert expected in record.getMessage()
    assert record.levelno == (logging.INFO if setup in {"aof", "rdb"} else logging.WARNING)
    assert "Gate-Pa55" not in record.getMessage()
