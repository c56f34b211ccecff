"""Alerts: delivered by webhook, syslog and SMTP to real servers on 127.0.0.1; a receiver that is down
or stalled never holds raise_alert up; an attack of 10,000 denials is a handful of alerts. (How long a
raise_alert takes while the receiver is stalled: `make bench`, row "alerts".)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from callgate.ops.alerts import (
    Alert,
    Alerter,
    DenyBursts,
    Email,
    SmtpSettings,
    SpendWatch,
    Syslog,
    Webhook,
)
from tests.servers import eventually, free_port


def alert(kind: str = "deny_burst", subject: str = "1001") -> Alert:
    return Alert(kind, "acme", subject, f"{kind} of {subject}", {"n": 1})


class Receiver:
    """An aiohttp webhook receiver that can be down, stalled (it holds every request until
    ``answer`` is set; ``holding`` counts the requests it holds), then up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[dict[str, object]] = []
        self.runner: web.AppRunner | None = None
        self.answer = asyncio.Event()
        self.answer.set()
        self.holding = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.holding += 1
        await self.answer.wait()
        self.holding -= 1
        self.got.append(await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def running(alerter: Alerter) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(alerter.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def until(predicate: Callable[[], object]) -> bool:
    return bool(await eventually(predicate, "the alert's delivery"))


class FailureCounting(Webhook):
    """A webhook that counts its failed attempts."""

    failures = 0

    async def send(self, alert: Alert) -> None:
        try:
            await super().send(alert)
        except Exception:
            self.failures += 1
            raise


async def test_webhook_down_then_up_gets_the_alert() -> None:
    """An alert raised while the receiver is down arrives once it comes up (retry with backoff)."""
    port = free_port()
    receiver = Receiver(port)
    hook = FailureCounting(f"http://127.0.0.1:{port}/hook", timeout=2)
    alerter = Alerter([hook])
    async with running(alerter):
        alerter.raise_alert(alert("lock"))
        assert await until(lambda: hook.failures >= 1)  # tried while the receiver is down
        assert receiver.got == []
        await receiver.start()
        try:
            assert await until(lambda: len(receiver.got) == 1)
        finally:
            await receiver.stop()
    body = receiver.got[0]
    assert (body["kind"], body["severity"], body["subject"]) == ("lock", "critical", "1001")


async def test_stalled_receiver_never_holds_raise_alert_up() -> None:
    """raise_alert only queues: while the receiver holds the first alert's request, 49 more are
    raised and wait in the queue; once it answers, all 50 arrive."""
    port = free_port()
    receiver = Receiver(port)
    receiver.answer.clear()
    await receiver.start()
    alerter = Alerter([Webhook(f"http://127.0.0.1:{port}/hook", timeout=30)], min_interval=0)
    try:
        async with running(alerter):
            alerter.raise_alert(alert(subject="0"))
            # its delivery is stuck in the receiver until the end
            assert await until(lambda: receiver.holding == 1)
            for i in range(1, 50):
                alerter.raise_alert(alert(subject=str(i)))
                await asyncio.sleep(0)  # the delivery task runs in between: it stays stuck
            assert (receiver.got, len(alerter.queue)) == ([], 49)
            receiver.answer.set()
            assert await until(lambda: len(receiver.got) == 50)
    finally:
        await receiver.stop()
    assert sorted(int(str(b["subject"])) for b in receiver.got) == list(range(50))


async def test_an_attack_is_a_handful_of_alerts() -> None:
    """10,000 deny bursts of one extension: one alert now, one summary when the interval ends."""
    now = [0.0]
    port = free_port()
    receiver = Receiver(port)
    await receiver.start()
    alerter = Alerter(
        [Webhook(f"http://127.0.0.1:{port}/hook")], min_interval=300, clock=lambda: now[0]
    )
    try:
        async with running(alerter):
            for _ in range(10_000):
                alerter.raise_alert(alert())
            assert await until(lambda: len(receiver.got) == 1)
            now[0] = 301.0
            alerter.wake.set()
            assert await until(lambda: len(receiver.got) == 2)
    finally:
        await receiver.stop()
    assert [b["suppressed"] for b in receiver.got] == [0, 9_999]


async def test_syslog_over_udp() -> None:
    """One line per alert to a syslog receiver on UDP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    port = sock.getsockname()[1]
    alerter = Alerter([Syslog(f"127.0.0.1:{port}")])
    try:
        async with running(alerter):
            alerter.raise_alert(alert("panic", "site"))
            data = await asyncio.to_thread(sock.recv, 4096)
    finally:
        sock.close()
    line = data.decode()
    assert "callgate: callgate acme critical panic site" in line
    assert line.startswith("<34>")  # facility auth (4) * 8 + critical (2)


class SmtpResponder:
    """The smallest SMTP server that accepts one message at a time and keeps it."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.server: asyncio.Server | None = None

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        data, lines = False, list[bytes]()
        while line := await reader.readline():
            if data:
                if line == b".\r\n":
                    self.messages.append(b"".join(lines).decode())
                    data, lines = False, list[bytes]()
                    writer.write(b"250 queued\r\n")
                else:
                    lines.append(line)
                continue
            verb = line[:4].upper()
            if verb in {b"EHLO", b"HELO"}:
                writer.write(b"250 test\r\n")
            elif verb == b"DATA":
                data = True
                writer.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_email_over_smtp() -> None:
    """An alert is one mail with the kind, site and subject in its subject line."""
    smtp = SmtpResponder()
    port = await smtp.start()
    settings = SmtpSettings("127.0.0.1", port, "gate@acme.test", ("noc@acme.test",))
    alerter = Alerter([Email(settings)])
    try:
        async with running(alerter):
            alerter.raise_alert(alert("spend_100", "s:site:2026-11-22"))
            assert await until(lambda: len(smtp.messages) == 1)
    finally:
        await smtp.stop()
    assert "Subject: [callgate critical] acme: spend_100 s:site:2026-11-22" in smtp.messages[0]


@pytest.mark.parametrize(
    ("used", "expected"),
    [(50, [None]), (80, ["spend_80"]), (85, [None]), (99, ["spend_100"]), (100, [None])],
)
def test_spend_watch_reports_each_step_once(used: int, expected: list[str | None]) -> None:
    """80% and 100% (99% and up: the last increment rarely fits) are said once per cap key."""
    watch = SpendWatch()
    if used in {85, 100}:
        watch.committed("k", used - 1 if used == 100 else used - 5, 100)
    assert [watch.committed("k", used, 100)] == expected


def test_deny_bursts_per_extension_and_site() -> None:
    """A burst is N denials within the window, per extension and for the site."""
    now = [0.0]
    bursts = DenyBursts(threshold=3, window=60, site_threshold=4, clock=lambda: now[0])
    seen = []
    for ext in ["1001", "1001", "1002", "1001"]:
        now[0] += 1
        seen.append(bursts.denied(ext))
    assert seen == [[], [], [], [("1001", 3), ("site", 4)]]
    now[0] += 61
    assert bursts.denied("1001") == []


def test_docs_list_every_alert_kind_with_its_severity() -> None:
    """docs/alerts.md's table of kinds is the AlertKind table: the same kinds, the same severities."""
    import re
    from pathlib import Path

    from callgate.ops.alerts import SEVERITY, AlertKind

    text = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text("utf-8")
    documented: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        kinds = re.findall(r"`([a-z_0-9]+)`", cells[0])
        severities = [s.strip() for s in cells[1].split("/")]
        documented |= dict(zip(kinds, severities, strict=True))
    assert documented == {str(k): v for k, v in SEVERITY.items()}
    assert set(SEVERITY) == set(AlertKind)
