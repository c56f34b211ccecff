"""``callgate doctor``: the trunk dials of a dialplan that a call can reach around the gate.

The table runs over ``dialplan show`` recordings of real dialplans (tests/fixtures/dialplans/*.conf,
recorded by ``python -m tests.record_dialplans`` from the test Asterisk): the shipped include used as
documented, phones that dial the trunk themselves, FreePBX 17 with and without callgate's hooks, a trunk
as an inbound destination, DUNDi and ENUM trunks, a forward to a stored number, attacker-shaped mistakes.
Small cases are written as extensions.conf text. The last tests load every fixture into a real
Asterisk and read its live dialplan both ways (AMI ``ShowDialPlan`` and ``dialplan show``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.cli import main
from callgate.ops.doctor.command import read_live
from callgate.ops.doctor.dialplan import (
    Dialplan,
    Step,
    best_match,
    free_text,
    matches,
    read_show,
    split_top,
)
from callgate.ops.doctor.paths import Options, Report, audit
from callgate.ops.doctor.targets import Reach, classify
from tests.asterisk_rig import AsteriskInstance, asterisk, asterisk_prefix
from tests.record_dialplans import CASES, FIXTURES, load, source

Seen = set[tuple[str, str, str]]  # (kind, context, extension)


def recorded(case: str) -> Report:
    text = (FIXTURES / f"{case}.txt").read_text(encoding="utf-8")
    return audit(read_show(text, f"{case}.txt"), Options())


def seen(report: Report) -> Seen:
    return {(str(f.kind), f.step.context, f.step.extension) for f in report.findings}


EXT_TRUNK = ("unreached", "ext-trunk", "tdial")  # FreePBX writes it for every trunk; low
FIXTURE_CASES: list[tuple[str, Seen, bool]] = [  # case, findings, clean (nothing that counts)
    ("plain-include", set(), True),
    ("plain-direct", {("bypass", "phones", "_9NXXNXXXXXX")}, False),
    ("plain-variable", {("cannot-tell", "phones", "1009")}, False),
    (
        "plain-mistakes",
        {
            ("injection", "lobby", "_X."),
            ("fail-open", "fax", "_X."),
            ("bypass", "callgate-emergency", "_[0-9+*#]."),
            ("bypass", "lab", "(switch)"),
        },
        False,
    ),
    ("freepbx-hook", {EXT_TRUNK}, True),
    (
        "freepbx-no-hook",
        {
            ("bypass", "macro-dialout-trunk", "s"),  # a custom trunk's Dial()
            ("bypass", "trunk-dial-with-exten", "_X"),
            ("bypass", "trunk-dial-with-exten", "_[+-X]."),
            ("bypass", "trunk-dial-with-exten", "_*X."),
            EXT_TRUNK,
        },
        False,
    ),
    ("freepbx-ext-trunk", {("bypass", "ext-trunk", "tdial")}, False),
    ("freepbx-dundi", {("bypass", "macro-dundi-3", "(switch)"), EXT_TRUNK}, False),
    ("freepbx-dundi-hook", {EXT_TRUNK}, True),
    ("freepbx-enum", {("bypass", "macro-dialout-enum", "s"), EXT_TRUNK}, False),
]


def test_every_fixture_is_in_the_table() -> None:
    """Each recorded dialplan has a row, and each row a recording."""
    assert {c for c, _, _ in FIXTURE_CASES} == set(CASES)
    assert all((FIXTURES / f"{c}.txt").is_file() for c in CASES)


@pytest.mark.parametrize(
    ("case", "expected", "clean"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES]
)
def test_recorded_dialplans(case: str, expected: Seen, clean: bool) -> None:
    """Each recorded dialplan gives exactly its findings; only the clean ones exit 0."""
    report = recorded(case)
    assert seen(report) == expected, "\n".join(f.text() for f in report.findings)
    assert report.clean is clean


def test_the_shipped_include_is_walked_not_skipped() -> None:
    """The clean verdict of the shipped include comes from walking it: phones reach its Dial."""
    report = recorded("plain-include")
    assert "phones" in report.entries
    assert "callgate-outbound" in report.assumed
    mutated = (FIXTURES / "plain-include.txt").read_text().replace("Stasis(callgate,", "NoOp(")
    again = audit(read_show(mutated, "mutated"), Options())
    assert ("bypass", "callgate-outbound", "_[0-9+*#].") in seen(again)


def test_freepbx_findings_say_what_to_do() -> None:
    """Each FreePBX path is named with FreePBX's own reason and fix, and the path from the phone."""
    by_context = {f.step.context: f for f in recorded("freepbx-no-hook").findings}
    trunk = by_context["trunk-dial-with-exten"]
    assert "macro-dialout-trunk-predial-hook" in trunk.why
    assert "extensions_custom.conf" in trunk.fix
    assert trunk.path == (
        "from-internal",
        "outrt-1",
        "macro-dialout-trunk",
        "trunk-dial-with-exten",
    )
    ext_trunk = recorded("freepbx-ext-trunk").findings[0]
    assert "${FROM_DID}" in ext_trunk.why
    assert ext_trunk.path == ("from-pstn", "ext-did-0002", "ext-trunk")
    dundi = recorded("freepbx-dundi").findings[0]
    assert "DUNDi" in dundi.why
    assert "DUNDi hook" in dundi.fix
    enum = recorded("freepbx-enum").findings[0]
    assert "ENUM" in enum.why
    assert "cannot gate it" in enum.fix


def test_a_dial_built_from_a_variable_is_cannot_tell_and_names_it() -> None:
    """A dial string from a variable doctor does not know is neither safe nor a bypass: it says so."""
    (finding,) = recorded("plain-variable").findings
    assert finding.severity == "unknown"
    assert finding.target == "${FORWARD_TO}"
    assert "${FORWARD_TO}" in finding.why
    assert "does not say whether it is a trunk" in finding.why


# --- small dialplans ------------------------------------------------------------------------------

LINE = re.compile(r"^(?:exten => ([^,]+),|\s*same => )(\w+|n)(?:\((\w+)\))?,(\w+)(?:\((.*)\))?$")


def plan_of(text: str) -> Dialplan:
    """A Dialplan from extensions.conf text (exten/same, include, switch), for the small cases."""
    plan = Dialplan("test")
    context, exten, priority = "", "", 0
    for raw in text.splitlines():
        line = raw.split(";")[0].rstrip()
        if m := re.fullmatch(r"\[(.+)\]", line):
            context = m[1]
            plan.context(context)
        elif m := re.fullmatch(r"(include|switch) => (.+)", line):
            target = plan.context(context)
            (target.includes if m[1] == "include" else target.switches).append(m[2])
        elif m := LINE.match(line):
            exten = m[1] or exten
            priority = priority + 1 if m[2] == "n" else int(m[2])
            step = Step(context, exten, priority, m[3] or "", m[4], m[5] or "", "test")
            plan.add(step)
    return plan


def found(
    text: str,
    *,
    entries: frozenset[str] = frozenset(),
    internal: frozenset[str] = frozenset(),
    trunks: frozenset[str] = frozenset(),
) -> Seen:
    options = Options(entries=entries, internal=internal, trunks=trunks)
    return seen(audit(plan_of(text), options))


SMALL: list[tuple[str, str, Seen]] = [
    (
        "a_gated_dial_is_clean",
        """
[phones]
exten => _X.,1,Stasis(callgate,${EXTEN})
 same => n,GotoIf($["${STASISSTATUS}" != "SUCCESS"]?no)
 same => n,Dial(PJSIP/${CALLGATE_NUMBER}@trunk,,L(1000)U(callgate-limit^1^x))
 same => n(no),Hangup(21)
""",
        set(),
    ),
    (
        "a_gated_dial_without_a_limit_of_its_own_is_low",
        """
[phones]
exten => _X.,1,Stasis(callgate,${EXTEN})
 same => n,GotoIf($["${STASISSTATUS}" != "SUCCESS"]?no)
 same => n,Dial(PJSIP/${CALLGATE_NUMBER}@trunk,60,T)
 same => n(no),Hangup(21)
""",
        {("no-limit", "phones", "_X.")},
    ),
    (
        "another_stasis_app_is_no_gate",
        """
[phones]
exten => _X.,1,Stasis(recorder,${EXTEN})
 same => n,Dial(PJSIP/${EXTEN}@trunk)
""",
        {("bypass", "phones", "_X.")},
    ),
    (
        "a_literal_emergency_extension_is_not_flagged",  # [sos] itself dials anything it is given
        """
[phones]
exten => 911,1,Dial(PJSIP/911@trunk)
exten => 112,1,Goto(sos,${EXTEN},1)
[sos]
exten => _X.,1,Dial(DAHDI/g0/${EXTEN})
""",
        {("cannot-tell", "sos", "_X.")},
    ),
    (
        "a_gosub_to_a_subroutine_that_dials_is_judged_on_the_caller_path",
        """
[phones]
exten => _X.,1,Gosub(sub-out,s,1(${EXTEN}))
[sub-out]
exten => s,1,Dial(SIP/provider/${ARG1})
 same => n,Return()
""",
        {("bypass", "sub-out", "s")},
    ),
    (
        "the_gate_inside_a_subroutine_holds_after_its_return",
        """
[phones]
exten => _X.,1,Gosub(sub-gate,s,1)
 same => n,Dial(IAX2/provider/${EXTEN})
[sub-gate]
exten => s,1,Stasis(callgate,${EXTEN})
 same => n,GotoIf($["${STASISSTATUS}" != "SUCCESS"]?no)
 same => n,Return()
 same => n(no),Hangup()
""",
        {("no-limit", "phones", "_X.")},
    ),
    (
        "a_local_channel_carries_the_call_into_its_context",
        """
[phones]
exten => _X.,1,Dial(Local/${EXTEN}@outside/n)
[outside]
exten => _X.,1,Dial(PJSIP/${EXTEN}@provider)
""",
        {("bypass", "outside", "_X.")},
    ),
    (
        "a_disa_dials_anew_in_its_context",
        """
[from-provider]
exten => 5000,1,Stasis(callgate,${EXTEN})
 same => n,GotoIf($["${STASISSTATUS}" != "SUCCESS"]?no)
 same => n,DISA(1234,outside)
 same => n(no),Hangup()
[outside]
exten => _X.,1,Dial(PJSIP/${EXTEN}@provider)
""",
        {("bypass", "outside", "_X.")},
    ),
    (
        "a_freepbx_emergency_route_over_any_number",
        """
[outrt-9]
exten => _X.,1,Set(EMERGENCYROUTE=YES)
 same => n,Dial(PJSIP/${EXTEN}@provider)
""",
        {("emergency-route", "outrt-9", "_X."), ("bypass", "outrt-9", "_X.")},
    ),
    (
        "a_trunk_dial_in_an_execif",
        """
[phones]
exten => _9X.,1,ExecIf($["${CALLERID(num)}" = "1001"]?Dial(PJSIP/${EXTEN:1}@provider))
""",
        {("bypass", "phones", "_9X.")},
    ),
    (
        "a_gosub_in_an_execif",
        """
[phones]
exten => _9X.,1,ExecIf($["${CALLERID(num)}" = "1001"]?Gosub(sub-out,s,1(${EXTEN:1})))
[sub-out]
exten => s,1,Dial(PJSIP/${ARG1}@provider)
 same => n,Return()
""",
        {("bypass", "sub-out", "s")},
    ),
    (
        "queue_members_are_outside_the_dialplan",
        """
[phones]
exten => 400,1,Queue(sales)
""",
        {("cannot-tell", "phones", "400")},
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), SMALL, ids=[s[0] for s in SMALL])
def test_small_dialplans(name: str, text: str, expected: Seen) -> None:
    """One shape each: what doctor makes of it."""
    assert found(text) == expected


def test_a_context_only_jumped_to_is_cannot_tell_until_named() -> None:
    """A trunk dial in a context that only a jump leads to is "cannot tell" (an endpoint may use
    that context); --entry makes it a bypass, --internal says no call starts there."""
    text = """
[phones]
exten => _X.,1,Stasis(callgate,${EXTEN})
 same => n,GotoIf($["${STASISSTATUS}" != "SUCCESS"]?no)
 same => n,Goto(dialout,${CALLGATE_NUMBER},1)
 same => n(no),Hangup()
[dialout]
exten => _X.,1,Dial(PJSIP/${EXTEN}@provider,,L(1000))
"""
    report = audit(plan_of(text), Options())
    (finding,) = report.findings
    assert (finding.kind, finding.step.context) == ("cannot-tell", "dialout")
    assert "--entry dialout" in finding.why
    assert found(text, entries=frozenset({"dialout"})) == {("bypass", "dialout", "_X.")}
    assert found(text, internal=frozenset({"dialout"})) == set()


def test_a_jump_whose_context_is_named_at_run_time() -> None:
    """A trunk dial that only a jump to ``${DEST}`` can reach is "cannot tell", naming the jump; a
    context name with a fixed part (``phones-${...}``) is read as the contexts it can match."""
    text = """
[phones]
exten => 7,1,Goto(phones-${CALLERID(num)},s,1)
exten => 8,1,Goto(${DEST},s,1)
[dialout]
exten => s,1,Dial(PJSIP/${NUMBER}@provider)
"""
    report = audit(plan_of(text), Options(internal=frozenset({"dialout"})))
    (finding,) = report.findings
    assert (finding.kind, finding.step.context) == ("cannot-tell", "dialout")
    assert finding.via == "Goto(${DEST},s,1) at phones,8,1"
    assert found(text) == {("bypass", "dialout", "s")}  # nothing names [dialout]: calls start there


def test_trunk_names_make_bare_endpoints_trunks() -> None:
    """PJSIP/<name> is a phone unless --trunk names it."""
    text = "[lobby]\nexten => 0,1,Dial(PJSIP/provider)\n"
    assert found(text) == set()
    assert found(text, trunks=frozenset({"provider"})) == {("bypass", "lobby", "0")}


def test_a_line_the_cli_cut_short_is_cannot_tell() -> None:
    """`dialplan show` prints 1023 characters of a priority: a cut Dial() is not judged safe."""
    data = "PJSIP/" + "1" * 1100
    line = f"1. Dial({data}"[:1023]
    text = (
        "[ Context 'phones' created by 'pbx_config' ]\n"
        f"  '_X.' =>          {line} [extensions.conf:3]\n\n"
    )
    report = audit(read_show(text, "cut"), Options())
    assert report.cut == 1
    (finding,) = report.findings
    assert finding.kind == "cannot-tell"
    assert "--ami" in finding.fix


@pytest.mark.parametrize(
    ("target", "reach"),
    [
        ("PJSIP/${EXTEN}@mytrunk", Reach.TRUNK),
        ("PJSIP/mytrunk/sip:+442079460000@provider.example", Reach.TRUNK),
        ("SIP/provider/${EXTEN:1}", Reach.TRUNK),
        ("IAX2/user:secret@host/${EXTEN}", Reach.TRUNK),
        ("DAHDI/g0/${EXTEN}", Reach.TRUNK),
        ("${CALLGATE_TRUNK}/${CALLGATE_NUMBER}${CALLGATE_TRUNK_SUFFIX}", Reach.TRUNK),
        ("${OUT_${DIAL_TRUNK}}/${OUTNUM}${OUT_${DIAL_TRUNK}_SUFFIX}", Reach.TRUNK),
        ("${ENUMLOOKUP(+${EXTEN},sip,,1,e164.arpa)}", Reach.TRUNK),
        ("PJSIP/1001", Reach.DEVICE),
        ("PJSIP/${EXTEN}", Reach.DEVICE),
        ("${PJSIP_DIAL_CONTACTS(1001)}", Reach.DEVICE),
        ("${DSTRING}", Reach.DEVICE),
        ("Local/${EXTEN}@from-internal/n", Reach.LOCAL),
        ("${FORWARD_TO}", Reach.UNKNOWN),
        ("PJSIP/${WHO}", Reach.UNKNOWN),
    ],
)
def test_what_a_dial_target_reaches(target: str, reach: Reach) -> None:
    """Trunks, phones, Local channels, and what cannot be told from the text."""
    assert classify(target, frozenset()).reach is reach


@pytest.mark.parametrize(
    ("pattern", "exten", "match"),
    [
        ("_X.", "1234", True),
        ("_X.", "1", False),
        ("_X!", "1", True),
        ("_NXXNXXXXXX", "2125550100", True),
        ("_NXXNXXXXXX", "1125550100", False),
        ("_1-NXX", "1212", True),
        ("_[0-9+*#].", "+44", True),
        ("_[+-X].", "abc", False),
        ("911", "911", True),
        ("_X.", "1&PJSIP/trunk/sip:x", True),
    ],
)
def test_extension_patterns(pattern: str, exten: str, match: bool) -> None:
    """Asterisk's pattern syntax, as pbx.c reads it."""
    assert matches(pattern, exten) is match


def test_best_match_and_free_text() -> None:
    """A literal beats a pattern and a narrower pattern a wider one; `.` lets in any text."""
    assert best_match(["_X.", "_9X.", "911"], "911") == "911"
    assert best_match(["_X.", "_9X."], "912") == "_9X."
    assert free_text("_X.")
    assert free_text("_[0-9+*#].")
    assert free_text("_[a-z]XX")
    assert not free_text("_1XXX")
    assert not free_text("911")
    assert split_top("a,${IF($[1=1]?b,c:d)},e(f,g)", ",") == ["a", "${IF($[1=1]?b,c:d)}", "e(f,g)"]


# --- the command ---------------------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_exits_0_1_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """0 clean (low findings do not count), 1 findings, 2 when the dialplan cannot be read."""
    clean = str(FIXTURES / "freepbx-hook.txt")
    code, out, _ = run(["doctor", "--dialplan", clean], capsys)
    assert code == 0
    assert out.startswith("low unreached ext-trunk,tdial,10 Dial(")
    code, out, _ = run(["doctor", "--dialplan", str(FIXTURES / "plain-direct.txt")], capsys)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("high bypass phones,_9NXXNXXXXXX,1 Dial(PJSIP/${EXTEN:1}@mytrunk,60): ")
    assert "Fix: " in first
    (tmp_path / "garbage").write_text("No such command 'dialplan shwo'\n")
    code, _, err = run(["doctor", "--dialplan", str(tmp_path / "garbage")], capsys)
    assert code == 2
    assert "no dialplan in it" in err
    code, _, err = run(["doctor", "--dialplan", str(tmp_path / "missing")], capsys)
    assert code == 2


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: the report as one document, a finding per object."""
    code, out, _ = run(
        ["doctor", "--dialplan", str(FIXTURES / "plain-variable.txt"), "--json"], capsys
    )
    document = json.loads(out)
    assert code == 1
    assert document["clean"] is False
    assert document["entries"] == ["from-provider", "phones"]
    (finding,) = document["findings"]
    assert finding | {"why": "", "fix": ""} == {
        "severity": "unknown",
        "kind": "cannot-tell",
        "context": "phones",
        "extension": "1009",
        "priority": 3,
        "label": "",
        "application": "Dial(${FORWARD_TO},30)",
        "source": "extensions.conf:10",
        "target": "${FORWARD_TO}",
        "why": "",
        "fix": "",
        "path": ["phones"],
        "via": "",
    }


def test_ami_needs_a_user_and_a_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret is never an argument; without it (or a user) doctor says what to set."""
    monkeypatch.delenv("CALLGATE_AMI_SECRET", raising=False)
    monkeypatch.delenv("CALLGATE_AMI_USER", raising=False)
    code, _, err = run(["doctor", "--ami", "--ami-user", "doctor"], capsys)
    assert code == 2
    assert "CALLGATE_AMI_SECRET" in err
    monkeypatch.setenv("CALLGATE_AMI_SECRET", "s3cret-value")
    code, _, err = run(["doctor", "--ami"], capsys)
    assert code == 2
    assert "--ami-user" in err
    code, _, err = run(["doctor", "--ami", "--ami-user", "doctor", "--ami-port", "1"], capsys)
    assert code == 2
    assert "AMI 127.0.0.1:1" in err
    assert "s3cret-value" not in err


# --- a real Asterisk -----------------------------------------------------------------------------

DOCTOR_USER, DOCTOR_SECRET = "callgate-doctor", "doctor-test"


def manager_conf(ast: AsteriskInstance) -> dict[str, str]:
    """The shipped AMI user's rights, and a doctor user with only write = reporting."""
    return {
        "manager.conf": f"""\
[general]
enabled = yes
bindaddr = 127.0.0.1
port = {ast.ami_port}

[{ast.ami_user}]
secret = {ast.ami_secret}
read = cdr,call,user,system
write = system

[{DOCTOR_USER}]
secret = {DOCTOR_SECRET}
read =
write = reporting
"""
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsteriskInstance]:
    workdir = Path(tmp_path_factory.mktemp("doctor"))
    with asterisk(
        asterisk_prefix(), workdir, dialplan=source("plain-include"), configs=manager_conf
    ) as ast:
        yield ast


def where(report: Report) -> set[tuple[str, str, str, int]]:
    return {(f.kind, f.step.context, f.step.extension, f.step.priority) for f in report.findings}


@pytest.mark.asterisk
@pytest.mark.parametrize("case", CASES)
async def test_the_live_dialplan_gives_the_recorded_findings(
    live: AsteriskInstance, case: str
) -> None:
    """Each fixture loaded into a real Asterisk, read through AMI ShowDialPlan and through
    `dialplan show`, gives what its recording gives: the recordings are what Asterisk prints, and a
    change of the shipped include or hooks that opens a path fails here."""
    shown = load(live, case)
    from_cli = audit(read_show(shown, "live"), Options())
    plan = await read_live("127.0.0.1", live.ami_port, DOCTOR_USER, DOCTOR_SECRET)
    from_ami = audit(plan, Options())
    expected = where(recorded(case))
    hint = "\n(a shipped file changed? re-record: .venv/bin/python -m tests.record_dialplans)"
    assert where(from_cli) == expected, "\n".join(f.text() for f in from_cli.findings) + hint
    assert where(from_ami) == expected, "\n".join(f.text() for f in from_ami.findings) + hint


@pytest.mark.asterisk
def test_callgate_doctor_finds_the_bypass_in_a_live_asterisk(live: AsteriskInstance) -> None:
    """`callgate doctor --ami`, as an admin runs it, against a box whose phones keep a trunk pattern
    of their own: it names that Dial() and exits 1, and flags nothing of the shipped include."""
    load(live, "plain-direct")
    env = {
        **os.environ,
        "CALLGATE_AMI_USER": DOCTOR_USER,
        "CALLGATE_AMI_SECRET": DOCTOR_SECRET,
        "CALLGATE_AMI_PORT": str(live.ami_port),
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "callgate"), "doctor", "--ami"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    findings = [
        line for line in done.stdout.splitlines() if not line.startswith("callgate doctor:")
    ]
    assert len(findings) == 1
    assert findings[0].startswith(
        "high bypass phones,_9NXXNXXXXXX,1 Dial(PJSIP/${EXTEN:1}@mytrunk,60)"
    )
    assert "callgate-outbound" not in done.stdout.split("Fix:")[0]
    assert "callgate-emergency" not in done.stdout
    assert f"AMI 127.0.0.1:{live.ami_port}" in done.stdout


@pytest.mark.asterisk
def test_the_callgate_ami_user_may_not_show_the_dialplan(
    live: AsteriskInstance, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped user (read=cdr,call,user,system, write=system) is refused ShowDialPlan, and
    doctor says which right a user of its own needs."""
    monkeypatch.setenv("CALLGATE_AMI_SECRET", live.ami_secret)
    argv = ["doctor", "--ami", "--ami-user", live.ami_user, "--ami-port", str(live.ami_port)]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "may not run ShowDialPlan" in err
    assert "write = reporting" in err
    assert live.ami_secret not in err


def test_the_policys_emergency_numbers_are_emergency_extensions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With --policy, an extension of the policy's emergency list dials around the gate unflagged."""
    text = (FIXTURES / "plain-include.txt").read_text()
    extra = "[ Context 'uk' created by 'pbx_config' ]\n  '999' =>          1. Dial(PJSIP/999@mytrunk) [x.conf:1]\n\n"
    (tmp_path / "dialplan.txt").write_text(text + extra)
    policy = Path(__file__).resolve().parents[1] / "callgate" / "data" / "default-policy.yaml"
    listed = policy.read_text().replace(
        'emergency: ["911", "933"]', 'emergency: ["911", "933", "999"]'
    )
    (tmp_path / "policy.yaml").write_text(listed)
    code, out, _ = run(["doctor", "--dialplan", str(tmp_path / "dialplan.txt")], capsys)
    assert code == 1
    assert out.startswith("high bypass uk,999,1 Dial(PJSIP/999@mytrunk)")
    argv = [
        "doctor",
        "--dialplan",
        str(tmp_path / "dialplan.txt"),
        "--policy",
        str(tmp_path / "policy.yaml"),
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0, out
