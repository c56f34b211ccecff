"""packaging/: the systemd unit, the sample settings and secrets, log rotation; and the operations guide's
commands. What an admin copies to /etc must work as copied, and must say everything callgate reads."""

from __future__ import annotations

import fnmatch
import itertools
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from callgate.cli import cmd_serve, parser
from callgate.errors import SettingsError
from callgate.settings import KEYS, Settings, load_settings
from callgate.settingtable import SECTIONS, TABLE

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
UNIT = PACKAGING / "callgate.service"
TOML = PACKAGING / "callgate.toml"
ENV = PACKAGING / "callgate.env"
LOGROTATE = PACKAGING / "logrotate" / "callgate"
GUIDE = ROOT / "docs" / "operations.md"

OPTIONAL = re.compile(r"^#(\w+ = .*)$", re.MULTILINE)  # "#key = value": an optional setting, shown
ENV_LINE = re.compile(r"^#?(CALLGATE_\w+)=(.*)$", re.MULTILINE)


def env_set() -> dict[str, str]:
    """The variables callgate.env sets (its uncommented lines), as systemd passes them to callgate."""
    text = ENV.read_text()
    return dict(re.findall(r"^(CALLGATE_\w+)=(.*)$", text, re.MULTILINE))


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "callgate.toml"
    path.write_text(text)
    return load_settings(str(path), env_set() if env is None else env)


def redis_mode(text: str) -> str:
    """The sample switched to Redis mode the way its comments say: source, then the site."""
    text, sources = re.subn(r'^source = "file"$', 'source = "redis"', text, flags=re.MULTILINE)
    text, sites = re.subn(r'^#(site = ".+")$', r"\1", text, flags=re.MULTILINE)
    assert (sources, sites) == (1, 1)
    return text


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values, in order]}}; keys may repeat (SystemCallFilter)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: no continued lines, please"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a key=value line: {raw!r}"
        assert current is not None, f"{path.name}:{number}: a key before any [section]"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


SERVICE = unit_sections(UNIT)["Service"]


def one(key: str) -> str:
    values = SERVICE.get(key)
    assert values is not None, f"callgate.service: [Service] {key}= is missing"
    return values[-1]


# --- the sample settings -----------------------------------------------------------------------------


def test_sample_loads_in_file_mode() -> None:
    """callgate.toml with callgate.env applied is a valid file-mode configuration, secrets from env."""
    s = load_settings(str(TOML), env_set())
    assert (s.policy_source, s.policy_file) == ("file", "/etc/callgate/policy.yaml")
    assert s.ari_password == env_set()["CALLGATE_ARI_PASSWORD"]
    assert s.ami_secret == env_set()["CALLGATE_AMI_SECRET"]
    assert s.ami_enabled


def test_sample_loads_in_redis_mode(tmp_path: Path) -> None:
    """Switched to Redis mode as its comments say, the sample loads, with or without a fallback file."""
    text = redis_mode(TOML.read_text())
    s = load(text, tmp_path)
    assert (s.policy_source, s.policy_site) == ("redis", "acme-nyc")
    without_file = re.sub(r'^file = ".*"\n', "", text, flags=re.MULTILINE)
    assert load(without_file, tmp_path).policy_file == ""


def test_sample_holds_no_secret() -> None:
    """Passwords and secrets are only in callgate.env (0600), never set in the world-readable toml."""
    text = TOML.read_text()
    assert not re.search(r"^\s*(password|secret)\s*=", text, re.MULTILINE)
    assert "@" not in "".join(re.findall(r'^url = "(.*)"', text, re.MULTILINE))


def test_sample_without_env_names_the_missing_password() -> None:
    """Forgetting the secrets file is reported by name at start, not discovered at the first call."""
    with pytest.raises(SettingsError, match="CALLGATE_ARI_PASSWORD"):
        load_settings(str(TOML), {})


# Shown with an example value, as their default ("") means "not set".
EXAMPLE_VALUES = {("policy", "site"), ("agi", "listen")}  # shown with an example, not the default


def shown_settings(text: str) -> list[tuple[str, str, object]]:
    """(section, key, value) of every "#key = value" line, read as TOML in its section."""
    shown = []
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header[1]
        elif optional := OPTIONAL.fullmatch(line):
            ((key, value),) = tomllib.loads(optional[1]).items()
            shown.append((section, key, value))
    return shown


def default(section: str, key: str) -> object:
    row = KEYS.get(section, {}).get(key)
    return "<not a setting>" if row is None else row.default


def test_optional_settings_show_their_defaults(tmp_path: Path) -> None:
    """Every "#key = value" line is a real key shown with its default; uncommented, they all load."""
    text = TOML.read_text()
    shown = shown_settings(text)
    assert len(shown) >= 10
    wrong = [
        f"[{section}] {key} = {value!r}, default {default(section, key)!r}"
        for section, key, value in shown
        if (section, key) not in EXAMPLE_VALUES and value != default(section, key)
    ]
    assert not wrong, wrong
    load(OPTIONAL.sub(r"\1", text), tmp_path)


def test_every_setting_is_in_the_samples() -> None:
    """Each key callgate reads is in callgate.toml (set or shown) or, for secrets, in callgate.env."""
    text = TOML.read_text()
    env_names = {name for name, _ in ENV_LINE.findall(ENV.read_text())}
    missing = []
    for section in SECTIONS:
        start = re.search(rf"^\[{section}\]$", text, re.MULTILINE)
        if start is None:
            missing.append(f"[{section}]")
            continue
        end = re.search(r"^\[\w+\]$", text[start.end() :], re.MULTILINE)
        body = text[start.end() : start.end() + end.start() if end else len(text)]
        for s in (s for s in TABLE if s.section == section):
            if not re.search(rf"^#?{s.key} = ", body, re.MULTILINE) and s.env not in env_names:
                missing.append(f"[{section}] {s.key} ({s.env})")
    assert not missing, f"packaging/callgate.toml does not mention: {', '.join(missing)}"


def test_env_sample_names_only_settings() -> None:
    """A misspelt variable would be ignored silently; every name in callgate.env is a setting."""
    known = {s.env for s in TABLE}
    names = [name for name, _ in ENV_LINE.findall(ENV.read_text())]
    assert names
    assert set(names) <= known, set(names) - known
    for name, value in ENV_LINE.findall(ENV.read_text()):
        assert not re.search(r"[\s'\"$`\\]", value), f"{name}: keep values shell-safe"


# --- the program ------------------------------------------------------------------------------------


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    """`callgate --version` prints the version of the installed metadata, which is pyproject.toml's
    (the Debian package's version comes from the same line: packaging/build-deb.sh)."""
    from importlib.metadata import version

    from callgate.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"callgate {version('callgate')}\n" == f"callgate {project}\n"


# PEP 440 versions in their order, each with the Debian spelling packaging/build-deb.sh gives it.
VERSIONS = [
    ("1.2.0.dev3", "1.2.0~~dev3"),
    ("1.2.0a1.dev1", "1.2.0~a1~dev1"),
    ("1.2.0a1", "1.2.0~a1"),
    ("1.2.0b2", "1.2.0~b2"),
    ("1.2.0rc1.dev2", "1.2.0~rc1~dev2"),
    ("1.2.0rc1", "1.2.0~rc1"),
    ("1.2.0", "1.2.0"),
    ("1.2.0.post1.dev1", "1.2.0.post1~dev1"),
    ("1.2.0.post1", "1.2.0.post1"),
    ("1.2.1", "1.2.1"),
    ("1.10", "1.10"),
]


def test_debian_versions_sort_as_python_versions() -> None:
    """The package's version is pyproject.toml's spelt for dpkg, and dpkg orders them as pip does:
    an upgrade from a release candidate to its release is an upgrade for apt too."""
    script = str(ROOT / "packaging" / "build-deb.sh")
    spelt = [
        subprocess.run(
            [script, "--debian-version", version], capture_output=True, text=True, check=True
        ).stdout.strip()
        for version, _ in VERSIONS
    ]
    assert spelt == [debian for _, debian in VERSIONS]
    if shutil.which("dpkg") is None:
        return
    for older, newer in itertools.pairwise(spelt):
        compare = ["dpkg", "--compare-versions", older, "lt", newer]
        assert subprocess.run(compare, check=False).returncode == 0, f"{older} < {newer}"


# --- the systemd unit --------------------------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "KillSignal": "SIGTERM",
    "Restart": "on-failure",
}


@pytest.mark.parametrize(("key", "value"), HARDENING.items(), ids=list(HARDENING))
def test_unit_hardening(key: str, value: str) -> None:
    """Each sandboxing and stop/restart choice the operations guide promises is in the unit."""
    assert one(key) == value


def test_unit_system_call_filter() -> None:
    """Only the system-service set of system calls (the first SystemCallFilter= is the allow list)."""
    assert SERVICE["SystemCallFilter"][0] == "@system-service"


def test_unit_runs_callgate_serve_with_the_sample_paths() -> None:
    """ExecStart is `callgate serve --config ...` as callgate's own parser reads it; paths line up."""
    argv = shlex.split(one("ExecStart"))
    assert Path(argv[0]).name == "callgate"
    args = parser().parse_args(argv[1:])
    assert args.run is cmd_serve
    config = Path(args.config)
    assert config == Path("/etc/callgate") / TOML.name
    assert one("ReadOnlyPaths") == str(config.parent)
    assert Path(one("EnvironmentFile")) == config.parent / ENV.name  # no "-": it must exist
    assert one("User") == "callgate"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_unit_restart_and_stop_limits() -> None:
    """It restarts (also after a stray SIGHUP), gives a crash loop up, and lets a stop drain."""
    unit = unit_sections(UNIT)["Unit"]
    assert int(unit["StartLimitBurst"][-1]) >= 3
    assert "SIGHUP" in one("RestartForceExitStatus").split()
    # The spend feed retries a settlement 5 times, 1+2+4+8+16 s apart, before it gives up at stop.
    assert int(one("TimeoutStopSec").removesuffix("s")) >= 45


def test_unit_log_file_is_rotated() -> None:
    """The log file the unit's comments offer is one the logrotate file rotates."""
    offered = re.findall(r"^#StandardError=append:(\S+)$", UNIT.read_text(), re.MULTILINE)
    patterns = re.findall(r"^(/\S+) \{$", LOGROTATE.read_text(), re.MULTILINE)
    assert offered
    assert patterns
    assert all(any(fnmatch.fnmatch(p, g) for g in patterns) for p in offered)


def _callgate_program() -> str:
    found = Path(sys.executable).parent / "callgate"
    return str(found) if found.exists() else shutil.which("callgate") or ""


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here; the unit is still parsed by the other tests",
)
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself accepts the unit: no unknown key, no bad value (it only warns, so read stderr)."""
    program = _callgate_program()
    assert program, "the callgate entry point is not installed"
    text = UNIT.read_text().replace("/opt/callgate/bin/callgate", program)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0, done.stderr
    assert not ours, "\n".join(ours)


@pytest.mark.skipif(
    shutil.which("logrotate") is None,
    reason="logrotate is not installed here (apt-get install logrotate to run this check)",
)
def test_logrotate_syntax(tmp_path: Path) -> None:
    """logrotate reads the file without an error (it exits 0 on unknown options, so read its output)."""
    done = subprocess.run(
        ["logrotate", "--debug", "--state", str(tmp_path / "state"), str(LOGROTATE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "error" in line]
    assert done.returncode == 0, done.stderr
    assert not errors, "\n".join(errors)
    assert "copytruncate" in LOGROTATE.read_text()


# --- the operations guide ----------------------------------------------------------------------------

SHELL_BLOCK = re.compile(
    r"^[ \t]*```(?:sh|console|bash)[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL
)
SEPARATORS = {"|", "||", "&&", ";"}
REDIRECT = re.compile(r"^\d?[<>]")  # > file, 2>&1, < file: the command ends before it


def guide_commands() -> list[tuple[list[str], str]]:
    """Every callgate command line in the guide's shell blocks: (argv after `callgate`, the line)."""
    found = []
    for block in SHELL_BLOCK.finditer(GUIDE.read_text()):
        for raw in block[1].splitlines():
            line = raw.removeprefix("$ ").strip()
            if not line or line.startswith("#"):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # a line of output, not a command
            segment: list[str] = []
            for word in [*words, ";"]:
                if REDIRECT.match(word) and word not in SEPARATORS:
                    segment.append("\0")  # the rest of this segment is not the command's
                    continue
                if word not in SEPARATORS:
                    segment.append(word)
                    continue
                while segment and ("=" in segment[0] or segment[0] in {"sudo", "exec"}):
                    segment.pop(0)
                if "\0" in segment:
                    segment = segment[: segment.index("\0")]
                if segment and Path(segment[0]).name == "callgate":
                    found.append((segment[1:], line))
                segment = []
    return found


# Inline `callgate ...` in the guide's text, with its placeholders filled in: `callgate lock EXT [--all]`.
INLINE = re.compile(
    r"`((?:\S*/)?callgate (?:--?[a-z]|[a-z]+(?=[\s`]))[^`]*)`"
)  # not log text: "callgate x:"
PLACEHOLDERS = {
    "VERSION": "3",
    "A": "1",
    "B": "2",
    "EXT": "1001",
    "NUMBER": "011442079460000",
    "FILE": "policy.yaml",
    "NAME": "acme-nyc",
    "URL": "redis://127.0.0.1:6379/0",
}


def inline_commands() -> list[tuple[list[str], str]]:
    found = []
    for span in INLINE.finditer(GUIDE.read_text()):
        text = " ".join(span[1].split())
        words = [
            PLACEHOLDERS.get(w, w) for w in shlex.split(text.replace("[", "").replace("]", ""))
        ]
        if ">" in words:
            words = words[: words.index(">")]
        found.append((words[1:], text))
    return found


COMMANDS = guide_commands() + inline_commands()


def test_guide_explains_every_alert() -> None:
    """Section 5 of the guide has one row per alert kind callgate raises, and no row for another."""
    from callgate.ops.alerts import SEVERITY

    section = GUIDE.read_text().partition("## 5.")[2].partition("\n## ")[0]
    rows = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    assert rows == set(SEVERITY), f"guide has {rows - set(SEVERITY)}, lacks {set(SEVERITY) - rows}"


def test_guide_uses_the_admin_commands() -> None:
    """The guide shows the commands an admin needs, so the test below has something to check."""
    used = {argv[0] for argv, _ in COMMANDS if argv}
    assert {"serve", "policy", "explain", "lock", "unlock", "locks", "panic", "calm"} <= used


@pytest.mark.parametrize(("argv", "line"), COMMANDS, ids=[line for _, line in COMMANDS])
def test_guide_command_is_real(argv: list[str], line: str) -> None:
    """Each callgate command in docs/operations.md parses with callgate's own argument parser; a bare
    command name in the text (`callgate explain`) is a command whose --help works (and --version
    exits as cleanly)."""
    if all(re.fullmatch(r"[a-z]+", word) for word in argv) and argv:
        argv = [*argv, "--help"]
    if {"--help", "-h", "--version"} & set(argv):
        with pytest.raises(SystemExit) as caught:
            parser().parse_args(argv)
        assert caught.value.code == 0
        return
    try:
        args = parser().parse_args(argv)
    except SystemExit:  # argparse has printed what is wrong
        pytest.fail(f"not a callgate command: {line}")
    assert callable(args.run)
