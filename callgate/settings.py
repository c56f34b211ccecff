"""Service settings for ``callgate serve``: a TOML file, then ``CALLGATE_<SECTION>_<KEY>`` variables.

Every setting has one name in both places: ``[ari] url`` in the file is ``CALLGATE_ARI_URL`` in the
environment, and the environment wins. All problems are collected and reported together as a
:class:`~callgate.errors.SettingsError` that names each setting and what was expected. A message never
shows a secret: the values of ``[ari] password``, ``[ami] secret`` and ``[alerts] smtp_password`` are
never echoed (not even when written as a number), URLs are shown through :func:`redact_url`, and a
value that holds one of the secrets is not shown at all. :meth:`Settings.secrets` lists them for
``serve``'s log filter::

    [ari]
    url = "http://127.0.0.1:8088/ari"   # required
    user = "callgate"                   # required
    password = "..."                    # required
    app = "callgate"                    # the Stasis application name; one per running instance

    [ami]
    host = "127.0.0.1"
    port = 5038
    user = "callgate"                   # required unless enabled = false
    secret = "..."
    enabled = true
    settle_from = "cdr"                 # cdr: Cdr events (cdr_manager); hangup: DialEnd/Hangup events

    [redis]
    url = "redis://127.0.0.1:6379/0"

    [policy]
    source = "file"                     # file: this file, watched and re-read on change or SIGHUP
                                        # redis: the version pushed with `callgate policy push`
    file = "/etc/callgate/policy.yaml"  # required for source = "file"; for "redis", used only while
                                        # Redis holds no policy yet (optional)
    site = ""                           # required for source = "redis": the site.name to follow

    [gate]
    deadline = 1.0                      # seconds a decision may wait for Redis
    deny_cause = 21                     # Q.850 cause of a refusal (21: call rejected, SIP 403)
    deny_context = ""                   # continue denied calls to this context and label instead
    deny_label = ""
    timeout_absolute = true             # set TIMEOUT(absolute) as a backstop for Dial's L()

    [log]
    format = "text"                     # text | json
    level = "info"

    [alerts]                            # where alerts go is the policy's alerts: (webhook, syslog);
    min_interval = 300.0                # the box's own parts are here. Repeats of one alert within
    deny_burst = 10                     # min_interval are summed up in one summary. A deny burst:
    deny_window = 60.0                  # deny_burst refusals of one extension (site_burst of the site)
    site_burst = 50                     # within deny_window seconds.
    syslog_address = "/dev/log"         # or "host:514" (UDP)
    smtp_host = ""                      # set to send e-mail; CALLGATE_ALERTS_SMTP_PASSWORD for secrets
    smtp_port = 25
    smtp_starttls = false
    smtp_user = ""
    smtp_password = ""
    mail_from = "callgate@localhost"
    mail_to = ""                        # comma-separated addresses

    [metrics]                           # Prometheus /metrics and /health for the supervisor
    enabled = true
    host = "127.0.0.1"
    port = 9464
"""

from __future__ import annotations

import base64
import functools
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import parse_url as parse_redis_url

from callgate.errors import SettingsError
from callgate.gate import GateSettings

# section -> key -> (type, default); a default of None means required.
SCHEMA: dict[str, dict[str, tuple[type, object]]] = {
    "ari": {
        "url": (str, None),
        "user": (str, None),
        "password": (str, None),
        "app": (str, "callgate"),
    },
    "ami": {
        "host": (str, "127.0.0.1"),
        "port": (int, 5038),
        "user": (str, ""),
        "secret": (str, ""),
        "enabled": (bool, True),
        "settle_from": (str, "cdr"),
    },
    "redis": {"url": (str, "redis://127.0.0.1:6379/0")},
    "policy": {"source": (str, "file"), "file": (str, ""), "site": (str, "")},
    "gate": {
        "deadline": (float, 1.0),
        "deny_cause": (int, 21),
        "deny_context": (str, ""),
        "deny_label": (str, ""),
        "timeout_absolute": (bool, True),
    },
    "log": {"format": (str, "text"), "level": (str, "info")},
    "alerts": {
        "min_interval": (float, 300.0),
        "deny_burst": (int, 10),
        "deny_window": (float, 60.0),
        "site_burst": (int, 50),
        "syslog_address": (str, "/dev/log"),
        "smtp_host": (str, ""),
        "smtp_port": (int, 25),
        "smtp_starttls": (bool, False),
        "smtp_user": (str, ""),
        "smtp_password": (str, ""),
        "mail_from": (str, "callgate@localhost"),
        "mail_to": (str, ""),
    },
    "metrics": {"host": (str, "127.0.0.1"), "port": (int, 9464), "enabled": (bool, True)},
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
SECRET_KEYS = frozenset({("ari", "password"), ("ami", "secret"), ("alerts", "smtp_password")})
URL_KEYS = frozenset({("ari", "url"), ("redis", "url")})
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_FORM = "redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
HIDDEN = "***"


@dataclass(frozen=True, slots=True)
class Settings:
    ari_url: str
    ari_user: str
    ari_password: str = field(repr=False)
    ari_app: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str = field(repr=False)
    ami_enabled: bool
    redis_url: str = field(repr=False)
    policy_source: str
    policy_file: str
    policy_site: str
    gate: GateSettings = field(default_factory=GateSettings)
    log_format: str = "text"
    log_level: str = "info"
    ami_settle_from: str = "cdr"
    alerts_min_interval: float = 300.0
    alerts_deny_burst: int = 10
    alerts_deny_window: float = 60.0
    alerts_site_burst: int = 50
    alerts_syslog_address: str = "/dev/log"
    alerts_smtp_host: str = ""
    alerts_smtp_port: int = 25
    alerts_smtp_starttls: bool = False
    alerts_smtp_user: str = ""
    alerts_smtp_password: str = field(default="", repr=False)
    alerts_mail_from: str = "callgate@localhost"
    alerts_mail_to: str = ""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    metrics_enabled: bool = True

    def secrets(self) -> tuple[str, ...]:
        """Every secret these settings hold (passwords, the AMI secret, a password in the Redis
        URL), for a log filter that keeps them out of every line."""
        found = [self.ari_password, self.ami_secret, self.alerts_smtp_password]
        found += url_secrets(self.redis_url) + url_secrets(self.ari_url)
        if self.ari_password:  # as the Authorization header carries it
            found.append(basic_token(self.ari_user, self.ari_password))
        return tuple(dict.fromkeys(s for s in found if s))


def basic_token(user: str, password: str) -> str:
    """The base64 of ``user:password``, as an ``Authorization: Basic`` header carries it."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def redact_url(url: str) -> str:
    """``url`` as a message may show it: no user or password, no query or fragment value, no port
    that is not a number (a password typed where the port goes). Never raises, whatever the text
    (a mistyped scheme, a stray bracket, a password with ``/`` or ``@`` in it)."""
    slashes = url.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    head, body = url[:start], url[start:]
    _, at, body = body.rpartition("@")  # the last @: a password may hold one
    body, hash_, fragment = body.partition("#")
    body, question, query = body.partition("?")
    authority, slash, path = body.partition("/")
    if authority.startswith("["):  # [IPv6]:port
        host, bracket, port = authority.partition("]")
        host, port = (host + bracket, port.removeprefix(":")) if bracket else (HIDDEN, "")
    else:
        host, _, port = authority.partition(":")
    shown = head + (f"{HIDDEN}@" if at else "") + host
    if port or authority.endswith(":"):
        shown += ":" + (port if port.isascii() and port.isdigit() else HIDDEN)
    shown += slash + path
    if question:
        pairs = (p.partition("=") for p in query.split("&"))
        shown += "?" + "&".join(f"{k}={HIDDEN}" if eq else HIDDEN for k, eq, _ in pairs)
    return shown + (f"#{HIDDEN}" if hash_ and fragment else hash_)


def url_secrets(url: str) -> list[str]:
    """The password of a URL's user part and of a ``password=`` query value, as written and decoded."""
    slashes = url.find("//")
    user, at, rest = url[slashes + 2 if slashes >= 0 else 0 :].rpartition("@")
    found = [user.partition(":")[2]] if at else []
    query = rest.partition("#")[0].partition("?")[2]
    found += [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "password"]
    return [s for secret in found for s in {secret, unquote(secret)} if s]


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never quote it; None when redis-py can use it."""
    if not url.startswith(REDIS_SCHEMES):
        return f"expected {REDIS_FORM}; the scheme is not one of these"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        return f"expected {REDIS_FORM}; the host or the port cannot be read"
    db = parts.path.strip("/")
    if url.startswith(("redis://", "rediss://")) and db and not (db.isascii() and db.isdigit()):
        return f"expected {REDIS_FORM}; the database after the host must be a number"
    try:
        parse_redis_url(url)
    except ValueError:
        return f"expected {REDIS_FORM}; a query option has a value redis-py cannot use"
    return None


def _ari_url_problem(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return "expected http(s)://host:port/ari"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "expected http(s)://host:port/ari; the host or the port cannot be read"
    if "@" in parts.netloc:
        return "expected http(s)://host:port/ari; the user and password go in [ari] user and password, not in the URL"
    if not parts.hostname:
        return "expected http(s)://host:port/ari; the host is missing"
    return None


def _shown(where: tuple[str, str], value: object, secrets: Iterable[str]) -> str:
    """How a setting's value appears in an error message: secrets never, URLs redacted."""
    if where in SECRET_KEYS:
        kinds = {bool: "true or false", int: "a number", float: "a number", dict: "a table"}
        return f"{kinds.get(type(value), 'a ' + type(value).__name__)} (not shown: it is a secret)"
    text = redact_url(value) if where in URL_KEYS and isinstance(value, str) else repr(value)
    if any(secret in text for secret in secrets):
        return "a value that is not shown (it holds a secret)"
    return repr(text) if where in URL_KEYS and isinstance(value, str) else text


def _convert(
    kind: type, value: object, name: str, problems: list[str], shown: Callable[[object], str]
) -> object:
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in _TRUE | _FALSE:
                return text in _TRUE
            problems.append(f"{name}: expected true or false, got {shown(value)}")
            return None
        try:
            return kind(text)
        except ValueError:
            problems.append(f"{name}: expected {kind.__name__}, got {shown(value)}")
            return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        hint = " (write it in quotes)" if kind is str else ""
        problems.append(f"{name}: expected {kind.__name__}{hint}, got {shown(value)}")
        return None
    return value


def load_settings(path: str | None, environ: Mapping[str, str]) -> Settings:
    """Settings from an optional TOML file and the environment; SettingsError lists every problem."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read the settings file: {exc}") from exc
    for section, value in data.items():
        if section in SCHEMA and not isinstance(value, dict):
            problems.append(f"{path}: {section} must be a section ([{section}]), not a value")
            continue
        if section not in SCHEMA:
            problems.append(
                f"{path}: unknown section [{section}]; expected one of {', '.join(SCHEMA)}"
            )
            continue
        problems += [
            f"{path}: [{section}] unknown key {k!r}" for k in value if k not in SCHEMA[section]
        ]
    raw_values: dict[tuple[str, str], object] = {}
    for section, keys in SCHEMA.items():
        for key, (_, default) in keys.items():
            env = f"CALLGATE_{section}_{key}".upper()
            table = data.get(section)
            written = table.get(key, default) if isinstance(table, dict) else default
            raw_values[section, key] = environ.get(env, written)
    secrets = _raw_secrets(raw_values)
    values: dict[str, object] = {}
    for (section, key), raw in raw_values.items():
        kind, default = SCHEMA[section][key]
        where = f"CALLGATE_{section}_{key}".upper() + f" / [{section}] {key}"
        if raw is None or (raw == "" and default is None):
            problems.append(f"{where}: required, not set")
            continue
        shown = functools.partial(_shown, (section, key), secrets=secrets)
        values[f"{section}_{key}"] = _convert(kind, raw, where, problems, shown)
    _check(values, problems, secrets)
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    gate = GateSettings(
        deadline=values["gate_deadline"],  # type: ignore[arg-type]
        deny_cause=values["gate_deny_cause"],  # type: ignore[arg-type]
        deny_context=values["gate_deny_context"],  # type: ignore[arg-type]
        deny_label=values["gate_deny_label"],  # type: ignore[arg-type]
        timeout_absolute=values["gate_timeout_absolute"],  # type: ignore[arg-type]
    )
    plain = {k: v for k, v in values.items() if not k.startswith("gate_")}
    return Settings(**plain, gate=gate)  # type: ignore[arg-type]


def _raw_secrets(raw: Mapping[tuple[str, str], object]) -> tuple[str, ...]:
    """The secrets as written, before any check: what no message may show."""
    found = [
        str(value)
        for value in (raw[k] for k in SECRET_KEYS)
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    ]
    found += [s for k in URL_KEYS if isinstance(raw[k], str) for s in url_secrets(str(raw[k]))]
    return tuple(s for s in found if s)


def _check(values: Mapping[str, object], problems: list[str], secrets: tuple[str, ...]) -> None:
    if values.get("log_format") not in {"text", "json", None}:
        shown = _shown(("log", "format"), values["log_format"], secrets)
        problems.append(f"CALLGATE_LOG_FORMAT / [log] format: expected text or json, got {shown}")
    if values.get("log_level") not in {"debug", "info", "warning", "error", None}:
        problems.append("CALLGATE_LOG_LEVEL / [log] level: expected debug, info, warning or error")
    cause = values.get("gate_deny_cause")
    if isinstance(cause, int) and not 1 <= cause <= 127:
        problems.append(
            f"CALLGATE_GATE_DENY_CAUSE / [gate] deny_cause: expected a Q.850 cause 1..127, got {cause}"
        )
    deadline = values.get("gate_deadline")
    if isinstance(deadline, float) and not 0.01 <= deadline <= 30:
        problems.append(
            f"CALLGATE_GATE_DEADLINE / [gate] deadline: expected 0.01 to 30 seconds, got {deadline}"
        )
    if values.get("ami_enabled") and not values.get("ami_user"):
        problems.append("CALLGATE_AMI_USER / [ami] user: required while [ami] enabled = true")
    redis_url = values.get("redis_url")
    problem = redis_url_problem(redis_url) if isinstance(redis_url, str) else None
    if problem:
        shown = _shown(("redis", "url"), redis_url, secrets)
        problems.append(f"CALLGATE_REDIS_URL / [redis] url: {problem}; got {shown}")
    if values.get("ami_enabled") and values.get("ami_user") and not values.get("ami_secret"):
        problems.append("CALLGATE_AMI_SECRET / [ami] secret: required while [ami] enabled = true")
    if values.get("ami_settle_from") not in {"cdr", "hangup", None}:
        problems.append("CALLGATE_AMI_SETTLE_FROM / [ami] settle_from: expected cdr or hangup")
    source = values.get("policy_source")
    if source not in {"file", "redis", None}:
        problems.append(
            f"CALLGATE_POLICY_SOURCE / [policy] source: expected file or redis, got {source!r}"
        )
    if source == "file" and not values.get("policy_file"):
        problems.append("CALLGATE_POLICY_FILE / [policy] file: required, not set")
    if source == "redis" and not values.get("policy_site"):
        problems.append(
            "CALLGATE_POLICY_SITE / [policy] site: required while [policy] source = redis"
        )
    if ":" in str(values.get("ari_user") or ""):
        problems.append("CALLGATE_ARI_USER / [ari] user: a user name cannot hold ':' (HTTP Basic)")
    url = values.get("ari_url")
    problem = _ari_url_problem(url) if isinstance(url, str) else None
    if problem:
        shown = _shown(("ari", "url"), url, secrets)
        problems.append(f"CALLGATE_ARI_URL / [ari] url: {problem}; got {shown}")
