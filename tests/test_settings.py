"""Service settings: file plus environment, every problem named at once."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callgate import settingdoc
from callgate.asterisk.gate import GateSettings
from callgate.cli import main
from callgate.errors import SettingsError
from callgate.ops import admin
from callgate.settingdoc import BEGIN, END, GUIDE, env_file, guide_block, reference, sample
from callgate.settings import (
    Settings,
    load_settings,
    redact_url,
    redis_url_problem,
    setting,
    url_secrets,
)
from callgate.settingtable import (
    SECTIONS,
    TABLE,
    Form,
    LogLevel,
    PolicySource,
    Setting,
    toml_value,
)
from callgate.store.connect import Kind, Nodes, client_from_url, parse_nodes

GOOD = """
[ari]
url = "http://127.0.0.1:8088/ari"
user = "callgate"
password = "pw"

[ami]
user = "callgate"
secret = "s"

[policy]
file = "/etc/callgate/policy.yaml"

[gate]
deadline = 2
"""


def test_file_then_environment(tmp_path: Path) -> None:
    """The environment overrides the file, with the same names."""
    path = tmp_path / "callgate.toml"
    path.write_text(GOOD)
    s = load_settings(
        str(path), {"CALLGATE_ARI_APP": "callgate-b", "CALLGATE_GATE_DENY_CAUSE": "52"}
    )
    assert (s.ari_app, s.gate.deny_cause, s.gate.deadline, s.ami_port) == (
        "callgate-b",
        52,
        2.0,
        5038,
    )


def test_environment_only() -> None:
    env = {
        "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
        "CALLGATE_ARI_USER": "u",
        "CALLGATE_ARI_PASSWORD": "p",
        "CALLGATE_AMI_ENABLED": "no",
        "CALLGATE_POLICY_FILE": "p.yaml",
    }
    s = load_settings(None, env)
    assert not s.ami_enabled
    assert s.redis_url.startswith("redis://")


def test_every_problem_is_named(tmp_path: Path) -> None:
    """Missing, mistyped and unknown settings are reported together."""
    path = tmp_path / "bad.toml"
    path.write_text('[ari]\nurl = "127.0.0.1"\nuser = 5\n[gate]\ndeadlne = 1\n[nope]\nx = 1\n')
    with pytest.raises(SettingsError) as info:
        load_settings(str(path), {"CALLGATE_AMI_PORT": "five"})
    text = str(info.value)
    for expected in (
        "CALLGATE_ARI_PASSWORD / [ari] password: required",
        "CALLGATE_ARI_USER / [ari] user: expected str",
        "CALLGATE_AMI_PORT / [ami] port: expected int",
        "unknown key 'deadlne'",
        "unknown section [nope]",
        "CALLGATE_POLICY_FILE / [policy] file: required",
        "expected http(s)://",
    ):
        assert expected in text


def test_serve_without_settings_is_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CALLGATE_ARI_URL", "CALLGATE_POLICY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err
    assert "Traceback" not in err


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[ari\n")
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(str(path), {})


def test_redis_url_and_ami_secret_are_checked() -> None:
    """A Sentinel URL without its service name and a missing AMI secret are clear settings errors,
    not tracebacks."""
    env = {
        "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
        "CALLGATE_ARI_USER": "u",
        "CALLGATE_ARI_PASSWORD": "p",
        "CALLGATE_AMI_USER": "callgate",
        "CALLGATE_POLICY_FILE": "/etc/callgate/policy.yaml",
        "CALLGATE_REDIS_URL": "redis+sentinel://h:26379",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(None, env)
    assert "[redis] url: expected redis+sentinel://" in str(caught.value)
    assert "the service name" in str(caught.value)
    assert "[ami] secret: required" in str(caught.value)


# --- one table: the defaults, the names, the checks, the sample and the reference come from it ------

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Ari-Pa55-7"
BASE_ENV = {
    "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
    "CALLGATE_ARI_USER": "u",
    "CALLGATE_ARI_PASSWORD": PASSWORD,
    "CALLGATE_AMI_USER": "callgate",
    "CALLGATE_AMI_SECRET": "Ami-Secr3t-9",
    "CALLGATE_POLICY_FILE": "/etc/callgate/policy.yaml",
    "CALLGATE_POLICY_SITE": "acme-nyc",
}
TEXTS = {
    Form.ARI_URL: "https://pbx.example:8089/ari",
    Form.REDIS_URL: "rediss://10.0.0.2:6380/1",
    Form.USER_NAME: "gate2",
    Form.SITES: "acme/east, globex",
    Form.LISTEN: "127.0.0.1:4574",
    Form.TEXT: "other",
}
# What a setting needs of another to be valid at all: tenants are served from pushed policies only
NEEDS = {"policy_tenants": {"CALLGATE_POLICY_SOURCE": "redis"}}
IDS = [s.name for s in TABLE]


def other_value(setting: Setting) -> object:
    """A valid value of ``setting`` that is not its default."""
    if setting.choices:
        return setting.kind(next(c for c in setting.choices if c != setting.default))
    if setting.kind is bool:
        return not setting.default
    if setting.kind is int:
        return int(str(setting.default)) + 1
    if setting.kind is float:
        return 2.5
    return TEXTS[setting.form]


def read(settings: Settings, setting: Setting) -> object:
    if setting.section == "gate":
        return getattr(settings.gate, setting.key)
    return getattr(settings, setting.name)


def with_file(tmp_path: Path, text: str, env: dict[str, str]) -> Settings:
    path = tmp_path / "callgate.toml"
    path.write_text(text)
    return load_settings(str(path), env)


def problems_of(env: dict[str, str], text: str = "", tmp_path: Path | None = None) -> str:
    """The message that refuses these settings (a file with ``text`` in ``tmp_path``, if given)."""
    path = None
    if tmp_path is not None:
        path = tmp_path / "callgate.toml"
        path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(str(path) if path else None, env)
    return str(caught.value)


def test_the_shipped_sample_is_the_table() -> None:
    """packaging/callgate.toml is exactly what the table writes (python -m callgate.settings --sample
    > packaging/callgate.toml to regenerate)."""
    assert (ROOT / "packaging" / "callgate.toml").read_text() == sample()


def test_the_shipped_env_file_is_the_table() -> None:
    """packaging/callgate.env is exactly what the table writes (python -m callgate.settings --env-file
    > packaging/callgate.env to regenerate)."""
    assert (ROOT / "packaging" / "callgate.env").read_text() == env_file()


def test_the_env_file_sets_what_callgate_cannot_start_without() -> None:
    """Each secret has a line in callgate.env; the ones callgate needs with the other settings at
    their defaults are set (with a placeholder), the others shown as "#NAME=" lines."""
    lines = dict(re.findall(r"^(#?CALLGATE_\w+)=(.*)$", env_file(), re.MULTILINE))
    assert {s.env for s in TABLE if s.secret} <= {n.lstrip("#") for n in lines}
    assert {n for n in lines if not n.startswith("#")} == {
        "CALLGATE_ARI_PASSWORD",
        "CALLGATE_AMI_SECRET",
    }
    assert lines["#CALLGATE_REDIS_URL"] == "redis://:change-me-redis@127.0.0.1:6379/0"


def test_the_guide_reference_is_the_table() -> None:
    """The operations guide's settings reference is exactly what the table writes (python -m
    callgate.settings --update-guide to regenerate)."""
    assert guide_block(GUIDE.read_text(encoding="utf-8")) == reference()


@pytest.mark.parametrize(
    ("flag", "made"),
    [("--sample", sample()), ("--env-file", env_file()), ("--reference", reference())],
)
def test_python_m_callgate_settings_prints_them(flag: str, made: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callgate.settings", flag],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert done.stdout.rstrip("\n") == made.rstrip("\n")
    assert not done.stderr


def test_update_guide_replaces_only_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--update-guide rewrites the block between the markers and leaves the rest of the guide alone;
    a guide without the markers is an error, not a silent no-op."""
    guide = tmp_path / "operations.md"
    guide.write_text(f"# Guide\n\nbefore\n\n{BEGIN}\nstale\n{END}\n\nafter\n")
    monkeypatch.setattr(settingdoc, "GUIDE", guide)
    assert settingdoc.main(["--update-guide"]) == 0
    assert guide.read_text() == f"# Guide\n\nbefore\n\n{reference()}\n\nafter\n"
    guide.write_text("# Guide\n")
    with pytest.raises(SystemExit):
        settingdoc.main(["--update-guide"])


def test_settings_attributes_are_the_table() -> None:
    """Settings has one attribute per row, of the row's type, and nothing else; [gate] is
    GateSettings, which has a field per [gate] row, whose default is the table's."""
    rows = {s.name: s.kind.__name__ for s in TABLE if s.section != "gate"}
    fields = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "gate"}
    assert fields == rows
    gate = [s for s in TABLE if s.section == "gate"]
    gate_fields = {f.name: f.type for f in dataclasses.fields(GateSettings)}  # and serve's own
    assert {s.key: s.kind.__name__ for s in gate}.items() <= gate_fields.items()
    defaults: dict[str, Any] = {s.key: s.default for s in gate}
    assert GateSettings() == GateSettings(**defaults)


def test_one_setting_by_itself_is_the_table_row() -> None:
    """setting() gives the row a command reads by itself; the admin commands fall back on its
    environment name and default, the same ones serve reads."""
    url, site = setting("redis", "url"), setting("policy", "site")
    assert (url.env, url.default) == ("CALLGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert (site.env, site.default) == ("CALLGATE_POLICY_SITE", "")
    assert url is admin.REDIS_URL
    assert site is admin.SITE
    assert admin.HEALTH == "http://127.0.0.1:9464/health"  # [metrics] host and port, their defaults
    with pytest.raises(KeyError):
        setting("redis", "password")


def test_the_table_is_well_formed() -> None:
    """Each row: a known section, a unique key, a default of its own type (None: required), an
    example where the sample must set it, a condition on a real setting, a secret never defaulted."""
    assert len({(s.section, s.key) for s in TABLE}) == len(TABLE)
    assert [s for s in SECTIONS if not any(r.section == s for r in TABLE)] == []
    keys = {(s.section, s.key): s for s in TABLE}
    for s in TABLE:
        assert s.section in SECTIONS, s.name
        assert re.fullmatch(r"[a-z][a-z_]*", s.key), s.name
        assert s.default is None or isinstance(s.default, s.kind), s.name
        assert type(s.default) is not bool or s.kind is bool, s.name
        if s.required and not s.secret:
            assert s.example is not None, f"{s.name}: the sample needs an example value"
        if s.secret:
            assert s.default in {None, ""}, s.name
            assert s.env_example is not None, f"{s.name}: a secret has a line in callgate.env"
        if s.limits:
            assert s.kind in {int, float}, s.name
            assert s.limits[0] <= float(str(s.default)) <= s.limits[1], s.name
        if s.required_while:
            other = keys[s.required_while.section, s.required_while.key]
            assert isinstance(s.required_while.value, other.kind), s.name
        assert s.doc.strip(), s.name
        assert "\n" not in s.doc.replace("\n\n", ""), f"{s.name}: paragraphs only, no line breaks"


@pytest.mark.parametrize("setting", TABLE, ids=IDS)
def test_each_setting_from_the_file_and_the_environment(setting: Setting, tmp_path: Path) -> None:
    """Every setting is read under its TOML key and under its derived environment name, to the same
    typed value; unset, it is the table's default."""
    value = other_value(setting)
    env_text = str(value).lower() if isinstance(value, bool) else str(value)
    base = BASE_ENV | NEEDS.get(setting.name, {})
    from_env = load_settings(None, {**base, setting.env: env_text})
    toml = f"[{setting.section}]\n{setting.key} = {toml_value(value)}\n"
    from_file = with_file(tmp_path, toml, {k: v for k, v in base.items() if k != setting.env})
    assert read(from_env, setting) == value
    assert read(from_file, setting) == value
    assert type(read(from_file, setting)) is type(value)
    if not setting.required and setting.env not in BASE_ENV:
        assert read(load_settings(None, BASE_ENV), setting) == setting.default


def wrong(setting: Setting) -> tuple[str, str]:
    """A value of the wrong kind for ``setting``, and what the message must say was expected."""
    if setting.choices:
        *most, last = setting.choices
        return "sometimes", f"expected {', '.join(most)} or {last}, got 'sometimes'"
    if setting.kind is bool:
        return "maybe", "expected true or false, got 'maybe'"
    if setting.kind in {int, float}:
        return "soon", f"expected {setting.kind.__name__}, got 'soon'"
    return {
        Form.ARI_URL: ("pbx:8088/ari", "expected http(s)://"),
        Form.REDIS_URL: ("sentinel://h:26379/m", "expected redis://"),
        Form.USER_NAME: ("a:b", "cannot hold ':'"),
        Form.SITES: ("a/b/c", "is no site name"),
        Form.LISTEN: ("pbx.example:4573", "must be an IP address"),
        Form.TEXT: ("", ""),  # any text will do
    }[setting.form]


@pytest.mark.parametrize("setting", [s for s in TABLE if wrong(s)[1]], ids=lambda s: s.name)
def test_each_wrong_value_is_named(setting: Setting) -> None:
    """A wrong value is refused with both names of its setting and what it must be."""
    text, expected = wrong(setting)
    problems = problems_of({**BASE_ENV, **NEEDS.get(setting.name, {}), setting.env: text})
    assert f"{setting.where}: " in problems
    assert expected in problems


@pytest.mark.parametrize("setting", [s for s in TABLE if s.limits], ids=lambda s: s.name)
def test_limits_are_inclusive(setting: Setting) -> None:
    """A number's limits are allowed; a step beyond either is refused, naming the range."""
    assert setting.limits
    low, high = setting.limits
    step = 1 if setting.kind is int else 0.001
    for edge in (low, high):
        settings = load_settings(None, {**BASE_ENV, setting.env: f"{edge:g}"})
        assert read(settings, setting) == edge
    for beyond in (low - step, high + step):
        problems = problems_of({**BASE_ENV, setting.env: f"{beyond:g}"})
        assert f"{setting.where}: expected {low:g} to {high:g}" in problems


def test_modes_are_str_enums() -> None:
    """A mode is a StrEnum member that compares equal to the string in the file."""
    s = load_settings(None, {**BASE_ENV, "CALLGATE_POLICY_SOURCE": "redis"})
    assert s.policy_source == "redis"  # as serve compares it
    assert s.policy_source is PolicySource.REDIS
    assert (s.log_format, s.log_level, s.ami_settle_from) == ("text", "info", "cdr")
    assert isinstance(s.log_level, LogLevel)
    assert s.log_level.upper() == "INFO"
    assert str(s.ami_settle_from) == "cdr"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CALLGATE_AMI_USER": ""}, "CALLGATE_AMI_USER / [ami] user: required while [ami] enabled"),
        ({"CALLGATE_AMI_SECRET": ""}, "CALLGATE_AMI_SECRET / [ami] secret: required while"),
        ({"CALLGATE_POLICY_FILE": ""}, "CALLGATE_POLICY_FILE / [policy] file: required while"),
        (
            {"CALLGATE_POLICY_SOURCE": "redis", "CALLGATE_POLICY_SITE": ""},
            'CALLGATE_POLICY_SITE / [policy] site: required while [policy] source = "redis"',
        ),
    ],
)
def test_required_while(env: dict[str, str], named: str) -> None:
    assert named in problems_of({**BASE_ENV, **env})


def test_required_while_only_while() -> None:
    """Without AMI no AMI user or secret is needed; in Redis mode the policy file is optional."""
    env = {**BASE_ENV, "CALLGATE_AMI_ENABLED": "false", "CALLGATE_AMI_USER": ""}
    env |= {
        "CALLGATE_AMI_SECRET": "",
        "CALLGATE_POLICY_SOURCE": "redis",
        "CALLGATE_POLICY_FILE": "",
    }
    s = load_settings(None, env)
    assert (s.ami_user, s.ami_secret, s.policy_file) == ("", "", "")


def test_unknown_keys_name_the_file_and_the_nearest_key(tmp_path: Path) -> None:
    """An unknown key is refused with the file, the section, the key, and a likely meant key."""
    problems = problems_of({}, "[gate]\ndeadlne = 1\n[metrics]\nlisten = 1\n", tmp_path)
    path = tmp_path / "callgate.toml"
    assert f"{path}: [gate] unknown key 'deadlne'; did you mean 'deadline'?" in problems
    assert f"{path}: [metrics] unknown key 'listen'\n" in problems + "\n"


def test_a_mode_never_echoes_a_secret() -> None:
    """A secret pasted into a mode is not shown in the message that refuses it."""
    problems = problems_of({**BASE_ENV, "CALLGATE_POLICY_SOURCE": PASSWORD})
    assert (
        "CALLGATE_POLICY_SOURCE / [policy] source: expected file or redis, got a value" in problems
    )
    assert PASSWORD not in problems


DOC_TOML = [
    (block, f"{path.name}:{text.count(chr(10), 0, found.start()) + 2}")
    for path in sorted((ROOT / "docs").glob("*.md"))
    for text in [path.read_text(encoding="utf-8")]
    for found in re.finditer(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    for block in [found[1]]
]


@pytest.mark.parametrize(("text", "where"), DOC_TOML, ids=[where for _, where in DOC_TOML])
def test_the_docs_toml_examples_load(text: str, where: str, tmp_path: Path) -> None:
    """Every toml block of the docs is a settings file that loads as written."""
    assert with_file(tmp_path, text, {}), where


def test_every_setting_name_written_anywhere_is_a_setting() -> None:
    """A CALLGATE_<SECTION>_<KEY> name in the docs, the samples, the code or the containers is one the
    table derives: a misspelt variable would be ignored silently."""
    known = {s.env for s in TABLE}
    name = re.compile(rf"\bCALLGATE_(?:{'|'.join(SECTIONS).upper()})_[A-Z0-9_]+")
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for folder in ("packaging", "callgate", "docker", "dialplan", "bench"):
        paths += [
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    unknown = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        unknown += [f"{path.relative_to(ROOT)}: {n}" for n in name.findall(text) if n not in known]
    assert not unknown, unknown


# --- Redis through Sentinel, or a Cluster: the URL forms of callgate.store.connect --------------------

SECRET = "S3cr,et/@x"  # a comma, a slash and an @: what a careless parser would show or cut wrong
QUOTED = "S3cr%2Cet%2F@x"


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,s3/mymaster",
            Nodes(Kind.SENTINEL, (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("s3", 26379)), "mymaster"),
        ),
        (
            f"redis+sentinel://cg:{QUOTED}@[::1]:26379,[fe80::2]/main/3?sentinel_password=sp",
            Nodes(
                Kind.SENTINEL, (("::1", 26379), ("fe80::2", 26379)), "main", 3, "cg", SECRET,
                sentinel_password="sp",
            ),
        ),
        (
            "REDIS+SENTINEL://:pw@h/m/?sentinel_username=watch&sentinel_password=",
            Nodes(Kind.SENTINEL, (("h", 26379),), "m", password="pw", sentinel_username="watch"),
        ),
        ("redis+cluster://n1,n2:7001/", Nodes(Kind.CLUSTER, (("n1", 6379), ("n2", 7001)))),
        ("redis+cluster://u:p@n1:7000/0", Nodes(Kind.CLUSTER, (("n1", 7000),), "", 0, "u", "p")),
    ],
)  # fmt: skip
def test_sentinel_and_cluster_urls_are_read(url: str, nodes: Nodes) -> None:
    """Hosts with their default ports, [IPv6] hosts, the service and database, the primary's user
    and password (percent-encoded) and the sentinels' own, as the client is built from them."""
    assert parse_nodes(url) == nodes
    assert redis_url_problem(url) is None
    assert SECRET not in repr(nodes)
    assert "'sp'" not in repr(nodes)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"redis+sentinel://:{QUOTED}@h1:26379", "the service name"),
        (f"redis+sentinel://:{QUOTED}@h1:26379/", "the service name"),
        (f"redis+sentinel://:{QUOTED}@/m", "no host is given"),
        (f"redis+sentinel://:{QUOTED}@h1,,h2/m", "a host is missing"),
        (f"redis+sentinel://:{QUOTED}@h1,/m", "a host is missing"),
        ("redis+sentinel://h1:S3cr,et/m", "a port is not a number"),  # a password as a port
        ("redis+sentinel://h1:S3cr%2Cet/m", "a port is not a number"),
        ("redis+sentinel://h1:0/m", "a port is not a number from 1 to 65535"),
        ("redis+sentinel://h1:65536/m", "a port is not a number from 1 to 65535"),
        ("redis+sentinel://[::1/m", "[IPv6]"),
        ("redis+sentinel://[::1]x/m", "[IPv6]"),
        ("redis+sentinel://h 1/m", "a character a host name cannot have"),
        ("redis+sentinel://h1/m/x", "the database after the service name must be a number"),
        ("redis+sentinel://h1/m/0/1", "only /service or /service/db"),
        (f"redis+sentinel://h1/m?password={QUOTED}", "the only options are sentinel_username"),
        (f"redis+sentinel://h1/m?{QUOTED}", "the only options are"),
        ("redis+sentinel://h1/m?sentinel_password=a&sentinel_password=b", "given twice"),
        (f"redis+sentinel://h1/m#{QUOTED}", "a fragment"),
        ("redis+cluster://n1:7000/1", "only database 0"),
        (f"redis+cluster://n1:7000/?password={QUOTED}", "takes no options"),
        (f"rediss+sentinel://:{QUOTED}@h1/m", "the scheme is not one of these"),
        (f"redis-sentinel://:{QUOTED}@h1/m", "the scheme is not one of these"),
    ],
)
def test_a_bad_sentinel_or_cluster_url_is_named_never_shown(url: str, said: str) -> None:
    """A malformed redis+sentinel:// or redis+cluster:// URL is refused at start with its form and
    what is wrong, in a message that shows no part of the password, from the settings and from the
    admin commands' check."""
    problem = redis_url_problem(url)
    assert problem is not None
    assert problem.startswith("expected redis")
    assert said in problem
    for part in (SECRET, QUOTED, "S3cr", "et/@x", "et%2F"):
        assert part not in problem
    problems = problems_of({**BASE_ENV, "CALLGATE_REDIS_URL": url})
    assert f"CALLGATE_REDIS_URL / [redis] url: {problem}" in problems
    for part in (SECRET, QUOTED, "S3cr", "et/@x", "et%2F"):
        assert part not in problems


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"redis+sentinel://:{QUOTED}@a:26379,b:26380,[::1]:1/m/0?sentinel_password=S3cr%2Cet",
            "redis+sentinel://***@a:26379,b:26380,[::1]:1/m/0?sentinel_password=***",
        ),
        ("redis+sentinel://a:S3cr,et,b/m", "redis+sentinel://a:***,***/m"),  # a password as a port
        ("redis://h:6379/0?password=S3cr@et", "redis://***"),  # the last @ is in the query
        (f"redis+sentinel://:{QUOTED}@h/m?sentinel_password={QUOTED}", "redis+sentinel://***"),
        ("redis+cluster://u:p@n1:7000,n2:7001", "redis+cluster://***@n1:7000,n2:7001"),
        ("redis://h:S3cr,et/0", "redis://h:***/0"),  # one host: a comma is no list
    ],
)
def test_redact_url_shows_every_host_of_a_list(url: str, shown: str) -> None:
    """A list of sentinels or Cluster nodes is shown whole (which hosts is what an admin needs to
    see) without the passwords; after a port that is not a number nothing more of the list is."""
    assert redact_url(url) == shown


def test_the_sentinels_password_is_a_secret_too() -> None:
    """Both passwords of a Sentinel URL reach serve's log filter, as written and decoded."""
    url = f"redis+sentinel://:{QUOTED}@h1,h2/m?sentinel_password=Sen%2Ftinel"
    assert {SECRET, QUOTED, "Sen%2Ftinel", "Sen/tinel"} <= set(url_secrets(url))
    settings = load_settings(None, {**BASE_ENV, "CALLGATE_REDIS_URL": url})
    assert {SECRET, "Sen/tinel"} <= set(settings.secrets())
    assert "Sen" not in repr(settings)
    assert "S3cr" not in repr(settings)


def test_wait_replicas_is_not_for_a_cluster() -> None:
    """[redis] wait_replicas counts one server's replicas: with a Cluster URL it is refused, naming
    both settings' reason; with a Sentinel URL it is read."""
    cluster = {**BASE_ENV, "CALLGATE_REDIS_URL": "redis+cluster://n1:7000"}
    assert load_settings(None, cluster).redis_wait_replicas == 0
    problems = problems_of({**cluster, "CALLGATE_REDIS_WAIT_REPLICAS": "1"})
    assert (
        "CALLGATE_REDIS_WAIT_REPLICAS / [redis] wait_replicas: must be 0 with a redis+cluster"
        in problems
    )
    sentinel = {**BASE_ENV, "CALLGATE_REDIS_URL": "redis+sentinel://h/m"}
    assert (
        load_settings(None, {**sentinel, "CALLGATE_REDIS_WAIT_REPLICAS": "1"}).redis_wait_replicas
        == 1
    )
    with pytest.raises(ValueError, match="wait_replicas"):
        client_from_url("redis+cluster://n1:7000", timeout=1, max_connections=1, wait_replicas=1)


def test_the_admin_commands_check_a_sentinel_url(capsys: pytest.CaptureFixture[str]) -> None:
    """`callgate locks --redis URL` refuses a malformed Sentinel URL before connecting, with its
    form and no password (the check every admin command makes: cli._redis_problem)."""
    assert main(["locks", "--site", "s", "--redis", f"redis+sentinel://:{QUOTED}@h1:26379"]) == 2
    err = capsys.readouterr().err
    assert "--redis: expected redis+sentinel://" in err
    assert "redis+sentinel://***@h1:26379" in err
    assert "S3cr" not in err


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("redis+sentinel://:s3cret@h1,h2/svc?sentinel_password=a@b", {"s3cret", "a@b"}),
        ("redis://u:pw@host/0?password=q@r", {"pw", "q@r"}),
        ("redis://:p@ss@host:6379/0", {"p@ss"}),
    ],
)
def test_an_at_sign_in_a_query_value_hides_no_password(url: str, secrets: set[str]) -> None:
    """The attack review: an @ inside a query value used to end the user part early, so neither
    password reached the log filter."""
    assert set(url_secrets(url)) == secrets
