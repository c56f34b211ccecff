"""The docker-compose rig, checked without a Docker engine: the compose file is valid, it mounts the
shipped configs (not copies), callgate's settings and policy load, and its phone, dialplan and
weekend-attack scenario run against the real test Asterisk with `callgate serve`: the attack is held."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import yaml

from callgate.core.policyfile import load_policy_file
from callgate.settings import load_settings
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import Callgate, callgate_env, shipped_configs, wait_until
from tests.servers import free_port, redis_server

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"


def compose_config() -> dict[str, object]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is missing: `make deps` installs Debian's docker-compose")
    done = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load(done.stdout)
    assert isinstance(data, dict)
    return data


def mount(volume: object) -> tuple[Path, str]:
    """(host source, container target) of a volume in either of compose's syntaxes."""
    if isinstance(volume, dict):
        return Path(volume["source"]), str(volume["target"])
    source, target = str(volume).split(":")[:2]
    return Path(source), target


def test_compose_file_is_valid_and_mounts_existing_files() -> None:
    """`docker-compose config` accepts it; every bind mount's source exists."""
    services = compose_config()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"redis", "asterisk", "callgate", "sipp"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, _ = mount(volume)
            assert source.exists(), f"{name}: {source}"


def test_asterisk_gets_the_shipped_configs() -> None:
    """The shipped dialplan/*.conf files are mounted as they are, under the names Asterisk reads."""
    services = compose_config()["services"]
    assert isinstance(services, dict)
    mounts = {Path(t).name: src for src, t in map(mount, services["asterisk"]["volumes"])}
    for shipped in ["extensions_callgate.conf", "http.conf", "ari.conf", "manager.conf",
                    "cdr.conf", "cdr_manager.conf"]:  # fmt: skip
        assert mounts[shipped] == ROOT / "dialplan" / shipped


def test_callgate_settings_and_policy_load() -> None:
    """docker/callgate.toml with docker/callgate.env is valid, and the mounted policy loads."""
    env = dict(
        line.split("=", 1)
        for line in (DOCKER / "callgate.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    settings = load_settings(str(DOCKER / "callgate.toml"), env)
    assert settings.ari_password == "change-me-ari"
    assert "password=change-me-ari" in (ROOT / "dialplan" / "ari.conf").read_text()
    assert f"secret={settings.ami_secret}" in (ROOT / "dialplan" / "manager.conf").read_text()
    assert load_policy_file(ROOT / "callgate" / "data" / "default-policy.yaml").site.name


@dataclass
class Rig:
    ast: AsteriskInstance
    gate: Callgate
    redis_url: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The test Asterisk with docker/asterisk's phone and dialplan, and the shipped default policy."""
    root = Path(tmp_path_factory.mktemp("docker"))
    include = str(ROOT / "dialplan" / "extensions_callgate.conf")
    dialplan = (DOCKER / "asterisk" / "extensions.conf").read_text()
    dialplan = dialplan.replace("#include extensions_callgate.conf", f'#include "{include}"')
    dialplan = dialplan.replace("?20:", "?2:")  # the carrier holds answered calls 2 s, not 20

    def configs(ast: AsteriskInstance) -> dict[str, str]:
        phones = (DOCKER / "asterisk" / "pjsip_phones.conf").read_text()
        return {**shipped_configs(ast), "pjsip_custom.conf": phones}

    with (
        redis_server(root / "redis") as redis_url,
        asterisk(asterisk_prefix(), root / "ast", dialplan=dialplan, configs=configs) as ast,
    ):
        policy = ROOT / "callgate" / "data" / "default-policy.yaml"
        gate = Callgate(callgate_env(ast, redis_url, policy), root / "callgate.log")
        with gate.running(ast):
            yield Rig(ast, gate, redis_url)


def sipp(rig: Rig, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    cmd = ["sipp", *args, "-set", "user", "1001", "-au", "1001", "-ap", "weekend-1001"]
    cmd += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-nostdin"]
    cmd += ["-trace_err", f"127.0.0.1:{rig.ast.sip_port}"]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=DOCKER / "sipp", check=False
    )


@pytest.mark.asterisk
@pytest.mark.redis  # the rig starts its own redis-server
def test_weekend_attack_is_held(rig: Rig) -> None:
    """docker/sipp's attack (100 calls, 10 at a time, to Cuba, Sierra Leone, Iridium and London) from
    the registered phone: every call ends as the gate decides, no forbidden country is ever reached,
    the extension is locked, and spend stays under every cap."""
    done = sipp(rig, "-sf", "register.xml", "-m", "1", "-timeout", "20s", "-timeout_error")
    assert done.returncode == 0, done.stderr[-2000:]
    done = sipp(rig, "-sf", "weekend-attack.xml", "-inf", "numbers.csv", "-l", "10", "-r", "10",
                "-m", "100", "-timeout", "120s", "-timeout_error")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:] + rig.gate.tail()
    client = sync_redis.Redis.from_url(rig.redis_url, decode_responses=True)
    try:
        site = "acme-nyc"
        assert wait_until(lambda: client.xlen(f"cg:{{{site}}}:audit") >= 100, 10)
        entries: Any = client.xrange(f"cg:{{{site}}}:audit")
        allowed = [f for _, f in entries if f["verdict"] == "ALLOW"]
        assert {f["country"] for f in allowed} <= {"GB"}  # never Cuba, Sierra Leone or Iridium
        assert len(allowed) <= 10  # international_calls_per_hour of the office profile
        assert client.get(f"cg:{{{site}}}:lock:1001") == "international"
        for key in client.scan_iter(match=f"cg:{{{site}}}:s:*"):
            assert int(client.get(key) or 0) <= 40_000_000  # the smallest cap on 1001: 40.00/day
    finally:
        client.close()
