"""Service settings: file plus environment, every problem named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.cli import main
from callgate.errors import SettingsError
from callgate.settings import load_settings

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
    """A Sentinel-style URL and a missing AMI secret are clear settings errors, not tracebacks."""
    env = {
        "CALLGATE_ARI_URL": "http://127.0.0.1:8088/ari",
        "CALLGATE_ARI_USER": "u",
        "CALLGATE_ARI_PASSWORD": "p",
        "CALLGATE_AMI_USER": "callgate",
        "CALLGATE_POLICY_FILE": "/etc/callgate/policy.yaml",
        "CALLGATE_REDIS_URL": "redis+sentinel://h:26379/mymaster",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(None, env)
    assert "[redis] url: expected redis://" in str(caught.value)
    assert "[ami] secret: required" in str(caught.value)
