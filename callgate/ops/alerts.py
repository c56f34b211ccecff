"""Alerts: what the gate tells a person, by webhook, syslog and e-mail, without ever slowing a call.

:meth:`Alerter.raise_alert` only appends to a bounded queue (the oldest alert is dropped and counted
when it is full) and returns; one task, :meth:`Alerter.run`, delivers. Delivery to each channel is
retried with exponential backoff and jitter while the receiver is down, for at most ``RETRY_FOR``
seconds; a failure is logged, never raised into the gate.

Rate limiting: the first alert of a (kind, subject) goes at once; repeats within ``min_interval`` are
counted, and when the interval ends one summary goes ("and 9,993 more"). So an attack of 10,000 denied
calls from one extension is one alert, then one summary per interval.

The kinds and their severities are one table, :data:`SEVERITY` over :class:`AlertKind` (docs/alerts.md
lists the same; a test compares them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import random
import smtplib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from callgate.ops.waits import first_done

log = logging.getLogger("callgate.alerts")

QUEUE_LIMIT = 10_000
RETRY_FIRST, RETRY_MAX, RETRY_FOR = 0.5, 30.0, 600.0
FINAL_FLUSH = 5.0  # seconds spent on queued alerts when the service stops


class AlertKind(StrEnum):
    DENY_BURST = "deny_burst"
    LOCK = "lock"
    LOCK_REPORT = "lock_report"
    PANIC = "panic"
    CALM = "calm"
    SPEND_80 = "spend_80"
    SPEND_100 = "spend_100"
    STORE_FAILURE = "store_failure"
    STORE_RECOVERED = "store_recovered"
    POLICY_ACTIVATED = "policy_activated"
    POLICY_REFUSED = "policy_refused"
    LIST_EXPIRED = "list_expired"


SEVERITY: dict[str, str] = {
    AlertKind.DENY_BURST: "warning",
    AlertKind.LOCK: "critical",
    AlertKind.LOCK_REPORT: "notice",
    AlertKind.PANIC: "critical",
    AlertKind.CALM: "notice",
    AlertKind.SPEND_80: "warning",
    AlertKind.SPEND_100: "critical",
    AlertKind.STORE_FAILURE: "critical",
    AlertKind.STORE_RECOVERED: "notice",
    AlertKind.POLICY_ACTIVATED: "notice",
    AlertKind.POLICY_REFUSED: "error",
    AlertKind.LIST_EXPIRED: "warning",
}


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    site: str
    subject: str  # what it is about: an extension, a cap key, "redis", a policy version
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    suppressed: int = 0  # a summary: how many alerts like this one were held back

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "warning")

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "site": self.site,
            "subject": self.subject,
            "message": self.message,
            "details": self.details,
            "at": self.at.isoformat(),
            "suppressed": self.suppressed,
        }

    def line(self) -> str:
        more = f" (and {self.suppressed:,} more like it)" if self.suppressed else ""
        return (
            f"callgate {self.site} {self.severity} {self.kind} {self.subject}: {self.message}{more}"
        )


class AlertChannel(Protocol):
    """Where alerts go: :class:`Webhook`, :class:`Syslog`, :class:`Email`."""

    name: str

    async def send(self, alert: Alert) -> None:
        """Deliver or raise; the alerter retries."""

    async def aclose(self) -> None:
        """Let go of what it holds (a session, a socket); the alerter calls it once it stops."""


class Webhook:
    """JSON POST; any 2xx is delivered."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None

    async def send(self, alert: Alert) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=self.timeout)
        async with self.session.post(self.url, json=alert.as_json()) as reply:
            if reply.status // 100 != 2:
                raise OSError(f"webhook answered {reply.status}")

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


class Syslog:
    """One line per alert to a syslog daemon: ``/dev/log`` or ``host:port`` (UDP)."""

    name = "syslog"

    def __init__(self, address: str = "/dev/log") -> None:
        host, _, port = address.rpartition(":")
        target: str | tuple[str, int] = (host, int(port)) if host and port.isdigit() else address
        self.handler = logging.handlers.SysLogHandler(
            address=target, facility=logging.handlers.SysLogHandler.LOG_AUTH
        )
        self.handler.ident = "callgate: "

    async def send(self, alert: Alert) -> None:
        level = {"critical": logging.CRITICAL, "error": logging.ERROR, "notice": logging.INFO}
        record = logging.LogRecord(
            "callgate.ops.alerts", level.get(alert.severity, logging.WARNING), "", 0, alert.line(),
            None, None,
        )  # fmt: skip
        self.handler.emit(record)

    async def aclose(self) -> None:
        self.handler.close()


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "callgate@localhost"
    to: tuple[str, ...] = ()
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout: float = 10.0


class Email:
    """One message per alert over SMTP (smtplib in a thread of its own, so the loop never blocks).

    A daemon thread, not ``asyncio.to_thread``: the default executor's threads are waited for when the
    process exits, so a mail server that never answers would hold a stopping ``serve`` for as long as
    smtplib's timeout, once per socket operation."""

    name = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, alert: Alert) -> None:
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()

        def work() -> None:
            error: Exception | None = None
            try:
                self._send(alert)
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, sent, error)

        threading.Thread(target=work, name="callgate-smtp", daemon=True).start()
        await sent

    def _send(self, alert: Alert) -> None:
        s = self.settings
        msg = EmailMessage()
        msg["From"], msg["To"] = s.sender, ", ".join(s.to)
        msg["Subject"] = f"[callgate {alert.severity}] {alert.site}: {alert.kind} {alert.subject}"
        msg.set_content(alert.line() + "\n\n" + json.dumps(alert.as_json(), indent=2) + "\n")
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
            if s.starttls:
                smtp.starttls()
            if s.username:
                smtp.login(s.username, s.password)
            smtp.send_message(msg)

    async def aclose(self) -> None:
        return None


@dataclass(slots=True)
class _Held:
    first: Alert
    count: int = 0  # held back since the last one sent
    until: float = 0.0  # monotonic end of the quiet interval


class Alerter:
    """Rate-limits alerts and delivers them to every channel."""

    def __init__(
        self,
        channels: list[AlertChannel],
        *,
        min_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channels = channels
        self.min_interval = min_interval
        self.clock = clock
        self.queue: deque[Alert] = deque(maxlen=QUEUE_LIMIT)
        self.held: dict[tuple[str, str], _Held] = {}
        self.wake = asyncio.Event()
        self.dropped = 0
        self.sent = 0

    def raise_alert(self, alert: Alert) -> None:
        """Never blocks, never raises."""
        now = self.clock()
        key = (alert.kind, alert.subject)
        held = self.held.get(key)
        if held is not None and now < held.until:
            held.count += 1
            return
        self.held[key] = _Held(alert, 0, now + self.min_interval)
        log.warning("alert: %s", alert.line())
        self._enqueue(alert)

    def _enqueue(self, alert: Alert) -> None:
        if not self.channels:
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(alert)
        self.wake.set()

    def flush_summaries(self) -> None:
        """Send one summary for each (kind, subject) whose quiet interval ended with repeats held."""
        now = self.clock()
        for key, held in list(self.held.items()):
            if now < held.until:
                continue
            if held.count:
                first = held.first
                summary = Alert(
                    first.kind, first.site, first.subject, first.message, first.details,
                    suppressed=held.count,
                )  # fmt: skip
                log.warning("alert: %s", summary.line())
                self._enqueue(summary)
            del self.held[key]

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; then one last attempt at what is queued, the delivery under way
        included, all within ``FINAL_FLUSH`` seconds: stopping must not hang on a receiver."""
        sending: asyncio.Future[None] | None = None
        while not stop.is_set():
            self.flush_summaries()
            while self.queue and not stop.is_set():
                sending = asyncio.ensure_future(self._deliver(self.queue.popleft(), stop))
                await first_done(asyncio.shield(sending), stop.wait())
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_done(self.wake.wait(), stop.wait()), 1.0)
        in_flight = sending is not None and not sending.done()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_FLUSH):
                if sending is not None:
                    await sending
                in_flight = False
                while self.queue:
                    last = self.queue.popleft()
                    in_flight = True
                    await self._deliver(last, stop, retry=False)
                    in_flight = False
        unsent = len(self.queue) + int(in_flight)
        if unsent:
            log.error(
                "stopping: %d alert%s not delivered within %gs",
                unsent, "" if unsent == 1 else "s", FINAL_FLUSH,
            )  # fmt: skip
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.aclose()

    async def _deliver(self, alert: Alert, stop: asyncio.Event, *, retry: bool = True) -> None:
        await asyncio.gather(*(self._to(c, alert, stop, retry) for c in self.channels))

    async def _to(
        self, channel: AlertChannel, alert: Alert, stop: asyncio.Event, retry: bool
    ) -> None:
        delay, started = RETRY_FIRST, self.clock()
        while True:
            try:
                await channel.send(alert)
                self.sent += 1
                return
            except Exception as exc:  # any failure of a receiver: retry, then give up and log
                if not retry or stop.is_set() or self.clock() - started > RETRY_FOR:
                    log.error("alert %s to %s not delivered: %r", alert.kind, channel.name, exc)
                    return
                log.info("alert to %s failed (%r); retrying in %.1fs", channel.name, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RETRY_MAX)


@dataclass(slots=True)
class DenyBursts:
    """Counts denials per extension and site-wide; says when a burst starts (``threshold`` within
    ``window`` seconds). The alerter's rate limit keeps an ongoing burst to one alert an interval."""

    threshold: int = 10
    window: float = 60.0
    site_threshold: int = 50
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, deque[float]] = field(default_factory=dict)

    def denied(self, extension: str) -> list[tuple[str, int]]:
        """Record one denial; the (subject, count) of each burst it completes."""
        now, out = self.clock(), []
        for subject, limit in ((extension, self.threshold), ("site", self.site_threshold)):
            times = self.seen.setdefault(subject, deque())
            times.append(now)
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= limit:
                out.append((subject, len(times)))
        return out


@dataclass(slots=True)
class SpendWatch:
    """Says once per cap and period when committed spend crosses 80% and 100% of a cap."""

    crossed: dict[str, int] = field(default_factory=dict)  # cap key -> highest step reported

    def committed(self, key: str, used: int, cap: int) -> AlertKind | None:
        """``used`` and ``cap`` in micro-units; the alert kind for a newly crossed step, if any."""
        if cap <= 0:
            return None
        step = 100 if used * 100 >= cap * 99 else 80 if used * 100 >= cap * 80 else 0
        if step <= self.crossed.get(key, 0):
            return None
        self.crossed[key] = step
        if len(self.crossed) > 100_000:  # old periods' keys: forget the oldest half
            for old in list(self.crossed)[:50_000]:
                del self.crossed[old]
        return AlertKind.SPEND_100 if step == 100 else AlertKind.SPEND_80


def _resolve(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
