"""The settings of ``callgate serve``, declared once: every other statement of them is made from here.

Each :class:`Setting` row says where a setting is written (``[section] key`` in the TOML file), its type,
its default, which values it allows, whether it is a secret, and what it is for. From this one table
come the defaults and every per-setting check of :func:`callgate.settings.load_settings`, the names in
the environment (``[ari] url`` is ``CALLGATE_ARI_URL``), the samples ``packaging/callgate.toml`` and
``packaging/callgate.env``, and the settings reference in ``docs/operations.md``
(:mod:`callgate.settingdoc` writes all three; tests hold the shipped copies equal to what it writes).
A mode is an :class:`enum.StrEnum`, whose members are the values it allows and which compares equal to
the string written in the file.

This module is plain data: no I/O, no import beyond the standard library.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Final


class PolicySource(enum.StrEnum):
    FILE = "file"  # the YAML file of [policy] file, watched and re-read on change or SIGHUP
    REDIS = "redis"  # the version pushed with `callgate policy push` for [policy] site


class SettleFrom(enum.StrEnum):
    CDR = "cdr"  # Cdr events (cdr_manager)
    HANGUP = "hangup"  # DialEnd and Hangup events, for a box without CDRs


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Form(enum.Enum):
    """What a text setting must look like beyond being text; :mod:`callgate.settings` checks each form,
    and a URL is shown redacted in a message."""

    TEXT = "text"
    ARI_URL = "an http(s)://host:port/ari URL"
    REDIS_URL = "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"
    USER_NAME = "a user name without ':'"
    SITES = (
        "site names (as policies spell them, P/T for a provider's tenant), comma-separated, each "
        "with :CC to pin its region"
    )
    LISTEN = "host:port (an IP address; a bare port listens on 127.0.0.1)"


SET: Final = "<set>"  # a When's value: the condition holds while the other setting is not empty


@dataclass(frozen=True, slots=True)
class When:
    """A condition on another setting: ``[section] key = value``, or ``[section] key`` is not empty
    (``value`` :data:`SET`)."""

    section: str
    key: str
    value: object
    unless: str = (
        ""  # another key of the same section: while it is set, the condition does not hold
    )

    def holds(self, value: object) -> bool:
        """Whether the condition holds while the other setting is ``value`` (a value that could
        not be read, None, counts as set)."""
        return value != "" if self.value == SET else value == self.value

    def __str__(self) -> str:
        shown = "is set" if self.value == SET else f"= {toml_value(self.value)}"
        said = f"[{self.section}] {self.key} {shown}"
        return f"{said} and [{self.section}] {self.unless} is empty" if self.unless else said


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    key: str
    kind: type  # str, int, float, bool, or a StrEnum whose members are the values allowed
    default: object  # None: required, there is no default
    doc: str  # what it is for; paragraphs apart by a blank line. The sample's comment, the reference's
    secret: bool = (
        False  # never shown in a message, never set in the sample (callgate.env holds it)
    )
    form: Form = Form.TEXT
    limits: tuple[float, float] | None = None  # a number's lowest and highest value
    unit: str = ""  # of a number: "seconds"
    required_while: When | None = None
    example: object = None  # what the sample writes instead of the default
    set_in_sample: bool = False  # the sample sets it, rather than showing it as "#key = default"
    # Its line in packaging/callgate.env, with this placeholder; every secret has one, and so does a
    # setting whose value may hold one. None: not in callgate.env.
    env_example: str | None = None

    @property
    def name(self) -> str:
        """The attribute of :class:`callgate.settings.Settings` (of ``Settings.gate`` for [gate])."""
        return f"{self.section}_{self.key}"

    @property
    def env(self) -> str:
        return f"CALLGATE_{self.section}_{self.key}".upper()

    @property
    def where(self) -> str:
        """Both names, as every message about the setting starts."""
        return f"{self.env} / [{self.section}] {self.key}"

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def choices(self) -> tuple[str, ...]:
        """The values a mode allows; () for a setting that is not a mode."""
        return tuple(self.kind) if issubclass(self.kind, enum.StrEnum) else ()

    @property
    def base(self) -> type:
        """The TOML type of the value: a mode is written as a string."""
        return str if self.choices else self.kind


# How true and false may be written in the environment (the file has TOML's own true and false).
TRUE_WORDS: Final = ("true", "yes", "on", "1")
FALSE_WORDS: Final = ("false", "no", "off", "0")


def toml_value(value: object) -> str:
    """``value`` as TOML writes it: ``true``, ``5038``, ``1.0``, ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(str(value))  # a TOML basic string; StrEnum members are written as text
    return repr(value)


def one_of(choices: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else "".join(choices)


SECTIONS: Final = {
    "ari": "The Asterisk REST Interface, the Stasis door: callgate sees each call there and tells "
    "Asterisk what to do with it.",
    "agi": "The FastAGI door, for an Asterisk without ARI (its HTTP server off, FreePBX's default): "
    "the dialplan's AGI(agi://127.0.0.1:573/callgate,...) reaches the same gate (docs/install.md). "
    "Set [ari] url, [agi] listen, or both.",
    "ami": "The Asterisk Manager Interface, for the events that settle what each call really cost.",
    "redis": "Counters, reservations, locks, the panic switch, the audit stream and the pushed "
    "policies.",
    "policy": "Where the policy comes from.",
    "gate": "How a decision reaches the call.",
    "log": "Every decision is logged, whatever the format, and also written to the Redis stream "
    "cg:{site}:audit.",
    "alerts": "Where alerts go is the policy's business (alerts: webhook, syslog); this box's own "
    "parts are here. Every alert kind and what to do about it: docs/alerts.md.",
    "metrics": "Prometheus /metrics and /health (200 when the ARI and Redis links are up, else 503) "
    "for the process supervisor and monitoring: docs/monitoring.md. Keep it on loopback or behind a "
    "firewall.",
}

AMI_ON = When("ami", "enabled", True)
ARI_ON = When("ari", "url", SET)

TABLE: Final = (
    Setting(
        "ari", "url", str, "", form=Form.ARI_URL, example="http://127.0.0.1:8088/ari",
        set_in_sample=True,
        doc="http.conf's bindaddr and bindport, then /ari. Keep ARI on loopback or a private "
        "network; use https:// when it crosses a network. The user and password go in user and "
        "password, never in the URL.\n\n"
        "Empty: no ARI at all (an AGI-only install, [agi] listen): then the emergency numbers "
        "are published and panic hangs calls up through AMI, which must be enabled with "
        "write=system,call (dialplan/manager.conf).",
    ),
    Setting(
        "ari", "user", str, "", form=Form.USER_NAME, example="callgate", required_while=ARI_ON,
        set_in_sample=True,
        doc="The ari.conf user (FreePBX: Settings > Advanced Settings > Asterisk REST Interface).",
    ),
    Setting(
        "ari", "password", str, "", secret=True, env_example="change-me-ari",
        required_while=ARI_ON, doc="ari.conf's password for that user.",
    ),
    Setting(
        "ari", "app", str, "callgate",
        doc="The Stasis application name. The dialplan's Stasis() lines must use the same name, and "
        "only one running callgate may hold a name: give each callgate instance its own "
        "(callgate-pbx1, callgate-pbx2) when several PBXs, or several instances, talk to one "
        "Asterisk.",
    ),
    Setting(
        "agi", "listen", str, "", form=Form.LISTEN, example="127.0.0.1:573",
        doc="Where the FastAGI door listens: host:port, or a port alone for 127.0.0.1. Empty: the "
        "door is off. Keep it on loopback (FastAGI has no authentication: whoever reaches the port "
        "can ask for decisions); the dialplan's CALLGATE_AGI global names the same address.",
    ),
    Setting("ami", "host", str, "127.0.0.1", doc="Where Asterisk's manager interface listens."),
    Setting("ami", "port", int, 5038, doc="Its port (manager.conf's port)."),
    Setting(
        "ami", "user", str, "", required_while=AMI_ON, example="callgate", set_in_sample=True,
        doc="The manager.conf user (read=cdr,call,user,system).",
    ),
    Setting(
        "ami", "secret", str, "", secret=True, required_while=AMI_ON, env_example="change-me-ami",
        doc="manager.conf's secret for that user.",
    ),
    Setting(
        "ami", "enabled", bool, True,
        doc="false: no spend feed. Then no call is ever settled: every admitted call is charged its "
        "whole reservation when the reservation expires, and spend caps fill up far too fast. Only "
        "for tests.",
    ),
    Setting(
        "ami", "settle_from", SettleFrom, SettleFrom.CDR,
        doc="What settles a call: cdr, the Cdr events of cdr_manager; hangup, the DialEnd and Hangup "
        "events, for a box without CDRs (see the comment at the end of dialplan/manager.conf).",
    ),
    Setting(
        "redis", "url", str, "redis://127.0.0.1:6379/0", form=Form.REDIS_URL,
        env_example="redis://:change-me-redis@127.0.0.1:6379/0",
        doc="redis://host:port/db, rediss:// (TLS), or unix:///run/redis/redis.sock?db=0. With a "
        "password, redis://:PASSWORD@host:6379/0 or redis://USER:PASSWORD@host:6379/0: then give "
        "the whole URL in callgate.env instead. Through Sentinel, the sentinels and the name of "
        "the primary: redis+sentinel://:PASSWORD@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/"
        "mymaster/0, with ?sentinel_password=... when the sentinels have a password of their own; "
        "callgate follows a failover by itself. A Cluster: redis+cluster://10.0.0.1:6379,"
        "10.0.0.2:6379. Section 9 of docs/operations.md.",
    ),
    Setting(
        "redis", "wait_replicas", int, 0, limits=(0, 16),
        doc="0: a call is decided as soon as the primary has made its reservation. Replication is "
        "asynchronous, so a failover can lose the last reservations and locks the primary made. "
        "N: every Lua script call (admission, settlement, burst count) also waits until N replicas "
        "hold its writes (Redis WAIT, at most 250 ms); fewer in time is a store failure and the "
        "policy's site.on_store_error decides the call. With N equal to the number of replicas, "
        "one replica down makes every call a store failure: run N + 1. Not with redis+cluster://. "
        "What it costs: section 9 of docs/operations.md.",
    ),
    Setting(
        "policy", "source", PolicySource, PolicySource.FILE, set_in_sample=True,
        doc="file: the policy is the YAML file named in file, on this machine. callgate checks it "
        "every second and `systemctl reload callgate` (SIGHUP) re-reads it at once; a broken file "
        "is refused and the running policy kept, with the reason in the log. Edit, "
        "`callgate policy check FILE`, save. For one PBX with its own Redis.\n\n"
        "redis: the policy is the version made active with `callgate policy push` (or "
        "`policy rollback`) for the site named in site. Every callgate of the site switches to a "
        "new version within a second, without a restart. For several PBXs or instances sharing "
        "one policy, and for a versioned history of who changed what.",
    ),
    Setting(
        "policy", "file", str, "", required_while=When("policy", "source", PolicySource.FILE),
        example="/etc/callgate/policy.yaml", set_in_sample=True,
        doc="The policy file. With source = \"redis\" it is optional: it is used only while Redis "
        "holds no version for the site yet (or cannot be reached at start); without it, callgate "
        "waits up to 30 s for a version and then exits (systemd starts it again).",
    ),
    Setting(
        "policy", "site", str, "",
        required_while=When("policy", "source", PolicySource.REDIS, unless="tenants"),
        example="acme-nyc",
        doc="The site.name of the policy to follow; it must equal site.name in the pushed policy. "
        "The admin commands (policy push/show/history, lock, panic, ...) read the same "
        "environment variable when --site is not given.\n\n"
        "With tenants set, the provider P whose pushed policy's site_limits count the calls of "
        "all its tenants P/T together (optional: without it, or while P has no policy, each "
        "tenant has only its own caps).",
    ),
    Setting(
        "policy", "tenants", str, "", form=Form.SITES,
        doc="Empty: this callgate serves one site. Else the sites it serves on one Asterisk, "
        "comma-separated (\"acme/east, acme/west, globex\"), each with its own pushed policy "
        "(source must be \"redis\"), caps, locks, panic switch and audit stream. The tenant's "
        "dialplan context names the site of each call (CALLGATE_SITE, passed as site=); a call "
        "that names none, a site not listed, or a tenant with no policy pushed yet is refused "
        "(unknown_site). Pin a tenant's region with :CC (\"acme/east:US\") when its staff push "
        "their own policy: a policy of another region is refused, and its emergency list keeps "
        "only that country's emergency numbers. Section 9 of docs/operations.md.",
    ),
    Setting(
        "gate", "deadline", float, 1.0, limits=(0.01, 30), unit="seconds",
        doc="How long a decision may wait for Redis before the policy's site.on_store_error "
        "applies (deny, allow or deny_international). A healthy local Redis answers in well under "
        "a millisecond.",
    ),
    Setting(
        "gate", "deny_cause", int, 21, limits=(1, 127),
        doc='The Q.850 cause a refused call is hung up with: 21 is "call rejected" (SIP 403).',
    ),
    Setting(
        "gate", "deny_context", str, "",
        doc="Continue refused calls to this context and deny_label instead of hanging them up, so "
        "the dialplan can play an announcement first (the shipped dialplan has callgate-refused / "
        "refuse). Both or neither.",
    ),
    Setting("gate", "deny_label", str, "", doc="The label in deny_context."),
    Setting(
        "gate", "timeout_absolute", bool, True,
        doc="Also set TIMEOUT(absolute) on allowed calls (allowed seconds + 120) as a backstop for "
        "Dial's L().",
    ),
    Setting(
        "log", "format", LogFormat, LogFormat.TEXT,
        doc="text: one readable line per event; json: one JSON object per line (for a log "
        "shipper).",
    ),
    Setting("log", "level", LogLevel, LogLevel.INFO, doc="info logs every decision."),
    Setting(
        "alerts", "min_interval", float, 300.0, unit="seconds",
        doc="Repeats of one alert (same kind and subject) within this time are held back and sent "
        'as one summary ("and 9,993 more") when the interval ends.',
    ),
    Setting(
        "alerts", "deny_burst", int, 10,
        doc="A deny burst: this many refusals of one extension within deny_window.",
    ),
    Setting("alerts", "deny_window", float, 60.0, unit="seconds", doc="The window of a deny burst."),
    Setting(
        "alerts", "site_burst", int, 50,
        doc="A deny burst of the whole site: this many refusals within deny_window.",
    ),
    Setting(
        "alerts", "syslog_address", str, "/dev/log",
        doc="The syslog daemon for the policy's `alerts: {syslog: true}`: a local socket, or "
        "host:port over UDP.",
    ),
    Setting(
        "alerts", "smtp_host", str, "",
        doc="E-mail: set smtp_host and mail_to to send one message per alert.",
    ),
    Setting("alerts", "smtp_port", int, 25, doc="The SMTP server's port."),
    Setting("alerts", "smtp_starttls", bool, False, doc="true: STARTTLS before logging in."),
    Setting("alerts", "smtp_user", str, "", doc="The SMTP user, if the server wants a login."),
    Setting("alerts", "smtp_password", str, "", secret=True, env_example="", doc="Its password."),
    Setting("alerts", "mail_from", str, "callgate@localhost", doc="The sender of alert e-mail."),
    Setting("alerts", "mail_to", str, "", doc="The recipients: comma-separated addresses."),
    Setting("metrics", "enabled", bool, True, doc="false: serve neither /metrics nor /health."),
    Setting("metrics", "host", str, "127.0.0.1", doc="The address they are served on."),
    Setting("metrics", "port", int, 9464, doc="Their port."),
)  # fmt: skip
