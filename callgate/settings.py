"""Service settings for ``callgate serve``: a TOML file, then ``CALLGATE_<SECTION>_<KEY>`` variables.

Every setting has one name in both places: ``[ari] url`` in the file is ``CALLGATE_ARI_URL`` in the
environment, and the environment wins. All problems are collected and reported together as a
:class:`~callgate.errors.SettingsError` that names each setting and what was expected::

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

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Settings:
    ari_url: str
    ari_user: str
    ari_password: str
    ari_app: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str
    ami_enabled: bool
    redis_url: str
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
    alerts_smtp_password: str = ""
    alerts_mail_from: str = "callgate@localhost"
    alerts_mail_to: str = ""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    metrics_enabled: bool = True


def _convert(kind: type, value: object, name: str, problems: list[str]) -> object:
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in _TRUE | _FALSE:
            return text in _TRUE
        try:
            return kind(text) if kind is not bool else None
        except ValueError:
            problems.append(f"{name}: expected {kind.__name__}, got {value!r}")
            return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        problems.append(f"{name}: expected {kind.__name__}, got {value!r}")
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
        if section not in SCHEMA or not isinstance(value, dict):
            problems.append(
                f"{path}: unknown section [{section}]; expected one of {', '.join(SCHEMA)}"
            )
            continue
        problems += [
            f"{path}: [{section}] unknown key {k!r}" for k in value if k not in SCHEMA[section]
        ]
    values: dict[str, object] = {}
    for section, keys in SCHEMA.items():
        for key, (kind, default) in keys.items():
            env = f"CALLGATE_{section}_{key}".upper()
            raw = environ.get(env, data.get(section, {}).get(key, default))
            where = f"{env} / [{section}] {key}"
            if raw is None or (raw == "" and default is None):
                problems.append(f"{where}: required, not set")
                continue
            values[f"{section}_{key}"] = _convert(kind, raw, where, problems)
    _check(values, problems)
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


def _check(values: Mapping[str, object], problems: list[str]) -> None:
    if values.get("log_format") not in {"text", "json", None}:
        problems.append(
            f"CALLGATE_LOG_FORMAT / [log] format: expected text or json, got {values['log_format']!r}"
        )
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
    if isinstance(redis_url, str) and not redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        problems.append(
            f"CALLGATE_REDIS_URL / [redis] url: expected redis://, rediss:// or unix://, got {redis_url!r}"
        )
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
    url = values.get("ari_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        problems.append(
            f"CALLGATE_ARI_URL / [ari] url: expected http(s)://host:port/ari, got {url!r}"
        )
