"""The Debian package (`make deb`), installed for real on this machine: an older build first, then the
upgrade to this one over the admin's edited config, then remove and purge. Root only; the tests run in
file order, each on the state the one before it left, and the machine is purged afterwards whatever
happened. Both builds run at once (25 to 45 s on two busy CPUs); the whole file takes 45 to 75 s."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OLDER = "0.0.1"  # the "older build" every upgrade test starts from
ETC = Path("/etc/callgate")
VENV = Path("/opt/callgate")
SHARE = Path("/usr/share/callgate")
UNIT = Path("/lib/systemd/system/callgate.service")
# What the package's programs see: no pyenv, no .venv, no PYTHONPATH of the test run.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
APT = ["apt-get", "install", "-y", "--no-install-recommends"]
# An unattended upgrade keeps an edited conffile without asking (the admin's file wins).
KEEP_CONFIG = ["-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"]


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root: installs, upgrades and purges the package with apt-get and dpkg here"
    missing = [tool for tool in ("dpkg", "apt-get", "make") if shutil.which(tool) is None]
    if missing:
        return f"not a Debian machine ({', '.join(missing)} missing)"
    return ""


pytestmark = [pytest.mark.deb, pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "-")]


def run(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command with the clean environment, from /, never waiting on a prompt (stdin is empty)."""
    done = subprocess.run(
        argv,
        cwd="/",
        env={**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert done.returncode == 0, (
            f"{' '.join(argv)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def installed_version() -> str:
    done = run("dpkg-query", "-W", "-f=${Status} ${Version}", "callgate", check=False)
    return done.stdout if done.returncode == 0 else ""


def project_version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """This version's package and an older build, made by `make deb` side by side (one build each
    for the whole file)."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-s", "deb-deps"], cwd=ROOT, check=True, timeout=600)
    builds = {
        "older": subprocess.Popen(
            ["make", "-s", "deb", f"DIST={dist}", f"VERSION={OLDER}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        "this": subprocess.Popen(
            ["make", "-s", "deb", f"DIST={dist}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
    }
    for name, build in builds.items():
        out, _ = build.communicate(timeout=600)
        assert build.returncode == 0, f"make deb ({name}) failed:\n{out[-5000:]}"
    found = {
        name: sorted(dist.glob(f"callgate_{version}_*.deb"))
        for name, version in (("older", OLDER), ("this", project_version()))
    }
    assert all(len(paths) == 1 for paths in found.values()), found
    return {name: paths[0] for name, paths in found.items()}


@pytest.fixture(scope="module", autouse=True)
def machine() -> Iterator[None]:
    """The tests own the package only on a machine without it, and leave none of it behind: purged,
    and the user callgate deleted when it did not exist before."""
    if installed_version():
        pytest.skip(
            "callgate is installed on this machine and these tests would replace and purge it "
            "(left by an interrupted run? `apt-get purge callgate`, then run them again)"
        )
    try:
        pwd.getpwnam("callgate")
        had_user = True
    except KeyError:
        had_user = False
    yield
    run("apt-get", "purge", "-y", "callgate", check=False)
    if installed_version():  # a broken maintainer script: take it off the hard way
        run("dpkg", "--purge", "--force-all", "callgate", check=False)
    if not had_user:
        run("deluser", "--system", "--quiet", "callgate", check=False)
        run("delgroup", "--system", "--quiet", "callgate", check=False)


def callgate(*argv: str, user: str = "") -> str:
    """`callgate ARGS` as found on the PATH (as `user` when given), its standard output."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    return run(*prefix, "callgate", *argv).stdout


def mode(path: Path) -> tuple[str, str, int]:
    st = path.lstat()
    return (pwd.getpwuid(st.st_uid).pw_name, _group(st.st_gid), stat.S_IMODE(st.st_mode))


def _group(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def systemctl(*argv: str) -> str:
    """systemctl without a running systemd: enable, disable and is-enabled only touch /etc."""
    return run("systemctl", *argv, check=False).stdout.strip()


# --- the package's own scripts (systemd does not run here, so their systemd branches are read) -----


def test_maintainer_scripts_never_start_the_gate(debs: dict[str, Path], tmp_path: Path) -> None:
    """Installing never enables or starts callgate; an upgrade restarts it only if it runs
    (try-restart) and does not stop it first (no preinst); removing the package stops it."""
    run("dpkg-deb", "-e", str(debs["this"]), str(tmp_path))
    postinst = (tmp_path / "postinst").read_text()
    prerm = (tmp_path / "prerm").read_text()
    assert not (tmp_path / "preinst").exists()
    assert "deb-systemd-invoke try-restart 'callgate.service'" in postinst
    assert "deb-systemd-invoke start" not in postinst
    assert "deb-systemd-helper enable" in postinst  # only for a unit the admin had enabled:
    assert "if deb-systemd-helper --quiet was-enabled 'callgate.service'; then" in postinst
    assert '[ "$1" = remove ]' in prerm
    assert "deb-systemd-invoke stop callgate.service" in prerm


# --- installing the older build ------------------------------------------------------------------


def test_install_gives_callgate_on_the_path(debs: dict[str, Path]) -> None:
    """`apt-get install ./callgate_*.deb` on this machine: callgate on the PATH, with its version."""
    run(*APT, str(debs["older"]))
    assert installed_version() == f"install ok installed {OLDER}"
    assert shutil.which("callgate", path=CLEAN_ENV["PATH"]) == "/usr/bin/callgate"
    assert callgate("--version") == f"callgate {OLDER}\n"


def test_install_makes_a_system_user_without_login() -> None:
    """The service's user: a system account, no shell, no home, no password."""
    user = pwd.getpwnam("callgate")
    assert user.pw_uid < 1000
    assert (user.pw_dir, user.pw_shell) == ("/nonexistent", "/usr/sbin/nologin")
    assert not Path(user.pw_dir).exists()
    shadow = run("getent", "shadow", "callgate").stdout.split(":")
    assert shadow[1] in {"*", "!", "!*"}, "the account must have no usable password"


def test_install_leaves_the_unit_disabled_and_stopped() -> None:
    """The package neither enables nor starts the gate: the admin does, once the config is done."""
    assert systemctl("is-enabled", "callgate") == "disabled"


def test_conffiles_are_the_samples_with_safe_modes() -> None:
    """The settings and the secrets are the samples of packaging/, as dpkg conffiles; the secrets
    are root's alone, the settings readable by the service's group, the directory closed to others."""
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "callgate").stdout
    assert {line.split()[0] for line in conffiles.splitlines() if line.strip()} == {
        f"{ETC}/callgate.toml",
        f"{ETC}/callgate.env",
        "/etc/logrotate.d/callgate",
    }
    for name in ("callgate.toml", "callgate.env"):
        assert (ETC / name).read_bytes() == (ROOT / "packaging" / name).read_bytes()
    assert mode(ETC) == ("root", "callgate", 0o750)
    assert mode(ETC / "lists") == ("root", "callgate", 0o750)
    assert mode(ETC / "callgate.toml") == ("root", "callgate", 0o640)
    assert mode(ETC / "callgate.env") == ("root", "root", 0o600)


# --- the upgrade to this build ---------------------------------------------------------------------


def test_a_new_build_can_be_checked_beside_the_running_one(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    """docs/operations.md, section 8: the new package, unpacked anywhere, runs its own copy of the
    program with its own interpreter while the older one stays installed."""
    run("dpkg-deb", "-x", str(debs["this"]), str(tmp_path))
    new = tmp_path / "opt" / "callgate"
    program = [str(new / "bin" / "python"), str(new / "bin" / "callgate")]
    assert run(*program, "--version").stdout == f"callgate {project_version()}\n"
    assert run(*program, "policy", "check", str(SHARE / "policy.yaml")).returncode == 0
    assert callgate("--version") == f"callgate {OLDER}\n"


ADMIN_LINE = "# the admin's own line, kept across upgrades\n"


def test_upgrade_keeps_the_admins_config(debs: dict[str, Path]) -> None:
    """An upgrade over an edited callgate.toml and callgate.env (and an enabled unit) replaces the
    program and keeps both files, their modes and the enabled unit, without asking."""
    with (ETC / "callgate.toml").open("a") as f:
        f.write(ADMIN_LINE)
    env = ETC / "callgate.env"
    env.write_text(env.read_text().replace("change-me-ari", "the-admins-password"))
    systemctl("enable", "callgate")
    assert systemctl("is-enabled", "callgate") == "enabled"

    run(*APT, *KEEP_CONFIG, str(debs["this"]))

    assert installed_version() == f"install ok installed {project_version()}"
    assert callgate("--version") == f"callgate {project_version()}\n"
    assert (ETC / "callgate.toml").read_text().endswith(ADMIN_LINE)
    assert "CALLGATE_ARI_PASSWORD=the-admins-password\n" in env.read_text()
    assert mode(ETC / "callgate.toml") == ("root", "callgate", 0o640)
    assert mode(env) == ("root", "root", 0o600)
    assert systemctl("is-enabled", "callgate") == "enabled"
    systemctl("disable", "callgate")


# --- what this build installs ----------------------------------------------------------------------


def test_callgate_runs_on_debians_python() -> None:
    """The venv is Debian's /usr/bin/python3.11, not the python that built it."""
    assert os.path.realpath(VENV / "bin" / "python") == "/usr/bin/python3.11"
    assert Path("/usr/bin/callgate").resolve() == VENV / "bin" / "callgate"
    assert (VENV / "bin" / "callgate").read_text().startswith(f"#!{VENV}/bin/python\n")
    assert "/work/" not in (VENV / "pyvenv.cfg").read_text()


def test_policy_check_of_the_shipped_policy() -> None:
    """The example policy is installed and passes `callgate policy check`, also as the service user."""
    policy = SHARE / "policy.yaml"
    assert policy.read_bytes() == (ROOT / "callgate/data/default-policy.yaml").read_bytes()
    assert callgate("policy", "check", str(policy)).startswith(f"{policy}: ok")
    assert callgate("policy", "check", str(policy), user="callgate").startswith(f"{policy}: ok")


def test_replay_of_the_example_cdr() -> None:
    """`callgate replay` of the shipped example CDR stops the weekend attack, with the installed
    program and its own dependencies (the compiled wheels of the venv)."""
    out = callgate("replay", str(SHARE / "examples" / "Master.csv"))
    assert "the policy would have saved" in out


def test_dialplan_files_are_shipped() -> None:
    """Every file of dialplan/ is in /usr/share/callgate/dialplan, unchanged."""
    ours = sorted(
        p.relative_to(ROOT / "dialplan") for p in (ROOT / "dialplan").rglob("*") if p.is_file()
    )
    assert ours
    for relative in ours:
        assert (SHARE / "dialplan" / relative).read_bytes() == (
            ROOT / "dialplan" / relative
        ).read_bytes()


def test_monitoring_files_are_shipped() -> None:
    """The alert rules and the Grafana dashboard, as in packaging/, for Prometheus and Grafana to load."""
    for shipped, installed in (
        ("prometheus/callgate-alerts.yml", "prometheus/callgate-alerts.yml"),
        ("grafana/callgate-dashboard.json", "grafana/callgate-dashboard.json"),
    ):
        assert (SHARE / installed).read_bytes() == (ROOT / "packaging" / shipped).read_bytes()


def test_unit_is_the_hardened_one_and_systemd_accepts_it() -> None:
    """The installed unit is packaging/callgate.service; systemd-analyze verify finds nothing in it."""
    assert UNIT.read_bytes() == (ROOT / "packaging" / "callgate.service").read_bytes()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    done = run("systemd-analyze", "verify", str(UNIT), check=False)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if UNIT.name in line], done.stderr


def test_the_unit_needs_only_what_the_package_depends_on() -> None:
    """Each program the unit runs is the package's own or one of a package it depends on: a minimal
    Debian 12 has no /bin/kill (procps), which systemd-analyze verify then refuses for ExecReload."""
    depends = run("dpkg-query", "-W", "-f=${Depends}", "callgate").stdout
    needed = {name.split()[0].split(":")[0] for name in depends.split(",")}
    for line in UNIT.read_text().splitlines():
        key, _, command = line.partition("=")
        if not key.startswith("Exec") or not command:
            continue
        program = command.split()[0].lstrip("-@:+!")
        # dpkg knows a file by the path its package gives (/bin/kill, though /bin is /usr/bin here)
        found = run("dpkg-query", "-S", program, check=False)
        if found.returncode:
            found = run("dpkg-query", "-S", os.path.realpath(program))
        owner = found.stdout.split(":")[0]
        assert owner == "callgate" or owner in needed, f"{program} is in {owner}, not a dependency"


def test_dpkg_lists_the_files() -> None:
    """dpkg -L names the program, the unit, the conffiles and the shared files."""
    files = set(run("dpkg", "-L", "callgate").stdout.split())
    assert {
        "/usr/bin/callgate",
        f"{VENV}/bin/callgate",
        str(UNIT),
        f"{ETC}/callgate.toml",
        f"{ETC}/callgate.env",
        f"{SHARE}/policy.yaml",
        f"{SHARE}/dialplan/extensions_callgate.conf",
        f"{SHARE}/dialplan/freepbx/extensions_custom.conf",
        "/etc/logrotate.d/callgate",
    } <= files
    assert not [f for f in files if "/bin/pip" in f], "no pip: nothing installs into dpkg's tree"


def test_the_service_user_cannot_change_its_code_or_read_the_secrets() -> None:
    """Root owns every file of the venv and no one else may write one; the service user reads its
    settings, not the secrets (systemd passes those), and writes nothing of its own code."""
    writable = []
    for top, dirs, files in os.walk(VENV):
        for name in [*dirs, *files]:
            st = (Path(top) / name).lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                writable.append(str(Path(top) / name))
    assert not writable, writable[:10]
    code = VENV / "lib/python3.11/site-packages/callgate/cli.py"
    assert run("runuser", "-u", "callgate", "--", "test", "-w", str(code), check=False).returncode
    assert run(
        "runuser", "-u", "callgate", "--", "test", "-w", str(VENV / "bin"), check=False
    ).returncode
    assert (
        run(
            "runuser", "-u", "callgate", "--", "cat", f"{ETC}/callgate.toml", check=False
        ).returncode
        == 0
    )
    assert run(
        "runuser", "-u", "callgate", "--", "cat", f"{ETC}/callgate.env", check=False
    ).returncode


def test_the_units_command_runs_as_the_service_user() -> None:
    """What the unit runs, as the unit runs it (the user callgate, the secrets in its environment):
    without a policy it stops naming the file; with the example policy it serves, waiting for ARI,
    AMI and Redis, until stopped. systemd itself does not run here: the sandbox is not exercised."""
    secrets = dict(
        line.split("=", 1)
        for line in (ETC / "callgate.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # Nothing of this machine is reached: ARI, AMI and Redis on a closed port.
    nowhere = {
        "CALLGATE_ARI_URL": "http://127.0.0.1:1/ari",
        "CALLGATE_AMI_PORT": "1",
        "CALLGATE_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    environment = [f"{k}={v}" for k, v in {**secrets, **nowhere}.items()]
    argv = ["runuser", "-u", "callgate", "--", "env", *environment]
    serve = ["callgate", "serve", "--config", f"{ETC}/callgate.toml"]
    done = run(*argv, *serve, check=False)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        f"callgate: [Errno 2] No such file or directory: '{ETC}/policy.yaml'",
    )
    policy = ETC / "policy.yaml"
    run(
        "install", "-m", "0640", "-o", "root", "-g", "callgate", f"{SHARE}/policy.yaml", str(policy)
    )
    try:
        with subprocess.Popen(
            [*argv, *serve],
            cwd="/",
            env=CLEAN_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as gate:
            with pytest.raises(subprocess.TimeoutExpired):
                gate.wait(timeout=2)
            gate.terminate()
            _, log = gate.communicate(timeout=30)
        assert "callgate serving site 'acme-nyc'" in log, log
    finally:
        policy.unlink()


def test_root_running_callgate_leaves_no_stray_files() -> None:
    """The shipped bytecode is valid (hash-checked), so a root run writes none beside it."""
    callgate("replay", "--format", "jsonl", str(SHARE / "examples" / "Master.csv"))
    packaged = set(run("dpkg", "-L", "callgate").stdout.split())
    stray = [str(p) for p in VENV.rglob("*") if str(p) not in packaged]
    assert not stray, stray[:10]


# --- remove, then purge --------------------------------------------------------------------------


def test_remove_keeps_the_config() -> None:
    """apt-get remove takes the program and the unit away and leaves /etc/callgate as it was."""
    run("apt-get", "remove", "-y", "callgate")
    assert installed_version().startswith("deinstall ok config-files")
    assert not Path("/usr/bin/callgate").exists()
    assert not VENV.exists()
    assert not UNIT.exists()
    assert (ETC / "callgate.toml").read_text().endswith(ADMIN_LINE)
    assert mode(ETC / "callgate.env") == ("root", "root", 0o600)


def test_purge_removes_the_config() -> None:
    """apt-get purge deletes /etc/callgate and every trace of the unit; the system user stays."""
    run("apt-get", "purge", "-y", "callgate")
    assert installed_version() == ""
    assert not ETC.exists()
    left = run("find", "/etc/systemd", "-name", "callgate.service").stdout
    assert not left, left
    pwd.getpwnam("callgate")  # kept on purge: see packaging/debian/callgate.postrm
