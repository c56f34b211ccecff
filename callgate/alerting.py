"""What in a running gate raises which alert: the glue between the gate's events, the policy holder and
the :class:`~callgate.alerts.Alerter`. Built once by ``serve``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from callgate.alerts import (
    Alert,
    Alerter,
    DenyBursts,
    Email,
    SmtpSettings,
    SpendWatch,
    Syslog,
    Webhook,
)
from callgate.gate import Gate
from callgate.livepolicy import FilePolicy, RedisPolicy
from callgate.policy import Policy
from callgate.settings import Settings


def channels(settings: Settings, policy: Policy) -> list[Any]:
    """The delivery channels: the policy's webhook and syslog, the settings' SMTP server."""
    out: list[Any] = []
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


class Alerting:
    """Turns gate and policy events into alerts."""

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
        self.counted: list[Callable[[str], None]] = []  # told the kind of every alert raised
        gate.listeners.append(self.on_gate)
        holder.listeners.append(self.on_policy)
        holder.refusals.append(self.on_refused)
        self._check_lists(holder())

    def _raise(self, kind: str, subject: str, message: str, details: dict[str, Any]) -> None:
        for count in self.counted:
            count(kind)
        site = self.gate.policy().site.name
        self.alerter.raise_alert(Alert(kind, site, subject, message, details))

    def on_gate(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "denied":
            for subject, count in self.bursts.denied(str(d["extension"])):
                who = "the site" if subject == "site" else f"extension {subject}"
                message = f"{count} calls of {who} refused within {self.bursts.window:g}s"
                self._raise("deny_burst", subject, message, d)
        elif kind in {"lock", "lock_report"}:
            would = "would lock (mode: report)" if kind == "lock_report" else "locked"
            message = (
                f"extension {d['extension']} {would} ({d['scope']}): {d['count']} {d['rule']} "
                f"calls within {d['within']}s; `callgate unlock {d['extension']}` lifts it"
            )
            self._raise(kind, str(d["extension"]), message, d)
        elif kind == "spend":
            step = self.spend.committed(str(d["key"]), int(d["used"]), int(d["cap"]))
            if step is not None:
                pct = step.removeprefix("spend_")
                self._raise(step, str(d["key"]), f"{d['rule']} at {pct}% of its cap", d)
        elif kind == "store_failure":
            message = f"Redis unreachable; on_store_error: {d['mode']} applies to every call"
            self._raise(kind, "redis", message, d)
        elif kind == "store_recovered":
            self._raise(kind, "redis", "Redis reachable again; counters and caps apply", d)
        elif kind in {"panic", "calm"}:
            message = (
                "panic: every international call is refused; calls abroad in progress hung up"
                if kind == "panic"
                else "panic is over: the policy decides again"
            )
            self._raise(kind, "site", message, d)

    def on_policy(self, new: Policy, old: Policy | None) -> None:
        self.alerter.channels = channels(self.settings, new)
        version = f"version {new.revision}" if new.revision else new.source
        self._raise(
            "policy_activated", version, f"policy {version} sha256:{new.digest[:12]} active", {}
        )
        self._check_lists(new)

    def on_refused(self, what: str, why: str) -> None:
        self._raise("policy_refused", what, f"policy {what} refused; the running one stays", {
            "problems": why.splitlines()[:20]})  # fmt: skip

    def _check_lists(self, policy: Policy) -> None:
        today = datetime.now(UTC).astimezone(policy.site.timezone).date()
        for found in policy.lists:
            if found.expired(today):
                message = f"range list {found.name} expired on {found.expires} (still enforced)"
                self._raise("list_expired", found.name, message, {"source": found.source})
