"""docs/install.md, followed as a newcomer follows it, on a real Asterisk that starts as a fresh box.

The Asterisk starts with its HTTP server, ARI, AMI and CDRs off and the phones' context dialling the
trunk directly. The test then does what the guide says, reading the guide itself: it copies the files
step 3's table names from `dialplan/` (with new passwords, as the guide asks), runs step 3's reload
commands and checks, writes step 4's `callgate.toml` block, starts `callgate serve --config` and waits
for the lines step 4 says it logs, rewrites the dialplan as step 5a says (the include, the globals,
`include => callgate-outbound` after the context's own extensions), runs step 2's commands on the
`Master.csv` that only exists once CDRs are on, and step 7's checks. When the guide changes, the test
follows it; when it goes wrong, the test fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.e2e import (
    STAND_INS,
    TEST_AMI_SECRET,
    TEST_AMI_USER,
    Callgate,
    Watch,
    caller_leg_hangup,
    cdr_of,
    gated_cdr_of,
    reached,
    wait_until,
)
from tests.servers import free_port, redis_server

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "install.md"
DIALPLAN = ROOT / "dialplan"
POLICY = ROOT / "callgate" / "data" / "default-policy.yaml"
ARI_SECRET, AMI_SECRET = "guide-ari-8c1f", "guide-ami-27d4"  # "Change both passwords."

# A box before callgate: no HTTP server, no ARI, no AMI, no CDRs; the phones dial the trunk directly.
FRESH = {
    "http.conf": "[general]\nenabled=no\n",
    "ari.conf": "[general]\nenabled=no\n",
    "manager.conf": "[general]\nenabled=no\n",
    "cdr.conf": "[general]\nenable=no\n",  # and no [csv]: cdr_csv declines to load
    "cdr_manager.conf": "[general]\nenabled=no\n",
}
INTERNAL = """\
exten => 1002,1,UserEvent(InternalReached,Number: ${EXTEN})
 same => n,Answer()
 same => n,Wait(1)
 same => n,Hangup()
"""
BEFORE = f"""\
[phones]
{INTERNAL}exten => _NXXNXXXXXX,1,Dial(Local/${{EXTEN}}@pstn)

{STAND_INS}"""


def section(title: str) -> str:
    """The text of the guide's section whose heading starts with ``title``, up to the next heading of
    the same or a higher level."""
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(rf"^(#+) {re.escape(title)}.*$", text, re.MULTILINE)
    assert found, f"docs/install.md has no section {title!r}"
    level = len(found.group(1))
    rest = text[found.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def callgate_commands(text: str) -> list[list[str]]:
    """The callgate command lines of a section's sh blocks, as argument lists (any install path)."""
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "callgate":
                found.append(words[1:])
    return found


def step3_files() -> list[str]:
    names = re.findall(r"^\| `([a-z_]+\.conf)` \|", section("3."), re.MULTILINE)
    assert {"http.conf", "ari.conf", "manager.conf", "cdr_manager.conf", "cdr.conf"} <= set(names)
    return names


def step3_sample(ast: AsteriskInstance, name: str) -> str:
    """A shipped sample as the admin merges it: the new passwords (and this instance's ports)."""
    text = (DIALPLAN / name).read_text(encoding="utf-8")
    text = text.replace("change-me-ari", ARI_SECRET).replace("change-me-ami", AMI_SECRET)
    text = text.replace("bindport=8088", f"bindport={ast.http_port}")
    text = text.replace("port=5038", f"port={ast.ami_port}")
    if name == "manager.conf":  # the test's own AMI user, which places the calls and reads events
        text += (
            f"\n[{TEST_AMI_USER}]\nsecret={TEST_AMI_SECRET}\ndeny=0.0.0.0/0.0.0.0\n"
            "permit=127.0.0.1/255.255.255.255\nread=all\nwrite=all\n"
        )
    return text


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def step4_config(ast: AsteriskInstance, redis_url: str, policy: Path, metrics: int) -> str:
    """Step 4's callgate.toml, filled in: the passwords of step 3, this box's ports."""
    (block,) = blocks(section("4."), "toml")
    settings = tomllib.loads(block)
    assert settings["ari"]["url"] == "http://127.0.0.1:8088/ari"
    settings["ari"] |= {"url": ast.ari_url, "password": ARI_SECRET}
    settings["ami"] |= {"port": ast.ami_port, "secret": AMI_SECRET}
    settings["redis"]["url"] = redis_url
    settings["policy"]["file"] = str(policy)
    settings["metrics"] = {
        "port": metrics
    }  # the guide names the default, 9464: taken on a shared box
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()) + "\n"
        for name, table in settings.items()
    )


def step5a_dialplan(ast: AsteriskInstance) -> str:
    """extensions.conf after step 5a: the include copied beside it, the trunk in [globals], the
    outbound pattern replaced by `include => callgate-outbound` after the context's own extensions."""
    text = section("5a.")
    assert "#include extensions_callgate.conf" in text
    assert "include => callgate-outbound" in text
    assert "**after**" in text
    shipped = (DIALPLAN / "extensions_callgate.conf").read_text(encoding="utf-8")
    (ast.workdir / "extensions_callgate.conf").write_text(shipped)
    return (
        "[globals]\nCALLGATE_TRUNK=Local\nCALLGATE_TRUNK_SUFFIX=@pstn\n\n"
        "#include extensions_callgate.conf\n\n"
        f"[phones]\n{INTERNAL}include => callgate-outbound\n\n{STAND_INS}"
    )


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callgate.cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AsteriskInstance, str, Path]]:
    root = Path(tmp_path_factory.mktemp("guide"))
    with (
        redis_server(root / "redis", free_port()) as redis_url,
        asterisk(
            asterisk_prefix(), root / "ast", dialplan=BEFORE, configs=FRESH, http=False
        ) as ast,
    ):
        yield ast, redis_url, root


async def test_the_install_guide_as_a_newcomer_follows_it(
    box: tuple[AsteriskInstance, str, Path],
) -> None:
    ast, redis_url, root = box
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}

    # step 2 on a new box: no Master.csv yet (the guide says so); the policy checks
    policy = (
        root / "policy.yaml"
    )  # the example, its placeholder webhook replaced, as the guide says
    policy.write_text(POLICY.read_text().replace("webhook: https://hooks.example.com/callgate", ""))
    assert not ast.cdr_csv.exists()
    check, replay = callgate_commands(section("2."))
    assert check[:2] == ["policy", "check"]
    assert replay[0] == "replay"
    done = cli([*check[:-1], str(policy)], env)
    assert done.returncode == 0, done.stdout + done.stderr

    # step 3: merge the samples the table names, then load each with the guide's own commands
    for name in step3_files():
        (ast.workdir / name).write_text(step3_sample(ast, name))
    for command in re.findall(r'asterisk -rx "([^"]+)"', blocks(section("3."), "sh")[0]):
        ast.rx(command)
    http = ast.rx("http show status")
    assert f"127.0.0.1:{ast.http_port}" in http, http
    assert "/ari/" in http, http
    assert "callgate" in ast.rx("ari show users")
    assert "callgate" in ast.rx("manager show users")
    cdr = ast.rx("cdr show status")
    assert re.search(r"Logging:\s+Enabled", cdr), cdr
    assert re.search(r"^\s+csv$", cdr, re.MULTILINE), cdr  # Master.csv from now on
    assert re.search(r"^\s+cdr_manager$", cdr, re.MULTILINE), cdr

    # step 4: callgate.toml from the guide; serve logs what the guide says
    config = root / "callgate.toml"
    config.write_text(step4_config(ast, redis_url, policy, free_port()))
    log = root / "callgate.log"
    gate = Callgate(env, log, args=("serve", "--config", str(config)))
    gate.start()
    try:
        assert wait_until(
            lambda: "ARI connected" in log.read_text() and "AMI connected" in log.read_text(), 20
        ), gate.tail()
        assert wait_until(lambda: "callgate" in ast.rx("ari show apps"), 10), gate.tail()

        # step 5a: the include after the context's own extensions; dialplan reload
        (ast.workdir / "extensions.conf").write_text(step5a_dialplan(ast))
        assert 'asterisk -rx "dialplan reload"' in section("5a.")
        ast.rx("dialplan reload")
        warned = [
            line for line in ast.log_path.read_text().splitlines()
            if "WARNING" in line and "extensions_callgate.conf" in line
        ]  # fmt: skip
        assert not warned, warned  # e.g. a ';' in NoOp() starts a comment
        watch = await Watch.open(ast)
        try:
            await watch.originate("1001", "1002")  # an internal call: never judged
            assert await watch.wait(
                lambda m: m.event == "UserEvent" and m.get("UserEvent") == "InternalReached", 10
            ), gate.tail()
            await watch.originate("1001", "2125550190")  # a domestic call: allowed, dialled
            assert await watch.wait(reached("+12125550190"), 10), gate.tail()
            await watch.originate("1001", "011532345678")  # Cuba: refused
            assert await watch.wait(caller_leg_hangup("011532345678"), 10), gate.tail()
            refused = await watch.wait(gated_cdr_of("011532345678"), 15)
            assert refused is not None
            assert refused.get("UserField") == "callgate:country_not_allowed", refused.headers
            await watch.wait(cdr_of("2125550190"), 15)
        finally:
            await watch.close()

        # step 7: the decision line, the audit entry, the emergency globals, explain
        text = log.read_text()
        assert "emergency numbers published to Asterisk" in text
        assert "decision" in text
        assert "011532345678" in text
        globals_ = ast.rx("dialplan show globals")
        assert "CALLGATE_EMERGENCY_NUMBERS" in globals_
        assert "CALLGATE_EMERGENCY_DIALS" in globals_
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert client.xrevrange("cg:{acme-nyc}:audit", "+", "-", count=5)
        finally:
            client.close()
        (explain,) = callgate_commands(section("7."))
        explain[explain.index("--policy") + 1] = str(policy)
        explain[explain.index("--redis") + 1] = redis_url
        done = cli(explain, env)
        # London, a weekday's office hours or not: explain exits 0 for ALLOW, 1 for DENY
        assert done.returncode == (0 if done.stdout.startswith("ALLOW") else 1), done.stderr
        assert "+442079460000 (GB, international)" in done.stdout, done.stdout
    finally:
        gate.stop()

    # step 2 again, now that CDRs are on: the replay the guide names reads this box's Master.csv
    assert wait_until(ast.cdr_csv.exists, 10)
    replay[replay.index("--policy") + 1] = str(policy)
    replay[-1] = str(ast.cdr_csv)
    done = cli(replay, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout
