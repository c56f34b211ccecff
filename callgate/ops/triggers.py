"""What in a running gate raises which alert: the glue between the gate's event stream
(:mod:`callgate.asterisk.events`), the policy holder and the :class:`~callgate.ops.alerts.Alerter`. Built once by
``serve``; each alert raised goes back on the stream as :class:`~callgate.asterisk.events.AlertRaised`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from callgate.asterisk.events import (
    AlertRaised,
    Decided,
    Event,
    Locked,
    PanicEnded,
    PanicStarted,
    SpendCommitted,
    StoreFailed,
    StoreRecovered,
)
from callgate.asterisk.gate import Gate
from callgate.core.policy import Policy
from callgate.ops.alerts import (
    Alert,
    AlertChannel,
    Alerter,
    AlertKind,
    DenyBursts,
    Email,
    SmtpSettings,
    SpendWatch,
    Syslog,
    Webhook,
)
from callgate.ops.livepolicy import FilePolicy, RedisPolicy
from callgate.ops.metrics import Link
from callgate.settings import Settings


def channels(settings: Settings, policy: Policy) -> list[AlertChannel]:
    """The delivery channels: the policy's webhook and syslog, the settings' SMTP server."""
    out: list[AlertChannel] = []
    if policy.alerts.webhook:
        out.append(Webhook(policy.alerts.webhook))
    if policy.alerts.syslog:
        out.append(Syslog(settings.alerts_syslog_address))
    to = tuple(a.strip() for a in settings.alerts_mail_to.split(",") if a.strip())
    if settings.alerts_smtp_host and to:
        smtp = SmtpSettings(
            settings.alerts_smtp_host, settings.alerts_smtp_port, settings.alerts_mail_from, to,
            settings.alerts_smtp_starttls, settings.alerts_smtp_user, settings.alerts_smtp_password,
        )  # fmt: skip
        out.append(Email(smtp))
    return out


class AlertTriggers:
    """Turns the gate's events and the policy holder's changes into alerts."""

    def __init__(self, settings: Settings, gate: Gate, holder: FilePolicy | RedisPolicy) -> None:
        self.gate = gate
        self.alerter = Alerter(
            channels(settings, holder()), min_interval=settings.alerts_min_interval
        )
        self.bursts = DenyBursts(
            settings.alerts_deny_burst, settings.alerts_deny_window, settings.alerts_site_burst
        )
        self.spend = SpendWatch()
        self.settings = settings
        gate.events.subscribe(self.on_event)
        holder.listeners.append(self.on_policy)
        holder.refusals.append(self.on_refused)
        self._check_lists(holder())

    def _raise(self, kind: AlertKind, subject: str, message: str, details: dict[str, Any]) -> None:
        site = self.gate.policy().site.name
        self.alerter.raise_alert(Alert(kind, site, subject, message, details))
        self.gate.events.emit(AlertRaised(kind, subject))

    def on_event(self, event: Event) -> None:
        match event:
            case Decided(decision=d) if not d.allowed:
                details = {"extension": d.extension, "reason": d.reason.value}
                for subject, count in self.bursts.denied(d.extension):
                    who = "the site" if subject == "site" else f"extension {subject}"
                    message = f"{count} calls of {who} refused within {self.bursts.window:g}s"
                    self._raise(AlertKind.DENY_BURST, subject, message, details)
            case Locked(extension=ext, report=report):
                details = asdict(event)
                del details["report"]
                would = "would lock (mode: report)" if report else "locked"
                message = (
                    f"extension {ext} {would} ({event.scope}): {event.count} {event.rule} "
                    f"calls within {event.within}s; `callgate unlock {ext}` lifts it"
                )
                kind = AlertKind.LOCK_REPORT if report else AlertKind.LOCK
                self._raise(kind, ext, message, details)
            case SpendCommitted(key=key, used=used, cap=cap):
                step = self.spend.committed(key, used, cap)
                if step is not None:
                    pct = step.removeprefix("spend_")
                    self._raise(step, key, f"{event.rule} at {pct}% of its cap", asdict(event))
            case StoreFailed(mode=mode):
                message = f"Redis unreachable; on_store_error: {mode} applies to every call"
                self._raise(AlertKind.STORE_FAILURE, Link.REDIS, message, asdict(event))
            case StoreRecovered():
                message = "Redis reachable again; counters and caps apply"
                self._raise(AlertKind.STORE_RECOVERED, Link.REDIS, message, {})
            case PanicStarted():
                message = (
                    "panic: every international call is refused; calls abroad in progress hung up"
                )
                self._raise(AlertKind.PANIC, "site", message, asdict(event))
            case PanicEnded():
                message = "panic is over: the policy decides again"
                self._raise(AlertKind.CALM, "site", message, {})
            case _:
                pass

    def on_policy(self, new: Policy) -> None:
        self.alerter.channels = channels(self.settings, new)
        version = f"version {new.revision}" if new.revision else new.source
        message = f"policy {version} sha256:{new.digest[:12]} active"
        self._raise(AlertKind.POLICY_ACTIVATED, version, message, {})
        self._check_lists(new)

    def on_refused(self, what: str, why: str) -> None:
        self._raise(AlertKind.POLICY_REFUSED, what, f"policy {what} refused; the running one stays", {
            "problems": why.splitlines()[:20]})  # fmt: skip

    def _check_lists(self, policy: Policy) -> None:
        today = datetime.now(UTC).astimezone(policy.site.timezone).date()
        for found in policy.lists:
            if found.expired(today):
                message = f"range list {found.name} expired on {found.expires} (still enforced)"
                self._raise(AlertKind.LIST_EXPIRED, found.name, message, {"source": found.source})
