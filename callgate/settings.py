"""Service settings for ``callgate serve``: a TOML file, then ``CALLGATE_<SECTION>_<KEY>`` variables.

What the settings are (their names, types, defaults, allowed values, which are secrets) is declared once,
in :data:`callgate.settingtable.TABLE`; this module reads them by that table. Every setting has one name
in both places: ``[ari] url`` in the file is ``CALLGATE_ARI_URL`` in the environment, and the
environment wins. All problems are collected and reported together as a
:class:`~callgate.errors.SettingsError` that names each setting and what was expected; a key the table
does not know is refused with the file and the key named. A message never shows a secret: the values
of the table's secrets are never echoed (not even when written as a number), URLs are shown through
:func:`redact_url`, and a value that holds one of the secrets is not shown at all.
:meth:`Settings.secrets` lists them for ``serve``'s log filter.

``python -m callgate.settings --sample`` prints ``packaging/callgate.toml``, ``--env-file`` prints
``packaging/callgate.env``, ``--update-guide`` rewrites the settings reference in ``docs/operations.md``;
all are made from the table by :mod:`callgate.settingdoc`. Code that reads one setting by itself (the
admin commands' ``CALLGATE_REDIS_URL``) takes its name and default from :func:`setting`.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import ipaddress
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import parse_url as parse_redis_url

from callgate.asterisk.gate import GateSettings, site_suffix
from callgate.core.policyvalues import SITE_NAME
from callgate.errors import SettingsError
from callgate.settingtable import (
    FALSE_WORDS,
    SECTIONS,
    TABLE,
    TRUE_WORDS,
    Form,
    LogFormat,
    LogLevel,
    PolicySource,
    Setting,
    SettleFrom,
    one_of,
)
from callgate.store.connect import BadUrl, Kind, multi_host, parse_nodes

KEYS: Final = {section: {s.key: s for s in TABLE if s.section == section} for section in SECTIONS}
BY_NAME: Final = {s.name: s for s in TABLE}
URL_FORMS = frozenset({Form.ARI_URL, Form.REDIS_URL})
# one server's URLs, read by redis-py; Sentinel's and a Cluster's: callgate.store.connect
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_FORM = (
    "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path, "
    "redis+sentinel://... or redis+cluster://..."
)
URL_PASSWORDS = ("password", "sentinel_password")  # the query options that hold a password
HIDDEN = "***"


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings read: one attribute per row of the table, ``<section>_<key>``, but [gate] is
    :attr:`gate` (the gate's own :class:`~callgate.asterisk.gate.GateSettings`). A test holds these attributes
    and their types equal to the table."""

    ari_url: str
    ari_user: str
    ari_password: str
    ari_app: str
    agi_listen: str
    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str
    ami_enabled: bool
    ami_settle_from: SettleFrom
    redis_url: str
    redis_wait_replicas: int
    policy_source: PolicySource
    policy_file: str
    policy_site: str
    policy_tenants: str
    gate: GateSettings
    log_format: LogFormat
    log_level: LogLevel
    alerts_min_interval: float
    alerts_deny_burst: int
    alerts_deny_window: float
    alerts_site_burst: int
    alerts_syslog_address: str
    alerts_smtp_host: str
    alerts_smtp_port: int
    alerts_smtp_starttls: bool
    alerts_smtp_user: str
    alerts_smtp_password: str
    alerts_mail_from: str
    alerts_mail_to: str
    metrics_enabled: bool
    metrics_host: str
    metrics_port: int

    def __repr__(self) -> str:
        """Every value, but a secret as ``***`` and a URL redacted: safe for a debugger or a log."""
        shown = []
        for f in dataclasses.fields(self):
            value, setting = getattr(self, f.name), BY_NAME.get(f.name)
            if setting and setting.secret:
                value = HIDDEN
            elif setting and setting.form in URL_FORMS:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def tenants(self) -> tuple[str, ...]:
        """The sites of ``[policy] tenants``, in the order written; () for a single-site callgate."""
        return site_list(self.policy_tenants)

    def tenant_region(self, site: str) -> str:
        """The region ``[policy] tenants`` pins ``site`` to (``acme/east:US``); "" if none."""
        return pinned_regions(self.policy_tenants).get(site, "")

    def secrets(self) -> tuple[str, ...]:
        """Every secret these settings hold (passwords, the AMI secret, a password in a URL), for a
        log filter that keeps them out of every line."""
        found = [str(getattr(self, s.name)) for s in TABLE if s.secret]
        found += [
            x for s in TABLE if s.form in URL_FORMS for x in url_secrets(getattr(self, s.name))
        ]
        if self.ari_password:  # as the Authorization header carries it
            found.append(basic_token(self.ari_user, self.ari_password))
        return tuple(dict.fromkeys(s for s in found if s))


def setting(section: str, key: str) -> Setting:
    """The table's row of ``[section] key``, for code that reads one setting by itself (the admin
    commands read [redis] url and [policy] site): its environment name is ``.env``, its default
    ``.default``. KeyError for a setting the table does not have."""
    return KEYS[section][key]


def basic_token(user: str, password: str) -> str:
    """The base64 of ``user:password``, as an ``Authorization: Basic`` header carries it."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def redact_url(url: str) -> str:
    """``url`` as a message may show it: no user or password, no query or fragment value, no port
    that is not a number (a password typed where the port goes), nor anything after it in a list of
    hosts (``redis+sentinel://``). Never raises, whatever the text (a mistyped scheme, a stray
    bracket, a password with ``/`` or ``@`` in it)."""
    slashes = url.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    head, body = url[:start], url[start:]
    userinfo, at, body = body.rpartition("@")  # the last @: a password may hold one
    if any(c in userinfo for c in "?#"):  # that @ may be in a query value: show nothing after it
        return head + HIDDEN
    body, hash_, fragment = body.partition("#")
    body, question, query = body.partition("?")
    authority, slash, path = body.partition("/")
    items = authority.split(",") if multi_host(url) else [authority]
    hosts = []
    for i, item in enumerate(items):
        shown_host, readable = _redact_host(item)
        hosts.append(shown_host)
        if not readable and i + 1 < len(items):  # the rest may be the rest of a password
            hosts.append(HIDDEN)
            break
    shown = head + (f"{HIDDEN}@" if at else "") + ",".join(hosts)
    shown += slash + path
    if question:
        pairs = (p.partition("=") for p in query.split("&"))
        shown += "?" + "&".join(f"{k}={HIDDEN}" if eq else HIDDEN for k, eq, _ in pairs)
    return shown + (f"#{HIDDEN}" if hash_ and fragment else hash_)


def _redact_host(item: str) -> tuple[str, bool]:
    """``host[:port]`` or ``[IPv6][:port]`` as shown, and whether it could be read as one."""
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item.partition("]")
        if not bracket:
            return HIDDEN, False
        host, port = host + bracket, port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not (port or item.endswith(":")):
        return host, True
    readable = port.isascii() and port.isdigit()
    return f"{host}:{port if readable else HIDDEN}", readable


def url_secrets(url: str) -> list[str]:
    """The password of a URL's user part and of a ``password=`` or ``sentinel_password=`` query
    value, as written and decoded."""
    slashes = url.find("//")
    # the query first: a query value may hold an @ (a password), which must not end the user part
    head, _, query = url[slashes + 2 if slashes >= 0 else 0 :].partition("#")[0].partition("?")
    user, at, _ = head.rpartition("@")
    found = [user.partition(":")[2]] if at else []
    found += [v for k, _, v in (p.partition("=") for p in query.split("&")) if k in URL_PASSWORDS]
    return [s for secret in found for s in {secret, unquote(secret)} if s]


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never quote it; None when redis-py can use it.
    A ``redis+sentinel://`` or ``redis+cluster://`` URL is read by
    :func:`callgate.store.connect.parse_nodes`, which builds the client from it."""
    if multi_host(url):
        try:
            parse_nodes(url)
        except BadUrl as exc:
            return str(exc)
        return None
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
    if not url:
        return None  # no ARI: the FastAGI door alone (load_settings checks that one is set)
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


def _user_name_problem(user: str) -> str | None:
    return "a user name cannot hold ':' (HTTP Basic)" if ":" in user else None


def listen_address(text: str) -> tuple[str, int]:
    """The (host, port) of ``[agi] listen``: ``host:port``, ``[IPv6]:port`` or a port alone (on
    127.0.0.1). ValueError when it is none of these."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text.strip()
    host = host.removeprefix("[").removesuffix("]")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            "the host must be an IP address (127.0.0.1 keeps it on loopback)"
        ) from None
    return host, int(port)


def _listen_problem(text: str) -> str | None:
    if not text:
        return None
    try:
        listen_address(text)
    except ValueError as exc:
        return f"expected {Form.LISTEN.value}; {exc}"
    return None


def _entries(text: str) -> list[tuple[str, str]]:
    """(site, pinned region or "") of each entry of a ``[policy] tenants`` list: ``acme/east`` or
    ``acme/east:US``."""
    found = []
    for entry in text.split(","):
        name, _, region = entry.strip().partition(":")
        if name.strip():
            found.append((name.strip(), region.strip()))
    return found


def site_list(text: str) -> tuple[str, ...]:
    """The site names of a comma-separated list (``[policy] tenants``)."""
    return tuple(name for name, _ in _entries(text))


def pinned_regions(text: str) -> dict[str, str]:
    """Site -> the region ``[policy] tenants`` pins it to (``acme/east:US``), for those it pins."""
    return {name: region for name, region in _entries(text) if region}


_REGION = re.compile(r"[A-Z]{2}", re.ASCII)


def _sites_problem(text: str) -> str | None:
    names = site_list(text)
    bad = [name for name in names if not SITE_NAME.fullmatch(name)]
    if bad:
        return f"{bad[0]!r} is no site name; expected {Form.SITES.value}"
    regions = [r for _, r in _entries(text) if r]
    wrong = [r for r in regions if not _REGION.fullmatch(r)]
    if wrong:
        return f"{wrong[0]!r} is no region; expected a two-letter country code such as US"
    if len(set(names)) != len(names):
        return "a site is listed twice"
    # the dialplan reads each tenant's emergency numbers from a global named after it (stasis)
    suffixes: dict[str, str] = {}
    for name in names:
        other = suffixes.setdefault(site_suffix(name), name)
        if other != name:
            return f"{other!r} and {name!r} would share Asterisk globals; rename one"
    return None


FORM_CHECKS: Final[dict[Form, Callable[[str], str | None]]] = {
    Form.ARI_URL: _ari_url_problem,
    Form.REDIS_URL: redis_url_problem,
    Form.USER_NAME: _user_name_problem,
    Form.SITES: _sites_problem,
    Form.LISTEN: _listen_problem,
}


def _shown(setting: Setting, value: object, secrets: Iterable[str]) -> str:
    """How a setting's value appears in an error message: secrets never, URLs redacted."""
    if setting.secret:
        kinds = {bool: "true or false", int: "a number", float: "a number", dict: "a table"}
        return f"{kinds.get(type(value), 'a ' + type(value).__name__)} (not shown: it is a secret)"
    url = setting.form in URL_FORMS and isinstance(value, str)
    text = redact_url(str(value)) if url else repr(value)
    if any(secret in text for secret in secrets):
        return "a value that is not shown (it holds a secret)"
    return repr(text) if url else text


def _convert(kind: type, value: object) -> object:
    """``value`` as a ``kind``; a string (from the environment) is read. ValueError says what was
    expected."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in TRUE_WORDS + FALSE_WORDS:
                return text in TRUE_WORDS
            raise ValueError("true or false")
        try:
            return kind(text)
        except ValueError:
            raise ValueError(kind.__name__) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind and not (kind is str and isinstance(value, str)):  # a mode's default
        raise ValueError(kind.__name__ + (" (write it in quotes)" if kind is str else ""))
    return value


def _read(setting: Setting, raw: object, secrets: tuple[str, ...]) -> tuple[object, str | None]:
    """One setting's value by the table's row: its type, its choices, its limits, its form; or why not."""
    where = setting.where
    if raw is None or (raw == "" and setting.required):
        return None, f"{where}: required, not set"
    try:
        value = _convert(setting.base, raw)
    except ValueError as exc:
        return None, f"{where}: expected {exc}, got {_shown(setting, raw, secrets)}"
    if setting.choices:
        if value not in setting.choices:
            return (
                None,
                f"{where}: expected {one_of(setting.choices)}, got {_shown(setting, raw, secrets)}",
            )
        return setting.kind(value), None
    if setting.limits and isinstance(value, int | float):
        low, high = setting.limits
        if not low <= value <= high:
            unit = f" {setting.unit}" if setting.unit else ""
            shown = _shown(setting, value, secrets)
            return None, f"{where}: expected {low:g} to {high:g}{unit}, got {shown}"
    check = FORM_CHECKS.get(setting.form)
    problem = check(value) if check and isinstance(value, str) else None
    if problem:
        got = f"; got {_shown(setting, value, secrets)}" if setting.form in URL_FORMS else ""
        return None, f"{where}: {problem}{got}"
    return value, None


def _written(path: str | None, data: Mapping[str, Any]) -> list[str]:
    """What the file holds that is not a setting: each unknown section and key, with the file."""
    problems = []
    for section, value in data.items():
        if section not in KEYS:
            problems.append(
                f"{path}: unknown section [{section}]; expected one of {', '.join(KEYS)}"
            )
        elif not isinstance(value, dict):
            problems.append(f"{path}: {section} must be a section ([{section}]), not a value")
        else:
            for key in value:
                if key not in KEYS[section]:
                    near = difflib.get_close_matches(key, KEYS[section], n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    problems.append(f"{path}: [{section}] unknown key {key!r}{hint}")
    return problems


def load_settings(path: str | None, environ: Mapping[str, str]) -> Settings:
    """Settings from an optional TOML file and the environment; SettingsError lists every problem."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read the settings file: {exc}") from exc
    problems = _written(path, data)
    raw: dict[Setting, object] = {}
    for setting in TABLE:
        table = data.get(setting.section)
        written = (
            table.get(setting.key, setting.default) if isinstance(table, dict) else setting.default
        )
        raw[setting] = environ.get(setting.env, written)
    secrets = _raw_secrets(raw)
    values: dict[tuple[str, str], Any] = {}
    for setting, value in raw.items():
        read, problem = _read(setting, value, secrets)
        values[setting.section, setting.key] = read
        problems += [problem] if problem else []
    for setting in TABLE:  # "" where another setting's value needs it; None was reported above
        when, value = setting.required_while, values[setting.section, setting.key]
        waived = bool(when and when.unless and values[when.section, when.unless])
        if when and when.holds(values[when.section, when.key]) and value == "" and not waived:
            problems.append(f"{setting.where}: required while {when}")
    problems += _together(values)
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    gate = GateSettings(**{key: v for (section, key), v in values.items() if section == "gate"})
    rest = {f"{section}_{key}": v for (section, key), v in values.items() if section != "gate"}
    return Settings(**rest, gate=gate)


def _together(values: Mapping[tuple[str, str], Any]) -> list[str]:
    """What two settings that are each right cannot be together."""
    problems = []
    if values["ari", "url"] == "" and values["agi", "listen"] == "":
        problems.append(
            f"{setting('ari', 'url').where}: no door for calls; set it (the Stasis door), "
            f"{setting('agi', 'listen').env} / [agi] listen (the FastAGI door), or both"
        )
    elif values["ari", "url"] == "" and values["ami", "enabled"] is False:
        problems.append(
            f"{setting('ami', 'enabled').where}: without ARI ([ari] url empty), the emergency "
            "numbers are published and panic hangs calls up through AMI: it must be enabled"
        )
    tenants = values["policy", "tenants"]
    if tenants and values["policy", "source"] != PolicySource.REDIS:
        where = setting("policy", "tenants").where
        problems.append(f'{where}: needs [policy] source = "redis" (each tenant\'s pushed policy)')
    provider = values["policy", "site"]
    if tenants and provider and provider in site_list(tenants):
        where = setting("policy", "site").where
        problems.append(f"{where}: the provider {provider!r} cannot be one of the tenants too")
    url, waits = values["redis", "url"], values["redis", "wait_replicas"]
    if waits and isinstance(url, str) and url.partition("://")[0].lower() == Kind.CLUSTER:
        where = setting("redis", "wait_replicas").where
        problems.append(
            f"{where}: must be 0 with a redis+cluster:// URL (WAIT counts one node's replicas)"
        )
    return problems


def _raw_secrets(raw: Mapping[Setting, object]) -> tuple[str, ...]:
    """The secrets as written, before any check: what no message may show."""
    found = [
        str(value)
        for setting, value in raw.items()
        if setting.secret and isinstance(value, str | int | float) and not isinstance(value, bool)
    ]
    found += [
        s
        for setting, value in raw.items()
        if setting.form in URL_FORMS and isinstance(value, str)
        for s in url_secrets(value)
    ]
    return tuple(s for s in found if s)


if __name__ == "__main__":  # python -m callgate.settings --sample | --env-file | --reference | ...
    from callgate.settingdoc import main

    sys.exit(main(sys.argv[1:]))
